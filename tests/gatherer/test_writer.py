"""Writers against a real PostgreSQL (tests/fix_db.py): rows land, dedup, trade identity,
rejected rows, backpressure, database outage, close(), NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from gatherer._copy import SPECS, CopyFormatter, TableSpec
from gatherer.writer import MemorySink, NullSink, PgSink, Writer, WriterClosed
from shared.kalshi.models import (
    CoverageRow,
    DeltaRow,
    EventRow,
    MarketRow,
    SeriesRow,
    SnapshotRow,
    TickerRow,
    TradeRow,
    ticker_content_hash,
)
from shared.metrics import GathererMetrics
from shared.migrate import apply_migrations
from shared.pgcluster import PgCluster

DAY_US = 86_400_000_000
NOW = 1_764_028_800_000_000  # 2025-11-25T00:00Z: lands in a real or the DEFAULT partition


def trade(i: int, ts: int = NOW, source: str = "ws", **kw: Any) -> TradeRow:
    row = TradeRow(
        str(uuid.UUID(int=i + 1)),
        "KXA-1",
        ts,
        5000,
        5000,
        100,
        "yes",
        "yes",
        "bid",
        False,
        source,
        ts + 7,
    )
    return row._replace(**kw)


def delta(i: int, **kw: Any) -> DeltaRow:
    return DeltaRow("KXA-1", NOW + i * 1000, "yes", 5000, 100, 0, i, 3, NOW + i)._replace(**kw)


def metrics() -> tuple[CollectorRegistry, GathererMetrics]:
    reg = CollectorRegistry()
    return reg, GathererMetrics(reg)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def rows(dsn: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def writer(spec: str, sink: Any, m: GathererMetrics, **kw: Any) -> Writer:
    kw.setdefault("batch_size", 100)
    kw.setdefault("flush_interval_s", 0.01)
    kw.setdefault("queue_max_rows", 1000)
    kw.setdefault("retry_initial_s", 0.01)
    kw.setdefault("retry_max_s", 0.1)
    w = Writer(SPECS[spec], sink, m, **kw)
    w.start()
    return w


# -- rows land ---------------------------------------------------------------------------------


async def test_every_table_lands(gatherer_dsn: str) -> None:
    reg, m = metrics()
    tid = str(uuid.uuid4())
    data: dict[str, list[Any]] = {
        "trades": [
            TradeRow(tid, "KXA-1", NOW, 6300, 3700, 4550, "no", "no", "ask", True, "ws", NOW + 5)
        ],
        "orderbook_deltas": [DeltaRow("KXA-1", NOW, "yes", 6300, -4550, 0, 3, 3, NOW + 5)],
        "orderbook_snapshots": [
            SnapshotRow(
                "KXA-1", NOW, "ws", ((6100, 12000), (6300, 4550)), (), 1, NOW - 1000, 2, NOW + 5
            )
        ],
        "tickers": [
            TickerRow(
                "KXA-1",
                NOW,
                6100,
                6500,
                6300,
                912050,
                441000,
                5301,
                2712,
                ticker_content_hash("KXA-1", NOW, 6100, 6500, 6300, 912050, 441000, 5301, 2712),
                NOW + 5,
            )
        ],
        "markets": [
            MarketRow(
                "KXA-1",
                "KXA",
                "KX",
                "binary",
                "t",
                "s",
                "active",
                NOW,
                NOW + 1,
                NOW + 2,
                "",
                NOW,
                '{"ticker": "KXA-1"}',
                NOW + 5,
                NOW + 5,
            )
        ],
        "events": [
            EventRow(
                "KXA",
                "KX",
                "t",
                "st",
                "c",
                True,
                None,
                NOW,
                '{"event_ticker": "KXA"}',
                NOW + 5,
                NOW + 5,
            )
        ],
        "series": [SeriesRow("KX", "t", "c", "daily", NOW, '{"ticker": "KX"}', NOW + 5, NOW + 5)],
        "coverage_events": [
            CoverageRow(
                str(uuid.uuid4()),
                "gatherer-1",
                "market",
                "KXA-1",
                "seq_gap",
                NOW,
                None,
                False,
                '{"sid": 3}',
                NOW,
                NOW,
            )
        ],
    }
    ws = {t: writer(t, PgSink(gatherer_dsn), m) for t in data}
    for t, rs in data.items():
        for r in rs:
            await ws[t].put(r)
    for w in ws.values():
        assert await w.close(10) == 0
    assert rows(
        gatherer_dsn,
        "SELECT trade_id::text, exchange_ts, yes_price, count, is_block_trade FROM trades",
    ) == [(tid, NOW, 6300, 4550, True)]
    assert rows(gatherer_dsn, "SELECT trade_id::text, exchange_ts FROM trade_ids") == [(tid, NOW)]
    assert rows(gatherer_dsn, "SELECT price, delta, occurrence, sid FROM orderbook_deltas") == [
        (6300, -4550, 0, 3)
    ]
    assert rows(
        gatherer_dsn,
        "SELECT yes_levels, no_levels, last_delta_ts, last_delta_occurrence "
        "FROM orderbook_snapshots",
    ) == [([[6100, 12000], [6300, 4550]], [], NOW - 1000, 2)]
    assert rows(gatherer_dsn, "SELECT dollar_volume, content_hash FROM tickers") == [
        (5301, data["tickers"][0].content_hash)
    ]
    assert rows(gatherer_dsn, "SELECT status, raw->>'ticker' FROM markets") == [("active", "KXA-1")]
    assert rows(gatherer_dsn, "SELECT mutually_exclusive FROM events") == [(True,)]
    assert rows(gatherer_dsn, "SELECT frequency FROM series") == [("daily",)]
    assert rows(gatherer_dsn, "SELECT kind, detail->>'sid' FROM coverage_events") == [
        ("seq_gap", "3")
    ]
    assert sample(reg, "writer_inserts_total", writer="trades") == 1
    assert sample(reg, "writer_batch_size_count", writer="orderbook_deltas") == 1


async def test_duplicates_collapse_within_and_across_batches(gatherer_dsn: str) -> None:
    reg, m = metrics()
    w = writer("orderbook_deltas", PgSink(gatherer_dsn), m, batch_size=4)
    batch = [delta(1), delta(1), delta(2), delta(1, occurrence=1)]
    for r in batch:
        await w.put(r)
    for r in batch:  # the same rows again, e.g. from a reconnect overlap
        await w.put(r)
    assert await w.close(10) == 0
    got = rows(gatherer_dsn, "SELECT exchange_ts, occurrence FROM orderbook_deltas ORDER BY 1, 2")
    assert got == [(NOW + 1000, 0), (NOW + 1000, 1), (NOW + 2000, 0)]
    assert sample(reg, "writer_inserts_total", writer="orderbook_deltas") == 3


async def test_a_trade_seen_via_ws_and_rest_is_one_row_with_the_first_exchange_ts(
    gatherer_dsn: str,
) -> None:
    _, m = metrics()
    w = writer("trades", PgSink(gatherer_dsn), m, batch_size=2)
    # same batch: ws first, rest (with a later created_time) second
    await w.put(trade(1, NOW, "ws"))
    await w.put(trade(1, NOW + 1000, "rest"))
    # later batches: rest first this time, then ws; and again for trade 1
    await w.put(trade(2, NOW + 5000, "rest"))
    await w.put(trade(9, NOW))
    await w.put(trade(2, NOW + 4000, "ws"))
    await w.put(trade(1, NOW + 2000, "rest"))
    assert await w.close(10) == 0
    got = rows(gatherer_dsn, "SELECT trade_id::text, exchange_ts, source FROM trades ORDER BY 1")
    assert got == [
        (str(uuid.UUID(int=2)), NOW, "ws"),
        (str(uuid.UUID(int=3)), NOW + 5000, "rest"),
        (str(uuid.UUID(int=10)), NOW, "ws"),
    ]
    assert rows(gatherer_dsn, "SELECT count(*) FROM trade_ids") == [(3,)]


async def test_clean_batches_take_the_fast_path_in_arrival_order(gatherer_dsn: str) -> None:
    reg, m = metrics()
    dw = writer("orderbook_deltas", PgSink(gatherer_dsn), m, batch_size=50)
    tw = writer("trades", PgSink(gatherer_dsn), m, batch_size=50)
    order = [7, 3, 9, 1, 5]  # arrival order differs from key order
    for i in order:
        await dw.put(delta(i))
        await tw.put(trade(i, NOW + i))
    assert await dw.close(10) == 0 and await tw.close(10) == 0
    for table in ("orderbook_deltas", "trades"):
        assert sample(reg, "writer_copy_fallbacks_total", writer=table) == 0
        assert sample(reg, "writer_inserts_total", writer=table) == len(order)
    got = rows(gatherer_dsn, "SELECT seq FROM orderbook_deltas ORDER BY ingest_seq")
    assert [r[0] for r in got] == order
    got = rows(gatherer_dsn, "SELECT t.trade_id::text, i.exchange_ts, i.ticker FROM trades t "
                             "JOIN trade_ids i USING (trade_id) ORDER BY t.ingest_seq")
    assert got == [(str(uuid.UUID(int=i + 1)), NOW + i, "KXA-1") for i in order]


async def test_a_batch_repeating_its_own_trades_stays_on_the_fast_path(gatherer_dsn: str) -> None:
    # Two trade sockets deliver every trade twice, usually into the same batch: the repeats are
    # dropped before the COPY (the first arrival wins), so nothing falls back to staging.
    reg, m = metrics()
    w = writer("trades", PgSink(gatherer_dsn), m, batch_size=8)
    arrivals = [trade(1, NOW), trade(2, NOW), trade(1, NOW + 1000, "rest"), trade(3, NOW),
                trade(2, NOW), trade(3, NOW), trade(4, NOW), trade(4, NOW + 9, "rest")]
    for r in arrivals:
        await w.put(r)
    assert await w.close(10) == 0
    assert sample(reg, "writer_copy_fallbacks_total", writer="trades") == 0
    assert sample(reg, "writer_batch_duplicates_total", writer="trades") == 4
    assert sample(reg, "writer_inserts_total", writer="trades") == 4
    got = rows(gatherer_dsn, "SELECT trade_id::text, exchange_ts, source FROM trades "
                             "ORDER BY ingest_seq")
    assert got == [(str(uuid.UUID(int=i + 1)), NOW, "ws") for i in (1, 2, 3, 4)]
    assert rows(gatherer_dsn, "SELECT count(*) FROM trade_ids") == [(4,)]


async def test_a_refused_fast_path_falls_back_to_staging_with_the_same_result(
    gatherer_dsn: str,
) -> None:
    reg, m = metrics()
    w = writer("trades", PgSink(gatherer_dsn), m, batch_size=3)
    for r in (trade(1, NOW), trade(2, NOW)):
        await w.put(r)
    await asyncio.sleep(0.1)  # first batch lands on the fast path
    # second batch: trade 1 again (REST, later time) between two new ones -> trade_ids refuses
    for r in (trade(3, NOW), trade(1, NOW + 1000, "rest"), trade(4, NOW)):
        await w.put(r)
    assert await w.close(10) == 0
    assert sample(reg, "writer_copy_fallbacks_total", writer="trades") == 1
    assert sample(reg, "writer_inserts_total", writer="trades") == 4
    got = rows(gatherer_dsn, "SELECT trade_id::text, exchange_ts, source FROM trades ORDER BY 1")
    assert got == [(str(uuid.UUID(int=i + 1)), NOW, "ws") for i in (1, 2, 3, 4)]
    assert sample(reg, "writer_rejected_rows_total", writer="trades") == 0


def test_fast_path_declines_values_the_real_columns_cannot_hold() -> None:
    from gatherer._copy import DirectFormatter

    f = DirectFormatter(SPECS["orderbook_deltas"].direct)  # type: ignore[arg-type]
    assert f.format([delta(1)]) is not None
    assert f.format([delta(1), delta(2, occurrence=2**15)]) is None  # int2 would wrap silently
    assert f.format([delta(1, price=2**31)]) is None  # int4 would wrap silently
    assert f.format([delta(1, price="5000")]) is None
    t = DirectFormatter(SPECS["trades"].direct)  # type: ignore[arg-type]
    assert t.format([trade(1)]) is not None
    assert t.format([trade(1)._replace(trade_id="not-a-uuid")]) is None
    # hex but 15 bytes: binary COPY would get a protocol error (08P01), retried forever
    assert t.format([trade(1)._replace(trade_id="ab" * 15)]) is None


async def test_reference_rows_newest_wins(gatherer_dsn: str) -> None:
    _, m = metrics()
    w = writer("markets", PgSink(gatherer_dsn), m, batch_size=1)

    def mk(title: str, upd: int | None, rx: int) -> MarketRow:
        return MarketRow(
            "KXA-1",
            None,
            None,
            None,
            title,
            None,
            "active",
            None,
            None,
            None,
            None,
            upd,
            "{}",
            rx,
            rx,
        )

    for r in (
        mk("v2", 2, 10),
        mk("v1-older", 1, 20),
        mk("v2-same-ts-later", 2, 30),
        mk("no-ts", None, 40),
    ):
        await w.put(r)
        await asyncio.sleep(0.05)  # separate batches
    await w.put(mk("v3", 3, 50))
    await w.put(mk("v3-older-in-batch", 2, 60))
    assert await w.close(10) == 0
    assert rows(gatherer_dsn, "SELECT title, exchange_updated_ts FROM markets") == [("v3", 3)]

    # coverage_events: upsert by event_id, the latest updated_at wins
    cw = writer("coverage_events", PgSink(gatherer_dsn), m, batch_size=1)
    eid = str(uuid.uuid4())
    opened = CoverageRow(eid, "g1", "connection", None, "ws_down", NOW, None, False, "{}", NOW, NOW)
    await cw.put(opened)
    await asyncio.sleep(0.05)
    await cw.put(
        opened._replace(
            window_end=NOW + 5, recovered=True, detail='{"how": "backfill"}', updated_at=NOW + 9
        )
    )
    await asyncio.sleep(0.05)
    await cw.put(opened)  # a stale copy never rolls it back
    assert await cw.close(10) == 0
    assert rows(
        gatherer_dsn, "SELECT window_end, recovered, detail->>'how' FROM coverage_events"
    ) == [(NOW + 5, True, "backfill")]


# -- bad rows ----------------------------------------------------------------------------------


async def test_bad_rows_go_to_rejected_rows_and_the_rest_land(gatherer_dsn: str) -> None:
    reg, m = metrics()
    w = writer("trades", PgSink(gatherer_dsn), m, batch_size=50)
    good = [trade(i) for i in range(20)]
    bad_check = trade(100, yes_price=20000)  # CHECK violation in the database
    bad_uuid = trade(101)._replace(trade_id="not-a-uuid")  # cast error in the database
    bad_type = trade(102)._replace(count="many")  # cannot even be encoded
    bad_range = trade(103, yes_price=2**40)  # int8 in staging, out of range for INTEGER
    short_id = trade(104)._replace(trade_id="ab" * 15)  # hex, but 15 bytes: the cast refuses
    batch = (good[:7] + [bad_check] + good[7:13] + [bad_uuid, bad_type] + good[13:]
             + [bad_range, short_id])
    for r in batch:
        await w.put(r)
    assert await w.close(10) == 0
    assert rows(gatherer_dsn, "SELECT count(*) FROM trades") == [(20,)]
    rej = rows(
        gatherer_dsn,
        "SELECT table_name, reason, payload::jsonb->>'trade_id', received_at "
        "FROM rejected_rows ORDER BY id",
    )
    assert sorted(r[2] for r in rej) == sorted(
        [bad_check.trade_id, "not-a-uuid", bad_type.trade_id, bad_range.trade_id, "ab" * 15]
    )
    assert all(r[0] == "trades" and r[1] and r[3] == NOW + 7 for r in rej)
    assert any("CheckViolation" in r[1] for r in rej)
    assert sample(reg, "writer_rejected_rows_total", writer="trades") == 5
    assert sample(reg, "writer_errors_total", writer="trades", type="constraint") >= 1


async def test_permission_error_keeps_rows_and_retries(gatherer_dsn: str) -> None:
    """A revoked grant is a deployment problem, not bad rows: nothing goes to rejected_rows;
    the writer keeps the batch, reports failing, and lands it once the grant is back."""
    from tests.fix_db import role_dsn

    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON trades FROM gatherer")
    reg, m = metrics()
    w = writer("trades", PgSink(role_dsn(gatherer_dsn, "gatherer")), m, batch_size=10)
    for i in range(10):
        await w.put(trade(i))
    for _ in range(200):
        if w.failing:
            break
        await asyncio.sleep(0.02)
    assert w.failing and "permission denied" in (w.last_error or "")
    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        conn.execute("GRANT INSERT ON trades TO gatherer")
    assert await w.close(10) == 0
    assert rows(gatherer_dsn, "SELECT count(*) FROM trades") == [(10,)]
    assert rows(gatherer_dsn, "SELECT count(*) FROM rejected_rows") == [(0,)]
    assert sample(reg, "writer_rejected_rows_total", writer="trades") == 0
    assert sample(reg, "writer_errors_total", writer="trades", type="other") >= 1


# -- backpressure, outage, close ---------------------------------------------------------------


class GatedSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def write(self, spec: TableSpec, payload: bytes | bytearray, rows: Sequence[Any]) -> int:
        await self.gate.wait()
        return await super().write(spec, payload, rows)


async def test_put_blocks_when_the_queue_is_full_and_the_time_is_counted() -> None:
    reg, m = metrics()
    sink = GatedSink()
    w = writer("orderbook_deltas", sink, m, batch_size=5, queue_max_rows=10)
    for i in range(10):
        await w.put(delta(i))
    blocked = asyncio.create_task(w.put(delta(10)))
    await asyncio.sleep(0.05)
    assert not blocked.done() and w.queued_rows == 10
    sink.gate.set()
    await asyncio.wait_for(blocked, 5)
    assert await w.close(5) == 0
    assert [r.seq for r in sink.rows] == list(range(11))  # nothing lost, order kept
    assert sample(reg, "writer_backpressure_seconds_total", writer="orderbook_deltas") > 0
    with pytest.raises(WriterClosed):
        await w.put(delta(99))


async def test_connection_errors_keep_the_batch_and_retry() -> None:
    reg, m = metrics()
    sink = MemorySink()
    sink.fail_next(psycopg.OperationalError("server closed the connection unexpectedly"), 3)
    w = writer("orderbook_deltas", sink, m)
    for i in range(5):
        await w.put(delta(i))
    assert await w.close(5) == 0
    assert [r.seq for r in sink.rows] == list(range(5))
    assert sample(reg, "writer_errors_total", writer="orderbook_deltas", type="connection") == 3
    assert sink.rejected == []


async def test_database_stopped_mid_run_loses_nothing(own_cluster: PgCluster) -> None:
    dsn = own_cluster.create_database("gatherer_outage")
    apply_migrations(dsn, "gatherer")
    # The test cluster runs with synchronous_commit=off, which lets a crash lose commits that
    # were already acknowledged; no client can guard against that, so turn it back on here.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER DATABASE gatherer_outage SET synchronous_commit = on")
    reg, m = metrics()
    w = writer("trades", PgSink(dsn), m, batch_size=10, queue_max_rows=50)
    for i in range(30):
        await w.put(trade(i))
    while w.queued_rows:
        await asyncio.sleep(0.01)
    own_cluster.stop("immediate")

    async def produce() -> None:
        for i in range(30, 130):
            await w.put(trade(i))

    producer = asyncio.create_task(produce())
    for _ in range(200):  # the bound holds while the database is away
        await asyncio.sleep(0.01)
        assert w.queued_rows <= 50
        if w.failing and w.queued_rows == 50:
            break
    assert w.failing and not producer.done()
    own_cluster.start()
    await asyncio.wait_for(producer, 30)
    assert await w.close(30) == 0
    assert rows(dsn, "SELECT count(*), count(DISTINCT trade_id) FROM trades") == [(130, 130)]
    assert sample(reg, "writer_errors_total", writer="trades", type="connection") >= 1
    assert sample(reg, "writer_backpressure_seconds_total", writer="trades") > 0


async def test_close_flushes_everything_accepted() -> None:
    _, m = metrics()
    sink = MemorySink()
    w = writer(
        "orderbook_deltas", sink, m, batch_size=1000, flush_interval_s=3600, queue_max_rows=5000
    )
    for i in range(2500):
        await w.put(delta(i))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(sink.rows) == 2000:
            break
    assert len(sink.rows) == 2000  # two full batches went; 500 wait for the (hour-long) interval
    assert await w.close(10) == 0
    assert [r.seq for r in sink.rows] == list(range(2500))


async def test_close_reports_rows_left_when_the_deadline_passes() -> None:
    _, m = metrics()
    sink = GatedSink()  # never opens
    w = writer("orderbook_deltas", sink, m)
    for i in range(3):
        await w.put(delta(i))
    assert await w.close(0.1) == 3


async def test_notify_after_commit(gatherer_dsn: str) -> None:
    _, m = metrics()
    listener = await psycopg.AsyncConnection.connect(gatherer_dsn, autocommit=True)
    try:
        await listener.execute("LISTEN kalshi_ingest")
        w = writer("tickers", PgSink(gatherer_dsn, notify_channel="kalshi_ingest"), m)
        await w.put(TickerRow("KXA-1", NOW, None, None, None, None, None, None, None, 1, NOW))
        gen = listener.notifies(timeout=10, stop_after=1)
        got = [n async for n in gen]
        assert [(n.channel, n.payload) for n in got] == [("kalshi_ingest", "tickers")]
        assert await w.close(5) == 0
    finally:
        await listener.close()


# -- pure formatting ---------------------------------------------------------------------------


def test_formatter_is_pure_and_reports_unencodable_rows() -> None:
    fmt = CopyFormatter(SPECS["orderbook_deltas"])
    payload, bad = fmt.format([delta(1), delta(2)._replace(price="x"), delta(3)])
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00") and payload.endswith(b"\xff\xff")
    assert [i for i, _ in bad] == [1]
    clean, _ = fmt.format([delta(1), delta(3)])
    assert bytes(payload) == bytes(clean)


async def test_null_sink_counts_rows() -> None:
    reg, m = metrics()
    w = writer("orderbook_deltas", NullSink(), m)
    for i in range(250):
        await w.put(delta(i))
    assert await w.close(5) == 0
    assert sample(reg, "writer_inserts_total", writer="orderbook_deltas") == 250
