"""Per-key (per-IP for anonymous callers) token buckets, as Kalshi bills REST requests in 2026.

Kalshi's rules (docs.kalshi.com/getting_started/rate_limits, and the ``BucketLimit`` schema of
``GET /account/limits`` in OpenAPI 3.15.0):

* every request costs tokens, 10 by default; a few endpoints cost less (the API reference page of
  each gives its cost), so costs are a table here (``costs``), defaulting to ``default_cost``;
* **batch endpoints bill every item**: a 100-ticker ``/markets/orderbooks`` costs 100 x 10 =
  1,000 tokens (``batch_endpoints``);
* two independent buckets per key, Read (GET and anything not routed elsewhere) and Write;
* per-second budgets by tier: Basic 200/100, Advanced 300/300, Premier 1,000/1,000,
  Paragon 2,000/2,000, Prime 4,000/4,000 tokens per second (read/write);
* a bucket refills at its budget up to ``bucket_capacity``: one second of budget for Read
  ("When equal to refill_rate the bucket holds one second of budget"), two seconds for Write at
  non-Basic tiers ("write buckets at non-Basic tiers hold two seconds of budget");
* a request is allowed only if the bucket holds its whole cost, otherwise HTTP 429 with body
  ``{"error": "too many requests"}`` and no ``Retry-After`` / ``X-RateLimit-*`` headers. So a
  request costing more than the bucket can hold is refused forever.

Switches keep the older observations testable: a ``Retry-After`` header, the Go-style JSON body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: tier -> (read tokens/s, write tokens/s); docs.kalshi.com/getting_started/rate_limits (2026).
TIERS: dict[str, tuple[int, int]] = {
    "basic": (200, 100),
    "advanced": (300, 300),
    "premier": (1_000, 1_000),
    "paragon": (2_000, 2_000),
    "prime": (4_000, 4_000),
}
DEFAULT_COST = 10  # "Most requests cost the default of 10 tokens"
#: Endpoints whose every item is billed separately ("Batch endpoints don't save tokens").
BATCH_ENDPOINTS = ("/markets/orderbooks", "/markets/candlesticks")


@dataclass
class _Bucket:
    tokens: float
    last: float


@dataclass(frozen=True)
class BucketLimit:
    """One bucket's budget: ``refill_rate`` tokens/s up to ``bucket_capacity`` tokens."""

    refill_rate: int
    bucket_capacity: int


class RateLimiter:
    """Decides whether one request may proceed. ``now`` is monotonic seconds (injected)."""

    def __init__(self, default_tier: str | None = "basic", *, read_bucket_s: float = 1.0,
                 write_bucket_s: float = 2.0, default_cost: int = DEFAULT_COST,
                 costs: Mapping[str, int] | None = None,
                 batch_endpoints: tuple[str, ...] = BATCH_ENDPOINTS,
                 retry_after: bool = False, go_style_body: bool = False) -> None:
        if default_tier is not None and default_tier not in TIERS:
            raise ValueError(f"unknown tier {default_tier!r}; one of {sorted(TIERS)}")
        self.default_tier = default_tier
        self.read_bucket_s = read_bucket_s
        self.write_bucket_s = write_bucket_s
        self.default_cost = default_cost
        self.costs = dict(costs or {})
        self.batch_endpoints = frozenset(batch_endpoints)
        self.retry_after = retry_after
        self.go_style_body = go_style_body
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.tokens_spent = {"read": 0, "write": 0}

    # --- the model ------------------------------------------------------------------------
    def limit(self, tier: str, write: bool) -> BucketLimit:
        rate = TIERS[tier][1 if write else 0]
        # Basic's write bucket holds one second; other tiers' write buckets hold two.
        secs = (1.0 if tier == "basic" else self.write_bucket_s) if write else self.read_bucket_s
        return BucketLimit(rate, int(rate * secs))

    def cost(self, endpoint: str, items: int = 1) -> int:
        """Tokens one request to ``endpoint`` (a path template) costs; batch endpoints bill
        ``items`` times their per-item cost."""
        c = self.costs.get(endpoint, self.default_cost)
        return c * max(1, items) if endpoint in self.batch_endpoints else c

    def allow(self, who: str, tier: str | None, write: bool, now: float, cost: int = 1) -> bool:
        tier = tier or self.default_tier
        if tier is None:
            return True
        lim = self.limit(tier, write)
        key = (who, "w" if write else "r")
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(lim.bucket_capacity), now)
        b.tokens = min(float(lim.bucket_capacity), b.tokens + (now - b.last) * lim.refill_rate)
        b.last = now
        if b.tokens >= cost:
            b.tokens -= cost
            self.tokens_spent["write" if write else "read"] += cost
            return True
        return False

    # --- responses ------------------------------------------------------------------------
    def body(self) -> dict[str, object]:
        if self.go_style_body:
            return {"code": "RATE_LIMITED", "message": "Rate limit exceeded",
                    "details": {"retry_after_ms": 1000}}
        return {"error": "too many requests"}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"} if self.retry_after else {}

    def limits(self, tier: str | None) -> dict[str, object]:
        """``GET /account/limits`` in today's shape (OpenAPI 3.15.0 ``GetAccountApiLimitsResponse``:
        ``usage_tier`` and a ``BucketLimit`` per bucket)."""
        t = tier or self.default_tier or "prime"
        out: dict[str, object] = {"usage_tier": t}
        for name, write in (("read", False), ("write", True)):
            lim = self.limit(t, write)
            out[name] = {"refill_rate": lim.refill_rate, "bucket_capacity": lim.bucket_capacity}
        return out

    def endpoint_costs(self) -> dict[str, object]:
        """``GET /account/endpoint_costs``: the endpoints whose cost differs from the default."""
        return {"default_cost": self.default_cost,
                "endpoint_costs": [{"method": "GET", "path": p, "cost": c}
                                   for p, c in sorted(self.costs.items()) if c != self.default_cost]}
