-- Reconciliation of production against Kalshi's own trade history (issue 20; kalshi_data/reconcile.py).
--
-- One reconcile_runs row per run of `kalshi-data reconcile --day D`. A run walks the day in
-- slices (slice_s seconds each) and records its totals after every slice, so an interrupted run
-- (finished IS NULL) is resumed at slices_done by the next run of the same day. Units as
-- elsewhere: *_ts / started / finished are BIGINT microseconds since the Unix epoch.
--
-- "Is yesterday complete?" (docs/runbook.md):
--   SELECT day, finished IS NOT NULL AS done, missing, fixed, missing - fixed AS still_missing,
--          extra, mismatched FROM reconcile_runs
--    WHERE day = current_date - 1 ORDER BY run_id DESC LIMIT 1;
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/production/004_reconcile.sql

CREATE TABLE IF NOT EXISTS reconcile_runs (
    run_id             BIGSERIAL PRIMARY KEY,
    day                DATE    NOT NULL,
    started            BIGINT  NOT NULL,
    finished           BIGINT,                     -- NULL: running, or interrupted (resumable)
    window_end         BIGINT  NOT NULL,           -- compared up to here (< end of day: a partial day)
    slice_s            INTEGER NOT NULL CHECK (slice_s > 0),
    slices_total       INTEGER NOT NULL,
    slices_done        INTEGER NOT NULL DEFAULT 0,
    kalshi_trades      BIGINT  NOT NULL DEFAULT 0, -- trades Kalshi lists for the day
    production_trades  BIGINT  NOT NULL DEFAULT 0, -- trades production holds for the day
    missing            BIGINT  NOT NULL DEFAULT 0, -- on Kalshi, not in production (when found)
    extra              BIGINT  NOT NULL DEFAULT 0, -- in production, not on Kalshi
    mismatched         BIGINT  NOT NULL DEFAULT 0, -- same trade_id, different price, count or side
    fixed              BIGINT  NOT NULL DEFAULT 0, -- missing ones a gatherer backfill brought in
    rest_tokens        BIGINT  NOT NULL DEFAULT 0, -- REST tokens the run spent (all its sessions)
    rest_pages         BIGINT  NOT NULL DEFAULT 0,
    by_series          JSONB   NOT NULL DEFAULT '{}'::jsonb, -- series -> {kalshi, production, missing, extra, mismatched}
    error              TEXT                        -- why the last session of the run stopped early
);
CREATE INDEX IF NOT EXISTS reconcile_runs_day_idx ON reconcile_runs (day, run_id);

-- The differing trades of each run (normally none): what the fix pass backfills and what an
-- operator inspects. kind: missing | extra | mismatched; detail holds both sides of a mismatch.
CREATE TABLE IF NOT EXISTS reconcile_trades (
    run_id       BIGINT  NOT NULL REFERENCES reconcile_runs (run_id) ON DELETE CASCADE,
    trade_id     UUID    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('missing', 'extra', 'mismatched')),
    ticker       TEXT    NOT NULL,
    exchange_ts  BIGINT  NOT NULL,
    fixed        BOOLEAN NOT NULL DEFAULT false,
    detail       JSONB,
    PRIMARY KEY (run_id, trade_id, kind)
);
