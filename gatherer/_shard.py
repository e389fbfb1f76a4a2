"""Orderbook shard planner: which orderbook connection subscribes which market (pure logic).

Markets are spread evenly over ``n`` orderbook connections, at most ``cap`` each. New markets go
to the least-loaded shard; closed ones leave theirs; ``rebalance()`` proposes a bounded number of
moves when closures leave shards uneven (each move costs an unsubscribe and a fresh snapshot,
data-model.md hardening 6, so we only move when the spread is worth it). Markets that fit nowhere
wait in ``overflow`` and are placed as room appears; they are counted and logged by the caller.

A shard can be retired (its socket is parked: Kalshi refused more sockets on this key, issue
#14 R2): its markets move to the others, whose cap grows if they must hold more, since one
socket can carry several subscriptions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class ShardPlanner:
    """Market -> shard index bookkeeping. No I/O; the connection manager applies the plan."""

    def __init__(self, n: int, cap: int) -> None:
        self.n = n
        self.cap = cap
        self.base_cap = cap
        self.shards: list[set[str]] = [set() for _ in range(n)]
        self.owner: dict[str, int] = {}
        self.overflow: dict[str, None] = {}  # insertion-ordered set
        self.retired: set[int] = set()

    def __len__(self) -> int:
        return len(self.owner)

    def sizes(self) -> list[int]:
        return [len(s) for s in self.shards]

    def active(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.retired]

    def _least(self) -> int | None:
        best, best_n = None, self.cap
        for i, s in enumerate(self.shards):
            if len(s) < best_n and i not in self.retired:
                best, best_n = i, len(s)
        return best

    def retire(self, i: int) -> set[int]:
        """Stop using shard ``i``; its markets move to the other shards (the cap grows when
        they need the room). Returns the shards that changed (``i`` included)."""
        if i in self.retired or len(self.retired) + 1 >= self.n:
            return set()
        self.retired.add(i)
        moved = sorted(self.shards[i])
        self.shards[i] = set()
        for t in moved:
            del self.owner[t]
        # The pool keeps its configured total room (n x cap), and at least what it holds now.
        active = self.n - len(self.retired)
        need = len(self.owner) + len(moved) + len(self.overflow)
        self.cap = max(self.cap, math.ceil(self.base_cap * self.n / active),
                       math.ceil(need / active))
        changed = {i} | self.add_many(moved)
        changed |= {j for _, j in self.drain_overflow()}
        return changed

    def restore(self, i: int) -> None:
        """Use shard ``i`` again (its socket may connect): ``rebalance`` moves markets in."""
        self.retired.discard(i)

    def add(self, ticker: str) -> int | None:
        """Place one market; returns its shard, or None (overflow or no shards)."""
        if ticker in self.owner:
            return self.owner[ticker]
        i = self._least() if self.n else None
        if i is None:
            self.overflow[ticker] = None
            return None
        self.shards[i].add(ticker)
        self.owner[ticker] = i
        return i

    def add_many(self, tickers: Iterable[str]) -> set[int]:
        """Place many markets evenly (start-up); returns the shards that changed."""
        changed: set[int] = set()
        if not self.n:
            for t in tickers:
                self.overflow[t] = None
            return changed
        todo = [t for t in tickers if t not in self.owner]
        # fill the emptiest shards first, round-robin, which is even and O(markets)
        order = sorted(self.active(), key=lambda i: len(self.shards[i]))
        if not order:
            for t in todo:
                self.overflow[t] = None
            return changed
        k = 0
        for t in todo:
            for _ in range(len(order)):
                i = order[k % len(order)]
                k += 1
                if len(self.shards[i]) < self.cap:
                    self.shards[i].add(t)
                    self.owner[t] = i
                    changed.add(i)
                    break
            else:
                self.overflow[t] = None
        return changed

    def remove(self, ticker: str) -> int | None:
        """Forget a market; returns the shard it left (None if it had none). Frees room for
        overflowed markets, which the caller then places with ``drain_overflow``."""
        self.overflow.pop(ticker, None)
        i = self.owner.pop(ticker, None)
        if i is not None:
            self.shards[i].discard(ticker)
        return i

    def drain_overflow(self) -> list[tuple[str, int]]:
        """Place waiting markets where room appeared."""
        placed = []
        for t in list(self.overflow):
            i = self._least()
            if i is None:
                break
            del self.overflow[t]
            self.shards[i].add(t)
            self.owner[t] = i
            placed.append((t, i))
        return placed

    def rebalance(self, max_moves: int, min_spread: int = 2, tolerance: float = 0.1) -> list[tuple[str, int, int]]:
        """Moves (ticker, from, to) that bring the fullest and emptiest shards closer.

        Only when ``max - min`` exceeds both ``min_spread`` and ``tolerance`` x the mean, so a
        steady churn of a few markets does not trigger snapshot storms.
        """
        moves: list[tuple[str, int, int]] = []
        usable = self.active()
        if len(usable) < 2:
            return moves
        mean = len(self.owner) / len(usable)
        while len(moves) < max_moves:
            sizes = self.sizes()
            hi = max(usable, key=sizes.__getitem__)
            lo = min(usable, key=sizes.__getitem__)
            spread = sizes[hi] - sizes[lo]
            if spread <= max(min_spread, tolerance * mean):
                break
            t = next(iter(self.shards[hi]))
            self.shards[hi].discard(t)
            self.shards[lo].add(t)
            self.owner[t] = lo
            moves.append((t, hi, lo))
        return moves
