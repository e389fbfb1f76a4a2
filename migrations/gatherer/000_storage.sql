-- Storage engine of this gatherer database, decided once, before 001 creates the event tables:
-- TimescaleDB hypertables or native daily range partitions. The choice is recorded in
-- gatherer_meta.storage, which 001 and every later file follow (001's own fallback, which tried
-- CREATE EXTENSION blind, never runs once this file has filled gatherer_meta).
--
-- Why a file numbered before 001: 001 is applied on every existing gatherer and the runner
-- refuses an edited applied file, so the decision moved here instead of being fixed in place. On
-- a database migrated before this file existed, gatherer_meta already has its row and this file
-- changes nothing (unless storage=timescaledb is demanded of a native database: then it refuses).
--
-- The choice comes from the session setting kalshi.storage (`kalshi-data migrate --storage`,
-- or by hand: PGOPTIONS='-c kalshi.storage=timescaledb' psql -v ON_ERROR_STOP=1 -f ...):
--   auto (default)  TimescaleDB when the extension is installed AND loaded through
--                   shared_preload_libraries; otherwise native partitions, with one NOTICE
--                   saying why when the extension is installed but not preloaded
--   timescaledb     TimescaleDB, or an error naming what is missing
--   native          native partitions, even where TimescaleDB is available
--
-- The preload is checked BEFORE CREATE EXTENSION: without it, CREATE EXTENSION timescaledb raises
-- FATAL, the server closes the connection, and no exception block can catch that.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/000_storage.sql

-- Same definition as in 001 (which keeps its IF NOT EXISTS copy).
CREATE TABLE IF NOT EXISTS gatherer_meta (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    db_uuid     UUID NOT NULL DEFAULT gen_random_uuid(),
    storage     TEXT NOT NULL CHECK (storage IN ('partitioned', 'timescaledb')),
    created_at  BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
);

DO $$
DECLARE
    wanted     TEXT := lower(coalesce(nullif(current_setting('kalshi.storage', true), ''), 'auto'));
    existing   TEXT := (SELECT storage FROM gatherer_meta);
    installed  BOOLEAN := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    preloaded  BOOLEAN;
BEGIN
    IF wanted NOT IN ('auto', 'native', 'timescaledb') THEN
        RAISE EXCEPTION 'kalshi.storage is %, expected auto, native or timescaledb', wanted;
    END IF;
    IF existing IS NOT NULL THEN
        IF wanted = 'timescaledb' AND existing <> 'timescaledb' THEN
            RAISE EXCEPTION 'storage timescaledb requested, but this database was created with native '
                            'partitions (gatherer_meta.storage = %); converting is not supported', existing;
        ELSIF wanted = 'native' AND existing <> 'partitioned' THEN
            RAISE EXCEPTION 'storage native requested, but this database was created with TimescaleDB';
        END IF;
        RETURN;
    END IF;

    -- shared_preload_libraries is readable by superusers and pg_read_all_settings only; otherwise
    -- fall back to a setting that only TimescaleDB's preloaded loader defines.
    BEGIN
        preloaded := 'timescaledb' = ANY (string_to_array(
                         replace(replace(current_setting('shared_preload_libraries'), ' ', ''), '"', ''), ','));
    EXCEPTION WHEN insufficient_privilege THEN
        preloaded := current_setting('timescaledb.max_background_workers', true) IS NOT NULL;
    END;

    IF wanted = 'timescaledb' AND NOT installed THEN
        RAISE EXCEPTION 'storage timescaledb requested, but the timescaledb extension is not installed on this server';
    ELSIF wanted = 'timescaledb' AND NOT preloaded THEN
        RAISE EXCEPTION 'storage timescaledb requested, but timescaledb is not in shared_preload_libraries '
                        '(add it in postgresql.conf and restart PostgreSQL)';
    ELSIF wanted = 'auto' AND installed AND NOT preloaded THEN
        RAISE NOTICE 'storage: timescaledb is installed but not in shared_preload_libraries: using native partitions '
                     '(preload it and recreate the database to use TimescaleDB, or migrate with storage '
                     'timescaledb to refuse instead)';
    END IF;

    IF wanted <> 'native' AND installed AND preloaded THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        INSERT INTO gatherer_meta (storage) VALUES ('timescaledb');
    ELSE
        INSERT INTO gatherer_meta (storage) VALUES ('partitioned');
    END IF;
END;
$$;
