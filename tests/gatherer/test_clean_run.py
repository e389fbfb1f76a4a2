"""Fault-free run against the simulator: every trade exactly once, every book exact."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.gatherer import _harness as h


async def test_clean_run_every_trade_once_and_books_exact(gsim: Any, gconf: Any, run_app: Any,
                                                          gatherer_dsn: str) -> None:
    app = await run_app(gconf())
    await h.wait_for(lambda: app.health.ready()[0], 10, "gatherer ready")
    await asyncio.sleep(5)
    summary = await h.assert_complete(gsim, gatherer_dsn)
    assert summary["books"] >= 40
    # every path produced rows
    counts = {t: h.query(gatherer_dsn, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("orderbook_deltas", "orderbook_snapshots", "tickers", "markets", "events", "series")}
    assert all(counts.values()), counts
    assert counts["markets"] == len(gsim.market_tickers(status=None, limit=10_000))
    # nothing went wrong on the way
    assert h.metric(app, "conn_manager_sequence_gaps_total", role="orderbook") == 0
    assert h.metric(app, "router_parse_errors_total", reason="bad_json") == 0
    assert h.metric(app, "conn_manager_reconnects_total", role="orderbook") == 0
    assert h.metric(app, "writer_inserts_total", writer="trades") == summary["trades"]
    assert h.metric(app, "market_registry_markets_total") == counts["markets"]
    assert h.metric(app, "gatherer_websocket_connections") == 5
