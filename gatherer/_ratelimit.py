"""Per-key REST token bucket, so we rarely see a 429 at all.

Kalshi limits reads per key (Basic tier 20/s; kalshi-protocol.md §3.1). Every REST request of one
key goes through one bucket; a 429 with ``Retry-After`` (or our own backoff) pauses the whole
bucket, since the budget is shared by every caller of that key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, up to ``burst`` banked. ``acquire`` waits, never fails."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(rate, 0.001)
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, sleeping until they exist; returns the seconds waited."""
        waited = 0.0
        # The lock makes waiters FIFO: one sleeper at a time computes its exact wait.
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    d = self._paused_until - now
                else:
                    self._refill(now)
                    if self._tokens >= cost:
                        self._tokens -= cost
                        return waited
                    d = (cost - self._tokens) / self.rate
                await asyncio.sleep(d)
                waited += d

    def pause(self, seconds: float) -> None:
        """Stop handing out tokens for ``seconds`` (server said Retry-After / 429 storm)."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._stamp = max(self._stamp, now)
