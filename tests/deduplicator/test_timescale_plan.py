"""The deduplicator's keyset read (deduplicator/pull.py) on a gatherer whose old data is compressed
or partitioned away: recent rows are read through the ingest index, compressed chunks are skipped
by their batch metadata (nothing decompressed on a page), and rows that arrive late into a
compressed chunk, and everything after a cursor reset, are still read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from deduplicator.cursors import Cursor
from deduplicator.pull import page_select_sql, probe
from deduplicator.tables import TRADES
from tests.fix_db import role_dsn

DAY_US = 86_400_000_000
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
COLUMNAR_SCANS = {"ColumnarScan", "DecompressChunk"}  # the node's name since 2.22 / before


def _insert_day(conn: psycopg.Connection[Any], days_ago: int, n: int, first: int = 1) -> None:
    """Trades ``first``..``first + n - 1`` of a day, 10 s apart from 00:01 UTC."""
    start = (int(conn.execute("SELECT now_us()").fetchone()[0]) // DAY_US - days_ago) * DAY_US  # type: ignore[index]
    conn.execute("""
        INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, received_at)
        SELECT gen_random_uuid(), 'KX-' || (i %% 40), %s + i::bigint * 10000000, 5000, 5000, 100, 'ws', %s
          FROM generate_series(%s::int, %s::int) i""", (start + 60_000_000, start, first, first + n - 1))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _acked_cursor(conn: psycopg.Connection[Any]) -> Cursor:
    xid, seq = conn.execute("SELECT ingest_xid::text::bigint, ingest_seq FROM trades "
                            "ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1").fetchone()  # type: ignore[misc]
    conn.execute("INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at) "
                 "VALUES ('deduplicator', 'trades', %s, %s, now_us())", (xid, seq))
    return Cursor(xid, seq)


@pytest.fixture
def gatherer_with_history(gatherer_dsn: str, storage: str) -> tuple[str, Cursor]:
    """Four days of 3000 trades, all but today's last 200 merged (acknowledged) and, on
    TimescaleDB, the two days older than a day compressed by the retention SQL."""
    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        conn.execute("SELECT ensure_partitions(7, 5)")
        for days_ago in (3, 2, 1):
            _insert_day(conn, days_ago, 3000)
        _insert_day(conn, 0, 2800)
        cursor = _acked_cursor(conn)
        done = conn.execute("SELECT count(*) FILTER (WHERE compressed) FROM "
                            "compress_acknowledged_chunks('trades', 1, ARRAY['deduplicator'])").fetchone()
        assert done == ((2 if storage == "timescaledb" else 0),)
        _insert_day(conn, 0, 200, first=2801)
        conn.execute("ANALYZE trades")
    return gatherer_dsn, cursor


def test_recent_rows_are_read_by_index_and_merged_chunks_stay_compressed(
        gatherer_with_history: tuple[str, Cursor], storage: str) -> None:
    dsn, cursor = gatherer_with_history
    with psycopg.connect(role_dsn(dsn, "dedup_reader"), autocommit=True) as conn:
        (plan,), = conn.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {q}").format(
            q=page_select_sql(TRADES, cursor, 500))).fetchone()  # type: ignore[misc]
        rows = conn.execute(page_select_sql(TRADES, cursor, 5000)).fetchall()
    assert len(rows) == 200  # exactly the rows past the cursor
    with psycopg.connect(dsn) as conn:
        holding = {r[0] for r in conn.execute(
            "SELECT DISTINCT c.relname FROM trades t JOIN pg_class c ON c.oid = t.tableoid").fetchall()}
    nodes = list(_nodes(plan["Plan"]))
    # Partitions and uncompressed chunks that hold rows are read through an index (empty ones,
    # native's days ahead, may be "scanned" for free); compressed chunks go through ColumnarScan.
    scans = {n["Relation Name"]: n["Node Type"] for n in nodes
             if n.get("Relation Name") in holding and n.get("Custom Plan Provider") not in COLUMNAR_SCANS}
    assert scans and set(scans.values()) <= INDEX_SCANS, scans
    columnar = [n for n in nodes if n.get("Custom Plan Provider") in COLUMNAR_SCANS]
    if storage == "timescaledb":
        assert len(columnar) == 2, "one columnar scan per compressed chunk"
        for n in columnar:
            # Every batch was rejected by its ingest_xid metadata: not one row decompressed.
            assert n["Actual Rows"] == 0 and n.get("Rows Removed by Filter", 0) == 0, n
            assert all(child["Actual Rows"] == 0 for child in n.get("Plans", [])), n
    else:
        assert columnar == []


def test_late_rows_in_compressed_chunks_and_a_reset_cursor_are_read(
        gatherer_with_history: tuple[str, Cursor], storage: str) -> None:
    dsn, cursor = gatherer_with_history
    with psycopg.connect(role_dsn(dsn, "gatherer"), autocommit=True) as conn:
        _insert_day(conn, 2, 1)  # REST backfill of an old trade: into a compressed chunk on TimescaleDB
    with psycopg.connect(role_dsn(dsn, "dedup_reader"), autocommit=True) as conn:
        rows = conn.execute(page_select_sql(TRADES, cursor, 10_000)).fetchall()
        assert len(rows) == 201
        old = conn.execute("SELECT count(*) FROM trades WHERE exchange_ts < now_us() / %s * %s",
                           (DAY_US, DAY_US)).fetchone()
        assert old == (9001,)
        everything = conn.execute(page_select_sql(TRADES, Cursor(), 20_000)).fetchall()
        assert len(everything) == 12001
        assert [tuple(r[-2:]) for r in everything] == sorted(tuple(r[-2:]) for r in everything)


async def test_probe_sees_rows_past_the_cursor(gatherer_with_history: tuple[str, Cursor]) -> None:
    dsn, cursor = gatherer_with_history
    async with await psycopg.AsyncConnection.connect(role_dsn(dsn, "dedup_reader"), autocommit=True) as conn:
        assert (await probe(conn, TRADES, cursor)).ready
        last = (await (await conn.execute(page_select_sql(TRADES, cursor, 5000))).fetchall())[-1]
        assert not (await probe(conn, TRADES, Cursor(last[-2], last[-1]))).pending
