-- The order book of any market at any instant, rebuilt exactly from production (issue 19).
--
-- Columns (same meaning as on the gatherers, migrations/gatherer/004_book_order.sql):
--   orderbook_deltas.ts_rank       a delta's position among its market's deltas with the same
--                                  exchange_ts, in the exchange's order; NULL = not known. The
--                                  deduplicator keeps a known rank over NULL.
--   orderbook_snapshots.cut_*      the snapshot's place in the delta stream: the identity of the
--                                  last delta it includes ('last') or the first it does not
--                                  ('next'); 'quiet' = no delta followed for a while; NULL = unknown.
--
-- The total order of a market's deltas: (exchange_ts, ts_rank NULLS LAST, side, price, delta,
-- occurrence). Where ts_rank is known it is the exchange's order; where it is not, the fixed
-- tail of the key still orders the rows, and a book at an instant does not depend on it: a book
-- is the snapshot plus the SUM of the deltas after it, and within one millisecond only the
-- snapshot's cut needs the exchange's order (checked below).
--
-- book_state(ticker, at_us) returns one row: the book of ``ticker`` after every delta stamped at
-- or before ``at_us`` (µs; exchange times have millisecond precision, so an instant means "after
-- everything of its millisecond"), as yes/no JSONB arrays of [price, size] ascending by price,
-- with ``uncertain`` and its ``reasons``:
--   coverage_gap            between the snapshot and the instant lies a window in which no
--                           gatherer's orderbook stream was intact (coverage_events): deltas
--                           there may be lost everywhere;
--   snapshot_place_unknown  no snapshot with an exact place in the stream could be used;
--   negative_level          the sums drove a level below zero (an inconsistent record);
--   no_snapshot             no WebSocket snapshot at or before the instant (empty book returned).
-- book_at(ticker, at_us[, depth]) returns the same book as rows, best price first per side.
--
-- The base is the newest WebSocket snapshot (REST snapshots have no place in the stream) with
-- snapshot_ts <= at_us whose cut is exact:
--   'last'/'next': the boundary delta is in production and ordered against every other delta of
--                  its millisecond (ts_rank known, or it is alone there);
--   'quiet'/NULL:  production holds no delta of the market within p_quiet_us of snapshot_ts, so
--                  the cut is the snapshot's time (a snapshot is assumed to reach a gatherer within
--                  p_quiet_us of when the exchange made it; NULL adds snapshot_place_unknown).
-- Then book = snapshot + sum(deltas after the cut, stamped <= at_us) - sum(deltas before the cut
-- stamped after at_us): exact whichever side of the instant the cut falls.
--
-- kalshi_data/books.py (used by ``kalshi-data book``) implements the same rules over the same
-- rows in Python; tests/shared/kalshi/test_replay.py checks the two against a plain replay.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/production/003_book_rebuild.sql

ALTER TABLE orderbook_deltas ADD COLUMN IF NOT EXISTS ts_rank SMALLINT;
COMMENT ON COLUMN orderbook_deltas.ts_rank IS
    'Position of this delta among its market''s deltas with the same exchange_ts, in the exchange''s order (0-based); NULL when no gatherer could vouch for it.';

ALTER TABLE orderbook_snapshots
    ADD COLUMN IF NOT EXISTS cut_kind TEXT CHECK (cut_kind IN ('last', 'next', 'quiet')),
    ADD COLUMN IF NOT EXISTS cut_ts BIGINT,
    ADD COLUMN IF NOT EXISTS cut_side TEXT,
    ADD COLUMN IF NOT EXISTS cut_price INTEGER,
    ADD COLUMN IF NOT EXISTS cut_delta BIGINT,
    ADD COLUMN IF NOT EXISTS cut_occurrence SMALLINT;
COMMENT ON COLUMN orderbook_snapshots.cut_kind IS
    'Where the snapshot sits in its market''s delta stream: ''last'' = the cut_* delta is the last it includes, ''next'' = the first it does not, ''quiet'' = no delta followed for a while, NULL = unknown.';

