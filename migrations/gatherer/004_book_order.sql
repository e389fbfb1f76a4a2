-- A total order of each market's deltas, and each snapshot's exact place in it (issue 19).
--
-- exchange_ts has millisecond precision, so several deltas of one market often share it; the
-- identity key (..., occurrence) only numbers IDENTICAL deltas. ts_rank orders ALL of a market's
-- deltas within one exchange_ts, in the order the exchange sent them. Every gatherer sees a
-- market's stream in the same order (it is the exchange's, not the connection's), so a rank is
-- the same on every gatherer that saw the whole millisecond; a gatherer stores NULL when it
-- cannot vouch for that (the first millisecond after a fresh subscription or a broken stream).
--
-- A snapshot's place in the stream (data-model.md hardening 6) is recorded as one boundary
-- delta, by its identity key (cut_ts, cut_side, cut_price, cut_delta, cut_occurrence):
--   cut_kind 'last'  the boundary is the last delta the snapshot includes;
--   cut_kind 'next'  the boundary is the first delta it does not include;
--   cut_kind 'quiet' no delta of the market reached the gatherer for a while after it (the
--                    snapshot sits in a quiet stretch of the stream; cut_* are NULL);
--   NULL             unknown (the subscription ended or broke before anything followed).
-- last_delta_ts / last_delta_occurrence are kept for older readers: set with cut_kind 'last'.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/004_book_order.sql

ALTER TABLE orderbook_deltas ADD COLUMN IF NOT EXISTS ts_rank SMALLINT;
COMMENT ON COLUMN orderbook_deltas.ts_rank IS
    'Position of this delta among its market''s deltas with the same exchange_ts, in the exchange''s order (0-based); NULL when this gatherer could not see the whole millisecond.';

ALTER TABLE orderbook_snapshots
    -- no CHECK here: TimescaleDB refuses new constraints on hypertables with compression enabled;
    -- the router writes only these values and production's column checks them on merge
    ADD COLUMN IF NOT EXISTS cut_kind TEXT,
    ADD COLUMN IF NOT EXISTS cut_ts BIGINT,
    ADD COLUMN IF NOT EXISTS cut_side TEXT,
    ADD COLUMN IF NOT EXISTS cut_price INTEGER,
    ADD COLUMN IF NOT EXISTS cut_delta BIGINT,
    ADD COLUMN IF NOT EXISTS cut_occurrence SMALLINT;
COMMENT ON COLUMN orderbook_snapshots.cut_kind IS
    'Where the snapshot sits in its market''s delta stream: ''last'' = the cut_* delta is the last it includes, ''next'' = the first it does not, ''quiet'' = no delta followed for a while, NULL = unknown.';
