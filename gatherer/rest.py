"""Async Kalshi REST client: signed, rate-limited, retrying, cursor-paginating.

Every request:
- waits for a token from the key's bucket (``_ratelimit.TokenBucket``) so 429s stay rare;
- is signed over the URL path from the host root (``/trade-api/v2/...``), query excluded
  (kalshi-protocol.md §1.3), with a fresh timestamp per attempt;
- retries 429 (honouring ``Retry-After``, pausing the whole bucket), 5xx, timeouts and connection
  errors with exponential backoff + full jitter; other 4xx fail at once with the parsed error
  envelope (``{"error": {"code", "message"}}`` or the flat form);
- on 401/403 raises ``AuthRejected`` (``auth="raise"``) or logs one clear line naming the key id
  and retries slowly (``auth="retry"``; ``auth_failing`` then drives /health "degraded");
- compares the server's ``Date`` with our clock and warns when they differ by more than
  ``clock_skew_warn_s`` (we still sign with our own clock).

``rest_requests_total{endpoint,status}`` counts every attempt; ``endpoint`` is the path template
(``/markets/trades``), never a ticker.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from gatherer._backoff import Backoff
from gatherer._ratelimit import TokenBucket
from gatherer.config import KalshiConfig, RateLimitConfig
from gatherer.errors import AuthRejected, RestError
from shared.kalshi.auth import sign_headers
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
        self._bucket = TokenBucket(rate.read_per_s, rate.burst)
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

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------------
    async def get(self, path: str, params: Params | None = None, *, endpoint: str | None = None,
                  auth: str = "retry", retry_4xx: bool = False) -> dict[str, Any]:
        """GET ``path`` (relative to the REST base, e.g. ``/markets``) and return the JSON body.

        ``endpoint`` is the metric label (defaults to ``path``). ``auth``: ``"raise"`` raises
        ``AuthRejected`` on 401/403, ``"retry"`` keeps retrying slowly (the key may be fixed
        server-side). Raises ``RestError`` on other 4xx or when retries run out.
        """
        label = endpoint or path
        full_path = self._base_path + path
        url = self._base + path
        backoff = Backoff(self._backoff_min, self._backoff_max)
        attempt = 0
        while True:
            attempt += 1
            await self._bucket.acquire()
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
                # The budget is per key: every caller of this key must hold off, not just us.
                self._bucket.pause(max(delay, retry_after or 0.0))
            await asyncio.sleep(delay)

    async def paginate(self, path: str, params: Mapping[str, Any], items_key: str, *,
                       endpoint: str | None = None, limit: int = 1000,
                       max_pages: int = 1_000_000,
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
            body = await self.get(path, q, endpoint=label)
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
        the key id is unknown or the signature is wrong. Other failures are not fatal here."""
        try:
            await self.get("/account/limits", auth="raise")
        except RestError as exc:
            if exc.status in (None, 404, 429) or (exc.status or 0) >= 500:
                return
            raise

    async def orderbooks(self, tickers: Sequence[str]) -> list[dict[str, Any]]:
        """``GET /markets/orderbooks?tickers=A&tickers=B`` (1-100 tickers)."""
        body = await self.get("/markets/orderbooks", [("tickers", t) for t in tickers])
        obs = body.get("orderbooks") or []
        return obs if isinstance(obs, list) else []

    async def orderbook(self, ticker: str) -> dict[str, Any]:
        return await self.get(f"/markets/{ticker}/orderbook", endpoint="/markets/{ticker}/orderbook")

    def trades(self, *, ticker: str | None = None, min_ts: int | None = None,
               max_ts: int | None = None, limit: int = 1000,
               historical: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of ``/markets/trades`` (or ``/historical/trades``); min/max_ts in Unix seconds."""
        q: dict[str, Any] = {}
        if ticker:
            q["ticker"] = ticker
        if min_ts is not None:
            q["min_ts"] = min_ts
        if max_ts is not None:
            q["max_ts"] = max_ts
        path = "/historical/trades" if historical else "/markets/trades"
        # strict: the backfill calls a window recovered only when the listing was read to its end
        return self.paginate(path, q, "trades", limit=limit, strict=True)

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
