-- Gatherer-local schema (database kalshi_ts): what one gatherer saw.
--
-- Units (data-model.md): every *_ts / *_at / window_* column is BIGINT microseconds since the
-- Unix epoch; prices are INTEGER dollars x 10,000 ("0.5600" -> 5600); sizes are BIGINT
-- contracts x 100 ("12.00" -> 1200).
--
-- Storage: plain PostgreSQL >= 14 gets native daily range partitions (plus a DEFAULT partition);
-- when the timescaledb extension can be created, the same tables become hypertables with 1-day
-- chunks instead. gatherer_meta.storage records which engine this database uses.
--
-- Every row carries ingest_xid (the inserting/updating transaction, xid8) and ingest_seq (a
-- sequence): the deduplicator's cursor reads only rows whose ingest_xid is below the oldest
-- in-flight transaction, in (ingest_xid, ingest_seq) order, so a late commit can never fall
-- behind its cursor (see deduplicator/cursors.py).
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/001_schema.sql

CREATE SEQUENCE IF NOT EXISTS ingest_seq;

-- Wall clock in the schema's unit (µs); also TimescaleDB's integer "now" for these tables.
CREATE OR REPLACE FUNCTION now_us() RETURNS BIGINT
LANGUAGE sql STABLE AS $$ SELECT (extract(epoch FROM now()) * 1000000)::bigint $$;

CREATE TABLE IF NOT EXISTS gatherer_meta (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    db_uuid     UUID NOT NULL DEFAULT gen_random_uuid(),
    storage     TEXT NOT NULL CHECK (storage IN ('partitioned', 'timescaledb')),
    created_at  BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
);
COMMENT ON TABLE gatherer_meta IS
    'Identity of this gatherer database: the deduplicator refuses a cursor whose db_uuid differs (rebuilt or restored database).';

-- Re-stamps ingest_xid/ingest_seq when a row is updated in place (reference tables,
-- coverage_events), so the deduplicator sees the new version past its cursor.
CREATE OR REPLACE FUNCTION touch_ingest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.ingest_xid := pg_current_xact_id();
    NEW.ingest_seq := nextval('ingest_seq');
    RETURN NEW;
END;
$$;

DO $$
DECLARE
    use_ts  BOOLEAN := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    part    TEXT;
    ingest  CONSTANT TEXT := 'ingest_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), '
                          || 'ingest_seq BIGINT NOT NULL DEFAULT nextval(''ingest_seq'')';
