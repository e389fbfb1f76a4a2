-- Production schema (database kalshi_prod, RDS PostgreSQL): the merged record of all gatherers.
--
-- Units (data-model.md): every *_ts / *_at / window_* column is BIGINT microseconds since the
-- Unix epoch; prices are INTEGER dollars x 10,000; sizes are BIGINT contracts x 100.
-- Each event table's primary key is its identity across gatherers (data-model.md), always with
-- ticker where the row belongs to a market, so the schema can later be sharded by ticker.
-- Event rows also carry gatherer_id (who delivered the row first) and merged_at.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/production/001_schema.sql
-- (then 002_partitions.sql, which creates today's and the next days' partitions).

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
    gatherer_id         TEXT    NOT NULL,
    merged_at           BIGINT  NOT NULL,
    PRIMARY KEY (ticker, exchange_ts, trade_id)
) PARTITION BY RANGE (exchange_ts);
COMMENT ON COLUMN trades.exchange_ts IS
    'Exchange time of the trade in microseconds at millisecond precision; the first-seen value wins (trade_ids).';

-- Hardening rule 1: one row per trade_id however many paths or gatherers saw it.
CREATE TABLE IF NOT EXISTS trade_ids (
    trade_id     UUID   PRIMARY KEY,
    exchange_ts  BIGINT NOT NULL,
    ticker       TEXT   NOT NULL
);

CREATE TABLE IF NOT EXISTS orderbook_deltas (
    ticker       TEXT     NOT NULL,
    exchange_ts  BIGINT   NOT NULL,
    side         TEXT     NOT NULL CHECK (side IN ('yes', 'no')),
    price        INTEGER  NOT NULL CHECK (price BETWEEN 0 AND 10000),
    delta        BIGINT   NOT NULL,
    occurrence   SMALLINT NOT NULL DEFAULT 0,
    seq          BIGINT,
    received_at  BIGINT   NOT NULL,
    gatherer_id  TEXT     NOT NULL,
    merged_at    BIGINT   NOT NULL,
    PRIMARY KEY (ticker, exchange_ts, side, price, delta, occurrence)
) PARTITION BY RANGE (exchange_ts);

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
    gatherer_id            TEXT     NOT NULL,
    merged_at              BIGINT   NOT NULL,
    PRIMARY KEY (ticker, snapshot_ts, source, gatherer_id)
) PARTITION BY RANGE (snapshot_ts);

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
    gatherer_id           TEXT    NOT NULL,
    merged_at             BIGINT  NOT NULL,
    PRIMARY KEY (ticker, exchange_ts, content_hash)
) PARTITION BY RANGE (exchange_ts);

CREATE TABLE IF NOT EXISTS coverage_events (
    gatherer_id   TEXT    NOT NULL,
    event_id      UUID    NOT NULL,
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
    merged_at     BIGINT  NOT NULL,
    PRIMARY KEY (gatherer_id, event_id)
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
    gatherer_id          TEXT   NOT NULL,
    merged_at            BIGINT NOT NULL
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
    gatherer_id          TEXT   NOT NULL,
    merged_at            BIGINT NOT NULL
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
    gatherer_id          TEXT   NOT NULL,
    merged_at            BIGINT NOT NULL
);

-- Where each gatherer's rows of each table are merged up to, in that gatherer's ingest order
-- (cursor_xid, cursor_seq). Moves only in the transaction that wrote the rows it covers.
CREATE TABLE IF NOT EXISTS sync_cursors (
    gatherer_id     TEXT   NOT NULL,
    table_name      TEXT   NOT NULL,
    db_uuid         UUID   NOT NULL,
    cursor_xid      BIGINT NOT NULL DEFAULT 0,
    cursor_seq      BIGINT NOT NULL DEFAULT 0,
    rows_merged     BIGINT NOT NULL DEFAULT 0,
    rows_duplicate  BIGINT NOT NULL DEFAULT 0,
    merged_through  BIGINT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (gatherer_id, table_name)
);

-- Rows the deduplicator could not merge (bad value), with the reason: counted and alerted.
CREATE TABLE IF NOT EXISTS rejected_rows (
    id           BIGSERIAL PRIMARY KEY,
    gatherer_id  TEXT,
    table_name   TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
);

CREATE INDEX IF NOT EXISTS trades_received_idx ON trades (received_at);
CREATE INDEX IF NOT EXISTS trades_exchange_ts_idx ON trades (exchange_ts);
CREATE INDEX IF NOT EXISTS snapshots_ticker_idx ON orderbook_snapshots (ticker, snapshot_ts);
CREATE INDEX IF NOT EXISTS coverage_ticker_idx ON coverage_events (ticker, window_start);
CREATE INDEX IF NOT EXISTS markets_status_idx ON markets (status);
