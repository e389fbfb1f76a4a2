"""The market registry's full sync against the simulator's REST API (real sockets)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from gatherer.config import KalshiConfig, RateLimitConfig, RegistryConfig
from gatherer.markets import MarketChange, MarketRegistry
from gatherer.rest import RestClient
from kalshi_sim import Simulator
from shared.kalshi.auth import load_private_key
from shared.metrics import GathererMetrics
from tests.fix_sim import START_MS, SimKey


class _Keep:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def put_many(self, rows: Any) -> None:
        self.rows.extend(rows)


async def test_default_full_sync_knows_the_markets_that_open_after_start(
    sim: Simulator, sim_key: SimKey
) -> None:
    # Kalshi announces no initialized -> active transition: a market listed before the gatherer
    # starts and opening after is subscribed only if the start-up sync loaded it, with its
    # open_time scheduled. The default once loaded `status=open` only; the e2e bench (default
    # config) then waited for deltas of a market it never subscribed.
    clock = [START_MS * 1000]  # exchange time of the simulator's manual clock
    m = GathererMetrics(CollectorRegistry())
    kcfg = KalshiConfig(env="sim", rest_url=sim.rest_url, ws_url=sim.ws_url,
                        api_key_id=sim_key.key_id)
    key = load_private_key(sim_key.private_pem.encode(), sim_key.key_id)
    rest = RestClient(kcfg, key, RateLimitConfig(), m)  # the simulator's Basic budget
    reg = MarketRegistry(RegistryConfig(), rest, m, markets_sink=_Keep(), events_sink=_Keep(),
                         series_sink=_Keep(), now_us=lambda: clock[0])
    try:
        await reg.full_sync()
    finally:
        await rest.aclose()
    unopened = sim.market_tickers(status="initialized", limit=sim.catalog.count)
    assert unopened, "the tiny preset has markets that open after start"
    assert sorted(reg.take_open_set()) == sorted(
        sim.market_tickers(status="active", limit=sim.catalog.count))
    assert all(t in reg and not reg.is_open(t) for t in unopened)
    last_open_ms = max(sim.catalog.static(sim.catalog.parse_market(t)).open_ms  # type: ignore[arg-type]
                       for t in unopened)
    clock[0] = last_open_ms * 1000
    reg.tick()
    got = [reg.changes.get_nowait() for _ in range(reg.changes.qsize())]
    assert sorted(got, key=lambda c: c.ticker) == [MarketChange(t, True) for t in sorted(unopened)]


async def test_pages_are_fetched_ahead_in_order_and_errors_reach_the_consumer() -> None:
    # full_sync ingests page k while page k+1 is already requested (the server's work overlaps
    # ours); a failing request still fails the sync.
    import asyncio

    import pytest

    from gatherer.markets import _prefetched

    log: list[tuple[str, int]] = []

    async def pages() -> Any:
        for k in range(3):
            log.append(("fetched", k))
            yield [{"k": k}]
        raise RuntimeError("page 3 failed")

    with pytest.raises(RuntimeError, match="page 3 failed"):
        async for page in _prefetched(pages()):
            for _ in range(3):
                await asyncio.sleep(0)  # ingesting: the next request goes out meanwhile
            log.append(("ingested", page[0]["k"]))
    assert log.index(("fetched", 1)) < log.index(("ingested", 0))
    assert [k for what, k in log if what == "ingested"] == [0, 1, 2]
