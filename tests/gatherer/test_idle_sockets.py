"""More orderbook sockets than open markets (a small exchange, a quiet day, the rehearsal's
tiny simulator under the production pool of 144): the sockets without a market are connected
and idle, which is not an outage. /health stays healthy and they count as healthy."""

from __future__ import annotations

from typing import Any

from tests.gatherer import _harness as h


async def test_idle_orderbook_sockets_are_not_an_outage(gconf: Any, run_app: Any) -> None:
    doc = gconf(connections={"orderbook": 64})  # the tiny simulator has 50 markets
    app = await run_app(doc)
    total = 1 + 1 + 1 + 64

    def settled() -> bool:
        ws = app.health.doc()["components"]["websocket"]
        return ws["connections"] == total and ws["healthy"] == total

    await h.wait_for(settled, 30, "every socket connected, subscribed or idle")
    idle = [c for c in app.conns.orderbook if not c.desired]
    busy = [c for c in app.conns.orderbook if c.desired]
    assert idle and busy and len(idle) + len(busy) == 64
    assert all(c.healthy and c.subscribed_markets() == 0 for c in idle)
    doc_now = app.health.doc()
    assert doc_now["components"]["websocket"]["status"] == "healthy", doc_now
    assert h.metric(app, "conn_manager_connections_healthy", role="orderbook") == 64
