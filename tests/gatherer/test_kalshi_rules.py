"""Kalshi as it really is (issue #14, R1-R10): each rule reproduced against the simulator's
limits model, and survived by the gatherer.

| R  | rule                                                    | test                                         |
|----|---------------------------------------------------------|----------------------------------------------|
| R1 | tokens per request, batch billed per item, tier budget  | test_r1_poller_batches_fit_the_basic_bucket   |
|    | a 429 must not starve backfill/registry                 | test_r1_backfill_goes_before_the_poller       |
| R2 | markets/subscription (26), command rate (27), sockets/key| test_r2_websocket_limits_are_discovered      |
| R3 | a refused ticker must not black out its group           | test_r3_refused_tickers_are_quarantined       |
| R4 | ok/unsubscribed seq in either reading                   | test_r4_ok_seq_never_hides_a_delta            |
| R5 | multivariate markets excluded by default                | test_r5_multivariate_markets_excluded         |
| R6 | a delta without ts/ts_ms                                | test_r6_delta_without_timestamp               |
| R7 | use_yes_price default flip / removal                    | test_r7_use_yes_price_*                       |
| R8 | trades older than the historical cutoff                 | test_r8_backfill_behind_the_cutoff            |
| R9 | recommended hosts, REST and WS separately               | test_r9_recommended_hosts_by_default          |
| R10| websockets >= 15 for connect(proxy=)                    | test_r10_websockets_floor_supports_proxy      |
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gatherer.config import BackfillConfig, KalshiConfig, RateLimitConfig, RegistryConfig
from gatherer.rest import RestClient
from shared.kalshi.auth import load_private_key
from shared.kalshi.decode import Decoder
from shared.kalshi.models import DeltaRow, Duplicate, Rejected, SeqGap, SnapshotRow
from shared.metrics import GathererMetrics
from tests.fix_sim import SimKey, open_ws
from tests.gatherer import _harness as h
from tests.gatherer.conftest import SIM_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


class ListSink:
    """An in-memory row sink (the writers' ``put_many`` interface) for component tests."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def put_many(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)

    async def put(self, row: Any) -> None:
        self.rows.append(row)

    def offer(self, row: Any) -> bool:
        self.rows.append(row)
        return True

    # the writers' commit interface (gatherer._types.CommitSink): in memory a row counts as
    # committed once it is put
    @property
    def mark(self) -> int:
        return len(self.rows)

    async def settled(self, mark: int) -> None:
        return None


def _rest(sim: Any, tier: str = "basic", **kw: Any) -> tuple[RestClient, GathererMetrics]:
    key_id, pem = sim.keygen(tier=tier)
    m = GathererMetrics(CollectorRegistry())
    cfg = KalshiConfig(env="sim", rest_url=sim.rest_url, ws_url=sim.ws_url, api_key_id=key_id)
    return RestClient(cfg, load_private_key(pem.encode(), key_id), RateLimitConfig(), m, **kw), m


async def _started(run_app: Any, doc: dict[str, Any]) -> Any:
    app = await run_app(doc)
    await h.wait_for(lambda: app.health.ready()[0], 15, "gatherer ready")
    return app


# --- R1: token billing ----------------------------------------------------------------------------
async def test_r1_poller_batches_fit_the_basic_bucket(gsim: Any, gconf: Any, run_app: Any,
                                                     gatherer_dsn: str) -> None:
    """A Basic key's read bucket holds 200 tokens; a 100-ticker /markets/orderbooks costs 1,000.
    The poller (batch_size 100 in config) must split its batches to fit, and never 429."""
    app = await _started(run_app, gconf(poller={"interval_s": 3600.0, "batch_size": 100}))
    assert app.poller.batch_size() == 18  # 200 tokens x 90% headroom / 10 per ticker
    polled = await app.poller.cycle()
    assert polled == len(app.registry.open_tickers()) > 20
    assert h.metric(app, "poller_fetch_errors_total") == 0
    # Our bucket paces us under Kalshi's; only delivery jitter beyond ~0.1 s (a loaded machine)
    # can still meet an empty bucket there, and such a 429 is retried, never a lost batch.
    assert h.metric_sum(app, "rest_requests_total", status="429") <= 2
    # what the gatherer learnt from /account/limits, in tokens
    assert h.metric(app, "rest_budget_tokens_per_second", bucket="read") == 200
    assert h.metric(app, "rest_budget_capacity_tokens", bucket="read") == 200
    await h.assert_complete(gsim, gatherer_dsn, books=False)


async def test_r1_backfill_goes_before_the_poller(make_sim: Any) -> None:
    """The read budget is shared: with the poller's batches queued (and 429s without
    Retry-After arriving), a trade-backfill request is served first, not after them."""
    sim = await make_sim(**SIM_OVERRIDES)
    rest, m = _rest(sim)
    tickers = sim.market_tickers(limit=10)
    order: list[str] = []
    try:
        await rest.get("/exchange/status")  # learn nothing yet; just open the pool

        async def poll(i: int) -> None:
            await rest.orderbooks(tickers)  # 100 tokens each, the poller's call
            order.append(f"poll{i}")

        async def backfill() -> None:
            async for _ in rest.trades(min_ts=0, max_ts=2**31):
                pass
            order.append("backfill")

        sim.faults.rest_429(n=2)  # the first poller requests meet 429s (no Retry-After)
        polls = [asyncio.create_task(poll(i)) for i in range(12)]
        await asyncio.sleep(0.05)  # the poller's requests are queued first
        await asyncio.gather(backfill(), *polls)
    finally:
        await rest.aclose()
    assert order.index("backfill") < 6, order  # ahead of most of the queued poller batches
    # our own bucket kept us under the budget: the injected 429s, and at most the odd one a
    # loaded machine's delivery jitter causes (see test_r1_poller_batches_fit_the_basic_bucket)
    real = sim.rest.counters["rest_429_limited"]
    assert real <= 2 and m.rest_rate_limited_total._value.get() == 2 + real


# --- R2: WebSocket limits -------------------------------------------------------------------------
@pytest.mark.parametrize("gsim", [{"ws_max_markets": 7, "ws_cmd_rate": 3, "ws_max_connections": 5}],
                         indirect=True)
async def test_r2_websocket_limits_are_discovered(gsim: Any, gconf: Any, run_app: Any,
                                                 gatherer_dsn: str) -> None:
    """7 markets per subscription, 3 commands/s, 5 sockets per key; the gatherer is configured
    for 6 sockets and ~25 markets per orderbook socket. It must split subscriptions on error 26,
    pace commands under 27, stop at the socket limit, and still capture every book."""
    app = await _started(run_app, gconf(connections={"orderbook": 3}))
    await h.wait_for(lambda: app.conns.subscribed_markets() == len(app.registry.open_tickers()),
                     40, "every open market subscribed")
    await asyncio.sleep(1.0)
    await h.assert_complete(gsim, gatherer_dsn)
    assert h.metric(app, "conn_manager_subscribe_errors_total", channel="orderbook_delta",
                    error_code="26") >= 1
    assert 1 <= h.metric(app, "conn_manager_markets_per_subscription") <= 7
    assert h.metric(app, "conn_manager_parked_connections") >= 1
    assert h.metric(app, "gatherer_websocket_connections") <= 5


# --- R3: refused tickers --------------------------------------------------------------------------
@pytest.mark.parametrize("gsim", [{"ws_reject_names_tickers": True},
                                  {"ws_reject_names_tickers": False}],
                         ids=["named", "bisected"], indirect=True)
async def test_r3_refused_tickers_are_quarantined(gsim: Any, gconf: Any, run_app: Any,
                                                 gatherer_dsn: str) -> None:
    """Two markets the exchange refuses (named in the error, or not named at all): they are
    quarantined, every other market of their group is captured, and a lifecycle change of a
    quarantined market retries it."""
    bad = gsim.market_tickers(limit=50)[3:5]
    gsim.faults.refuse_markets(bad)
    app = await _started(run_app, gconf(connections={"orderbook": 1}))
    await h.wait_for(lambda: h.metric(app, "conn_manager_quarantined_markets") == 2, 20,
                     "both refused markets quarantined")
    await h.wait_for(lambda: app.conns.subscribed_markets() == len(app.registry.open_tickers()) - 2,
                     20, "every other market subscribed")
    assert h.metric_sum(app, "conn_manager_quarantine_total") == 2
    # the exchange takes one of them again; a lifecycle change of it brings it back
    gsim.faults.refuse_markets([bad[1]])
    app.registry.apply_lifecycle(_lifecycle(bad[0]))
    await h.wait_for(lambda: h.metric(app, "conn_manager_quarantined_markets") == 1, 20,
                     "the released market out of quarantine")
    await h.wait_for(lambda: app.conns.subscribed_markets() == len(app.registry.open_tickers()) - 1,
                     20, "the released market subscribed again")
    gsim.set_rate(0.0)
    await h.wait_for(lambda: asyncio.to_thread(
        lambda: h.rebuild_book(gatherer_dsn, bad[0]) == gsim.true_book(bad[0])), 20,
        "the released market's book in the database")
    await h.assert_complete(gsim, gatherer_dsn, books=False)
    good = [t for t in gsim.market_tickers(status="active", limit=10_000) if t != bad[1]]
    assert all(h.rebuild_book(gatherer_dsn, t) == gsim.true_book(t) for t in good)


def _lifecycle(ticker: str) -> Any:
    raw = (f'{{"type":"market_lifecycle_v2","sid":1,"seq":1,"msg":{{"market_ticker":"{ticker}",'
           '"event_type":"activated","is_deactivated":false}}')
    ev = Decoder().feed(raw, 0)
    return ev[0]


# --- R4: ok / unsubscribed seq --------------------------------------------------------------------
@pytest.mark.parametrize("reading", ["last", "next"])
async def test_r4_ok_seq_never_hides_a_delta(make_sim: Any, reading: str) -> None:
    """``ok`` after add_markets carries the sid's seq in one of two undocumented readings. In
    neither may the next delta be taken for a duplicate."""
    sim = await make_sim(ws_ok_seq=reading)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    t = sim.market_tickers(limit=20)
    dec, events = Decoder(), []
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t[:10]})
    for f in await ws.until(lambda m: m.get("seq") == 10):
        events += dec.feed(_raw(f), 0)
    sid = events[0].sid
    await ws.cmd("update_subscription", {"sid": sid, "action": "add_markets",
                                         "market_tickers": t[10:]})
    for f in await ws.until(lambda m: m["type"] == "ok"):  # snapshots, then ok with its seq
        events += dec.feed(_raw(f), 0)
    await sim.advance(5_000)
    for f in await ws.drain():
        events += dec.feed(_raw(f), 0)
    await ws.close()
    deltas = [e for e in events if isinstance(e, DeltaRow)]
    assert len(deltas) > 20
    assert not [e for e in events if isinstance(e, Duplicate | SeqGap | Rejected)]
    truth = [d for d in sim.truth.deltas() if d["ticker"] in t]
    assert len(deltas) == len(truth)