-- Times for people: every time column is µs since the epoch (data-model.md); these two convert.
--   SELECT count(*) FROM trades WHERE exchange_ts >= to_us('2026-11-24') AND exchange_ts < to_us('2026-11-25');
--   SELECT from_us(exchange_ts), yes_price FROM trades ORDER BY exchange_ts DESC LIMIT 5;
CREATE OR REPLACE FUNCTION to_us(t TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (extract(epoch FROM t) * 1000000)::bigint $$;
CREATE OR REPLACE FUNCTION from_us(us BIGINT) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT to_timestamp(us / 1000000.0) $$;

-- Windows (µs) in which no gatherer's orderbook stream for p_ticker was intact: the intersection,
-- over the fleet (gatherers with an orderbook_deltas cursor; without cursors, those with coverage
-- rows), of each gatherer's book-relevant coverage windows for the market or its whole
-- connection/process, recovered or not (a resync recovers the book, never the deltas missed
-- meanwhile). A window reaches back 1 s: frames queued just before an outage was noticed were
-- lost too.
CREATE OR REPLACE FUNCTION book_lossy_windows(p_ticker TEXT)
RETURNS int8multirange
LANGUAGE sql STABLE AS $$
    WITH fleet AS (
        SELECT gatherer_id FROM sync_cursors WHERE table_name = 'orderbook_deltas'
        UNION
        SELECT gatherer_id FROM coverage_events
         WHERE NOT EXISTS (SELECT 1 FROM sync_cursors WHERE table_name = 'orderbook_deltas')
    ), mine AS (
        SELECT c.gatherer_id,
               range_agg(int8range(c.window_start - 1000000, c.window_end, '[]')) AS w
          FROM coverage_events c
         WHERE (c.ticker = p_ticker OR c.scope <> 'market')
           AND c.kind <> 'trade_backfill'
           AND (c.kind <> 'ws_down' OR coalesce(c.detail->>'role', 'orderbook') = 'orderbook')
         GROUP BY c.gatherer_id
    )
    SELECT coalesce(range_intersect_agg(coalesce(m.w, '{}'::int8multirange)), '{}'::int8multirange)
      FROM fleet f LEFT JOIN mine m USING (gatherer_id)
$$;

CREATE OR REPLACE FUNCTION book_state(p_ticker TEXT, p_at BIGINT, p_quiet_us BIGINT DEFAULT 3000000)
RETURNS TABLE (ticker TEXT, at_us BIGINT, yes_levels JSONB, no_levels JSONB, uncertain BOOLEAN,
               reasons TEXT[], snapshot_ts BIGINT, snapshot_source TEXT, snapshot_gatherer TEXT,
               cut TEXT, cut_ts BIGINT, deltas_applied BIGINT)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    s        RECORD;
    base     RECORD;
    have     BOOLEAN := false;
    b_rank   SMALLINT;
    by_time  BOOLEAN;
    t_cut    BIGINT;
    incl_b   BOOLEAN;
    why      TEXT[] := '{}';
    lo       BIGINT;
    hi       BIGINT;
    y        JSONB;
    n        JSONB;
    moved    BIGINT;
    neg      BOOLEAN;
BEGIN
    FOR s IN
        SELECT o.* FROM orderbook_snapshots o
         WHERE o.ticker = p_ticker AND o.source <> 'rest' AND o.snapshot_ts <= p_at
         ORDER BY o.snapshot_ts DESC, o.gatherer_id, o.source
         LIMIT 256
    LOOP
        IF s.cut_kind IN ('last', 'next') THEN
            SELECT d.ts_rank INTO b_rank FROM orderbook_deltas d
             WHERE d.ticker = p_ticker AND d.exchange_ts = s.cut_ts AND d.side = s.cut_side
               AND d.price = s.cut_price AND d.delta = s.cut_delta AND d.occurrence = s.cut_occurrence;
            CONTINUE WHEN NOT FOUND;
            -- within its millisecond the boundary is ordered only by ts_rank
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM orderbook_deltas d
                 WHERE d.ticker = p_ticker AND d.exchange_ts = s.cut_ts
                   AND (d.side, d.price, d.delta, d.occurrence)
                       IS DISTINCT FROM (s.cut_side, s.cut_price, s.cut_delta, s.cut_occurrence)
                   AND (d.ts_rank IS NULL OR b_rank IS NULL));
            by_time := false;
            t_cut := s.cut_ts;
            incl_b := s.cut_kind = 'last';
        ELSE
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM orderbook_deltas d
                 WHERE d.ticker = p_ticker
                   AND d.exchange_ts BETWEEN s.snapshot_ts - p_quiet_us AND s.snapshot_ts + p_quiet_us);
            by_time := true;
            t_cut := s.snapshot_ts;
            IF s.cut_kind IS NULL THEN
                why := why || 'snapshot_place_unknown'::text;
            END IF;
        END IF;
        base := s;
        have := true;
        EXIT;
    END LOOP;

    IF NOT have THEN
        SELECT o.* INTO base FROM orderbook_snapshots o
         WHERE o.ticker = p_ticker AND o.source <> 'rest' AND o.snapshot_ts <= p_at
         ORDER BY o.snapshot_ts DESC, o.gatherer_id, o.source LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY SELECT p_ticker, p_at, '[]'::jsonb, '[]'::jsonb, true,
                                ARRAY['no_snapshot']::text[], NULL::bigint, NULL::text, NULL::text,
                                NULL::text, NULL::bigint, 0::bigint;
            RETURN;
        END IF;
        by_time := true;
        t_cut := base.snapshot_ts;
        why := why || 'snapshot_place_unknown'::text;
    END IF;

    -- Whole milliseconds on one side of the cut need no order: summed in one range scan, added
    -- when after the cut (up to the instant), subtracted when before it (after the instant).
    -- Only the cut's own millisecond is classified delta by delta.
    IF p_at >= t_cut THEN
        lo := t_cut;
        hi := p_at + 1;
    ELSE
        lo := p_at;
        hi := t_cut;
    END IF;
    WITH moves AS (
        SELECT x.side, x.price, CASE WHEN p_at >= t_cut THEN x.delta ELSE -x.delta END AS v
          FROM orderbook_deltas x
         WHERE x.ticker = p_ticker AND x.exchange_ts > lo AND x.exchange_ts < hi
        UNION ALL
        SELECT c.side, c.price, CASE WHEN c.incl THEN -c.delta ELSE c.delta END
          FROM (SELECT x.side, x.price, x.delta, x.exchange_ts,
                       CASE WHEN by_time THEN true
                            WHEN (x.side, x.price, x.delta, x.occurrence)
                                 = (base.cut_side, base.cut_price, base.cut_delta, base.cut_occurrence) THEN incl_b
                            ELSE x.ts_rank < b_rank
                       END AS incl
                  FROM orderbook_deltas x
                 WHERE x.ticker = p_ticker AND x.exchange_ts = t_cut) c
         WHERE (c.incl AND c.exchange_ts > p_at) OR (NOT c.incl AND c.exchange_ts <= p_at)
    ), agg AS (
        SELECT l.side, l.price, sum(l.v)::bigint AS size, sum(l.n)::bigint AS n FROM (
            SELECT 'yes' AS side, (e->>0)::int AS price, (e->>1)::bigint AS v, 0 AS n
              FROM jsonb_array_elements(base.yes_levels) e WHERE (e->>1)::bigint > 0
            UNION ALL
            SELECT 'no', (e->>0)::int, (e->>1)::bigint, 0
              FROM jsonb_array_elements(base.no_levels) e WHERE (e->>1)::bigint > 0
            UNION ALL
            SELECT m.side, m.price, m.v, 1 FROM moves m) l
         GROUP BY l.side, l.price
    )
    SELECT coalesce(jsonb_agg(jsonb_build_array(agg.price, agg.size) ORDER BY agg.price)
                        FILTER (WHERE agg.side = 'yes' AND agg.size <> 0), '[]'::jsonb),
           coalesce(jsonb_agg(jsonb_build_array(agg.price, agg.size) ORDER BY agg.price)
                        FILTER (WHERE agg.side = 'no' AND agg.size <> 0), '[]'::jsonb),
           coalesce(bool_or(agg.size < 0), false),
           coalesce(sum(agg.n), 0)::bigint
      INTO y, n, neg, moved
      FROM agg;

    IF neg THEN
        why := why || 'negative_level'::text;
    END IF;
    -- the times whose deltas the answer depends on beyond the snapshot (deltas stamped at a
    -- time cut are in the snapshot; at a position cut's millisecond some may follow it)
    IF p_at >= t_cut THEN
        lo := CASE WHEN by_time THEN t_cut + 1 ELSE t_cut END;
        hi := p_at;
    ELSE
        lo := p_at + 1;
        hi := t_cut;
    END IF;
    IF lo <= hi AND book_lossy_windows(p_ticker) && int8range(lo, hi, '[]') THEN
        why := why || 'coverage_gap'::text;
    END IF;
    RETURN QUERY SELECT p_ticker, p_at, y, n, cardinality(why) > 0, why, base.snapshot_ts,
                        base.source, base.gatherer_id,
                        CASE WHEN by_time THEN 'time' ELSE base.cut_kind END,
                        t_cut, moved;
END;
$$;

-- The book as rows: one per level, best price first on each side (Kalshi books are bids on both
-- sides: the best yes bid is the highest yes price). depth NULL = every level. An empty book
-- gives no rows; book_state() always gives the uncertainty.
CREATE OR REPLACE FUNCTION book_at(p_ticker TEXT, p_at BIGINT, p_depth INTEGER DEFAULT NULL)
RETURNS TABLE (side TEXT, level INTEGER, price INTEGER, size BIGINT, uncertain BOOLEAN)
LANGUAGE sql STABLE AS $$
    SELECT l.side, l.level::int, l.price, l.size, st.uncertain
      FROM book_state(p_ticker, p_at) st
     CROSS JOIN LATERAL (
        SELECT x.side, row_number() OVER (PARTITION BY x.side ORDER BY x.price DESC) AS level,
               x.price, x.size
          FROM (SELECT 'yes' AS side, (e->>0)::int AS price, (e->>1)::bigint AS size
                  FROM jsonb_array_elements(st.yes_levels) e
                UNION ALL
                SELECT 'no', (e->>0)::int, (e->>1)::bigint FROM jsonb_array_elements(st.no_levels) e) x
     ) l
     WHERE p_depth IS NULL OR l.level <= p_depth
     ORDER BY l.side DESC, l.level
$$;
