-- Units of the exchange-time columns (issue #15): one precision for every exchange time,
-- whichever payload version carried it (data-model.md), stated where analysts look.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/production/005_recovery.sql

COMMENT ON COLUMN orderbook_deltas.exchange_ts IS
    'Exchange time of the delta in microseconds at millisecond precision (WS ts_ms; legacy ts cut to whole ms): one delta has one key on every gatherer.';
COMMENT ON COLUMN tickers.exchange_ts IS
    'Exchange time of the ticker update in microseconds at millisecond precision (ts_ms; legacy ts/time cut to whole ms).';
COMMENT ON TABLE rejected_rows IS
    'Rows the deduplicator could not merge (production refused them: a CHECK, a bad value), isolated by bisecting the page, with the reason and the row as JSON; the cursor moved past them.';
