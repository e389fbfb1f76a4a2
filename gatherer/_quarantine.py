"""Markets the exchange refused to subscribe, held out of the orderbook shards (pure logic).

Kalshi refuses a whole subscribe/add_markets that names a market it will not serve (closed,
multivariate, unknown), naming it in the error or not (kalshi-protocol.md §4.3). Retrying the
identical command forever would black out every market sharing it (issue #14, R3), so the
culprit, once found (named, or by bisection in ``_subscriptions``), waits here instead: the rest
of its group subscribes at once. A quarantined market is retried when its lifecycle changes
(``release``), or after ``retry_s`` in case the refusal was transient (``due``). Its REST
snapshots keep coming from the poller meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable


class Quarantine:
    """ticker -> (monotonic time quarantined, reason)."""

    def __init__(self, retry_s: float, clock: Callable[[], float]) -> None:
        self.retry_s = retry_s
        self._clock = clock
        self._held: dict[str, tuple[float, str]] = {}

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._held

    def __len__(self) -> int:
        return len(self._held)

    def add(self, ticker: str, reason: str) -> bool:
        """Hold ``ticker`` out; False when it already was."""
        if ticker in self._held:
            return False
        self._held[ticker] = (self._clock(), reason)
        return True

    def release(self, ticker: str) -> bool:
        """Let ``ticker`` be subscribed again (its lifecycle changed); True if it was held."""
        return self._held.pop(ticker, None) is not None

    def due(self) -> list[str]:
        """Release and return the markets held longer than ``retry_s``."""
        now = self._clock()
        out = [t for t, (since, _) in self._held.items() if now - since >= self.retry_s]
        for t in out:
            del self._held[t]
        return out

    def reason(self, ticker: str) -> str | None:
        held = self._held.get(ticker)
        return None if held is None else held[1]
