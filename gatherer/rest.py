"""Async Kalshi REST client: signed, budgeted, retrying, cursor-paginating.

Every request:
- waits, by priority, for its cost in tokens from the key's Read bucket
  (``_ratelimit.TokenBucket``): Kalshi bills 10 tokens per request unless the endpoint costs
  less, and batch endpoints per item (docs.kalshi.com/getting_started/rate_limits). The budget
  is the tier's, or what ``GET /account/limits`` reports at start (``discover_limits``);
- is signed over the URL path from the host root (``/trade-api/v2/...``), query excluded
  (kalshi-protocol.md §1.3), with a fresh timestamp per attempt;
- retries 429 (Kalshi sends no ``Retry-After``; one is honoured if present, and the bucket is
  emptied and paused with jitter: only that bucket), 5xx, timeouts and connection errors with
  exponential backoff + full jitter; other 4xx fail at once with the parsed error envelope
  (``{"error": {"code", "message"}}`` or the flat form);
- on 401/403 raises ``AuthRejected`` (``auth="raise"``) or logs one clear line naming the key id
  and retries slowly (``auth="retry"``; ``auth_failing`` then drives /health "degraded");
- compares the server's ``Date`` with our clock and warns when they differ by more than
  ``clock_skew_warn_s`` (we still sign with our own clock).

``rest_requests_total{endpoint,status}`` counts every attempt; ``endpoint`` is the path template
(``/markets/trades``), never a ticker.

Trades older than Kalshi's historical cutoff (``GET /historical/cutoff``, moved forward
periodically) exist only on ``/historical/trades``: ``trades()`` reads the cutoff (cached
``cutoff_refresh_s``) and asks whichever tiers the window needs, reporting which answered.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from gatherer._backoff import Backoff
from gatherer._ratelimit import CostTooHigh, Priority, TokenBucket
from gatherer.config import KalshiConfig, RateLimitConfig
from gatherer.errors import AuthRejected, RestError
from shared.kalshi.auth import sign_headers
from shared.kalshi.units import UnitError, rfc3339_to_us
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.rest")

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]

#: Statuses worth retrying: the same request may succeed later.
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))


class RestClient:
    """One API key's REST session. Build once in app.py; ``aclose()`` at shutdown."""

    def __init__(
        self,
        cfg: KalshiConfig,
        private_key: rsa.RSAPrivateKey,
        rate: RateLimitConfig,
        metrics: GathererMetrics,
        *,
        max_attempts: int = 8,
        backoff_min_s: float = 0.25,
        backoff_max_s: float = 10.0,
        auth_retry_s: float = 30.0,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._cfg = cfg
        self._key = private_key
        self._m = metrics
        self._base = cfg.rest_base
        self._base_path = urlsplit(self._base).path.rstrip("/")
        self._rate = rate
        self._default_cost = rate.default_cost
        self._costs = rate.costs()
        self._batch = frozenset(rate.batch_endpoints)
        read, read_cap, write, write_cap = rate.budget()
        self._bucket = TokenBucket(read * rate.headroom, read_cap * rate.headroom)
        self._write_bucket = TokenBucket(write * rate.headroom, write_cap * rate.headroom)
        self._show_budget()
        self._cutoff_us: int | None = None
        self._cutoff_at = -math.inf
        self._max_attempts = max_attempts
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._auth_retry_s = auth_retry_s
        self._now_ms = now_ms
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.request_timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "kalshi-data-gatherer"},
        )
        self._rl = RateLimitedLog(log, 60.0)
        self.auth_failing = False
        self.last_skew_s = 0.0
        self.last_error: str | None = None

    @property
    def key_id(self) -> str:
        return self._cfg.api_key_id

    # ---- budget -----------------------------------------------------------------------------
    def cost(self, endpoint: str, items: int = 1) -> int:
        """Tokens a request to ``endpoint`` (path template) costs; batch endpoints per item."""
        c = self._costs.get(endpoint, self._default_cost)
        return c * max(1, items) if endpoint in self._batch else c

    def max_batch(self, endpoint: str, limit: int = 100) -> int:
        """The most items one request to a batch endpoint may carry so that its cost fits the
        Read bucket (a batch the bucket cannot hold is refused by Kalshi forever)."""
        per_item = self._costs.get(endpoint, self._default_cost)
        return max(1, min(limit, int(self._bucket.capacity // per_item)))

    @property
    def read_bucket(self) -> TokenBucket:
        return self._bucket

    def _show_budget(self) -> None:
        for name, b in (("read", self._bucket), ("write", self._write_bucket)):
            self._m.rest_budget_tokens_per_second.labels(bucket=name).set(b.rate / self._rate.headroom)
            self._m.rest_budget_capacity_tokens.labels(bucket=name).set(
                b.capacity / self._rate.headroom)

    def adopt_limits(self, body: Mapping[str, Any]) -> bool:
        """Use the budget ``GET /account/limits`` reported: today's token buckets
        (``{usage_tier, read: {refill_rate, bucket_capacity}, write: {...}}``), or the older
        requests-per-second shape (``read_limit``/``write_limit``, one request = the default
        cost). Returns False when the body has neither."""
        hr = self._rate.headroom
        rc = self._rate
        got = False
        for name, bucket, old_key, cap_rate, cap_size in (
                ("read", self._bucket, "read_limit", rc.read_per_s, rc.read_capacity),
                ("write", self._write_bucket, "write_limit", rc.write_per_s, rc.write_capacity)):
            b = body.get(name)
            if isinstance(b, dict) and _num(b.get("refill_rate")) and _num(b.get("bucket_capacity")):
                rate, size = float(b["refill_rate"]), float(b["bucket_capacity"])
            elif _num(body.get(old_key)):
                rate = size = float(body[old_key]) * self._default_cost
            else:
                continue
            # an explicit rate_limit override may only lower the budget (a key shared with
            # another process), never raise it above what Kalshi grants
            rate = min(rate, cap_rate) if cap_rate else rate
            size = min(size, cap_size) if cap_size else size
            bucket.resize(rate * hr, size * hr)
            got = True
        if got:
            self._show_budget()
            log.info("REST budget for key %s (tier %s): read %.0f tokens/s (bucket %.0f), write "
                     "%.0f tokens/s (bucket %.0f); we spend at most %.0f%% of it",
                     self._cfg.api_key_id, body.get("usage_tier", "?"), self._bucket.rate / hr,
                     self._bucket.capacity / hr, self._write_bucket.rate / hr,
                     self._write_bucket.capacity / hr, hr * 100)
        return got

    def adopt_costs(self, body: Mapping[str, Any]) -> None:
        """Endpoint costs from ``GET /account/endpoint_costs`` (``default_cost`` and the
        endpoints that differ); explicit ``rate_limit.endpoint_costs`` in config still win."""
        if _num(body.get("default_cost")):
            self._default_cost = int(body["default_cost"])
        for e in body.get("endpoint_costs") or ():
            if isinstance(e, dict) and e.get("method", "GET") == "GET" and _num(e.get("cost")):
                path = str(e.get("path", ""))
                path = path.removeprefix(self._base_path)
                self._costs.setdefault(path, int(e["cost"]))
        self._costs.update(self._rate.costs())

    async def discover_limits(self) -> None:
        """Read this key's real budget and endpoint costs (when ``rate_limit.discover``); raises
        ``AuthRejected`` for a rejected key, keeps the configured tier's budget otherwise."""
        if not self._rate.discover:
            await self.probe_auth()
            return
        try:
            body = await self.get("/account/limits", auth="raise")
        except RestError as exc:
            if exc.status in (None, 404, 429) or (exc.status or 0) >= 500:
                log.warning("could not read /account/limits (%s); assuming the %s tier's budget",
                            exc, self._rate.tier)
                return
            raise
        if not self.adopt_limits(body):
            log.warning("/account/limits has no budget we understand; assuming the %s tier's",
                        self._rate.tier)
        try:
            self.adopt_costs(await self.get("/account/endpoint_costs", auth="raise"))
        except RestError as exc:
            log.info("no /account/endpoint_costs (%s); using the configured costs", exc)

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------------
    async def get(self, path: str, params: Params | None = None, *, endpoint: str | None = None,
                  auth: str = "retry", retry_4xx: bool = False,
                  priority: int = Priority.REGISTRY, items: int = 1) -> dict[str, Any]:
        """GET ``path`` (relative to the REST base, e.g. ``/markets``) and return the JSON body.

        ``endpoint`` is the metric label and the cost key (defaults to ``path``); ``items`` the
        number of items of a batch request (billed per item). ``priority`` orders waiters on the
        budget (``_ratelimit.Priority``). ``auth``: ``"raise"`` raises ``AuthRejected`` on
        401/403, ``"retry"`` keeps retrying slowly (the key may be fixed server-side). Raises
        ``RestError`` on other 4xx, when retries run out, or for a request the budget can never
        pay for (``bad_request``: make the batch smaller).
        """
        label = endpoint or path
        full_path = self._base_path + path
        url = self._base + path
        cost = self.cost(label, items)
        backoff = Backoff(self._backoff_min, self._backoff_max)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._bucket.acquire(cost, priority)
            except CostTooHigh as exc:
                raise RestError(label, None, "too_costly", str(exc)) from None
            self._m.rest_tokens_spent_total.labels(bucket="read").inc(cost)
            headers = sign_headers(self._cfg.api_key_id, self._key, "GET", full_path, self._now_ms())
            status: int | None = None
            retry_after: float | None = None
            try:
                resp = await self._http.get(url, params=params, headers=headers)  # type: ignore[arg-type]
                status = resp.status_code
            except httpx.TimeoutException:
                self._count(label, "timeout")
                self._note_error(label, "timeout")
            except httpx.TransportError as exc:
                self._count(label, "error")
                self._note_error(label, f"connection error ({type(exc).__name__})")
            else:
                self._count(label, str(status))
                self._check_skew(resp)
                if status == 200:
                    self.auth_failing = False
                    try:
                        body = orjson.loads(resp.content)
                    except orjson.JSONDecodeError:
                        # A truncated body or a CDN's HTML page: retry like a 5xx.
                        self._count(label, "bad_body")
                        self._note_error(label, "invalid JSON body")
                        status = 599
                    else:
                        if not isinstance(body, dict):
                            raise RestError(label, status, "bad_body", "JSON body is not an object")
                        self.last_error = None
                        return body
                elif status in (401, 403):
                    code, message = _error_envelope(resp)
                    self.auth_failing = True
                    self._m.market_registry_rest_errors_total.labels(endpoint=label).inc()
                    err = AuthRejected(self._cfg.api_key_id, f"HTTP {status} {code or message}".strip())
                    self.last_error = str(err)
                    if auth == "raise":
                        raise err
                    self._rl.log(logging.ERROR, "auth", "%s; retrying in %.0f s (check the key id "
                                 "and that the public key is registered)", err, self._auth_retry_s,
                                 key_id=self._cfg.api_key_id)
                    await asyncio.sleep(self._auth_retry_s)
                    continue
                elif status == 429:
                    self._m.rest_rate_limited_total.inc()
                    retry_after = _retry_after(resp)
                    self._note_error(label, "429 rate limited")
                elif status >= 500 or status == 599:
                    self._note_error(label, f"HTTP {status}")
                else:
                    code, message = _error_envelope(resp)
                    self._m.market_registry_rest_errors_total.labels(endpoint=label).inc()
                    if not (retry_4xx and status == 404):
                        raise RestError(label, status, code, message)
                    self._note_error(label, f"HTTP {status} {code}")
            if attempt >= self._max_attempts:
                self._m.market_registry_rest_errors_total.labels(endpoint=label).inc()
                raise RestError(label, status, "retries_exhausted", f"gave up after {attempt} attempts")
            delay = backoff.next()
            if retry_after is not None:
                delay = max(delay, retry_after)
            if status == 429:
                # The exchange's bucket is emptier than our copy (another client of this key,
                # drift): empty ours and pause it, jittered. Waiters keep their priority order.
                self._bucket.penalize(retry_after)
            await asyncio.sleep(delay)

    async def paginate(self, path: str, params: Mapping[str, Any], items_key: str, *,
                       endpoint: str | None = None, limit: int = 1000,
                       max_pages: int = 1_000_000,
                       priority: int = Priority.REGISTRY,
                       strict: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's ``items_key`` list, following ``cursor`` until it is empty/absent.

        A cursor seen before (a server-side loop) ends the iteration with an error log and a
        ``market_registry_rest_errors_total`` count instead of spinning forever; with ``strict``
        it raises ``RestError`` instead, for callers that must know the listing was complete.
        """
        seen: set[str] = set()
        cursor: str | None = None
        label = endpoint or path
        for _ in range(max_pages):
            q = dict(params)
            q["limit"] = limit
            if cursor:
                q["cursor"] = cursor
            body = await self.get(path, q, endpoint=label, priority=priority)
            items = body.get(items_key) or []
            if not isinstance(items, list):
                raise RestError(label, 200, "bad_body", f"{items_key} is not a list")
            yield items
            nxt = body.get("cursor")
            if not nxt or not isinstance(nxt, str):
                return
            if nxt in seen:
                self._m.market_registry_rest_errors_total.labels(endpoint=label).inc()
                log.error("REST %s returned a cursor it already gave (pagination loop); stopping "
                          "this listing early", label, extra={"endpoint": label})
                if strict:
                    raise RestError(label, 200, "pagination_loop", "listing cut short")
                return
            seen.add(nxt)
            cursor = nxt

    # ---- endpoints ------------------------------------------------------------------------
    async def exchange_status(self) -> dict[str, Any]:
        return await self.get("/exchange/status")

    async def probe_auth(self) -> None:
        """A signed call that needs a valid key (``/account/limits``): raises AuthRejected if
        the key id is unknown or the signature is wrong. Other failures are not fatal here.
        (``discover_limits`` does this too, and adopts the budget the answer carries.)"""
        try:
            await self.get("/account/limits", auth="raise")
        except RestError as exc:
            if exc.status in (None, 404, 429) or (exc.status or 0) >= 500:
                return
            raise

    async def orderbooks(self, tickers: Sequence[str],
                         priority: int = Priority.POLLER) -> list[dict[str, Any]]:
        """``GET /markets/orderbooks?tickers=A&tickers=B``: billed per ticker, so at most
        ``max_batch("/markets/orderbooks")`` of them."""
        body = await self.get("/markets/orderbooks", [("tickers", t) for t in tickers],
                              priority=priority, items=len(tickers))
        obs = body.get("orderbooks") or []
        return obs if isinstance(obs, list) else []

    async def orderbook(self, ticker: str, priority: int = Priority.ADMIN) -> dict[str, Any]:
        return await self.get(f"/markets/{ticker}/orderbook", endpoint="/markets/{ticker}/orderbook",
                              priority=priority)

    async def historical_cutoff(self, force: bool = False) -> int | None:
        """``trades_created_ts`` of ``GET /historical/cutoff`` in µs: trades created before it
        are only on ``/historical/trades``. Cached ``kalshi.cutoff_refresh_s``; None when it
        cannot be read (the caller then asks both tiers)."""
        now = time.monotonic()
        if not force and self._cutoff_us is not None \
                and now - self._cutoff_at < self._cfg.cutoff_refresh_s:
            return self._cutoff_us
        try:
            body = await self.get("/historical/cutoff", priority=Priority.BACKFILL)
            cut = rfc3339_to_us(body["trades_created_ts"])
        except (RestError, KeyError, TypeError, UnitError) as exc:
            self._rl.log(logging.WARNING, "cutoff", "historical cutoff unavailable (%s); trade "
                         "backfills ask both the live and the historical endpoint", exc)
            return None
        self._cutoff_us, self._cutoff_at = cut, now
        self._m.rest_historical_cutoff_timestamp.set(cut / 1e6)
        return cut

    def trades(self, *, ticker: str | None = None, min_ts: int | None = None,
               max_ts: int | None = None, limit: int = 1000,
               priority: int = Priority.BACKFILL) -> TradeQuery:
        """Pages of trades in [min_ts, max_ts] (Unix seconds, inclusive) from whichever tier
        holds them: ``/markets/trades`` for trades at or after the historical cutoff,
        ``/historical/trades`` for older ones. The query's ``sources`` says which answered."""
        return TradeQuery(self, ticker, min_ts, max_ts, limit, priority)

    # ---- internals ------------------------------------------------------------------------
    def _count(self, endpoint: str, status: str) -> None:
        self._m.rest_requests_total.labels(endpoint=endpoint, status=status).inc()

    def _note_error(self, endpoint: str, what: str) -> None:
        self.last_error = f"{endpoint}: {what}"
        self._rl.log(logging.WARNING, f"{endpoint}:{what}", "REST %s: %s; retrying with backoff",
                     endpoint, what, endpoint=endpoint)

    def _check_skew(self, resp: httpx.Response) -> None:
        date = resp.headers.get("date")
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return
        # Date has 1 s resolution: compare against our clock, allowing for that truncation.
        skew = time.time() - server
        if 0 <= skew < 1.0:
            skew = 0.0
        elif skew > 0:
            skew -= 1.0
        self.last_skew_s = skew
        self._m.rest_clock_skew_seconds.set(skew)
        if abs(skew) > self._cfg.clock_skew_warn_s:
            self._rl.log(logging.WARNING, "clock_skew", "server Date differs from our clock by "
                         "%.1f s (> %.1f s); requests are signed with the local clock, check NTP",
                         skew, self._cfg.clock_skew_warn_s, skew_s=round(skew, 3))


class TradeQuery:
    """One window of trades across Kalshi's live and historical tiers (async-iterate for pages).

    The live tier holds trades created at or after the cutoff, the historical tier the older
    ones. The live part is read first, then the cutoff is read again: trades only ever move
    from live to historical, so a cutoff that advanced meanwhile is caught by the historical
    read that follows. With no cutoff known both tiers are asked. A failure of a tier the window
    needs raises ``RestError``, so no caller records such a window as recovered; so does a
    listing cut short by a cursor loop (``strict``): the backfill calls a window recovered only
    when every page was read.
    """

    def __init__(self, client: RestClient, ticker: str | None, min_ts: int | None,
                 max_ts: int | None, limit: int, priority: int) -> None:
        self._c = client
        self._q: dict[str, Any] = {}
        if ticker:
            self._q["ticker"] = ticker
        if min_ts is not None:
            self._q["min_ts"] = min_ts
        if max_ts is not None:
            self._q["max_ts"] = max_ts
        self._min, self._max = min_ts, max_ts
        self._limit = limit
        self._priority = priority
        self.sources: set[str] = set()  # "live" and/or "historical": the tiers that answered

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        return self._pages()

    async def _pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        c = self._c
        cut = await c.historical_cutoff()
        if cut is None or self._max is None or (self._max + 1) * 1_000_000 > cut:
            async for page in c.paginate("/markets/trades", self._q, "trades", limit=self._limit,
                                         priority=self._priority, strict=True):
                yield page
            self.sources.add("live")
            cut = await c.historical_cutoff(force=True)
        if cut is not None and self._min is not None and self._min * 1_000_000 >= cut:
            return  # wholly after the cutoff: nothing of it can be historical
        try:
            async for page in c.paginate("/historical/trades", self._q, "trades",
                                         limit=self._limit, priority=self._priority, strict=True):
                yield page
        except RestError as exc:
            if cut is None and exc.status == 404 and exc.code == "not_found":
                return  # a server without a historical tier (and no cutoff): nothing to miss
            raise
        self.sources.add("historical")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _retry_after(resp: httpx.Response) -> float | None:
    v = resp.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(v).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_envelope(resp: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` from ``{"error": {"code", "message"}}``, the flat form, or
    ``{"error": "text"}``; empty strings when the body is not JSON (an HTML error page)."""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    err = body.get("error", body)
    if isinstance(err, str):
        return "", err[:200]
    if isinstance(err, dict):
        return str(err.get("code") or "")[:80], str(err.get("message") or "")[:200]
    return "", ""
