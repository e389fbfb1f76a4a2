"""Cost-aware, prioritised token buckets: how we stay inside Kalshi's REST budget.

Kalshi bills every request in tokens (10 by default, batch endpoints per item) against a Read
and a Write bucket per key, refilled at the tier's budget up to the bucket's capacity; a request
that finds too few tokens gets 429 (docs.kalshi.com/getting_started/rate_limits). So we keep our
own copy of each bucket and spend from it first: a request waits here, not at the exchange.

Waiters are served by priority, then arrival: the registry and trade backfill (which decide
whether data is complete) go before the snapshot poller (a backstop that can always run later),
so a poller with hundreds of batches queued never starves them. A 429 means our copy drifted
from the exchange's (another process on the same key, clock drift): ``penalize`` empties the
bucket and pauses it for a jittered interval; only that bucket, other work continues.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import random
import time
from collections.abc import Callable


class Priority(enum.IntEnum):
    """Lower is served first."""

    REGISTRY = 0  # market discovery and lifecycle follow-ups
    BACKFILL = 1  # trade backfill: completeness of the trades table
    ADMIN = 2
    POLLER = 5  # the REST snapshot backstop


class CostTooHigh(ValueError):
    """A request costs more tokens than the bucket can ever hold: it would wait forever (and
    Kalshi would refuse it forever). The caller must make it smaller (e.g. a smaller batch)."""

    def __init__(self, cost: float, capacity: float) -> None:
        super().__init__(f"request costs {cost:g} tokens, bucket holds {capacity:g}")
        self.cost = cost
        self.capacity = capacity


class TokenBucket:
    """``rate`` tokens/s up to ``capacity``. ``acquire(cost, priority)`` waits, in priority
    order, until the tokens exist. Safe to share between tasks of one event loop."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.rate = max(rate, 0.001)
        self.capacity = max(capacity, 1.0)
        self._clock = clock
        self._rng = rng or random.Random()
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self._waiters: list[tuple[int, int, float, asyncio.Future[float]]] = []
        self._seq = itertools.count()
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.spent = 0.0  # tokens handed out so far

    # ---- budget ---------------------------------------------------------------------------
    def resize(self, rate: float, capacity: float) -> None:
        """Adopt a budget learnt from the exchange (``/account/limits``)."""
        self._refill(self._clock())
        self.rate = max(rate, 0.001)
        self.capacity = max(capacity, 1.0)
        self._tokens = min(self._tokens, self.capacity)
        self._wake.set()

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w[3].done())

    # ---- acquiring --------------------------------------------------------------------------
    async def acquire(self, cost: float = 1.0, priority: int = Priority.REGISTRY) -> float:
        """Take ``cost`` tokens, waiting behind higher-priority (and earlier equal-priority)
        callers; returns the seconds waited. Raises ``CostTooHigh`` for an impossible cost."""
        if cost > self.capacity:
            raise CostTooHigh(cost, self.capacity)
        now = self._clock()
        self._refill(now)
        if not self._waiters and now >= self._paused_until and self._tokens >= cost:
            self._tokens -= cost
            self.spent += cost
            return 0.0
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), cost, fut))
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._serve(),
                                                                  name="token-bucket")
        t0 = now
        await fut  # cancellation of this waiter just leaves a done future the server skips
        return self._clock() - t0

    async def _serve(self) -> None:
        """Hands tokens to the best waiter as they refill; exits when nobody waits."""
        while self._waiters:
            _prio, _seq, cost, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            now = self._clock()
            if now < self._paused_until:
                delay = self._paused_until - now
            else:
                self._refill(now)
                if cost > self.capacity:  # the bucket shrank under it (resize)
                    heapq.heappop(self._waiters)
                    fut.set_exception(CostTooHigh(cost, self.capacity))
                    continue
                if self._tokens >= cost:
                    heapq.heappop(self._waiters)
                    self._tokens -= cost
                    self.spent += cost
                    fut.set_result(0.0)
                    continue
                delay = (cost - self._tokens) / self.rate
            # A new, more urgent waiter (or a resize/penalty) re-plans the wait at once.
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    # ---- 429 ------------------------------------------------------------------------------
    def penalize(self, seconds: float | None = None) -> float:
        """The exchange said 429: assume its bucket is empty and stop handing out tokens for
        ``seconds`` (or, when the exchange gave no Retry-After, the time one default request's
        worth of tokens takes to refill, with full jitter up to twice that). Returns the pause."""
        now = self._clock()
        if seconds is None:
            seconds = self._rng.uniform(0.5, 2.0) * max(0.05, self.capacity / self.rate / 4)
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._stamp = max(self._stamp, now)
        self._wake.set()
        return seconds

    # kept for callers of the older API
    def pause(self, seconds: float) -> None:
        self.penalize(seconds)
