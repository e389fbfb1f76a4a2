-- Roles and grants (data-model.md "Roles"). Apply as the database owner to each database, after
-- the schema migrations. Idempotent. Passwords are never in this file: they are read from the
-- session settings kalshi.<role>_password, which `kalshi-data migrate --roles` sets from password
-- files or AWS Secrets Manager. By hand:
--   psql -v ON_ERROR_STOP=1 -c "SET kalshi.analyst_password = '...'" -f migrations/roles.sql
-- A role with no password given keeps its current password (or is created without one).
--
--   role          database        may
--   gatherer      gatherer-local  insert/select/update its tables, create partitions (functions)
--   dedup_reader  gatherer-local  select only, plus insert/update of sync_acks
--   deduplicator  production      insert/update event and reference tables, update sync_cursors
--   analyst       production      select only

DO $$
DECLARE
    r    TEXT;
    pw   TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['gatherer', 'dedup_reader', 'deduplicator', 'analyst'] LOOP
        pw := nullif(current_setting('kalshi.' || r || '_password', true), '');
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        END IF;
        IF pw IS NOT NULL THEN
            EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', r, pw);
        END IF;
    END LOOP;
END;
$$;

-- Nobody but the owner creates objects here (PostgreSQL 14 still lets PUBLIC create in public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO gatherer, dedup_reader, deduplicator, analyst;

DO $$
DECLARE
    is_gatherer    BOOLEAN := to_regclass('public.gatherer_meta') IS NOT NULL;
    is_production  BOOLEAN := to_regclass('public.sync_cursors') IS NOT NULL;
BEGIN
    REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gatherer, dedup_reader, deduplicator, analyst;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION now_us(), partition_status() TO gatherer, dedup_reader, deduplicator, analyst;
    IF is_gatherer THEN
        GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO gatherer;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO gatherer;
        GRANT EXECUTE ON FUNCTION ensure_partitions(INTEGER, INTEGER),
                                  drop_expired_partitions(TEXT, INTEGER, TEXT[]) TO gatherer;
        GRANT EXECUTE ON FUNCTION touch_ingest() TO gatherer, dedup_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO dedup_reader;
        GRANT INSERT, UPDATE ON sync_acks TO dedup_reader;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO gatherer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO dedup_reader;
    END IF;
    IF is_production THEN
        GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO deduplicator;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO deduplicator;
        GRANT EXECUTE ON FUNCTION ensure_partitions(INTEGER, INTEGER) TO deduplicator;
        GRANT EXECUTE ON FUNCTION book_lossy_windows(TEXT), book_state(TEXT, BIGINT, BIGINT),
                                  book_at(TEXT, BIGINT, INTEGER), to_us(TIMESTAMPTZ), from_us(BIGINT)
                                  TO deduplicator, analyst;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO deduplicator;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
    END IF;
END;
$$;
