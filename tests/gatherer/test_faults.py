"""The fault table of spec/gatherer.md, one test per row, against the real simulator and a real
PostgreSQL. Each test injects the fault through the simulator's fault API while the gatherer runs
in-process, then proves the end state: every truth trade in the DB exactly once, every open
market's book rebuilt from the DB equal to the simulator's, and the fault counted."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.gatherer import _harness as h


async def _started(run_app: Any, doc: dict[str, Any]) -> Any:
    app = await run_app(doc)
    await h.wait_for(lambda: app.health.ready()[0], 10, "gatherer ready")
    await asyncio.sleep(1.5)
    return app


async def _coverage(dsn: str, kind: str) -> list[tuple[Any, ...]]:
    return await h.aquery(dsn, "SELECT scope, ticker, recovered, detail FROM coverage_events "
                               "WHERE kind = %s", (kind,))


async def test_ws_drop_reconnects_resubscribes_and_backfills(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf())
    # trades that never reach any socket: only the REST backfill can bring them in
    gsim.faults.withhold_next("trade", n=3)
    await asyncio.sleep(0.5)

    def back(n: int) -> bool:
        return (h.metric_sum(app, "conn_manager_reconnects_total") >= 5 * n
                and app.conns.healthy_count() == 5)

    assert gsim.faults.drop_connections(mode="close", code=1001) == 5  # clean close
    await h.wait_for(lambda: back(1), 15, "all sockets back after close")
    assert gsim.faults.drop_connections(mode="reset") == 5  # TCP reset, no close frame
    await h.wait_for(lambda: back(2), 15, "all sockets back after reset")
    gsim.faults.refuse_connections(seconds=1.5)  # a real outage window, not an instant reconnect
    assert gsim.faults.drop_connections(mode="cut") == 5  # half a frame, then reset
    await h.wait_for(lambda: app.health.doc()["status"] != "healthy", 3, "health reflects the outage")
    await h.wait_for(lambda: back(3), 15, "all sockets back after cut")
    await asyncio.sleep(1.0)
    await h.assert_complete(gsim, gatherer_dsn)
    assert gsim.fault_counts().get("withhold_trade", 0) == 3
    assert h.metric(app, "conn_manager_reconnects_total", role="trade") >= 3
    assert h.metric(app, "conn_manager_reconnects_total", role="orderbook") >= 6
    assert h.metric_sum(app, "backfill_requests_total") >= 2
    # The ledger from evidence: a trade socket's outage is recovered once its backfill is
    # committed, a lifecycle one once the registry reconciled; deltas and ticker updates of an
    # orderbook/ticker outage are gone for good, and the ledger says so.
    def by_role(rows: list[tuple[Any, ...]]) -> dict[str, set[bool]]:
        out: dict[str, set[bool]] = {}
        for r in rows:
            out.setdefault(r[3]["role"], set()).add(r[2])
        return out

    async def settled() -> dict[str, set[bool]] | None:
        roles = by_role(await _coverage(gatherer_dsn, "ws_down"))
        return roles if roles.get("trade") == {True} and roles.get("lifecycle") == {True} else None

    roles = await h.wait_for(settled, 20, "trade/lifecycle outages closed as recovered")
    assert roles["orderbook"] == {False} and roles["ticker"] == {False}, roles
    down = await _coverage(gatherer_dsn, "ws_down")
    assert len(down) >= 15 and all(r[0] == "connection" and r[1] is None for r in down), down
    assert all("lost" in r[3] for r in down if r[3]["role"] in ("orderbook", "ticker"))
    assert all(r[3]["cause"] == "socket lost" for r in down)
    backfills = await _coverage(gatherer_dsn, "trade_backfill")
    assert any("reconnect" in r[3]["reason"] and r[2] for r in backfills)
    assert all(r[2] for r in backfills if "reconnect" in r[3]["reason"])


async def test_seq_gap_duplicate_reorder_resync_and_count(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf())
    f = gsim.faults
    f.skip_seq(n=2, channel="orderbook_delta")
    await asyncio.sleep(0.7)
    f.duplicate_seq(n=2, channel="orderbook_delta")
    await asyncio.sleep(0.7)
    f.reorder_seq(n=1, channel="orderbook_delta")
    await asyncio.sleep(0.7)
    f.skip_seq(n=1, channel="trade")
    f.duplicate_seq(n=1, channel="trade")
    await h.wait_for(lambda: f.counts().get("skip_seq", 0) >= 3 and f.counts().get("duplicate_seq", 0) >= 3,
                     10, "faults applied")
    await asyncio.sleep(2.0)
    await h.assert_complete(gsim, gatherer_dsn)
    gaps = h.metric(app, "conn_manager_sequence_gaps_total", role="orderbook")
    assert gaps >= 3  # two skips and the reorder (which shows up as a gap, then a replay)
    assert h.metric(app, "conn_manager_sequence_gaps_total", role="trade") >= 1
    assert h.metric(app, "router_duplicates_total", role="orderbook") >= 2
    assert h.metric(app, "router_duplicates_total", role="trade") >= 1
    assert h.metric(app, "backfill_requests_total", reason="seq_gap") >= 1
    cov = await _coverage(gatherer_dsn, "seq_gap")
    assert cov and all(r[3]["reason"] == "seq_gap" for r in cov)
    assert h.metric(app, "conn_manager_reconnects_total", role="orderbook") == 0


async def test_terminal_errors_10_and_25_resubscribe(gsim: Any, gconf: Any, run_app: Any,
                                                     gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf())
    assert gsim.faults.slow_consumer(code=25, channel="orderbook_delta") == 2
    assert gsim.faults.slow_consumer(code=10, channel="trade") == 1
    await h.wait_for(lambda: h.metric(app, "conn_manager_subscribe_errors_total", channel="orderbook_delta",
                                      error_code="25") >= 2, 10, "error frames counted")
    await h.wait_for(lambda: app.conns.healthy_count() == 5, 10, "resubscribed")
    await asyncio.sleep(1.0)
    await h.assert_complete(gsim, gatherer_dsn)
    assert h.metric(app, "conn_manager_subscribe_errors_total", channel="trade", error_code="10") == 1
    # resubscribed on the same sockets: no reconnect
    assert h.metric(app, "conn_manager_reconnects_total", role="orderbook") == 0
    assert all(c.sub.sid is not None for c in app.conns.conns)


async def test_rest_429_storm_5xx_and_timeouts_are_retried(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf(poller={"interval_s": 3600.0, "batch_size": 10},
                                        kalshi={"request_timeout_s": 1.0}))
    gsim.limiter.retry_after = True  # 429s now carry Retry-After: 1, which must be honoured
    gsim.faults.rest_429(n=4)
    gsim.faults.rest_5xx(n=3, status=503)
    t0 = asyncio.get_running_loop().time()
    polled = await app.poller.cycle()  # 5 batch requests through the storm
    waited = asyncio.get_running_loop().time() - t0
    assert polled == gsim.market_tickers(limit=1000).__len__()
    assert waited >= 1.0, "Retry-After: 1 was not honoured"
    # background calls (exchange status, reconcile) may have taken some of the injected faults
    assert h.metric_sum(app, "rest_requests_total", status="429") == 4
    assert h.metric_sum(app, "rest_requests_total", status="503") == 3
    assert h.metric(app, "rest_rate_limited_total") == 4
    # a hanging server: the client times out (request_timeout_s = 1) and retries
    gsim.faults.rest_hang(n=1, seconds=1.5)
    n = await app.backfill.run(h.now_us() - 5_000_000, "admin")
    assert n > 0
    # whichever request met the hang (ours or a background one) timed out and was retried
    await h.wait_for(lambda: h.metric_sum(app, "rest_requests_total", status="timeout") == 1, 6,
                     "a timeout counted")
    await h.assert_complete(gsim, gatherer_dsn, books=False)


async def test_token_bucket_keeps_us_under_the_tier_limit(make_sim: Any) -> None:
    """A Basic-tier key (200 read tokens/s, 10 per request, so 20 reads/s on the exchange) with
    our bucket at 90% of it: a burst of 50 requests takes >= 1.5 s and never sees a 429."""
    from prometheus_client import CollectorRegistry

    from gatherer.config import KalshiConfig, RateLimitConfig
    from gatherer.rest import RestClient
    from shared.kalshi.auth import load_private_key
    from shared.metrics import GathererMetrics
    from tests.gatherer.conftest import SIM_OVERRIDES

    sim = await make_sim(**{**SIM_OVERRIDES, "tier": "basic"})
    key_id, pem = sim.keygen(tier="basic")
    m = GathererMetrics(CollectorRegistry())
    rest = RestClient(KalshiConfig(env="sim", rest_url=sim.rest_url, ws_url=sim.ws_url, api_key_id=key_id),
                      load_private_key(pem.encode(), key_id), RateLimitConfig(tier="basic"), m)
    try:
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(rest.exchange_status() for _ in range(50)))
        took = asyncio.get_running_loop().time() - t0
    finally:
        await rest.aclose()
    assert took >= 1.5  # 18 at once, then 18/s: a timing floor set by the budget, not speed
    assert sim.rest.counters["rest_429_limited"] == 0
    assert m.rest_requests_total.labels(endpoint="/exchange/status", status="200")._value.get() == 50


async def test_malformed_frames_are_counted_and_skipped(gsim: Any, gconf: Any, run_app: Any,
                                                        gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf())
    f = gsim.faults
    assert f.send_malformed() == 5
    assert f.send_truncated() == 5
    assert f.send_binary() == 5
    assert f.send_unknown_type() == 5
    await h.wait_for(lambda: h.metric(app, "router_unknown_messages_total") >= 5, 5, "unknown counted")
    await asyncio.sleep(1.0)
    await h.assert_complete(gsim, gatherer_dsn)
    bad = h.metric(app, "router_parse_errors_total", reason="bad_json")
    assert bad >= 15, bad  # malformed + truncated + binary on 5 sockets
    assert h.metric(app, "router_parse_errors_total", reason="unknown_type") >= 5
    for role in ("ticker", "trade", "lifecycle", "orderbook"):
        assert h.metric(app, "conn_manager_reconnects_total", role=role) == 0