BEGIN
    IF EXISTS (SELECT 1 FROM gatherer_meta) THEN
        use_ts := (SELECT storage = 'timescaledb' FROM gatherer_meta);
    ELSIF use_ts THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN others THEN
            -- Listed but not loadable (e.g. not in shared_preload_libraries): plain partitions.
            RAISE NOTICE 'timescaledb not usable (%); using native partitioning', SQLERRM;
            use_ts := false;
        END;
    END IF;
    INSERT INTO gatherer_meta (storage)
    VALUES (CASE WHEN use_ts THEN 'timescaledb' ELSE 'partitioned' END)
    ON CONFLICT (singleton) DO NOTHING;

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS trades (
            trade_id            UUID    NOT NULL,
            ticker              TEXT    NOT NULL,
            exchange_ts         BIGINT  NOT NULL,
            yes_price           INTEGER NOT NULL CHECK (yes_price BETWEEN 0 AND 10000),
            no_price            INTEGER NOT NULL CHECK (no_price BETWEEN 0 AND 10000),
            count               BIGINT  NOT NULL CHECK (count > 0),
            taker_side          TEXT    CHECK (taker_side IN ('yes', 'no')),
            taker_outcome_side  TEXT,
            taker_book_side     TEXT,
            is_block_trade      BOOLEAN,
            source              TEXT    NOT NULL CHECK (source IN ('ws', 'rest')),
            received_at         BIGINT  NOT NULL,
            %s,
            UNIQUE (ticker, exchange_ts, trade_id)
        ) %s$ddl$, ingest, CASE WHEN use_ts THEN '' ELSE 'PARTITION BY RANGE (exchange_ts)' END);

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS orderbook_deltas (
            ticker       TEXT     NOT NULL,
            exchange_ts  BIGINT   NOT NULL,
            side         TEXT     NOT NULL CHECK (side IN ('yes', 'no')),
            price        INTEGER  NOT NULL CHECK (price BETWEEN 0 AND 10000),
            delta        BIGINT   NOT NULL,
            occurrence   SMALLINT NOT NULL DEFAULT 0,
            seq          BIGINT,
            sid          BIGINT,
            received_at  BIGINT   NOT NULL,
            %s,
            UNIQUE (ticker, exchange_ts, side, price, delta, occurrence)
        ) %s$ddl$, ingest, CASE WHEN use_ts THEN '' ELSE 'PARTITION BY RANGE (exchange_ts)' END);

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS orderbook_snapshots (
            ticker                 TEXT     NOT NULL,
            snapshot_ts            BIGINT   NOT NULL,
            source                 TEXT     NOT NULL CHECK (source IN ('ws', 'rest', 'resync')),
            yes_levels             JSONB    NOT NULL,
            no_levels              JSONB    NOT NULL,
            seq                    BIGINT,
            last_delta_ts          BIGINT,
            last_delta_occurrence  SMALLINT,
            received_at            BIGINT   NOT NULL,
            %s,
            UNIQUE (ticker, snapshot_ts, source)
        ) %s$ddl$, ingest, CASE WHEN use_ts THEN '' ELSE 'PARTITION BY RANGE (snapshot_ts)' END);

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS tickers (
            ticker                TEXT    NOT NULL,
            exchange_ts           BIGINT  NOT NULL,
            yes_bid               INTEGER,
            yes_ask               INTEGER,
            price                 INTEGER,
            volume                BIGINT,
            open_interest         BIGINT,
            dollar_volume         BIGINT,
            dollar_open_interest  BIGINT,
            content_hash          BIGINT  NOT NULL,
            received_at           BIGINT  NOT NULL,
            %s,
            UNIQUE (ticker, exchange_ts, content_hash)
        ) %s$ddl$, ingest, CASE WHEN use_ts THEN '' ELSE 'PARTITION BY RANGE (exchange_ts)' END);

    IF use_ts THEN
        -- 1-day chunks in microseconds; compression after 1 day. Retention is our own
        -- ack-aware job (drop_expired_partitions), never the built-in age policy.
        FOREACH part IN ARRAY ARRAY['trades:exchange_ts', 'orderbook_deltas:exchange_ts',
                                    'orderbook_snapshots:snapshot_ts', 'tickers:exchange_ts'] LOOP
            PERFORM create_hypertable(split_part(part, ':', 1)::regclass, split_part(part, ':', 2),
                                      chunk_time_interval => 86400000000::bigint,
                                      if_not_exists => true);
            PERFORM set_integer_now_func(split_part(part, ':', 1)::regclass, 'now_us', replace_if_exists => true);
        END LOOP;
    END IF;
END;
$$;

COMMENT ON COLUMN trades.exchange_ts IS
    'Exchange time of the trade in microseconds, normalised to millisecond precision (the precision every source carries: WS ts_ms, REST created_time), so every path and every gatherer yields the same value.';
COMMENT ON COLUMN orderbook_deltas.occurrence IS
    'Numbers identical (ticker, exchange_ts, side, price, delta) deltas in arrival order, so the identity key is the same on every gatherer.';

-- Hardening rule 1: trade identity is trade_id alone; first-seen exchange_ts wins.
CREATE TABLE IF NOT EXISTS trade_ids (
    trade_id     UUID   PRIMARY KEY,
    exchange_ts  BIGINT NOT NULL,
    ticker       TEXT   NOT NULL
);

