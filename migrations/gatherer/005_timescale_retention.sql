-- Ack-guarded retention and compression for both storage engines, and trade_ids pruning.
--
-- One rule for everything that frees disk (data-model.md, hardening 4): a time partition -- a
-- native daily partition or a TimescaleDB chunk -- is dropped, or compressed, only when every
-- consumer named by the caller has acknowledged (sync_acks, ingest-cursor units) past its newest
-- row, and only once it is older than the caller's age; an empty consumer list frees nothing.
-- On TimescaleDB this is our own job (the gatherer's retention loop calls these functions), never
-- TimescaleDB's age-only retention or compression policies, which know nothing of acks.
--
--   time_partitions(table)                         the table's partitions or chunks with ranges
--   newest_cursor(relation)                        newest (ingest_xid, ingest_seq) in one of them
--   ack_blocker(table, relation, consumers[, lock]) who has not acknowledged it all (NULL: nobody)
--   partition_acks(table, consumers)               per partition/chunk: size, compressed, blocker
--   drop_expired_partitions(table, days, consumers)      replaces 003's (native only) version
--   compress_acknowledged_chunks(table, days, consumers[, max]) TimescaleDB; nothing on native
--   prune_trade_ids(keep_days)                     trade_ids rows whose trades rows were dropped
--
-- TimescaleDB API choices (2.28.3 here; deployed gatherers get Timescale's current 2.x release):
-- compression is configured with the documented hypercore names timescaledb.enable_columnstore,
-- .segmentby, .orderby and .sparse_index, which both accept (the older compress_* names are
-- deprecated since 2.18); chunks are compressed with CALL convert_to_columnstore() (compress_chunk's
-- documented successor, since 2.18), dropped with drop_chunks(), and listed from the public view
-- timescaledb_information.chunks (no _timescaledb_* internals anywhere).
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/005_timescale_retention.sql

-- prune_trade_ids() deletes by exchange_ts.
CREATE INDEX IF NOT EXISTS trade_ids_exchange_ts_idx ON trade_ids (exchange_ts);

DO $$
DECLARE
    t RECORD;
BEGIN
    IF (SELECT storage FROM gatherer_meta) <> 'timescaledb' THEN
        RETURN;
    END IF;
    -- Segment by ticker, order by exchange time. The rest of each table's unique key follows in
    -- orderby, so a late insert into a compressed chunk checks uniqueness against few batches.
    -- minmax(ingest_xid) lets the deduplicator's keyset read skip every compressed batch by its
    -- metadata (deduplicator/pull.py adds the matching "ingest_xid >= cursor" predicate) instead of
    -- decompressing whole chunks on every page.
    FOR t IN SELECT * FROM (VALUES
            ('trades',              'exchange_ts, trade_id'),
            ('orderbook_deltas',    'exchange_ts, side, price, delta, occurrence'),
            ('orderbook_snapshots', 'snapshot_ts, source'),
            ('tickers',             'exchange_ts, content_hash')) AS v (name, orderby) LOOP
        EXECUTE format('ALTER TABLE %I SET (timescaledb.enable_columnstore = true, '
                       'timescaledb.segmentby = %L, timescaledb.orderby = %L, '
                       'timescaledb.sparse_index = %L)',
                       t.name, 'ticker', t.orderby, 'minmax(ingest_xid)');
        -- Hardening 4: no age-only policy may compress or drop what a consumer has not merged,
        -- whoever added it (some releases add a columnstore policy along with the setting).
        CALL remove_columnstore_policy(t.name::regclass, if_exists => true);
        PERFORM remove_retention_policy(t.name::regclass, if_exists => true);
    END LOOP;
END;
$$;

-- Native partitions (named <table>_pYYYYMMDD, one UTC day each; DEFAULT excluded) or TimescaleDB
-- chunks ([range_start, range_end) in microseconds), oldest first.
CREATE OR REPLACE FUNCTION time_partitions(p_table TEXT)
RETURNS TABLE (relation REGCLASS, name TEXT, range_start BIGINT, range_end BIGINT, is_compressed BOOLEAN)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    IF p_table NOT IN (SELECT table_name FROM partitioned_event_tables()) THEN
        RAISE EXCEPTION 'time_partitions: % is not a partitioned event table', p_table;
    END IF;
    IF (SELECT storage FROM gatherer_meta) = 'timescaledb' THEN
        RETURN QUERY
            SELECT format('%I.%I', c.chunk_schema, c.chunk_name)::regclass, c.chunk_name::text,
                   c.range_start_integer, c.range_end_integer, c.is_compressed
              FROM timescaledb_information.chunks c
             WHERE c.hypertable_schema = 'public' AND c.hypertable_name = p_table
             ORDER BY c.range_start_integer;
    ELSE
        RETURN QUERY
            SELECT s.rel, s.relname, s.lo, s.lo + 86400000000, false
              FROM (SELECT c.oid::regclass AS rel, c.relname::text AS relname,
                           (extract(epoch FROM to_date(substring(c.relname FROM '_p(\d{8})$'), 'YYYYMMDD')::timestamp
                                   AT TIME ZONE 'UTC') * 1000000)::bigint AS lo
                      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = p_table::regclass AND c.relname ~ '_p\d{8}$') s
             ORDER BY s.lo;
    END IF;
END;
$$;

-- The newest ingest cursor in one partition or chunk (NULLs when it is empty): an index scan on a
-- plain partition or chunk; a compressed chunk decompresses just these two columns.
CREATE OR REPLACE FUNCTION newest_cursor(p_relation REGCLASS, OUT max_xid BIGINT, OUT max_seq BIGINT)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('SELECT ingest_xid::text::bigint, ingest_seq FROM %s '
                   'ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1', p_relation)
       INTO max_xid, max_seq;
END;
$$;

-- Why partition/chunk p_relation of p_table may not be freed yet: NULL when every consumer in
-- p_consumers has acknowledged past its newest row (or it is empty). With p_lock it first takes a
-- SHARE lock until the end of the transaction, so no insert can commit between this answer and
-- dropping or compressing (SHARE waits for open inserters and blocks new ones).
CREATE OR REPLACE FUNCTION ack_blocker(p_table TEXT, p_relation REGCLASS, p_consumers TEXT[],
                                       p_lock BOOLEAN DEFAULT false)
RETURNS TEXT
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    c    TEXT;
    cur  RECORD;
BEGIN
    IF p_consumers IS NULL OR cardinality(p_consumers) = 0 THEN
        RETURN 'no consumers configured';
    END IF;
    IF p_lock THEN
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', p_relation);
    END IF;
    SELECT * INTO cur FROM newest_cursor(p_relation);
    IF cur.max_xid IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH c IN ARRAY p_consumers LOOP
        IF NOT EXISTS (SELECT 1 FROM sync_acks a
                        WHERE a.consumer = c AND a.table_name = p_table
                          AND (a.cursor_xid, a.cursor_seq) >= (cur.max_xid, cur.max_seq)) THEN
            RETURN format('consumer %s has not acknowledged past this partition', c);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- What retention sees, one row per partition or chunk (the runbook's chunk query): its range,
-- size, whether it is compressed, and who (if anyone) has not acknowledged it yet.
CREATE OR REPLACE FUNCTION partition_acks(p_table TEXT, p_consumers TEXT[])
RETURNS TABLE (relation REGCLASS, range_start BIGINT, range_end BIGINT, is_compressed BOOLEAN,
               total_bytes BIGINT, blocker TEXT)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    p    RECORD;
    ts   BOOLEAN := (SELECT storage FROM gatherer_meta) = 'timescaledb';
BEGIN
    FOR p IN SELECT * FROM time_partitions(p_table) LOOP
        relation := p.relation;
        range_start := p.range_start;
        range_end := p.range_end;
        is_compressed := p.is_compressed;
        -- A chunk's compressed rows live in a separate internal table: TimescaleDB's size
        -- function counts them, pg_total_relation_size would not.
        IF ts THEN
            total_bytes := (SELECT s.total_bytes FROM chunks_detailed_size(p_table::regclass) s
                             WHERE format('%I.%I', s.chunk_schema, s.chunk_name)::regclass = p.relation);
        ELSE
            total_bytes := pg_total_relation_size(p.relation);
        END IF;
        blocker := ack_blocker(p_table, p.relation, p_consumers);
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Drops every partition or chunk of p_table that ended more than p_keep_days ago and that every
-- consumer has acknowledged; returns one row per expired partition saying what happened and why.
CREATE OR REPLACE FUNCTION drop_expired_partitions(p_table TEXT, p_keep_days INTEGER, p_consumers TEXT[])
RETURNS TABLE (partition_name TEXT, dropped BOOLEAN, reason TEXT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    p       RECORD;
    cutoff  BIGINT := now_us() - p_keep_days::bigint * 86400000000;
    ts      BOOLEAN := (SELECT storage FROM gatherer_meta) = 'timescaledb';
    blocker TEXT;
BEGIN
    FOR p IN SELECT * FROM time_partitions(p_table) WHERE time_partitions.range_end <= cutoff LOOP
        partition_name := p.name;
        blocker := ack_blocker(p_table, p.relation, p_consumers, p_lock => true);
        IF blocker IS NULL THEN
            IF ts THEN
                -- Exactly this chunk: chunks are disjoint and this one spans [range_start, range_end).
                PERFORM drop_chunks(p_table::regclass, older_than => p.range_end, newer_than => p.range_start);
            ELSE
                EXECUTE format('DROP TABLE %s', p.relation);
            END IF;
            dropped := true;
            reason := 'expired and acknowledged by every consumer';
        ELSE
            dropped := false;
            reason := blocker;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Compresses uncompressed chunks of p_table that ended more than p_after_days ago and that every
-- consumer has acknowledged, oldest first, at most p_max_chunks of them (NULL: all); one row per
-- chunk compressed or blocked. Compressing a day's chunk takes a while and its transaction holds
-- back the snapshot xmin the deduplicator reads below, so the caller compresses one chunk per
-- transaction. Returns nothing on native partitions.
CREATE OR REPLACE FUNCTION compress_acknowledged_chunks(p_table TEXT, p_after_days INTEGER, p_consumers TEXT[],
                                                        p_max_chunks INTEGER DEFAULT NULL)
RETURNS TABLE (chunk_name TEXT, compressed BOOLEAN, reason TEXT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    p       RECORD;
    cutoff  BIGINT := now_us() - p_after_days::bigint * 86400000000;
    done    INTEGER := 0;
    blocker TEXT;
BEGIN
    IF (SELECT storage FROM gatherer_meta) <> 'timescaledb' THEN
        RETURN;
    END IF;
    FOR p IN SELECT * FROM time_partitions(p_table)
              WHERE time_partitions.range_end <= cutoff AND NOT time_partitions.is_compressed LOOP
        EXIT WHEN done >= p_max_chunks;
        chunk_name := p.name;
        blocker := ack_blocker(p_table, p.relation, p_consumers, p_lock => true);
        IF blocker IS NULL THEN
            CALL convert_to_columnstore(p.relation, if_not_columnstore => true);
            done := done + 1;
            compressed := true;
            reason := 'older than the compression age and acknowledged by every consumer';
        ELSE
            compressed := false;
            reason := blocker;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Hardening 1 keeps one trade_ids row per trade ever seen; without pruning it grows forever.
-- A row goes once its trade is gone from trades, i.e. once retention dropped that trade's
-- partition or chunk (which needed every consumer's ack): it must be older than the oldest
-- remaining partition/chunk of trades and than p_keep_days, and have no trades row left (native
-- DEFAULT partitions may still hold old rows). Same rule on both engines. Returns rows deleted.
CREATE OR REPLACE FUNCTION prune_trade_ids(p_keep_days INTEGER)
RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    bound   BIGINT := now_us() - p_keep_days::bigint * 86400000000;
    oldest  BIGINT := (SELECT min(range_start) FROM time_partitions('trades'));
    n       BIGINT;
BEGIN
    bound := least(bound, coalesce(oldest, bound));
    DELETE FROM trade_ids g
     WHERE g.exchange_ts < bound
       AND NOT EXISTS (SELECT 1 FROM trades r
                        WHERE r.ticker = g.ticker AND r.exchange_ts = g.exchange_ts AND r.trade_id = g.trade_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
