"""Exponential backoff with "equal jitter": delay n is uniform in ``[cap/2, cap]`` with
``cap = min(max_s, min_s * 2**n)``.

Jitter keeps 24 sync loops from retrying a restarted production database in lock-step; the
lower half-bound keeps a flapping database from being hammered with near-zero delays.
"""

from __future__ import annotations

import random


class Backoff:
    """Stateful delay generator; ``reset()`` after a success. The RNG is an argument (tests seed it)."""

    __slots__ = ("_attempt", "_rng", "max_s", "min_s")

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        self.min_s = max(min_s, 0.001)
        self.max_s = max(max_s, self.min_s)
        self._attempt = 0
        self._rng = rng

    def next(self) -> float:
        """The next delay in seconds, advancing the attempt counter."""
        cap = min(self.max_s, self.min_s * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self._attempt = 0
