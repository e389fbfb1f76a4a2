-- Recovery that survives restarts (issue #15): the durable trade-backfill queue, and the unit
-- comments of the exchange-time columns.
--
-- backfill_queue: every window of trades that must be fetched over REST is one row, written
-- before any fetch starts, drained with backoff until done (state 'done' only once the rows it
-- fetched are committed, or REST proved there were none). A restart finds its pending rows and
-- carries on. window_from/window_to are µs on this gatherer's receive clock; the REST query adds
-- the overlap and converts to exchange time. coverage_event is the trade_backfill row of the
-- coverage ledger this window closes; linked holds other ledger rows it recovers (the ws_down of
-- a trade socket), whole, so a restart can close them too. Done rows are kept as history (one
-- per sweep: ~1,440 a day).
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/006_recovery.sql

CREATE TABLE IF NOT EXISTS backfill_queue (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope           TEXT    NOT NULL CHECK (scope IN ('market', 'global')),
    ticker          TEXT,
    window_from     BIGINT  NOT NULL,
    window_to       BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    BIGINT  NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    trades          BIGINT,
    last_error      TEXT,
    coverage_event  UUID,
    linked          JSONB   NOT NULL DEFAULT '[]'::jsonb,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    done_at         BIGINT,
    CHECK (window_to >= window_from),
    CHECK ((scope = 'global') = (ticker IS NULL))
);
COMMENT ON TABLE backfill_queue IS
    'Durable REST trade-backfill windows (µs, gatherer receive clock): pending until the fetched trades are committed; retried with backoff, across restarts.';
CREATE INDEX IF NOT EXISTS backfill_queue_pending_idx ON backfill_queue (next_attempt) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS backfill_queue_sweep_idx ON backfill_queue (reason, window_to DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gatherer') THEN
        GRANT SELECT, INSERT, UPDATE ON backfill_queue TO gatherer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dedup_reader') THEN
        GRANT SELECT ON backfill_queue TO dedup_reader;
    END IF;
END;
$$;

-- data-model.md: every exchange time has one precision, whichever payload version carried it.
COMMENT ON COLUMN orderbook_deltas.exchange_ts IS
    'Exchange time of the delta in microseconds, normalised to millisecond precision (WS ts_ms; the legacy ts RFC 3339 fraction is cut to whole ms), so every payload version and every gatherer gives one delta the same identity key.';
COMMENT ON COLUMN tickers.exchange_ts IS
    'Exchange time of the ticker update in microseconds, normalised to millisecond precision (ts_ms; legacy ts/time cut to whole ms), so every payload version gives one update the same key.';
