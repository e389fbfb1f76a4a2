"""Router: ownership, occurrence, dirty books and resync, backfill/lifecycle requests, metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gatherer.router import BackfillRequest, ResyncRequest, Router
from shared.kalshi.models import DeltaRow, Lifecycle, SeqGap, SnapshotRow, TickerRow, TradeRow
from shared.metrics import GathererMetrics

RX = 1_778_774_531_300_000
T1, T2 = "KXA-1", "KXA-2"


class ListWriter:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def offer(self, row: Any) -> bool:
        self.rows.append(row)
        return True

    async def put(self, row: Any) -> None:
        self.rows.append(row)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = GathererMetrics(self.registry)
        self.w = {
            n: ListWriter()
            for n in ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")
        }
        self.resync: asyncio.Queue[ResyncRequest] = asyncio.Queue()
        self.backfill: asyncio.Queue[BackfillRequest] = asyncio.Queue()
        self.lifecycle: asyncio.Queue[Lifecycle | SeqGap] = asyncio.Queue()
        self.clock = Clock()
        self.router = Router(
            self.w,
            self.metrics,
            resync_q=self.resync,
            backfill_q=self.backfill,
            lifecycle_q=self.lifecycle,
            clock=self.clock,
        )

    def sample(self, name: str, **labels: str) -> float:
        self.router.flush_metrics()
        return self.registry.get_sample_value(name, labels) or 0.0

    @property
    def deltas(self) -> list[DeltaRow]:
        return self.w["orderbook_deltas"].rows

    @property
    def snapshots(self) -> list[SnapshotRow]:
        return self.w["orderbook_snapshots"].rows


def sub(cid: int, channel: str, sid: int) -> bytes:
    return orjson.dumps({"id": cid, "type": "subscribed", "msg": {"channel": channel, "sid": sid}})


def snap(sid: int, seq: int, ticker: str, yes: list[list[str]], cid: int | None = None) -> bytes:
    f: dict[str, Any] = {
        "type": "orderbook_snapshot",
        "sid": sid,
        "seq": seq,
        "msg": {"market_ticker": ticker, "yes_dollars_fp": yes},
    }
    if cid is not None:
        f["id"] = cid
    return orjson.dumps(f)


def delta(
    sid: int, seq: int, ticker: str, price: str, d: str, ts_ms: int, side: str = "yes"
) -> bytes:
    return orjson.dumps(
        {
            "type": "orderbook_delta",
            "sid": sid,
            "seq": seq,
            "msg": {
                "market_ticker": ticker,
                "price_dollars": price,
                "delta_fp": d,
                "side": side,
                "ts_ms": ts_ms,
            },
        }
    )


def trade(sid: int, seq: int, tid: str, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "type": "trade",
            "sid": sid,
            "seq": seq,
            "msg": {
                "trade_id": tid,
                "market_ticker": T1,
                "yes_price_dollars": "0.5000",
                "no_price_dollars": "0.5000",
                "count_fp": "1.00",
                "taker_side": "yes",
                "ts_ms": ts_ms,
            },
        }
    )


async def ob_conn(rig: Rig, conn: str = "ob-1", sid: int = 3) -> None:
    rig.router.attach(conn, "orderbook")
    await rig.router.route(conn, sub(1, "orderbook_delta", sid), RX)
    await rig.router.route(conn, snap(sid, 1, T1, [["0.5000", "10.00"]]), RX)
    await rig.router.route(conn, snap(sid, 2, T2, [["0.4000", "5.00"]]), RX)


async def test_control_replies_are_returned_to_the_connection_layer() -> None:
    rig = Rig()
    rig.router.attach("c", "orderbook")
    out = await rig.router.route("c", sub(1, "orderbook_delta", 3), RX)
    assert [(e.id, e.sid) for e in out] == [(1, 3)]  # type: ignore[union-attr]
    assert await rig.router.route("c", snap(3, 1, T1, []), RX) == ()


async def test_occurrence_numbers_identical_deltas_within_one_exchange_ts() -> None:
    rig = Rig()
    await ob_conn(rig)
    frames = [
        ("0.5000", "1.00", 100),
        ("0.5000", "1.00", 100),
        ("0.5100", "1.00", 100),
        ("0.5000", "1.00", 100),
        ("0.5000", "-1.00", 100),
        ("0.5000", "1.00", 101),
    ]
    for i, (p, d, ts) in enumerate(frames):
        await rig.router.route("ob-1", delta(3, 3 + i, T1, p, d, ts), RX)
    assert [(r.price, r.delta, r.exchange_ts // 1000, r.occurrence) for r in rig.deltas] == [
        (5000, 100, 100, 0),
        (5000, 100, 100, 1),
        (5100, 100, 100, 0),
        (5000, 100, 100, 2),
        (5000, -100, 100, 0),
        (5000, 100, 101, 0),
    ]
    book = rig.router.book(T1)
    assert book is not None and book.levels("yes") == ((5000, 1300), (5100, 100))


async def test_snapshot_records_last_delta_and_replaces_book() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", delta(3, 4, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", snap(3, 5, T1, [["0.5000", "12.00"]], cid=9), RX)
    last = rig.snapshots[-1]
    assert (last.source, last.last_delta_ts, last.last_delta_occurrence) == ("resync", 100_000, 1)
    assert rig.snapshots[0].last_delta_ts is None and rig.snapshots[0].source == "ws"
    assert rig.router.book(T1).levels("yes") == ((5000, 1200),)  # type: ignore[union-attr]


async def test_delta_before_snapshot_is_dropped_and_resync_requested_once() -> None:
    rig = Rig()
    rig.router.attach("c", "orderbook")
    await rig.router.route("c", delta(3, 1, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("c", delta(3, 2, T1, "0.5000", "1.00", 100), RX)
    assert rig.deltas == []
    assert rig.resync.get_nowait() == ResyncRequest("c", 3, (T1,), "no_snapshot")
    assert rig.resync.empty()
    assert rig.sample("router_messages_routed_total", type="delta_dropped") == 2


async def test_only_the_owning_sid_feeds_a_market() -> None:
    rig = Rig()
    await ob_conn(rig, "ob-1", 3)
    # the market moves: a snapshot on another connection takes ownership
    rig.router.attach("ob-2", "orderbook")
    await rig.router.route("ob-2", sub(1, "orderbook_delta", 8), RX)
    await rig.router.route("ob-2", snap(8, 1, T1, [["0.5000", "10.00"]]), RX)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX)  # old owner: dropped
    await rig.router.route("ob-2", delta(8, 2, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", delta(3, 4, T2, "0.4000", "1.00", 100), RX)  # still ob-1's
    assert [(r.sid, r.ticker) for r in rig.deltas] == [(8, T1), (3, T2)]


async def test_gap_marks_the_sids_books_dirty_until_resync() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 5, T1, "0.5000", "1.00", 100), RX + 70)  # 3, 4 lost
    assert rig.sample("conn_manager_sequence_gaps_total", role="orderbook") == 1
    req = rig.resync.get_nowait()
    assert (req.conn_id, req.sid, req.tickers, req.reason) == ("ob-1", 3, (T1, T2), "seq_gap")
    assert req.since_us == RX  # the loss window starts at the last good frame
    assert rig.router.book(T1) is None and rig.router.book(T2) is None
    assert len(rig.deltas) == 1  # stored (a real exchange event) ...
    await rig.router.route("ob-1", delta(3, 6, T1, "0.5000", "1.00", 101), RX)
    await rig.router.route("ob-1", snap(3, 7, T1, [["0.5000", "3.00"]], cid=4), RX)
    book = rig.router.book(T1)
    assert book is not None and book.levels("yes") == ((5000, 300),)  # ... but never applied
    assert rig.snapshots[-1].source == "resync"
    assert rig.router.book(T2) is None  # still waiting for its own snapshot


async def test_negative_level_triggers_resync() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "-11.00", 100), RX)
    assert rig.resync.get_nowait().reason == "negative_level"
    assert rig.router.book(T1) is None


async def test_rejected_orderbook_frame_dirties_that_market() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.50001", "1.00", 100), RX)
    assert rig.sample("router_parse_errors_total", reason="too_precise") == 1
    # since the book was last known good: its snapshot
    assert rig.resync.get_nowait() == ResyncRequest("ob-1", 3, (T1,), "rejected_frame", RX)
    assert rig.router.book(T1) is None and rig.router.book(T2) is not None


async def test_snapshot_hook_and_a_rest_snapshot_adopted_as_the_book() -> None:
    rig = Rig()
    seen: list[tuple[str, int]] = []
    rig.router.on_snapshot = lambda t, rx: seen.append((t, rx))
    await ob_conn(rig)
    assert seen == []  # held until their place in the stream is known (issue 19)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX + 5)
    assert seen == [(T1, RX)]  # the next delta placed it: now it is in the writer
    await rig.router.route("ob-1", delta(3, 9, T1, "0.5000", "1.00", 101), RX + 9)  # a gap
    assert rig.router.book(T1) is None
    rest = SnapshotRow(T1, RX + 20, "resync", ((5000, 700),), (), None, None, None, RX + 20)
    assert await rig.router.adopt_snapshot(rest)
    book = rig.router.book(T1)
    assert book is not None and book.levels("yes") == ((5000, 700),)
    # a REST snapshot has no place in the WebSocket stream
    assert rig.snapshots[-1].last_delta_ts is None and rig.snapshots[-1].cut_kind is None
    assert seen[-1] == (T1, RX + 20)
    await rig.router.route("ob-1", delta(3, 10, T1, "0.5000", "1.00", 102), RX + 30)
    assert rig.router.book(T1).levels("yes") == ((5000, 800),)  # type: ignore[union-attr]
    lost = SnapshotRow("NOT-OWNED", RX, "resync", (), (), None, None, None, RX)
    assert not await rig.router.adopt_snapshot(lost)  # no owner: stored anyway, as evidence
    assert rig.snapshots[-1].ticker == "NOT-OWNED"


async def test_trade_gap_requests_backfill_for_the_window() -> None:
    rig = Rig()
    rig.router.attach("tr", "trade")
    await rig.router.route("tr", sub(1, "trade", 5), RX)
    await rig.router.route("tr", trade(5, 1, "3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13", 1), RX + 10)
    await rig.router.route("tr", trade(5, 4, "4b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13", 2), RX + 500)
    assert rig.backfill.get_nowait() == BackfillRequest(None, RX + 10, RX + 500, "seq_gap", "tr")
    assert len(rig.w["trades"].rows) == 2 and all(
        isinstance(r, TradeRow) for r in rig.w["trades"].rows
    )
    assert rig.sample("conn_manager_sequence_gaps_total", role="trade") == 1
    await rig.router.route("tr", trade(5, 4, "4b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13", 2), RX + 600)
    assert len(rig.w["trades"].rows) == 2  # replay dropped
    assert rig.sample("router_duplicates_total", role="trade") == 1


async def test_lifecycle_and_its_gaps_go_to_the_registry() -> None:
    rig = Rig()
    rig.router.attach("lc", "lifecycle")
    await rig.router.route("lc", sub(1, "market_lifecycle_v2", 6), RX)
    f = {
        "type": "market_lifecycle_v2",
        "sid": 6,
        "seq": 1,
        "msg": {"market_ticker": T1, "event_type": "settled", "settled_ts": 1},
    }
    await rig.router.route("lc", orjson.dumps(f), RX)
    f["seq"] = 3
    await rig.router.route("lc", orjson.dumps(f), RX)
    got = [rig.lifecycle.get_nowait() for _ in range(3)]
    assert [type(g).__name__ for g in got] == ["Lifecycle", "SeqGap", "Lifecycle"]


async def test_unsubscribe_terminal_error_and_detach_release_books() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route(
        "ob-1", orjson.dumps({"id": 5, "sid": 3, "seq": 2, "type": "unsubscribed"}), RX
    )
    assert rig.router.book(T1) is None
    await ob_conn(rig, "ob-2", 4)
    await rig.router.route(
        "ob-2",
        orjson.dumps(
            {
                "id": 9,
                "sid": 4,
                "type": "error",
                "msg": {"code": 25, "msg": "Subscription buffer overflow"},
            }
        ),
        RX,
    )
    assert rig.router.book(T1) is None
    await ob_conn(rig, "ob-3", 5)
    assert rig.router.book(T2) is not None
    rig.router.detach("ob-3")
    assert rig.router.book(T2) is None
    with pytest.raises(KeyError):
        await rig.router.route("ob-3", snap(5, 3, T1, []), RX)


async def test_compare_and_request_resync_for_the_poller() -> None:
    rig = Rig()
    await ob_conn(rig)
    same = SnapshotRow(T1, RX + 50, "rest", ((5000, 1000),), (), None, None, None, RX + 50)
    diff = rig.router.compare(same)
    assert diff is not None and not diff  # a match: the book is known good until RX + 50
    other = same._replace(yes_levels=((5000, 900),), received_at=RX + 90)
    assert rig.router.compare(other).levels == (("yes", 5000, 1000, 900),)  # type: ignore[union-attr]
    assert await rig.router.request_resync(T1, "book_mismatch")
    assert rig.resync.get_nowait() == ResyncRequest("ob-1", 3, (T1,), "book_mismatch", RX + 50)
    assert rig.router.compare(other) is None  # dirty now
    assert not await rig.router.request_resync("UNKNOWN")


async def test_metrics_are_counted_by_type_and_reason() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", b"garbage", RX)
    await rig.router.route("ob-1", b'{"type":"fill","sid":1,"msg":{}}', RX)
    tk = {
        "type": "ticker",
        "sid": 9,
        "msg": {"market_ticker": T1, "ts_ms": 5, "price_dollars": "0.5000"},
    }
    await rig.router.route("ob-1", orjson.dumps(tk), RX)
    assert isinstance(rig.w["tickers"].rows[0], TickerRow)
    assert rig.sample("router_messages_routed_total", type="orderbook_delta") == 1
    assert rig.sample("router_messages_routed_total", type="orderbook_snapshot") == 2
    assert rig.sample("router_messages_routed_total", type="ticker") == 1
    assert rig.sample("router_messages_routed_total", type="control") == 1
    assert rig.sample("router_parse_errors_total", reason="bad_json") == 1
    assert rig.sample("router_parse_errors_total", reason="unknown_type") == 1
    assert rig.sample("router_unknown_messages_total") == 1


async def test_repeated_errors_log_once_per_minute_with_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.router.attach("c", "ticker")
    with caplog.at_level(logging.WARNING, logger="gatherer.router"):
        for _ in range(5):
            await rig.router.route("c", b"garbage", RX)
        assert len(caplog.records) == 1
        rig.clock.t += 61
        await rig.router.route("c", b"garbage", RX)
    assert len(caplog.records) == 2
    assert caplog.records[1].suppressed == 4  # type: ignore[attr-defined]


async def test_route_waits_on_a_full_writer() -> None:
    rig = Rig()
    gate = asyncio.Event()

    class Blocking(ListWriter):
        def offer(self, row: Any) -> bool:
            return False

        async def put(self, row: Any) -> None:
            await gate.wait()
            self.rows.append(row)

    rig.router._trades = Blocking()  # type: ignore[assignment]
    rig.router.attach("tr", "trade")
    task = asyncio.create_task(
        rig.router.route("tr", trade(5, 1, "3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13", 1), RX)
    )
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set()
    await task


# -- total order and snapshot places (issue 19) ----------------------------------------------


async def test_ts_rank_orders_every_delta_of_a_millisecond_after_the_first_one() -> None:
    rig = Rig()
    await ob_conn(rig)
    frames = [("0.5000", "1.00", 100), ("0.5100", "2.00", 100), ("0.5000", "1.00", 100),
              ("0.5200", "1.00", 101), ("0.5000", "-1.00", 101), ("0.5300", "1.00", 102)]
    for i, (p, d, ts) in enumerate(frames):
        await rig.router.route("ob-1", delta(3, 3 + i, T1, p, d, ts), RX)
    # ms 100 is the first after the fresh snapshot: deltas of it may have preceded the snapshot
    assert [(r.exchange_ts // 1000, r.ts_rank, r.occurrence) for r in rig.deltas] == [
        (100, None, 0), (100, None, 0), (100, None, 1), (101, 0, 0), (101, 1, 0), (102, 0, 0)]


async def test_after_a_gap_ranks_are_unknown_until_the_markets_first_new_millisecond() -> None:
    rig = Rig()
    await ob_conn(rig)
    for i, (t, ts) in enumerate([(T1, 100), (T2, 100), (T1, 101), (T2, 101)]):
        await rig.router.route("ob-1", delta(3, 3 + i, t, "0.4000", "1.00", ts), RX)
    await rig.router.route("ob-1", delta(3, 8, T1, "0.5100", "1.00", 101), RX)  # 7 lost: T1 or T2?
    await rig.router.route("ob-1", delta(3, 9, T1, "0.5200", "1.00", 102), RX)
    await rig.router.route("ob-1", delta(3, 10, T2, "0.4100", "1.00", 101), RX)
    await rig.router.route("ob-1", delta(3, 11, T2, "0.4100", "1.00", 102), RX)
    assert [(r.ticker, r.exchange_ts // 1000, r.ts_rank) for r in rig.deltas[4:]] == [
        (T1, 101, None),  # the lost frame may have been T1's at 101
        (T1, 102, 0),  # every T1 delta of 102 came after the gap
        (T2, 101, None),  # ... or T2's at 101 (a market's times never go back)
        (T2, 102, 0)]


async def test_fresh_snapshot_is_held_until_the_next_delta_which_it_excludes() -> None:
    rig = Rig()
    await ob_conn(rig)
    assert rig.snapshots == [] and rig.router.held_snapshots == 2
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100, side="no"), RX)
    (s,) = rig.snapshots
    assert (s.ticker, s.cut_kind, s.cut_ts, s.cut_side, s.cut_price, s.cut_delta, s.cut_occurrence) == (
        T1, "next", 100_000, "no", 5000, 100, 0)
    assert s.last_delta_ts is None and rig.router.held_snapshots == 1


async def test_in_stream_snapshot_after_a_delta_is_cut_after_it_at_once() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", delta(3, 4, T1, "0.5100", "-1.00", 100), RX)
    await rig.router.route("ob-1", snap(3, 5, T1, [["0.5000", "11.00"]], cid=9), RX)
    last = rig.snapshots[-1]
    assert (last.source, last.cut_kind, last.cut_ts, last.cut_price, last.cut_delta) == (
        "resync", "last", 100_000, 5100, -100)
    assert (last.last_delta_ts, last.last_delta_occurrence) == (100_000, 0)


async def test_snapshot_after_a_gap_waits_for_a_delta_received_after_the_gap() -> None:
    rig = Rig()
    await ob_conn(rig)
    await rig.router.route("ob-1", delta(3, 3, T1, "0.5000", "1.00", 100), RX)
    await rig.router.route("ob-1", delta(3, 5, T2, "0.4000", "1.00", 100), RX)  # gap: 4 lost
    await rig.router.route("ob-1", snap(3, 6, T1, [["0.5000", "11.00"]], cid=9), RX)
    assert [s.ticker for s in rig.snapshots] == [T1, T2]  # the two fresh ones, released
    # T2's first delta after its snapshot may be the lost one: its place is unknown
    assert [s.cut_kind for s in rig.snapshots] == ["next", None]
    await rig.router.route("ob-1", delta(3, 7, T1, "0.5000", "2.00", 101), RX)
    s = rig.snapshots[-1]
    assert (s.source, s.cut_kind, s.cut_ts, s.cut_delta) == ("resync", "next", 101_000, 200)


async def test_a_prompt_frame_after_the_hold_writes_quiet_and_a_gap_writes_unknown() -> None:
    from gatherer.router import HOLD_US

    rig = Rig()
    await ob_conn(rig)
    # a prompt delta of T2 HOLD_US later: T1 saw nothing meanwhile; T2's own delta places T2
    late = RX + HOLD_US
    await rig.router.route("ob-1", delta(3, 3, T2, "0.4000", "1.00", late // 1000), late)
    kinds = {s.ticker: s.cut_kind for s in rig.snapshots}
    assert kinds == {T1: "quiet", T2: "next"}
    # a stalled frame (delivered long after its exchange time) never ends a hold ...
    await rig.router.route("ob-1", snap(3, 4, T1, [["0.5000", "10.00"]], cid=2), late)
    stalled = late + HOLD_US
    await rig.router.route("ob-1", delta(3, 5, T2, "0.4000", "1.00", late // 1000), stalled)
    assert rig.router.held_snapshots == 1
    # ... nor does a gap: it writes the snapshot with its place unknown
    await rig.router.route("ob-1", delta(3, 7, T2, "0.4000", "1.00", stalled // 1000), stalled)
    s = rig.snapshots[-1]
    assert rig.router.held_snapshots == 0 and (s.ticker, s.source, s.cut_kind) == (T1, "resync", None)


async def test_held_snapshots_are_written_on_expiry_detach_and_stop() -> None:
    from gatherer.router import MAX_HOLD_S

    rig = Rig()
    await ob_conn(rig, "ob-1", 3)
    rig.clock.t += MAX_HOLD_S + 1
    await ob_conn(rig, "ob-2", 4)  # T1, T2 move to ob-2: ob-1's held ones are written now
    assert [(s.ticker, s.cut_kind) for s in rig.snapshots] == [(T1, None), (T2, None)]
    rig.router.expire_holds()
    assert rig.router.held_snapshots == 2  # ob-2's are young
    rig.clock.t += MAX_HOLD_S + 1
    rig.router.expire_holds()
    assert rig.router.held_snapshots == 0 and len(rig.snapshots) == 4
    await ob_conn(rig, "ob-3", 5)
    rig.router.detach("ob-3")
    assert rig.router.held_snapshots == 0 and len(rig.snapshots) == 6
    await ob_conn(rig, "ob-4", 6)
    rig.router.release_all()
    await rig.router.drain()
    assert rig.router.held_snapshots == 0 and len(rig.snapshots) == 8
    assert all(s.cut_kind is None for s in rig.snapshots)


async def test_an_idle_socket_ends_holds_as_quiet_on_the_wall_clock() -> None:
    from gatherer.router import HOLD_US

    rig = Rig()
    await ob_conn(rig)
    rig.router.expire_holds(RX + HOLD_US - 1)
    assert rig.router.held_snapshots == 2  # not yet
    rig.router.expire_holds(RX + HOLD_US)  # nothing arrived for HOLD_US on an idle socket
    assert [(s.ticker, s.cut_kind) for s in rig.snapshots] == [(T1, "quiet"), (T2, "quiet")]