CREATE TABLE IF NOT EXISTS coverage_events (
    event_id      UUID    PRIMARY KEY,
    gatherer_id   TEXT    NOT NULL,
    scope         TEXT    NOT NULL CHECK (scope IN ('market', 'connection', 'process')),
    ticker        TEXT,
    kind          TEXT    NOT NULL CHECK (kind IN ('seq_gap', 'ws_down', 'process_down', 'resync',
                                                   'trade_backfill', 'book_mismatch')),
    window_start  BIGINT  NOT NULL,
    window_end    BIGINT,
    recovered     BOOLEAN NOT NULL DEFAULT false,
    detail        JSONB   NOT NULL DEFAULT '{}'::jsonb,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    ingest_xid    xid8    NOT NULL DEFAULT pg_current_xact_id(),
    ingest_seq    BIGINT  NOT NULL DEFAULT nextval('ingest_seq')
);

CREATE TABLE IF NOT EXISTS series (
    series_ticker        TEXT   PRIMARY KEY,
    title                TEXT,
    category             TEXT,
    frequency            TEXT,
    exchange_updated_ts  BIGINT,
    raw                  JSONB  NOT NULL,
    received_at          BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    ingest_xid           xid8   NOT NULL DEFAULT pg_current_xact_id(),
    ingest_seq           BIGINT NOT NULL DEFAULT nextval('ingest_seq')
);

CREATE TABLE IF NOT EXISTS events (
    event_ticker         TEXT   PRIMARY KEY,
    series_ticker        TEXT,
    title                TEXT,
    sub_title            TEXT,
    category             TEXT,
    mutually_exclusive   BOOLEAN,
    status               TEXT,
    exchange_updated_ts  BIGINT,
    raw                  JSONB  NOT NULL,
    received_at          BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    ingest_xid           xid8   NOT NULL DEFAULT pg_current_xact_id(),
    ingest_seq           BIGINT NOT NULL DEFAULT nextval('ingest_seq')
);

CREATE TABLE IF NOT EXISTS markets (
    ticker               TEXT   PRIMARY KEY,
    event_ticker         TEXT,
    series_ticker        TEXT,
    market_type          TEXT,
    title                TEXT,
    subtitle             TEXT,
    status               TEXT,
    open_time            BIGINT,
    close_time           BIGINT,
    expiration_time      BIGINT,
    result               TEXT,
    exchange_updated_ts  BIGINT,
    raw                  JSONB  NOT NULL,
    received_at          BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    ingest_xid           xid8   NOT NULL DEFAULT pg_current_xact_id(),
    ingest_seq           BIGINT NOT NULL DEFAULT nextval('ingest_seq')
);

-- Rows that could not be stored (CHECK failure, bad value) with the reason: counted, alerted.
CREATE TABLE IF NOT EXISTS rejected_rows (
    id           BIGSERIAL PRIMARY KEY,
    table_name   TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    received_at  BIGINT,
    created_at   BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
);

-- What each consumer (deduplicator) has merged, in cursor units: retention drops a partition
-- only when every configured consumer has acknowledged past its newest row.
CREATE TABLE IF NOT EXISTS sync_acks (
    consumer        TEXT   NOT NULL,
    table_name      TEXT   NOT NULL,
    cursor_xid      BIGINT NOT NULL,
    cursor_seq      BIGINT NOT NULL,
    merged_through  BIGINT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (consumer, table_name)
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['coverage_events', 'series', 'events', 'markets'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = t || '_touch_ingest') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION touch_ingest()',
                           t || '_touch_ingest', t);
        END IF;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['trades', 'orderbook_deltas', 'orderbook_snapshots', 'tickers',
                             'coverage_events', 'series', 'events', 'markets'] LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (ingest_xid, ingest_seq)', t || '_ingest_idx', t);
    END LOOP;
END;
$$;

CREATE INDEX IF NOT EXISTS trades_received_idx ON trades (received_at);
CREATE INDEX IF NOT EXISTS trades_exchange_ts_idx ON trades (exchange_ts);
CREATE INDEX IF NOT EXISTS coverage_ticker_idx ON coverage_events (ticker, window_start);
CREATE INDEX IF NOT EXISTS markets_status_idx ON markets (status);
