"""REST market-data API under ``/trade-api/v2`` (kalshi-protocol.md §3).

Errors use Kalshi's envelope ``{"error": {"code": str, "message": str}}``; 404 ``not_found`` for
unknown paths, ``market_not_found`` / ``event_not_found`` / ``series_not_found`` for unknown
objects, 400 ``bad_request`` for bad or incompatible parameters, 401 ``unauthorized`` for a bad
signature (anonymous public GETs are allowed), 429 per rate-limit config.

Ordering: markets and events in creation (index) order, so cursors stay valid while markets
are created; trades newest first. Cursors are opaque base64 strings; ``""`` on the last page.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from .auth import H_KEY, AuthError, KeyEntry, KeyRegistry
from .catalog import MVE_SERIES, Catalog
from .config import SimConfig
from .encode import STATUS_FILTER, Encoder, iso_ms
from .engine import Engine, MarketState
from .faults import Faults
from .ratelimit import RateLimiter
from .truth import Truth
from .ws import abort_with_rst

PREFIX = "/trade-api/v2"
KEY: web.RequestKey[KeyEntry | None] = web.RequestKey("kalshi_key", KeyEntry)
SCAN_BUDGET = 20_000  # candidates examined per /markets request (xl with a rare filter)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    pass


def jresp(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers,
                        content_type="application/json")


def err(status: int, code: str, message: str) -> web.Response:
    return jresp({"error": {"code": code, "message": message}}, status)


def enc_cursor(tag: str, n: int) -> str:
    return base64.urlsafe_b64encode(f"{tag}{n}".encode()).decode().rstrip("=")


def dec_cursor(tag: str, c: str | None) -> int | None:
    got = dec_cursor_any(tag, c)
    return None if got is None else got[1]


def dec_cursor_any(tags: str, c: str | None) -> tuple[str, int] | None:
    """(tag, n) of a cursor whose one-letter tag is any of ``tags``; None for no cursor."""
    if not c:
        return None
    try:
        raw = base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("invalid cursor") from None
    if not raw or raw[0] not in tags or not raw[1:].isdigit():
        raise BadRequest("invalid cursor")
    return raw[0], int(raw[1:])


def q_int(q: Any, name: str, default: int | None = None, lo: int | None = None,
          hi: int | None = None) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise BadRequest(f"invalid {name}") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise BadRequest(f"{name} out of range")
    return n


def q_bool(q: Any, name: str) -> bool:
    v = q.get(name)
    if v is None or v == "":
        return False
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise BadRequest(f"invalid {name}")


def _from_list(tickers: str, parse: Callable[[str], int | None], start: int) -> list[int]:
    """Indexes (at or after ``start``, ascending) of a comma-separated ``tickers`` filter."""
    idx = sorted({i for t in tickers.split(",") if t if (i := parse(t.strip())) is not None})
    return [i for i in idx if i >= start]


class RestApi:
    """Handlers + middleware; dependencies come in through the constructor."""

    def __init__(self, conf: SimConfig, engine: Engine, encoder: Encoder, truth: Truth,
                 keys: KeyRegistry, limiter: RateLimiter, faults: Faults,
                 now_ms: Callable[[str | None], int]) -> None:
        self.conf = conf
        self.engine = engine
        self.cat: Catalog = engine.catalog
        self.enc = encoder
        self.truth = truth
        self.keys = keys
        self.limiter = limiter
        self.faults = faults
        self.now_ms = now_ms
        self.counters = {"rest_requests": 0, "rest_401": 0, "rest_429_limited": 0}

    def routes(self, app: web.Application) -> None:
        r = app.router
        g = [
            ("/exchange/status", self.exchange_status),
            ("/exchange/schedule", self.exchange_schedule),
            ("/series", self.series_list),
            ("/series/{series}", self.series_one),
            ("/series/{series}/markets/{ticker}/candlesticks", self.candles_one),
            ("/series/{series}/events/{event}/candlesticks", self.candles_event),
            ("/events", self.events_list),
            ("/events/{event}", self.event_one),
            ("/markets", self.markets_list),
            ("/markets/trades", self.trades),
            ("/markets/orderbooks", self.orderbooks),
            ("/markets/candlesticks", self.candles_batch),
            ("/markets/{ticker}", self.market_one),
            ("/markets/{ticker}/orderbook", self.orderbook),
            ("/historical/cutoff", self.hist_cutoff),
            ("/historical/markets", self.hist_markets),
            ("/historical/markets/{ticker}", self.hist_market_one),
            ("/historical/trades", self.hist_trades),
            ("/account/limits", self.account_limits),
            ("/account/endpoint_costs", self.account_endpoint_costs),
        ]
        for path, h in g:
            r.add_get(PREFIX + path, h, allow_head=False)
        r.add_route("*", "/{tail:.*}", self.not_found)

    async def not_found(self, request: web.Request) -> web.Response:
        return err(404, "not_found", "not found")

    # --- middleware -----------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX + "/"):
            return await handler(request)  # the WebSocket endpoint does its own auth
        resp = await self._dispatch(request, handler)
        key_id = request.headers.get(H_KEY)
        if key_id and key_id in self.faults.key_skew_ms and not resp.prepared:
            # that client's clock is off: our Date disagrees with it by the same amount
            resp.headers["Date"] = email.utils.formatdate(
                time.time() + self.faults.skew_for(key_id) / 1000, usegmt=True)
        return resp

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.counters["rest_requests"] += 1
        f = self.faults
        if f.pending["rest_hang"] and f.take("rest_hang"):
            await asyncio.sleep(f.rest_hang_s)
        if f.pending["rest_5xx"] and (f.rest_5xx_path is None
                                      or request.path == PREFIX + f.rest_5xx_path) \
                and f.take("rest_5xx"):
            st = f.rest_5xx_status
            if st in (502, 504):  # CDN-style HTML page, as proxies serve them
                return web.Response(status=st, text=f"<html><body><h1>{st}</h1></body></html>",
                                    content_type="text/html")
            return err(st, "internal_server_error" if st == 500 else "service_unavailable",
                       "injected failure")
        if f.pending["rest_reset"] and f.take("rest_reset"):
            abort_with_rst(request.transport)
            raise asyncio.CancelledError  # nothing more to send on a reset connection
        if f.pending["rest_truncate"] and f.take("rest_truncate"):
            return await self._truncated(request, handler)
        if f.pending["rest_429"] and f.take("rest_429"):
            return jresp(self.limiter.body(), 429, self.limiter.headers())
        entry = None
        if self.keys.has_headers(request.headers) or request.path.startswith(PREFIX + "/account/"):
            try:
                entry = self.keys.verify(request.headers, request.method, request.path,
                                         self.now_ms(request.headers.get(H_KEY)))
            except AuthError as e:
                self.counters["rest_401"] += 1
                return err(401, "unauthorized", f"authentication failed: {e.reason}")
        request[KEY] = entry
        who = entry.key_id if entry else f"ip:{request.remote}"
        tier = (entry.tier or self.conf.tier) if entry else self.conf.anon_tier
        if tier is not None:
            cost = self.request_cost(request)
            if not self.limiter.allow(who, tier, request.method != "GET", time.monotonic(), cost):
                self.counters["rest_429_limited"] += 1
                f.count("rate_limited")
                return jresp(self.limiter.body(), 429, self.limiter.headers())
        try:
            return await handler(request)
        except BadRequest as e:
            return err(400, "bad_request", str(e))
        except web.HTTPException as e:
            return err(e.status, "not_found" if e.status == 404 else "bad_request", e.reason)

    def request_cost(self, request: web.Request) -> int:
        """Tokens this request costs: its endpoint's cost, times its items on batch endpoints."""
        route = request.match_info.route.resource
        template = route.canonical[len(PREFIX):] if route is not None else request.path
        items = 1
        if template == "/markets/orderbooks":
            items = sum(1 for v in request.query.getall("tickers", []) for t in v.split(",") if t)
        elif template == "/markets/candlesticks":
            items = sum(1 for t in request.query.get("market_tickers", "").split(",") if t)
        return self.limiter.cost(template, items)

    async def _truncated(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        full = await handler(request)
        body = full.body if isinstance(full, web.Response) else b""
        assert isinstance(body, bytes)
        resp = web.StreamResponse(status=full.status)
        resp.content_type = "application/json"
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        abort_with_rst(request.transport)
        return resp

    # --- helpers ------------------------------------------------------------------------
    def status_of(self, i: int) -> str:
        s = self.engine.states.get(i)
        if s is not None:
            return self.engine.status_of(s)
        open_ms, close_ms = self.cat.window(i)  # an untouched market: its times decide
        now = self.engine.now_ms
        return "initialized" if now < open_ms else ("closed" if now >= close_ms else "active")

    def market_obj(self, i: int) -> dict[str, Any]:
        s = self.engine.view(i)
        return self.enc.market(s, self.engine.status_of(s))

    def mve_obj(self, j: int) -> dict[str, Any]:
        return self.enc.mve_market(j, self.mve_status(j))

    def mve_status(self, j: int) -> str:
        return "active" if self.engine.now_ms < self.cat.mve_static(j).close_ms else "closed"

    def cutoff_ms(self) -> int:
        """The historical cutoff now: ``historical_window_ms`` behind the exchange clock, moved
        forward in steps of ``historical_step_ms`` (Kalshi advances it periodically)."""
        step = max(1, self.conf.historical_step_ms)
        return (self.engine.now_ms - self.conf.historical_window_ms) // step * step

    def is_historical(self, i: int) -> bool:
        """Settled before the cutoff: served only by ``/historical/markets``. Only markets the
        engine touched can have settled (the derived population closes days after start)."""
        s = self.engine.states.get(i)
        return s is not None and s.settled_ms is not None and s.settled_ms < self.cutoff_ms()

    # --- exchange -----------------------------------------------------------------------
    async def exchange_status(self, request: web.Request) -> web.Response:
        m = self.faults.in_maintenance
        return jresp({"exchange_active": not m, "trading_active": not m,
                      "exchange_estimated_resume_time":
                      iso_ms(self.engine.now_ms + 3_600_000) if m else None})

    async def exchange_schedule(self, request: web.Request) -> web.Response:
        day = [{"open_time": "00:00", "close_time": "23:59"}]
        week = {d: day for d in ("monday", "tuesday", "wednesday", "thursday", "friday",
                                 "saturday", "sunday")}
        start = self.cat.start_ms - 86_400_000
        return jresp({"schedule": {
            "standard_hours": [{"start_time": iso_ms(start),
                                "end_time": iso_ms(start + 365 * 86_400_000), **week}],
            "maintenance_windows": [],
        }})

    # --- series -------------------------------------------------------------------------
    async def series_list(self, request: web.Request) -> web.Response:
        q = request.query
        q_bool(q, "include_volume")
        cat = q.get("category")
        out = [self.enc.series(s) for s in range(self.cat.n_series)]
        if cat:
            out = [s for s in out if s["category"] == cat]
        return jresp({"series": out})

    async def series_one(self, request: web.Request) -> web.Response:
        s = self.cat.parse_series(request.match_info["series"])
        if s is None:
            return err(404, "series_not_found", "series not found")
        return jresp({"series": self.enc.series(s)})

    # --- events -------------------------------------------------------------------------
    def _event_status(self, e: int) -> str:
        st = self.status_of(e * self.cat.mpe)
        return {"initialized": "unopened", "active": "open", "inactive": "open",
                "closed": "closed", "determined": "closed", "finalized": "settled"}[st]

    async def events_list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = q_int(q, "limit", 200, 1, 200) or 200
        after = dec_cursor("e", q.get("cursor"))
        nested = q_bool(q, "with_nested_markets")
        q_bool(q, "with_milestones")
        status = q.get("status")
        if status and status not in ("unopened", "open", "closed", "settled"):
            raise BadRequest("invalid status")
        min_close = q_int(q, "min_close_ts")
        series = q.get("series_ticker")
        n_events = self.cat.n_events()
        start = 0 if after is None else after + 1
        if series:
            s = self.cat.parse_series(series)
            if s is None:
                return jresp({"events": [], "cursor": ""})
            first = start + ((s - start) % self.cat.n_series)
            it: range = range(first, n_events, self.cat.n_series)
        else:
            it = range(start, n_events)
        out: list[dict[str, Any]] = []
        last = None
        scanned = 0
        for e in it:
            scanned += 1
            if scanned > SCAN_BUDGET:
                break
            last = e
            if status and self._event_status(e) != status:
                continue
            if (min_close is not None
                    and self.engine.view(e * self.cat.mpe).close_ms // 1000 < min_close):
                continue
            ev = self.enc.event(e, self.engine.now_ms)
            if nested:
                ev["markets"] = [self.market_obj(i) for i in self.cat.event_markets(e)]
            out.append(ev)
            if len(out) >= limit:
                break
        more = last is not None and last < (it[-1] if len(it) else -1)
        cursor = enc_cursor("e", last) if more and last is not None else ""
        return jresp({"events": out, "cursor": cursor})

    async def event_one(self, request: web.Request) -> web.Response:
        e = self.cat.parse_event(request.match_info["event"])
        if e is None:
            return err(404, "event_not_found", "event not found")
        nested = q_bool(request.query, "with_nested_markets")
        markets = [self.market_obj(i) for i in self.cat.event_markets(e)]
        ev = self.enc.event(e, self.engine.now_ms)
        if nested:
            ev["markets"] = markets
        return jresp({"event": ev, "markets": markets})

    # --- markets ------------------------------------------------------------------------
    def _candidates(self, q: Any, start: int) -> Iterator[int]:
        tickers = q.get("tickers")
        event = q.get("event_ticker")
        series = q.get("series_ticker")
        if tickers:
            yield from _from_list(tickers, self.cat.parse_market, start)
            return
        if event:
            e = self.cat.parse_event(event)
            if e is None:
                return
            yield from (i for i in self.cat.event_markets(e) if i >= start)
            return
        if series:
            s = self.cat.parse_series(series)
            if s is None:
                return
            mpe, ns = self.cat.mpe, self.cat.n_series
            e0 = start // mpe
            e = e0 + ((s - e0) % ns)
            while e * mpe < self.cat.count:
                for i in self.cat.event_markets(e):
                    if i >= start:
                        yield i
                e += ns
            return
        yield from range(start, self.cat.count)

    def _mve_candidates(self, q: Any, start: int) -> Iterator[int]:
        tickers = q.get("tickers")
        event = q.get("event_ticker")
        series = q.get("series_ticker")
        if tickers:
            yield from _from_list(tickers, self.cat.parse_mve, start)
        elif event:
            j = self.cat.parse_mve(event + "-COMBO")
            if j is not None and j >= start:
                yield j
        elif series is None or series == MVE_SERIES:
            yield from range(start, self.cat.n_mve)

    def _listing(self, q: Any, mve: str | None,
                 after: tuple[str, int] | None) -> Iterator[tuple[str, int]]:
        """What /markets walks, in a stable order: combo markets ("v", j) first (a static set),
        then ordinary markets ("m", i) in index order (new ones append at the end)."""
        if mve != "exclude" and (after is None or after[0] == "v"):
            start = 0 if after is None else after[1] + 1
            yield from (("v", j) for j in self._mve_candidates(q, start))
        if mve != "only":
            start = 0 if after is None or after[0] == "v" else after[1] + 1
            yield from (("m", i) for i in self._candidates(q, start))

    async def markets_list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = q_int(q, "limit", 100, 0, 1000)
        limit = limit or 100
        after = dec_cursor_any("vm", q.get("cursor"))
        status = q.get("status")
        if status is not None and status not in STATUS_FILTER:
            raise BadRequest("invalid status")
        names = ("min_created_ts", "max_created_ts", "min_close_ts", "max_close_ts",
                 "min_settled_ts", "max_settled_ts", "min_updated_ts")
        b = {n: q_int(q, n) for n in names}
        mve = q.get("mve_filter")
        if mve is not None and mve not in ("only", "exclude"):
            raise BadRequest("invalid mve_filter")
        created = b["min_created_ts"] is not None or b["max_created_ts"] is not None
        closed = b["min_close_ts"] is not None or b["max_close_ts"] is not None
        settled = b["min_settled_ts"] is not None or b["max_settled_ts"] is not None
        if created and status not in (None, "unopened", "open"):
            raise BadRequest("created_ts filters require status unopened or open")
        if closed and status not in (None, "closed"):
            raise BadRequest("close_ts filters require status closed")
        if settled and status not in (None, "settled"):
            raise BadRequest("settled_ts filters require status settled")
        if b["min_updated_ts"] is not None and (
                status or created or closed or settled or q.get("event_ticker")
                or q.get("series_ticker") or q.get("tickers") or mve == "only"):
            raise BadRequest("min_updated_ts is incompatible with other filters")
        allowed = STATUS_FILTER[status] if status else None
        timed = created or closed or settled or b["min_updated_ts"] is not None
        out: list[dict[str, Any]] = []
        last: tuple[str, int] | None = None
        exhausted = True
        for n, item in enumerate(self._listing(q, mve, after)):
            if n >= SCAN_BUDGET or len(out) >= limit:
                exhausted = False
                break
            last = item
            tag, k = item
            if tag == "v":
                if allowed is not None and self.mve_status(k) not in allowed:
                    continue
                if timed and not self._time_ok(MarketState(self.cat.mve_static(k), {}, {}), b):
                    continue
                out.append(self.mve_obj(k))
                continue
            if allowed is not None and self.status_of(k) not in allowed:
                continue
            if self.is_historical(k):
                continue  # settled before the cutoff: /historical/markets only
            if timed and not self._time_ok(self.engine.view(k), b):
                continue
            out.append(self.market_obj(k))
        cursor = "" if exhausted or last is None else enc_cursor(*last)
        return jresp({"markets": out, "cursor": cursor})

    @staticmethod
    def _time_ok(s: MarketState, b: dict[str, int | None]) -> bool:
        def rng(v: int | None, lo: int | None, hi: int | None) -> bool:
            if lo is None and hi is None:
                return True
            if v is None:
                return False
            return (lo is None or v >= lo) and (hi is None or v <= hi)

        return (rng(s.st.created_ms // 1000, b["min_created_ts"], b["max_created_ts"])
                and rng(s.close_ms // 1000, b["min_close_ts"], b["max_close_ts"])
                and rng(None if s.settled_ms is None else s.settled_ms // 1000,
                        b["min_settled_ts"], b["max_settled_ts"])
                and rng(s.updated_ms // 1000, b["min_updated_ts"], None))

    def _hidden(self, i: int) -> bool:
        """Kalshi can 404 a market just after its ``created`` event (knob ``new_market_404_ms``)."""
        lag = self.conf.new_market_404_ms
        if not lag or i < self.cat.n_initial:
            return False
        return self.engine.now_ms - self.cat.static(i).created_ms < lag

    async def market_one(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"]
        j = self.cat.parse_mve(ticker)
        if j is not None:
            return jresp({"market": self.mve_obj(j)})
        i = self.cat.parse_market(ticker)
        if i is None or self._hidden(i) or self.is_historical(i):
            return err(404, "market_not_found", "market not found")
        return jresp({"market": self.market_obj(i)})

    async def orderbook(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"]
        depth = q_int(request.query, "depth", 0, None, 100) or 0
        if self.cat.parse_mve(ticker) is not None:
            return jresp(self.enc.orderbook({}, {}, depth))  # combos trade by RFQ: no book
        i = self.cat.parse_market(ticker)
        if i is None or self._hidden(i):
            return err(404, "market_not_found", "market not found")
        yes, no = self._rest_book(i)
        return jresp(self.enc.orderbook(yes, no, depth))

    def _rest_book(self, i: int) -> tuple[dict[int, int], dict[int, int]]:
        s = self.engine.view(i)
        lag = self.conf.rest_book_lag_ms
        if not lag:
            return s.yes, s.no
        return self.truth.book_at(s.st.ticker, s.yes, s.no, (self.engine.now_ms - lag) * 1000)

    async def orderbooks(self, request: web.Request) -> web.Response:
        tickers = [t for v in request.query.getall("tickers", []) for t in v.split(",") if t]
        if not tickers or len(tickers) > 100:
            raise BadRequest("tickers must list 1 to 100 markets")
        out = []
        for t in tickers:
            if self.cat.parse_mve(t) is not None:
                out.append({"ticker": t, **self.enc.orderbook({}, {}, 0)})
                continue
            i = self.cat.parse_market(t)
            if i is None:
                continue  # unknown tickers are left out of the batch
            yes, no = self._rest_book(i)
            out.append({"ticker": t, **self.enc.orderbook(yes, no, 0)})
        return jresp({"orderbooks": out})

    # --- trades -------------------------------------------------------------------------
    async def trades(self, request: web.Request) -> web.Response:
        return self._trades(request, historical=False)

    def _trades(self, request: web.Request, historical: bool) -> web.Response:
        """Trades newest first; the live endpoint holds those created at or after the cutoff,
        ``/historical/trades`` the older ones (docs.kalshi.com/getting_started/historical_data)."""
        q = request.query
        limit = q_int(q, "limit", 100, 0, 1000) or 100
        before = dec_cursor("t", q.get("cursor"))
        min_ts = q_int(q, "min_ts")
        max_ts = q_int(q, "max_ts")
        ticker = q.get("ticker") or None
        skew = self.truth.rest_trade_skew_us
        # Filters apply to the REST timestamp (created_time) in seconds.
        lo = None if min_ts is None else min_ts * 1_000_000 - skew
        hi = None if max_ts is None else (max_ts + 1) * 1_000_000 - 1 - skew
        cut = self.cutoff_ms() * 1000 - skew
        if historical:
            hi = cut - 1 if hi is None else min(hi, cut - 1)
        else:
            lo = cut if lo is None else max(lo, cut)
        idx = self.truth.trade_indexes(ticker, lo, hi, before) if lo is None or hi is None \
            or lo <= hi else range(0)
        page = idx[: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        tr = self.truth.trades_
        lagged = self.faults.rest_lagged
        if lagged and not historical:  # withhold_next(rest_lag_s=...): a lagging replica
            now_us = self.engine.now_ms * 1000
            out = [self.enc.trade(tr[n], skew) for n in page
                   if not (n in lagged and self.faults.rest_hidden(n, now_us))]
        else:
            out = [self.enc.trade(tr[n], skew) for n in page]
        cursor = enc_cursor("t", page[-1]) if more and len(page) else ""
        return jresp({"trades": out, "cursor": cursor})

    # --- candlesticks -------------------------------------------------------------------
    def _candles(self, i: int, q: Any) -> list[dict[str, Any]]:
        start = q_int(q, "start_ts")
        end = q_int(q, "end_ts")
        period = q_int(q, "period_interval")
        if start is None or end is None or period is None:
            raise BadRequest("start_ts, end_ts and period_interval are required")
        if period not in (1, 60, 1440):
            raise BadRequest("period_interval must be 1, 60 or 1440")
        if end < start:
            raise BadRequest("end_ts before start_ts")
        latest = q_bool(q, "include_latest_before_start")
        s = self.engine.states.get(i)
        minutes = sorted(s.candles.items()) if s else []
        ps = period * 60
        buckets: dict[int, list[int | None]] = {}
        for m_end, c in minutes:
            b_end = -(-m_end // ps) * ps
            cur = buckets.get(b_end)
            if cur is None:
                buckets[b_end] = list(c)
                continue
            cur[1] = max(cur[1], c[1])  # type: ignore[type-var]
            cur[2] = min(cur[2], c[2])  # type: ignore[type-var]
            cur[3] = c[3]
            cur[4] = (cur[4] or 0) + (c[4] or 0)
            cur[5] = (cur[5] or 0) + (c[5] or 0)
            cur[6] = (cur[6] or 0) + (c[6] or 0)
            cur[7] = c[7]
            cur[9] = max(cur[9], c[9])  # type: ignore[type-var]
            cur[10] = min(cur[10], c[10])  # type: ignore[type-var]
            cur[11] = c[11]
            cur[13] = max(cur[13], c[13])  # type: ignore[type-var]
            cur[14] = min(cur[14], c[14])  # type: ignore[type-var]
            cur[15] = c[15]
        out: list[dict[str, Any]] = []
        prev: list[int | None] | None = None  # the last real candle before this one
        for b_end in sorted(buckets):
            c = buckets[b_end]
            if b_end < start:
                prev = c
                continue
            if b_end > end:
                break
            if latest and not out and prev is not None:
                out.append(self.enc.candle(start, None, prev))
            out.append(self.enc.candle(b_end, c, prev))
            prev = c
        if latest and not out and prev is not None:
            out.append(self.enc.candle(start, None, prev))
        return out

    async def candles_one(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"]
        i = self.cat.parse_market(ticker)
        if i is None or self.cat.static(i).series_ticker != request.match_info["series"]:
            return err(404, "market_not_found", "market not found")
        return jresp({"ticker": ticker, "candlesticks": self._candles(i, request.query)})

    async def candles_batch(self, request: web.Request) -> web.Response:
        raw = request.query.get("market_tickers", "")
        tickers = [t for t in raw.split(",") if t]
        if not tickers or len(tickers) > 100:
            raise BadRequest("market_tickers must list 1 to 100 markets")
        out: list[dict[str, Any]] = []
        total = 0
        for t in tickers:
            i = self.cat.parse_market(t)
            if i is None:
                continue
            cs = self._candles(i, request.query)
            total += len(cs)
            if total > 10_000:
                raise BadRequest("too many candlesticks requested")
            out.append({"market_ticker": t, "candlesticks": cs})
        return jresp({"markets": out})

    async def candles_event(self, request: web.Request) -> web.Response:
        e = self.cat.parse_event(request.match_info["event"])
        if e is None or self.cat.series_ticker(e % self.cat.n_series) != \
                request.match_info["series"]:
            return err(404, "event_not_found", "event not found")
        idx = list(self.cat.event_markets(e))
        end = q_int(request.query, "end_ts")
        return jresp({
            "market_tickers": [self.cat.market_ticker(i) for i in idx],
            "market_candlesticks": [self._candles(i, request.query) for i in idx],
            "adjusted_end_ts": end,
        })

    # --- historical / account -----------------------------------------------------------
    async def hist_cutoff(self, request: web.Request) -> web.Response:
        t = iso_ms(self.cutoff_ms())
        return jresp({"market_settled_ts": t, "trades_created_ts": t, "orders_updated_ts": t})

    async def hist_markets(self, request: web.Request) -> web.Response:
        """Markets settled before the cutoff, in index order (only touched markets settle)."""
        q = request.query
        limit = q_int(q, "limit", 100, 0, 1000) or 100
        after = dec_cursor("h", q.get("cursor"))
        want = {t for t in (q.get("tickers") or "").split(",") if t}
        idx = sorted(i for i in self.engine.states if self.is_historical(i)
                     and (after is None or i > after))
        if want:
            idx = [i for i in idx if self.cat.market_ticker(i) in want]
        page = idx[:limit]
        cursor = enc_cursor("h", page[-1]) if len(idx) > limit else ""
        return jresp({"markets": [self.market_obj(i) for i in page], "cursor": cursor})

    async def hist_market_one(self, request: web.Request) -> web.Response:
        i = self.cat.parse_market(request.match_info["ticker"])
        if i is None or not self.is_historical(i):
            return err(404, "market_not_found", "market not found")
        return jresp({"market": self.market_obj(i)})

    async def hist_trades(self, request: web.Request) -> web.Response:
        return self._trades(request, historical=True)

    async def account_limits(self, request: web.Request) -> web.Response:
        entry = request[KEY]
        assert entry is not None  # the middleware requires a signature on this path
        return jresp(self.limiter.limits(entry.tier or self.conf.tier))

    async def account_endpoint_costs(self, request: web.Request) -> web.Response:
        return jresp(self.limiter.endpoint_costs())

