"""Exponential backoff with full jitter (AWS architecture blog's "full jitter" variant).

Delay n is uniform in ``[0, min(max_s, min_s * 2**n)]``: spreading retries over the whole window
is what keeps 150 sockets (or three gatherers) from reconnecting in lock-step after a shared drop.
"""

from __future__ import annotations

import random


class Backoff:
    """Stateful delay generator; ``reset()`` after a success."""

    __slots__ = ("_attempt", "_rng", "max_s", "min_s")

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = max(min_s, 0.001)
        self.max_s = max(max_s, self.min_s)
        self._attempt = 0
        self._rng = rng or random.Random()

    @property
    def attempt(self) -> int:
        return self._attempt

    def cap(self) -> float:
        """Upper bound of the next delay."""
        return float(min(self.max_s, self.min_s * (2.0 ** min(self._attempt, 30))))

    def next(self) -> float:
        """The next delay in seconds (full jitter), advancing the attempt counter."""
        d = self._rng.uniform(0.0, self.cap())
        self._attempt += 1
        return d

    def reset(self) -> None:
        self._attempt = 0
