"""docs/runbook.md's TimescaleDB blocks run, with psql as an operator would, against a TimescaleDB
gatherer database holding history, and do what the runbook says: sizes, chunks and compression
status answer, compressing touches only acknowledged chunks past the age, and the emergency drops
free only acknowledged chunks (with their trade_ids guard rows).

Each statement runs on a fresh copy of the same database, so each one's effect is checked alone.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator

import psycopg
import pytest

from shared.pgcluster import PgCluster
from tests.fix_db import _drop_quietly, dbname_of, fresh_database

from ._rules import RUNBOOK

DAY_US = 86_400_000_000
ACKED_DAYS = (10, 6)  # older than every window in the runbook, acknowledged
UNACKED_DAY = 4  # older than the 3-day emergency window, NOT acknowledged
TODAY = 0


def section() -> str:
    text = RUNBOOK.read_text()
    start = text.index("### TimescaleDB")
    return text[start:text.index("\n## ", start)]


def statements() -> list[str]:
    """Every statement of the section's ```sql blocks, in order (all tagged timescaledb)."""
    out = []
    for body in re.findall(r"```sql\n(.*?)```", section(), re.DOTALL):
        first, _, rest = body.partition("\n")
        assert first.strip() == "-- db: timescaledb", first
        out += [s.strip() + ";" for s in re.split(r";\s*\n", rest) if s.strip()]
    return out


def _day(conn: psycopg.Connection, days_ago: int) -> int:  # type: ignore[type-arg]
    return (int(conn.execute("SELECT now_us()").fetchone()[0]) // DAY_US - days_ago) * DAY_US  # type: ignore[index]


def _populate(dsn: str) -> None:
    """Trades (with guard rows) and deltas on four days; the two oldest days acknowledged."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for days_ago in (*ACKED_DAYS, UNACKED_DAY, TODAY):
            start = _day(conn, days_ago)
            conn.execute("""
                WITH t AS (
                    INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, received_at)
                    SELECT gen_random_uuid(), 'KX-' || (i %% 20), %s + i::bigint * 1000000, 5000, 5000, 100, 'ws', %s
                      FROM generate_series(1, 400) i RETURNING trade_id, exchange_ts, ticker)
                INSERT INTO trade_ids SELECT * FROM t""", (start + 60_000_000, start))
            conn.execute("""
                INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, received_at)
                SELECT 'KX-' || (i %% 20), %s + i::bigint * 1000000, 'yes', 100 * (i %% 90 + 1), 100, %s
                  FROM generate_series(1, 2000) i""", (start + 60_000_000, start))
            if days_ago == ACKED_DAYS[-1]:
                for table in ("trades", "orderbook_deltas"):
                    conn.execute(f"""
                        INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at)
                        SELECT 'deduplicator', '{table}', ingest_xid::text::bigint, ingest_seq, now_us()
                          FROM {table} ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1""")


def _chunks(dsn: str, table: str) -> dict[int, bool]:
    """days ago -> compressed, for every chunk of ``table``."""
    with psycopg.connect(dsn) as conn:
        today = _day(conn, 0)
        rows = conn.execute("SELECT range_start_integer, is_compressed FROM timescaledb_information.chunks "
                            "WHERE hypertable_name = %s", (table,)).fetchall()
    return {(today - int(start)) // DAY_US: bool(c) for start, c in rows}


@pytest.fixture(scope="module")
def populated_template(timescale_cluster: PgCluster) -> Iterator[str]:
    """A TimescaleDB gatherer database with history, to clone per statement."""
    dsn = fresh_database(timescale_cluster, "gatherer", prefix="runbook_ts")
    _populate(dsn)
    yield dsn
    _drop_quietly(timescale_cluster, dsn)


@pytest.fixture
def fresh_copy(timescale_cluster: PgCluster, populated_template: str) -> Callable[[], str]:
    made: list[str] = []

    def make() -> str:
        name = f"runbook_ts_copy_{len(made)}"
        with psycopg.connect(timescale_cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{dbname_of(populated_template)}"')
        made.append(name)
        return timescale_cluster.dsn(name)

    yield make  # type: ignore[misc]
    for name in made:
        _drop_quietly(timescale_cluster, timescale_cluster.dsn(name))


def _psql(cluster: PgCluster, dsn: str, sql: str) -> str:
    res = subprocess.run([str(cluster.binaries.bin_dir / "psql"), "-X", "-A", "-v", "ON_ERROR_STOP=1",
                          "-d", dsn, "-c", sql], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 0, f"{sql[:80]!r}: {res.stderr}"
    return res.stdout


def test_the_section_carries_the_blocks_operations_needs() -> None:
    text = "\n".join(statements())
    for needle in ("timescaledb_information.hypertables", "hypertable_columnstore_stats",
                   "timescaledb_information.chunks", "partition_acks", "compress_acknowledged_chunks",
                   "compress_chunk(", "drop_expired_partitions", "drop_chunks(", "prune_trade_ids"):
        assert needle in text, needle
    assert len(statements()) >= 9


def test_every_statement_runs_and_frees_only_acknowledged_chunks(
        timescale_cluster: PgCluster, fresh_copy: Callable[[], str]) -> None:
    seen = {"compress": 0, "drop": 0, "prune": 0, "report": 0}
    for sql in statements():
        dsn = fresh_copy()
        before = {t: _chunks(dsn, t) for t in ("trades", "orderbook_deltas")}
        assert set(before["trades"]) == {*ACKED_DAYS, UNACKED_DAY, TODAY}
        out = _psql(timescale_cluster, dsn, sql)
        after = {t: _chunks(dsn, t) for t in ("trades", "orderbook_deltas")}
        table = "trades" if "'trades'" in sql else "orderbook_deltas"
        for chunks in after.values():  # whatever ran, unacknowledged and recent data is untouched
            assert chunks.get(UNACKED_DAY) is False and chunks.get(TODAY) is False, (sql, after)
        if "compress_acknowledged_chunks(" in sql or "compress_chunk(" in sql:
            seen["compress"] += 1
            assert after[table] == {**dict.fromkeys(ACKED_DAYS, True), UNACKED_DAY: False, TODAY: False}, sql
        elif "drop_expired_partitions(" in sql or "drop_chunks(" in sql:
            seen["drop"] += 1
            assert after[table] == {UNACKED_DAY: False, TODAY: False}, sql
        elif "prune_trade_ids(" in sql:
            seen["prune"] += 1
            assert out.splitlines()[1] == "0"  # nothing dropped yet on this copy, so nothing to prune
        else:
            seen["report"] += 1
            assert after == before and len(out.splitlines()) >= 3, (sql, out)
    assert seen == {"compress": 2, "drop": 2, "prune": 1, "report": 4}, seen


def test_emergency_drop_then_prune_leaves_no_guard_rows_of_dropped_trades(
        timescale_cluster: PgCluster, fresh_copy: Callable[[], str]) -> None:
    dsn = fresh_copy()
    drop, prune = (s for s in statements() if "drop_chunks('trades'" in s or "prune_trade_ids" in s)
    _psql(timescale_cluster, dsn, drop)
    _psql(timescale_cluster, dsn, prune)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (800,)
        assert conn.execute("SELECT count(*) FROM trade_ids").fetchone() == (800,)
        assert conn.execute("SELECT count(*) FROM trade_ids g WHERE NOT EXISTS (SELECT 1 FROM trades t "
                            "WHERE t.trade_id = g.trade_id)").fetchone() == (0,)
