"""The retention loop (gatherer/retention.py) on both storage engines, as the gatherer role:
expired partitions/chunks go only once every consumer acknowledged them, trade_ids follow their
trades, and on TimescaleDB only acknowledged chunks older than the configured age are compressed,
losing nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from gatherer.config import RetentionConfig
from gatherer.retention import Retention
from shared.metrics import GathererMetrics
from tests.fix_db import role_dsn
from tests.gatherer import _harness as h

DAY_US = 86_400_000_000


@pytest.fixture
async def gatherer_pool(gatherer_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(role_dsn(gatherer_dsn, "gatherer"), min_size=1, max_size=1, open=False)
    await pool.open()
    yield pool
    await pool.close()


def _day_start(days_ago: int) -> int:
    return (h.now_us() // DAY_US - days_ago) * DAY_US


def _trades(dsn: str, days_ago: int, n: int, ticker: str = "KX-R") -> list[str]:
    """``n`` trades (and their trade_ids guard rows, as the writer stores them) on one past day."""
    rows = h.query(dsn, """
        WITH t AS (
            INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, received_at)
            SELECT gen_random_uuid(), %s, %s + i * 1000000, 5000, 5000, 100, 'ws', %s + i * 1000000
              FROM generate_series(1, %s) i
            RETURNING trade_id, exchange_ts, ticker)
        INSERT INTO trade_ids SELECT trade_id, exchange_ts, ticker FROM t RETURNING trade_id::text""",
        (ticker, _day_start(days_ago) + 3_600_000_000, _day_start(days_ago), n))
    return [r[0] for r in rows]


def _ack(dsn: str, *, through_days_ago: int = 0, short_by: int = 0, consumer: str = "deduplicator") -> None:
    """Acknowledge trades up to the newest row of the day ``through_days_ago`` days back (or
    ``short_by`` sequence numbers before it)."""
    h.query(dsn, """
        INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at)
        SELECT %s, 'trades', ingest_xid::text::bigint, ingest_seq - %s, now_us()
          FROM trades WHERE exchange_ts < %s ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1
        ON CONFLICT (consumer, table_name) DO UPDATE
           SET cursor_xid = EXCLUDED.cursor_xid, cursor_seq = EXCLUDED.cursor_seq RETURNING 1""",
            (consumer, short_by, _day_start(through_days_ago) + DAY_US))


async def _once(pool: AsyncConnectionPool, m: GathererMetrics, **cfg: Any) -> dict[str, Any]:
    r = Retention(RetentionConfig(**{"keep_days_other": 30, "keep_days_deltas": 7, **cfg}), pool, m, "test")
    return await r.once()


async def test_expired_data_goes_only_once_every_consumer_acknowledged_it(
        gatherer_dsn: str, gatherer_pool: AsyncConnectionPool, storage: str) -> None:
    h.query(gatherer_dsn, "SELECT ensure_partitions(7, 40)")  # native: old days need partitions
    old = _trades(gatherer_dsn, 35, 50)
    recent = _trades(gatherer_dsn, 2, 20)
    m = GathererMetrics(CollectorRegistry())
    cfg = {"consumers": ("deduplicator", "dedup-2"), "compress": False}

    out = await _once(gatherer_pool, m, **cfg)
    assert len(out["blocked"]) == 1 and m.retention_blocked_partitions._value.get() == 1
    if storage == "timescaledb":
        assert out["dropped"] == []  # native drops the empty old daily partitions ensure_partitions made
    assert h.query(gatherer_dsn, "SELECT count(*) FROM trades")[0][0] == 70

    _ack(gatherer_dsn)  # deduplicator acknowledged everything
    _ack(gatherer_dsn, through_days_ago=35, consumer="dedup-2", short_by=1)  # one row short of the old day
    out = await _once(gatherer_pool, m, **cfg)
    assert len(out["blocked"]) == 1 and out["trade_ids_pruned"] == 0
    assert h.query(gatherer_dsn, "SELECT count(*) FROM trades")[0][0] == 70

    _ack(gatherer_dsn, through_days_ago=35, consumer="dedup-2")
    out = await _once(gatherer_pool, m, **cfg)
    assert out["blocked"] == [] and m.retention_blocked_partitions._value.get() == 0
    assert len(_names_of(out["dropped"], storage)) == 1
    left = {r[0] for r in h.query(gatherer_dsn, "SELECT trade_id::text FROM trades")}
    assert left == set(recent)
    # the guard rows of the dropped trades went with them, the recent ones stay
    guards = {r[0] for r in h.query(gatherer_dsn, "SELECT trade_id::text FROM trade_ids")}
    assert guards == set(recent) and out["trade_ids_pruned"] == len(old)
    assert m.retention_trade_ids_pruned_total._value.get() == len(old)


def _names_of(dropped: list[str], storage: str) -> list[str]:
    """The partition/chunk names retention reports, as each engine names them."""
    prefix = "trades_p" if storage == "native" else "_hyper_"
    names = [n for n in dropped if n.startswith(prefix)]
    assert names, f"nothing named {prefix}* dropped: {dropped}"
    return names


async def test_trade_ids_stay_while_their_trades_are_kept(
        gatherer_dsn: str, gatherer_pool: AsyncConnectionPool) -> None:
    h.query(gatherer_dsn, "SELECT ensure_partitions(7, 40)")
    older = _trades(gatherer_dsn, 36, 10)
    _ack(gatherer_dsn)  # acknowledges the 36-day-old trades only (the others come later)
    newer_unacked = _trades(gatherer_dsn, 33, 10)
    m = GathererMetrics(CollectorRegistry())
    out = await _once(gatherer_pool, m, compress=False)
    assert len(out["blocked"]) == 1  # the 33-day-old day: expired, not acknowledged
    guards = {r[0] for r in h.query(gatherer_dsn, "SELECT trade_id::text FROM trade_ids")}
    assert guards == set(newer_unacked)
    assert not guards & set(older)


async def test_compression_takes_only_acknowledged_chunks_past_the_age(
        gatherer_dsn: str, gatherer_pool: AsyncConnectionPool, storage: str) -> None:
    h.query(gatherer_dsn, "SELECT ensure_partitions(7, 10)")
    _trades(gatherer_dsn, 3, 300, "KX-A")
    _trades(gatherer_dsn, 3, 300, "KX-B")
    _ack(gatherer_dsn)  # everything up to here: the 3-day-old chunk
    _trades(gatherer_dsn, 2, 300)  # old enough to compress, but not acknowledged
    _trades(gatherer_dsn, 0, 300)  # today: too young whatever the acks
    before = h.query(gatherer_dsn, "SELECT count(*), sum(exchange_ts), count(DISTINCT trade_id) FROM trades")
    m = GathererMetrics(CollectorRegistry())

    out = await _once(gatherer_pool, m, compress_after_days=1)
    status = h.query(gatherer_dsn, "SELECT range_start, is_compressed, blocker FROM partition_acks('trades', "
                                   "ARRAY['deduplicator']) ORDER BY range_start")
    if storage == "native":
        assert out["compressed"] == [] and out["compression_blocked"] == []
        assert not any(c for _, c, _ in status)
    else:
        compressed = {r[0] for r in status if r[1]}
        assert compressed == {_day_start(3)}
        assert len(out["compressed"]) == 1 and len(out["compression_blocked"]) == 1
        assert m.retention_chunks_compressed_total.labels(table="trades")._value.get() == 1
        assert m.retention_compression_blocked_chunks._value.get() == 1
        by_day = {r[0]: r[2] for r in status}
        assert by_day[_day_start(2)] == "consumer deduplicator has not acknowledged past this partition"
    assert h.query(gatherer_dsn, "SELECT count(*), sum(exchange_ts), count(DISTINCT trade_id) FROM trades") == before
    # a second pass finds nothing new to do
    again = await _once(gatherer_pool, m, compress_after_days=1)
    assert again["compressed"] == []


def test_a_row_committing_during_the_drop_keeps_its_partition(gatherer_dsn: str) -> None:
    """A late insert into an expired partition that commits while retention decides must not be
    dropped unacknowledged: retention locks the partition before reading its newest cursor."""
    h.query(gatherer_dsn, "SELECT ensure_partitions(7, 40)")
    _trades(gatherer_dsn, 35, 5)
    _ack(gatherer_dsn)  # everything committed so far is acknowledged
    late = psycopg.connect(role_dsn(gatherer_dsn, "gatherer"))
    try:
        late.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                     "received_at) VALUES (gen_random_uuid(), 'KX-LATE', %s, 5000, 5000, 100, 'rest', 0)",
                     (_day_start(35) + 7_200_000_000,))  # open: not committed yet
        result: list[Any] = []

        def retention() -> None:
            with psycopg.connect(role_dsn(gatherer_dsn, "gatherer"), autocommit=True,
                                 application_name="retention-under-test") as conn:
                result.extend(conn.execute("SELECT partition_name, dropped, reason FROM drop_expired_partitions("
                                           "'trades', 30, ARRAY['deduplicator'])").fetchall())

        t = threading.Thread(target=retention)
        t.start()
        # retention is now waiting for the open insert (an event we can see, not a sleep)
        deadline = time.monotonic() + 30
        while not h.query(gatherer_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                        "'retention-under-test' AND wait_event_type = 'Lock'")[0][0]:
            assert time.monotonic() < deadline, "retention never waited for the open insert"
        late.commit()
        t.join(60)
    finally:
        late.close()
    # the late row's partition is kept (native also drops its empty expired days)
    assert [r[2] for r in result if not r[1]] == ["consumer deduplicator has not acknowledged past this partition"]
    assert h.query(gatherer_dsn, "SELECT count(*) FROM trades WHERE ticker = 'KX-LATE'")[0][0] == 1
