"""Control API (own port): faults, truth, true books, clock, keys, counters.

Routes (all JSON):

* ``GET  /control/health`` -> ``{"ok": true}``
* ``GET  /control/info`` -> urls, preset, profile, seed, now_ms, market count
* ``GET  /control/stats`` -> connections, frames, request counters
* ``GET  /control/faults`` -> ``{"counts": {kind: n}}``
* ``POST /control/faults/{name}`` body = keyword arguments of ``Faults.<name>``
  (drop_connections, refuse_connections, slow_consumer, mute, stop_pings, stop_pongs, skip_seq,
  duplicate_seq, reorder_seq, send_malformed, send_truncated, send_binary, send_unknown_type,
  rest_429, rest_5xx, rest_hang, rest_reset, rest_truncate, reset_seq, maintenance,
  clock_skew, withhold_next, drop_deltas, ignore_commands, chaos, refuse_markets)
* ``GET  /control/truth/{trades|deltas|tickers|lifecycle|withheld}?since=N&limit=M``
  -> ``{"records": [...], "next": N'}`` (record shapes: truth.py)
* ``GET  /control/book/{ticker}`` -> ``{"ticker", "yes": [[price, size]], "no": [...]}`` ints
* ``POST /control/clock/advance`` ``{"ms": N}`` (manual clock only)
* ``POST /control/rate`` ``{"rate": msgs_per_s}``
* ``POST /control/keys`` ``{"key_id", "public_pem", "tier"?}``; ``POST /control/keygen``
  ``{"pkcs1"?: bool, "tier"?}`` -> ``{"key_id", "private_pem"}``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .faults import Faults

if TYPE_CHECKING:
    from .server import Simulator


def _j(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


class ControlApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/control/health", self.health)
        r.add_get("/control/info", self.info)
        r.add_get("/control/stats", self.stats)
        r.add_get("/control/faults", self.faults)
        r.add_post("/control/faults/{name}", self.fault)
        r.add_get("/control/truth/{kind}", self.truth)
        r.add_get("/control/book/{ticker}", self.book)
        r.add_post("/control/clock/advance", self.advance)
        r.add_post("/control/rate", self.rate)
        r.add_post("/control/keys", self.keys)
        r.add_post("/control/keygen", self.keygen)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        d = orjson.loads(raw)
        if not isinstance(d, dict):
            raise TypeError("body must be a JSON object")
        return d

    async def health(self, request: web.Request) -> web.Response:
        return _j({"ok": True})

    async def info(self, request: web.Request) -> web.Response:
        return _j(self.sim.info())

    async def stats(self, request: web.Request) -> web.Response:
        return _j(self.sim.stats())

    async def faults(self, request: web.Request) -> web.Response:
        return _j({"counts": self.sim.fault_counts()})

    async def fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in Faults.API:
            return _j({"error": f"unknown fault {name!r}", "known": list(Faults.API)}, 404)
        try:
            kwargs = await self._body(request)
            result = getattr(self.sim.faults, name)(**kwargs)
        except (TypeError, ValueError, orjson.JSONDecodeError) as e:
            return _j({"error": str(e)}, 400)
        return _j({"ok": True, "result": result})

    async def truth(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        t = self.sim.truth
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return _j({"error": "since/limit must be integers"}, 400)
        readers = {"trades": t.trades, "deltas": t.deltas, "tickers": t.tickers,
                   "lifecycle": t.lifecycle}
        if kind == "withheld":
            recs = t.withheld[since:] if limit is None else t.withheld[since:since + limit]
        elif kind in readers:
            recs = readers[kind](since, limit)
        else:
            return _j({"error": f"unknown truth kind {kind!r}"}, 404)
        return _j({"records": recs, "next": since + len(recs)})

    async def book(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"]
        b = self.sim.true_book(ticker)
        if b is None:
            return _j({"error": "market not found"}, 404)
        return _j({"ticker": ticker, **b})

    async def advance(self, request: web.Request) -> web.Response:
        try:
            ms = int((await self._body(request)).get("ms", 0))
            n = await self.sim.advance(ms)
        except (ValueError, RuntimeError) as e:
            return _j({"error": str(e)}, 400)
        return _j({"ok": True, "events": n, "now_ms": self.sim.now_ms})

    async def rate(self, request: web.Request) -> web.Response:
        try:
            rate = float((await self._body(request))["rate"])
        except (KeyError, ValueError, TypeError) as e:
            return _j({"error": str(e)}, 400)
        self.sim.set_rate(rate)
        return _j({"ok": True, "rate": rate})

    async def keys(self, request: web.Request) -> web.Response:
        try:
            b = await self._body(request)
            self.sim.register_key(b["key_id"], b["public_pem"], b.get("tier"))
        except (KeyError, ValueError, TypeError) as e:
            return _j({"error": str(e)}, 400)
        return _j({"ok": True})

    async def keygen(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        key_id, priv = self.sim.keygen(pkcs1=bool(b.get("pkcs1", False)), tier=b.get("tier"))
        return _j({"key_id": key_id, "private_pem": priv})
