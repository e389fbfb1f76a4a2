-- Daily range partitions for the event tables (both databases use this same file).
--
-- ensure_partitions() keeps days_ahead days of partitions ready (default 7; the services call it
-- at start and hourly) plus a DEFAULT partition per table, so an insert never fails for want of
-- a partition. It is SECURITY DEFINER so the unprivileged service roles may call it while the
-- DDL runs as the schema owner. On a TimescaleDB gatherer it does nothing (chunks are automatic).
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f 002_partitions.sql

CREATE OR REPLACE FUNCTION now_us() RETURNS BIGINT
LANGUAGE sql STABLE AS $$ SELECT (extract(epoch FROM now()) * 1000000)::bigint $$;

CREATE OR REPLACE FUNCTION partitioned_event_tables()
RETURNS TABLE (table_name TEXT, time_column TEXT)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('trades', 'exchange_ts'), ('orderbook_deltas', 'exchange_ts'),
           ('orderbook_snapshots', 'snapshot_ts'), ('tickers', 'exchange_ts')
$$;

CREATE OR REPLACE FUNCTION ensure_partitions(days_ahead INTEGER DEFAULT 7, days_back INTEGER DEFAULT 1)
RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    t        RECORD;
    d        DATE;
    lo       BIGINT;
    hi       BIGINT;
    pname    TEXT;
    created  INTEGER := 0;
BEGIN
    FOR t IN SELECT p.table_name FROM partitioned_event_tables() p
             JOIN pg_class c ON c.relname = p.table_name AND c.relkind = 'p'
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' LOOP
        IF to_regclass(t.table_name || '_default') IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t.table_name || '_default', t.table_name);
        END IF;
        FOR d IN SELECT generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date LOOP
            pname := t.table_name || '_p' || to_char(d, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(pname) IS NOT NULL;
            lo := (extract(epoch FROM d::timestamp AT TIME ZONE 'UTC') * 1000000)::bigint;
            hi := lo + 86400000000;
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                               pname, t.table_name, lo, hi);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                -- Rows for that day already sit in the DEFAULT partition: leave them there (the
                -- db_default_partition_rows metric alerts) rather than fail every other table.
                RAISE WARNING 'partition % not created: DEFAULT partition holds rows for that day', pname;
            END;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$$;

-- One row per partitioned table: rows stuck in DEFAULT and how many days ahead are ready.
CREATE OR REPLACE FUNCTION partition_status()
RETURNS TABLE (table_name TEXT, default_rows BIGINT, days_ahead INTEGER)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    t RECORD;
BEGIN
    FOR t IN SELECT p.table_name FROM partitioned_event_tables() p
             JOIN pg_class c ON c.relname = p.table_name AND c.relkind = 'p'
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' LOOP
        table_name := t.table_name;
        default_rows := 0;
        IF to_regclass(t.table_name || '_default') IS NOT NULL THEN
            EXECUTE format('SELECT count(*) FROM %I', t.table_name || '_default') INTO default_rows;
        END IF;
        SELECT coalesce(max(to_date(substring(c.relname FROM '_p(\d{8})$'), 'YYYYMMDD')) - current_date, -1)
          INTO days_ahead
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = t.table_name::regclass AND c.relname ~ '_p\d{8}$';
        RETURN NEXT;
    END LOOP;
END;
$$;

SELECT ensure_partitions();
