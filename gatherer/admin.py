"""Admin API (its own port, 127.0.0.1 by default): operator actions on one market.

- ``POST /admin/poll-market?ticker=T``: fetch T's REST book now (stored and compared like a
  poll) and backfill its trades.
- ``POST /admin/resync?ticker=T``: fresh WebSocket snapshot of T's book.

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


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class AdminServer(HttpServer):
    def __init__(self, host: str, port: int, token: Secret, *, poll_market: Action, resync: Action) -> None:
        super().__init__(host, port)
        self._token = token.reveal().strip().encode()
        if not self._token:
            raise ValueError("admin token is empty")
        self._poll = poll_market
        self._resync = resync
        self._app.router.add_post("/admin/poll-market", self._handle_poll)
        self._app.router.add_post("/admin/resync", self._handle_resync)

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

    async def _handle_poll(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, self._poll, "poll-market")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle_resync(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, self._resync, "resync")
