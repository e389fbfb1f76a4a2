"""The exchange's clock as seen from ours: REST trade filters (``min_ts``/``max_ts``) are in
exchange time, while outage windows are measured on our receive clock.

Fed from WebSocket trades (``exchange_ts`` vs ``received_at``); the newest sample wins, so a
skewed or fast-forwarded exchange clock (the simulator's) is followed. Without samples the two
clocks are assumed equal.
"""

from __future__ import annotations

from typing import Any


class ExchangeClock:
    __slots__ = ("offset_us", "samples")

    def __init__(self) -> None:
        self.offset_us = 0
        self.samples = 0

    def observe(self, exchange_ts: int, received_at: int) -> None:
        self.offset_us = exchange_ts - received_at
        self.samples += 1

    def to_exchange(self, local_us: int) -> int:
        return local_us + self.offset_us


class TradeTap:
    """Wraps the trades writer for the router: forwards every row (``offer``/``put``), sampling
    WS trades into an ExchangeClock; anything else is the writer's own attribute."""

    __slots__ = ("_clock", "_w")

    def __init__(self, writer: Any, clock: ExchangeClock) -> None:
        self._w = writer
        self._clock = clock

    def offer(self, row: Any) -> bool:
        ok: bool = self._w.offer(row)
        if ok and row.source == "ws":
            self._clock.observe(row.exchange_ts, row.received_at)
        return ok

    async def put(self, row: Any) -> None:
        await self._w.put(row)
        if row.source == "ws":
            self._clock.observe(row.exchange_ts, row.received_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)
