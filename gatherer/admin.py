"""Admin API (its own port, 127.0.0.1 by default): operator actions on one market.

- ``POST /admin/poll-market?ticker=T``: fetch T's REST book now (stored and compared like a
  poll) and backfill its trades.
- ``POST /admin/resync?ticker=T``: fresh WebSocket snapshot of T's book.
- ``POST /admin/backfill-trades?ticker=T&min_ts=S&max_ts=S``: backfill T's trades created in
  [min_ts, max_ts] (Unix seconds, exchange time, inclusive) through the normal path (REST ->
  trades writer -> local DB -> deduplicator). ``kalshi-data reconcile`` asks for the trades it
  found missing from production this way.

Every request needs ``Authorization: Bearer <admin token>``, compared in constant time
(``hmac.compare_digest``); anything else is 401. With no token configured the server is not
started at all (app.py), so there is no unauthenticated admin surface.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from shared.config import Secret
from shared.http import HttpServer

log = logging.getLogger("gatherer.admin")

Action = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]
WindowAction = Callable[[str, int, int], Awaitable[tuple[int, dict[str, Any]]]]
#: The widest window one backfill-trades request may name (a day plus margins).
MAX_WINDOW_S = 2 * 86_400


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class AdminServer(HttpServer):
    def __init__(self, host: str, port: int, token: Secret, *, poll_market: Action, resync: Action,
                 backfill_trades: WindowAction | None = None) -> None:
        super().__init__(host, port)
        self._token = token.reveal().strip().encode()
        if not self._token:
            raise ValueError("admin token is empty")
        self._poll = poll_market
        self._resync = resync
        self._app.router.add_post("/admin/poll-market", self._handle_poll)
        self._app.router.add_post("/admin/resync", self._handle_resync)
        self._backfill = backfill_trades
        if backfill_trades is not None:
            self._app.router.add_post("/admin/backfill-trades", self._handle_backfill)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # compare_digest on equal-length inputs is constant time; on different lengths it
        # still does not short-circuit on content.
        return hmac.compare_digest(given.strip().encode(), self._token)

    async def _dispatch(self, request: web.Request, action: Action, name: str) -> web.Response:
        if not self._authorized(request):
            log.warning("admin %s refused: missing or wrong bearer token", name,
                        extra={"remote": request.remote})
            return json_response({"error": "unauthorized"}, 401)
        ticker = request.query.get("ticker", "").strip()
        if not ticker:
            return json_response({"error": "ticker query parameter required"}, 400)
        log.info("admin %s %s", name, ticker, extra={"ticker": ticker})
        status, body = await action(ticker)
        return json_response(body, status)

    async def _handle_backfill(self, request: web.Request) -> web.Response:
        assert self._backfill is not None
        backfill = self._backfill
        try:
            lo, hi = int(request.query.get("min_ts", "")), int(request.query.get("max_ts", ""))
        except ValueError:
            lo = hi = -1
        if (lo < 0 or hi < lo or hi - lo > MAX_WINDOW_S) and self._authorized(request):
            return json_response({"error": "min_ts and max_ts (Unix seconds, min_ts <= max_ts, "
                                               f"at most {MAX_WINDOW_S} s apart) required"}, 400)

        async def action(ticker: str) -> tuple[int, dict[str, Any]]:
            return await backfill(ticker, lo, hi)

        return await self._dispatch(request, action, "backfill-trades")

    async def _handle_poll(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, self._poll, "poll-market")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle_resync(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, self._resync, "resync")
