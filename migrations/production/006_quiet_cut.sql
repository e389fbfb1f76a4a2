-- A 'quiet' snapshot's place (issue #15's recovery truth; the rule beside shared/kalshi/replay.py).
--
-- A gatherer writes a snapshot as 'quiet' after holding it and seeing no delta of its market
-- follow it on the same subscription (gatherer/router.py HOLD_US). Every delta the exchange made
-- after the snapshot would have followed it there, so every delta stamped at or before the
-- snapshot's time is already in it. 003 refused a quiet snapshot as a base whenever any delta
-- lay within p_quiet_us of it, on either side; after a reconnect of a busy market (the deltas
-- just before it were received on the old subscription), the rebuild then fell back to an older
-- snapshot across the lost window and gave a wrong book. Only a delta stamped in the p_quiet_us
-- AFTER a quiet snapshot can be one it holds (a receive clock behind the exchange's), so only
-- that side is checked now. A snapshot of unknown place (NULL) keeps the two-sided rule.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/production/006_quiet_cut.sql

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
            -- a quiet snapshot saw nothing follow it: only the time after it can be ambiguous
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM orderbook_deltas d
                 WHERE d.ticker = p_ticker
                   AND d.exchange_ts BETWEEN s.snapshot_ts + CASE WHEN s.cut_kind = 'quiet' THEN 1
                                                                  ELSE -p_quiet_us END
                                         AND s.snapshot_ts + p_quiet_us);
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
