"""The on-disk spool (real files) and the writer spilling to it: order, restart, checksums,
the disk bound, and a real PostgreSQL stopped while rows keep coming."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from gatherer.spool import Spool, SpoolBudget
from gatherer.writer import MemorySink, PgSink
from shared.kalshi.models import DeltaRow
from shared.metrics import GathererMetrics
from shared.migrate import apply_migrations
from shared.pgcluster import PgCluster
from tests.gatherer.test_writer import GatedSink, delta, metrics, rows, sample, trade, writer


def spool(tmp: Path, name: str = "orderbook_deltas", budget: SpoolBudget | None = None,
          reg: CollectorRegistry | None = None, **kw: Any) -> Spool:
    m = GathererMetrics(reg or CollectorRegistry())
    return Spool(tmp, name, budget or SpoolBudget(1 << 30), m, **kw)


async def test_rows_come_back_in_order_and_survive_a_restart(tmp_path: Path) -> None:
    sp = spool(tmp_path, chunk_rows=500)
    await sp.open()
    for i in range(5000):
        assert sp.has_room()
        sp.append(delta(i), i)
    await sp.flush()
    assert sp.rows == 5000 and sp.bytes > 0
    first = await sp.take(3000)
    assert [r.seq for r in first] == list(range(3000))
    sp.release(2500)  # rows 0..2499 committed: a segment goes once ALL its rows are
    await sp.close()  # (killed before rows 2500..2999 committed: they must come back)

    budget = SpoolBudget(1 << 30)
    again = spool(tmp_path, budget=budget, chunk_rows=500)
    n = await again.open()
    assert 2000 < n <= 5000  # everything not committed, plus at most the segment around it
    rest = await again.take(10_000)
    assert [r.seq for r in rest] == list(range(5000 - n, 5000))
    assert all(isinstance(r, DeltaRow) for r in rest) and rest[-1] == delta(4999)
    again.release(n)
    assert again.rows == 0 and again.bytes == 0 and budget.used == 0
    assert list((tmp_path / "orderbook_deltas").glob("seg-*")) == []  # space given back
    await again.close()


async def test_a_segment_is_deleted_only_once_its_rows_are_committed(tmp_path: Path) -> None:
    sp = spool(tmp_path, chunk_rows=10, segment_bytes=1)  # one chunk per segment
    await sp.open()
    for i in range(30):
        sp.append(delta(i), i)
    await sp.flush()
    segs = lambda: len(list((tmp_path / "orderbook_deltas").glob("seg-*")))
    assert segs() == 3
    assert len(await sp.take(30)) == 30
    assert segs() == 3  # read back, not committed: still on disk
    sp.release(10)
    assert segs() == 2
    sp.release(30)
    assert segs() == 0 and sp.bytes == 0
    await sp.close()


async def test_a_damaged_chunk_is_detected_counted_and_skipped(tmp_path: Path) -> None:
    sp = spool(tmp_path, chunk_rows=100)
    await sp.open()
    for i in range(300):
        sp.append(delta(i), i)
    await sp.flush()
    await sp.close()
    (seg,) = (tmp_path / "orderbook_deltas").glob("seg-*.spool")
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the second chunk
    seg.write_bytes(bytes(data))
    reg = CollectorRegistry()
    again = spool(tmp_path, reg=reg, chunk_rows=100)
    assert await again.open() == 100  # the first chunk; the damaged one and after are skipped
    got = await again.take(1000)
    assert [r.seq for r in got] == list(range(100))
    assert sample(reg, "writer_spool_corrupt_chunks_total", writer="orderbook_deltas") == 1
    await again.close()


async def test_the_disk_budget_bounds_every_spool_together(tmp_path: Path) -> None:
    budget = SpoolBudget(20_000)
    a = spool(tmp_path, "trades", budget, chunk_rows=50)
    b = spool(tmp_path, "orderbook_deltas", budget, chunk_rows=50)
    await a.open()
    await b.open()
    n = 0
    while a.has_room():
        a.append(trade(n), n)
        n += 1
        if n % 50 == 0:
            await a.flush()
    assert budget.full() and not b.has_room()  # the other writer's spool is bounded too
    assert 20_000 <= budget.used < 20_000 + 50 * 400  # overshoot: at most one chunk
    await a.take(n)
    a.release(n)
    assert budget.used == 0 and a.has_room() and b.has_room()
    await a.close()
    await b.close()


async def test_prepended_rows_come_out_first(tmp_path: Path) -> None:
    sp = spool(tmp_path)
    await sp.open()
    for i in range(10, 20):
        sp.append(delta(i), i)
    await sp.flush()
    await sp.prepend([delta(i) for i in range(10)])
    await sp.close()
    again = spool(tmp_path)
    assert await again.open() == 20
    assert [r.seq for r in await again.take(100)] == list(range(20))
    await again.close()


# -- the writer with a spool -------------------------------------------------------------------


async def test_a_full_queue_spills_to_disk_instead_of_blocking(tmp_path: Path) -> None:
    reg, m = metrics()
    sink = GatedSink()  # the database is "down": nothing commits
    sp = Spool(tmp_path, "orderbook_deltas", SpoolBudget(1 << 30), m, chunk_rows=100)
    w = writer("orderbook_deltas", sink, m, batch_size=5, queue_max_rows=10, spool=sp)
    await w.open_spool()
    for i in range(1000):  # 100x the queue: none of these waits
        await asyncio.wait_for(w.put(delta(i)), 1)
    assert w.queued_rows == 10 and w.spooled_rows == 990
    assert w.offer(delta(1000)) is False  # rows are spooled: nothing jumps the line
    assert sample(reg, "writer_backpressure_seconds_total", writer="orderbook_deltas") == 0
    assert sample(reg, "writer_spool_spilled_rows_total", writer="orderbook_deltas") == 990
    mark = w.mark
    waiter = asyncio.create_task(w.settled(mark))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # nothing committed yet: no evidence
    sink.gate.set()
    await asyncio.wait_for(waiter, 10)
    assert await w.close(5) == 0
    assert [r.seq for r in sink.rows] == list(range(1000))  # order kept
    assert sample(reg, "writer_spool_replayed_rows_total", writer="orderbook_deltas") == 990
    assert sample(reg, "writer_spool_rows", writer="orderbook_deltas") == 0


async def test_a_full_spool_gives_backpressure(tmp_path: Path) -> None:
    reg, m = metrics()
    sink = GatedSink()
    sp = Spool(tmp_path, "orderbook_deltas", SpoolBudget(1), m, chunk_rows=5, max_memory_rows=5)
    w = writer("orderbook_deltas", sink, m, batch_size=5, queue_max_rows=10, spool=sp)
    await w.open_spool()
    for i in range(15):
        await asyncio.wait_for(w.put(delta(i)), 1)
    await sp.flush()  # one chunk on disk: the 1-byte budget is used up
    blocked = asyncio.create_task(w.put(delta(15)))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    sink.gate.set()
    await asyncio.wait_for(blocked, 10)
    assert await w.close(5) == 0
    assert [r.seq for r in sink.rows] == list(range(16))
    assert sample(reg, "writer_backpressure_seconds_total", writer="orderbook_deltas") > 0


async def test_stop_with_the_database_down_keeps_every_row_for_the_next_start(tmp_path: Path) -> None:
    _, m = metrics()
    sp = Spool(tmp_path, "orderbook_deltas", SpoolBudget(1 << 30), m, chunk_rows=7)
    w = writer("orderbook_deltas", GatedSink(), m, batch_size=5, queue_max_rows=10, spool=sp)
    await w.open_spool()
    for i in range(50):
        await w.put(delta(i))
    assert await w.close(0.2) == 0  # nothing lost: the queue went back to the spool
    _, m2 = metrics()
    sink = MemorySink()
    sp2 = Spool(tmp_path, "orderbook_deltas", SpoolBudget(1 << 30), m2)
    w2 = writer("orderbook_deltas", sink, m2, spool=sp2)
    assert await w2.open_spool() == 50
    await w2.put(delta(50))  # a new row waits behind the old ones
    await w2.settled(w2.mark)
    assert [r.seq for r in sink.rows] == list(range(51))
    assert await w2.close(5) == 0


async def test_database_stopped_the_producer_never_waits_and_nothing_is_lost(
        own_cluster: PgCluster, tmp_path: Path) -> None:
    dsn = own_cluster.create_database("gatherer_spool")
    apply_migrations(dsn, "gatherer")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER DATABASE gatherer_spool SET synchronous_commit = on")
    reg, m = metrics()
    sp = Spool(tmp_path, "trades", SpoolBudget(1 << 30), m, chunk_rows=20)
    w = writer("trades", PgSink(dsn), m, batch_size=10, queue_max_rows=50, spool=sp)
    await w.open_spool()
    for i in range(30):
        await w.put(trade(i))
    await w.settled(w.mark)
    own_cluster.stop("immediate")
    for i in range(30, 530):  # ten times the queue while the database is away
        await asyncio.wait_for(w.put(trade(i)), 2)
    assert w.failing or w.queued_rows == 50
    assert w.spooled_rows > 0
    own_cluster.start()
    await asyncio.wait_for(w.settled(w.mark), 60)
    assert await w.close(30) == 0
    assert rows(dsn, "SELECT count(*), count(DISTINCT trade_id) FROM trades") == [(530, 530)]
    assert sample(reg, "writer_backpressure_seconds_total", writer="trades") == 0
    assert sample(reg, "writer_spool_replayed_rows_total", writer="trades") > 0