def _raw(frame: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(frame).decode()


# --- R5: multivariate markets ---------------------------------------------------------------------
@pytest.mark.parametrize("multivariate", ["exclude", "include"])
async def test_r5_multivariate_markets_excluded(make_sim: Any, multivariate: str) -> None:
    from gatherer.markets import MarketRegistry

    sim = await make_sim(**SIM_OVERRIDES)
    rest, m = _rest(sim)
    sinks = ListSink(), ListSink(), ListSink()
    cfg = RegistryConfig(statuses=("open", "unopened")) if multivariate == "exclude" else \
        RegistryConfig(statuses=("open", "unopened"), multivariate="include")
    reg = MarketRegistry(cfg, rest, m, markets_sink=sinks[0], events_sink=sinks[1],
                         series_sink=sinks[2], now_us=h.now_us)
    try:
        await reg.full_sync()
    finally:
        await rest.aclose()
    combos = [t for t in reg.tickers() if t.startswith("KXMVESIM")]
    assert len(reg) == 50 + len(combos)
    assert len(combos) == (0 if multivariate == "exclude" else sim.catalog.n_mve)


# --- R6: deltas without timestamps ----------------------------------------------------------------
async def test_r6_delta_without_timestamp(make_sim: Any) -> None:
    """``ts`` and ``ts_ms`` are both optional on orderbook_delta: such a delta is kept, takes its
    receive time (at the whole-ms precision of every exchange time, issue 15), and is counted; it
    is not rejected (which would force a resync per delta)."""
    from gatherer.router import Router

    sim = await make_sim(delta_no_ts_share=0.25)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": sim.market_tickers(limit=50)})
    frames = await ws.drain()  # subscribed and the snapshots, before the clock moves
    await sim.advance(5_000)
    frames += await ws.drain()
    await ws.close()
    reg = CollectorRegistry()
    m = GathererMetrics(reg)
    sinks = {k: ListSink() for k in ("trades", "orderbook_deltas", "orderbook_snapshots",
                                     "tickers")}
    resync: asyncio.Queue[Any] = asyncio.Queue()
    router = Router(sinks, m, resync_q=resync, backfill_q=asyncio.Queue(),
                    lifecycle_q=asyncio.Queue())
    router.attach("ob-1", "orderbook")
    bare = 0
    for i, f in enumerate(frames):
        if f["type"] == "orderbook_delta" and "ts_ms" not in f["msg"]:
            bare += 1
        await router.route("ob-1", _raw(f), 1_000_000 + i)
    router.flush_metrics()
    rows = [r for r in sinks["orderbook_deltas"].rows if isinstance(r, DeltaRow)]
    assert bare > 20 and len(rows) == sum(1 for f in frames if f["type"] == "orderbook_delta")
    stamped = [r for r in rows if r.exchange_ts == r.received_at - r.received_at % 1000]
    assert len(stamped) == bare
    assert m.router_delta_timestamps_missing_total._value.get() == bare
    assert resync.empty()
    assert not [s for f in reg.collect() if f.name == "router_parse_errors"
                for s in f.samples if s.name.endswith("_total") and s.value]
    assert all(isinstance(r, SnapshotRow) for r in sinks["orderbook_snapshots"].rows)


# --- R7: use_yes_price ----------------------------------------------------------------------------
@pytest.mark.parametrize("gsim", [{"ws_use_yes_price_default": True}], indirect=True)
async def test_r7_use_yes_price_sent_explicitly(gsim: Any, gconf: Any, run_app: Any,
                                              gatherer_dsn: str) -> None:
    """Kalshi flips use_yes_price's default: a gatherer that does not send it explicitly gets
    NO-side prices on the YES scale, and its books are wrong."""
    app = await _started(run_app, gconf(poller={"interval_s": 1.0}))
    await h.wait_for(lambda: app.poller.cycles >= 2, 20, "two poll cycles compared with WS books")
    await h.assert_complete(gsim, gatherer_dsn)
    assert h.metric(app, "poller_no_side_convention_mismatches_total") == 0


@pytest.mark.parametrize("gsim", [{"ws_use_yes_price_default": True,
                                       "ws_use_yes_price_param": "ignored"}], indirect=True)
async def test_r7_no_side_convention_mismatch_alarms(gsim: Any, gconf: Any, run_app: Any) -> None:
    """...and once the parameter is gone the exchange ignores it: the NO side silently changes
    convention. The poller sees the WS NO side mirror the REST one and counts it (an alert)."""
    app = await _started(run_app, gconf(poller={"interval_s": 1.0}))
    await h.wait_for(lambda: h.metric(app, "poller_no_side_convention_mismatches_total") >= 1,
                     20, "the NO-side convention mismatch counted")


# --- R8: historical cutoff ------------------------------------------------------------------------
# Exchange time runs 4x faster than ours here, so the cutoff overtakes the first trades quickly.
@pytest.mark.parametrize("gsim", [{"historical_window_ms": 4_000, "historical_step_ms": 1_000,
                                   "clock_speed": 4.0}], indirect=True)
async def test_r8_backfill_behind_the_cutoff(gsim: Any, gatherer_dsn: str) -> None:
    """Trades older than /historical/cutoff exist only on /historical/trades: a backfill of such
    a window must read them there, and must not call a window recovered if it could not (it
    stays pending in the durable queue, issue 15)."""
    from psycopg_pool import AsyncConnectionPool

    from gatherer._exclock import ExchangeClock
    from gatherer.backfill import Backfill
    from gatherer.backfill_queue import BackfillQueue
    from gatherer.coverage import CoverageLedger

    await asyncio.sleep(2.0)  # 8 s of exchange time: its first trades are behind the cutoff
    rest, m = _rest(gsim, max_attempts=3, backoff_max_s=0.5)
    trades, cov = ListSink(), ListSink()
    pool = AsyncConnectionPool(gatherer_dsn, min_size=1, max_size=2, open=False)
    await pool.open()
    queue = BackfillQueue(pool)
    bf = Backfill(BackfillConfig(overlap_s=0.0), rest, trades, CoverageLedger("g", cov, h.now_us),
                  m, requests=asyncio.Queue(), queue=queue, exclock=ExchangeClock(), now_us=h.now_us)
    truth = gsim.truth.trades()
    cut_us = gsim.rest.cutoff_ms() * 1000
    start = truth[0]["ts_us"] // 1_000_000 * 1_000_000
    end = (cut_us // 1_000_000 - 1) * 1_000_000  # a window wholly behind the cutoff
    want = {t["trade_id"] for t in truth if start <= t["ts_us"] < end + 1_000_000}
    try:
        n = await bf.run(start, "admin", end_us=end)
        assert n >= len(want) > 0
        assert want <= {r.trade_id for r in trades.rows}
        row = cov.rows[-1]
        assert row.recovered and "historical" in row.detail
        # the historical tier fails: the window is not recovered, whatever live said
        gsim.faults.rest_5xx(n=20, status=503, path="/historical/trades")
        assert await bf.run(start, "admin", end_us=end) == -1
        assert not cov.rows[-1].recovered
        assert len(await queue.pending()) == 1  # retried later, also after a restart
    finally:
        await rest.aclose()
        await pool.close()


# --- R9, R10 --------------------------------------------------------------------------------------
def test_r9_recommended_hosts_by_default() -> None:
    prod, demo = KalshiConfig(env="prod"), KalshiConfig(env="demo")
    assert prod.rest_base == "https://external-api.kalshi.com/trade-api/v2"
    assert prod.ws_base == "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
    assert demo.rest_base == "https://external-api.demo.kalshi.co/trade-api/v2"
    assert demo.ws_base == "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"
    # the shared hosts are still accepted, REST and WebSocket each on its own
    old = KalshiConfig(env="prod", rest_url="https://api.elections.kalshi.com/trade-api/v2/",
                       ws_url="wss://api.elections.kalshi.com/trade-api/ws/v2")
    assert old.rest_base == "https://api.elections.kalshi.com/trade-api/v2"
    assert old.ws_base == "wss://api.elections.kalshi.com/trade-api/ws/v2"
    mixed = KalshiConfig(env="prod", ws_url="wss://api.elections.kalshi.com/trade-api/ws/v2")
    assert mixed.rest_base.startswith("https://external-api.kalshi.com")


def test_r10_websockets_floor_supports_proxy() -> None:
    """connection.py passes ``proxy=`` to websockets' asyncio ``connect``, added in 15.0: the
    declared floor must be at least that, and the installed version must have it."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"websockets\b", d))
    floor = re.search(r">=\s*([\d.]+)", spec)
    assert floor is not None, spec
    assert int(floor.group(1).split(".")[0]) >= 15, spec
    from websockets.asyncio.client import connect

    assert "proxy" in inspect.signature(connect.__init__).parameters
    assert int(importlib.metadata.version("websockets").split(".")[0]) >= 15
