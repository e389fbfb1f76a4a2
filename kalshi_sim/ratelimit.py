"""Per-key (per-IP for anonymous callers) token buckets with Kalshi's tier presets.

Tier table from kalshi-protocol.md §3.1 (requests per second, read / write). The bucket holds
``burst_s`` seconds of budget. A refused request gets 429 with body ``{"error":"too many
requests"}`` and no ``Retry-After`` by default (the [3P] observed form); both are switchable.
"""

from __future__ import annotations

from dataclasses import dataclass

TIERS: dict[str, tuple[float, float]] = {
    "basic": (20.0, 10.0),
    "advanced": (30.0, 30.0),
    "premier": (100.0, 100.0),
    "prime": (400.0, 400.0),
}


@dataclass
class _Bucket:
    tokens: float
    last: float


class RateLimiter:
    """Decides whether one request may proceed. ``now`` is monotonic seconds (injected)."""

    def __init__(self, default_tier: str | None = "basic", burst_s: float = 1.0,
                 retry_after: bool = False, go_style_body: bool = False) -> None:
        if default_tier is not None and default_tier not in TIERS:
            raise ValueError(f"unknown tier {default_tier!r}; one of {sorted(TIERS)}")
        self.default_tier = default_tier
        self.burst_s = burst_s
        self.retry_after = retry_after
        self.go_style_body = go_style_body
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def allow(self, who: str, tier: str | None, write: bool, now: float) -> bool:
        tier = tier or self.default_tier
        if tier is None:
            return True
        rate = TIERS[tier][1 if write else 0]
        cap = rate * self.burst_s
        key = (who, "w" if write else "r")
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(cap, now)
        b.tokens = min(cap, b.tokens + (now - b.last) * rate)
        b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False

    def body(self) -> dict[str, object]:
        if self.go_style_body:
            return {"code": "RATE_LIMITED", "message": "Rate limit exceeded",
                    "details": {"retry_after_ms": 1000}}
        return {"error": "too many requests"}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"} if self.retry_after else {}

    def limits(self, tier: str | None) -> dict[str, object]:
        t = tier or self.default_tier or "prime"
        r, w = TIERS[t]
        return {"usage_tier": t, "read_limit": int(r), "write_limit": int(w)}
