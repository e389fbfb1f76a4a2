-- Ack-aware retention for the gatherer's event tables.
--
-- A partition is dropped only when it is older than keep_days AND every consumer named in
-- p_consumers has acknowledged (sync_acks, in ingest-cursor units) past the partition's newest
-- row. An empty consumer list drops nothing: an unconfigured deduplicator must never cost data.
-- Returns one row per expired partition saying what happened and why.
--
-- Runs standalone: psql -v ON_ERROR_STOP=1 -f migrations/gatherer/003_retention.sql

CREATE OR REPLACE FUNCTION drop_expired_partitions(p_table TEXT, p_keep_days INTEGER, p_consumers TEXT[])
RETURNS TABLE (partition_name TEXT, dropped BOOLEAN, reason TEXT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part      RECORD;
    cutoff    BIGINT := now_us() - p_keep_days::bigint * 86400000000;
    max_xid   BIGINT;
    max_seq   BIGINT;
    c         TEXT;
    blocker   TEXT;
BEGIN
    IF p_table NOT IN (SELECT table_name FROM partitioned_event_tables()) THEN
        RAISE EXCEPTION 'drop_expired_partitions: % is not a partitioned event table', p_table;
    END IF;
    FOR part IN
        SELECT c2.relname AS name,
               (extract(epoch FROM to_date(substring(c2.relname FROM '_p(\d{8})$'), 'YYYYMMDD')::timestamp
                       AT TIME ZONE 'UTC') * 1000000)::bigint + 86400000000 AS upper_us
          FROM pg_inherits i JOIN pg_class c2 ON c2.oid = i.inhrelid
         WHERE i.inhparent = p_table::regclass AND c2.relname ~ '_p\d{8}$'
         ORDER BY c2.relname
    LOOP
        CONTINUE WHEN part.upper_us > cutoff;
        partition_name := part.name;
        blocker := NULL;
        IF p_consumers IS NULL OR cardinality(p_consumers) = 0 THEN
            blocker := 'no consumers configured';
        ELSE
            EXECUTE format('SELECT ingest_xid::text::bigint, ingest_seq FROM %I
                            ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1', part.name)
               INTO max_xid, max_seq;
            IF max_xid IS NOT NULL THEN
                FOREACH c IN ARRAY p_consumers LOOP
                    IF NOT EXISTS (SELECT 1 FROM sync_acks a
                                    WHERE a.consumer = c AND a.table_name = p_table
                                      AND (a.cursor_xid, a.cursor_seq) >= (max_xid, max_seq)) THEN
                        blocker := format('consumer %s has not acknowledged past this partition', c);
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
        END IF;
        IF blocker IS NULL THEN
            EXECUTE format('DROP TABLE %I', part.name);
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
