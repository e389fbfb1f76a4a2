"""Coverage ledger: what this gatherer knows about its own completeness, written from evidence.

Every gap (``seq_gap``), outage (``ws_down`` per connection, also a subscription the exchange
ended), resync, backfill, book mismatch and process downtime (``process_down``: from the newest
stored row's ``received_at`` to start) becomes a ``coverage_events`` row, written through the
coverage writer (upsert by ``event_id``, newest ``updated_at`` wins). An event opened now and
closed later is written twice with the same ``event_id``.

What ``recovered`` means, per data (kalshi_data/ledger_check.py checks it against the simulator's
truth both ways):

- trades (``trade_backfill``; a trade socket's ``ws_down``): recovered only once the REST answer
  for the whole window was read (every page) and the trades it held are COMMITTED (the writer's
  ``settled`` barrier), or REST proved there were none. Until then the row says unrecovered,
  across restarts (backfill_queue keeps the window).
- orderbook deltas (``seq_gap``, an orderbook socket's ``ws_down``, ``book_mismatch``,
  ``process_down``): never recovered: no source serves past deltas, so a window in which they
  were lost stays unrecovered. ``seq_gap`` spans the last good frame to the frame that revealed
  the gap; ``book_mismatch`` the last moment the book was known good to the detection.
- the book (``resync``): recovered once the fresh snapshot that replaced the dirty book is
  committed; the window is the real one, from the last good frame to that snapshot.
- ticker updates (a ticker socket's ``ws_down``): never recovered (no REST history).

Windows are on this gatherer's receive clock. Every row's detail also carries
``exchange_offset_us``: the exchange's clock minus ours as last seen on WebSocket trades
(``_exclock.ExchangeClock``), so a window maps to exchange time as ``[start + offset,
end + offset]``; ``kalshi_data/ledger_check.py`` does that before comparing with exchange
timestamps (a skewed gatherer clock is then no lie).

"Is market X complete between A and B" is then a query (``kalshi-data gaps``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatherer._types import NowUs, RowSink
from shared.kalshi.models import CoverageRow

log = logging.getLogger("gatherer.coverage")

#: Open events kept in memory for their later update; beyond this the oldest are forgotten
#: (their row stays open in the DB, which is the honest answer).
MAX_OPEN = 100_000


@dataclass(frozen=True)
class CoverageRef:
    """An open coverage event, whole, so whoever completes its recovery can close it, even after
    a restart (backfill_queue stores it): e.g. the ``ws_down`` of a trade socket, closed by the
    backfill of its window."""

    event_id: str
    kind: str
    scope: str
    window_start: int
    window_end: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "kind": self.kind, "scope": self.scope,
                "window_start": self.window_start, "window_end": self.window_end,
                "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CoverageRef:
        return cls(str(d["event_id"]), str(d["kind"]), str(d["scope"]), int(d["window_start"]),
                   None if d.get("window_end") is None else int(d["window_end"]),
                   dict(d.get("detail") or {}))


@dataclass
class _Open:
    row: CoverageRow
    detail: dict[str, Any]


class CoverageLedger:
    """Writes ``CoverageRow``s. ``open()`` returns an id for ``close()``; ``record()`` is one-shot."""

    def __init__(self, gatherer_id: str, sink: RowSink, now_us: NowUs,
                 exchange_offset_us: Callable[[], int] | None = None) -> None:
        self._gid = gatherer_id
        self._sink = sink
        self._now = now_us
        self._offset = exchange_offset_us
        self._open: dict[str, _Open] = {}

    def _detail(self, detail: dict[str, Any] | None) -> dict[str, Any]:
        d = dict(detail or {})
        if self._offset is not None:
            d["exchange_offset_us"] = self._offset()
        return d

    @property
    def writer(self) -> RowSink:
        """The coverage writer (its ``mark``/``settled`` tell when a row is committed)."""
        return self._sink

    async def open(self, kind: str, scope: str, window_start: int, *, ticker: str | None = None,
                   window_end: int | None = None, detail: dict[str, Any] | None = None,
                   event_id: str | None = None) -> str:
        """Start an unrecovered event (an outage, a pending backfill); ``window_end`` may already
        be known (a backfill window) or come with ``close``."""
        eid = event_id or str(uuid.uuid4())
        now = self._now()
        d = self._detail(detail)
        row = CoverageRow(eid, self._gid, scope, ticker, kind, window_start, window_end, False,
                          orjson.dumps(d).decode(), now, now)
        self._remember(eid, row, d)
        await self._sink.put_many([row])
        return eid

    def adopt(self, event_id: str, kind: str, scope: str, window_start: int,
              window_end: int | None, *, ticker: str | None = None,
              detail: dict[str, Any] | None = None, created_at: int | None = None) -> None:
        """Take back an open event a previous run wrote (the durable backfill queue keeps what is
        needed), so ``close`` can end it. Nothing is written now: the close rewrites the whole
        row with the same id and a newer ``updated_at``, which wins over any older copy."""
        now = self._now()
        d = dict(detail or {})
        row = CoverageRow(event_id, self._gid, scope, ticker, kind, window_start, window_end, False,
                          orjson.dumps(d).decode(), created_at or now, now)
        self._remember(event_id, row, d)

    def _remember(self, eid: str, row: CoverageRow, detail: dict[str, Any]) -> None:
        if len(self._open) >= MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        self._open[eid] = _Open(row, detail)

    async def close(self, event_id: str, *, window_end: int | None = None, recovered: bool = True,
                    detail: dict[str, Any] | None = None) -> bool:
        """End an open event (``window_end`` defaults to the one given at open, else now).
        False when the event is unknown (already closed, or forgotten)."""
        o = self._open.pop(event_id, None)
        if o is None:
            return False
        d = {**o.detail, **self._detail(detail)}
        now = self._now()
        end = window_end if window_end is not None else (o.row.window_end or now)
        row = o.row._replace(window_end=end, recovered=recovered, detail=orjson.dumps(d).decode(),
                             updated_at=max(now, o.row.updated_at + 1))
        await self._sink.put_many([row])
        return True

    async def record(self, kind: str, scope: str, window_start: int, window_end: int | None, *,
                     ticker: str | None = None, recovered: bool = False,
                     detail: dict[str, Any] | None = None) -> str:
        """A complete event in one row."""
        eid = str(uuid.uuid4())
        now = self._now()
        row = CoverageRow(eid, self._gid, scope, ticker, kind, window_start, window_end, recovered,
                          orjson.dumps(self._detail(detail)).decode(), now, now)
        await self._sink.put_many([row])
        return eid

    def ref(self, event_id: str) -> CoverageRef | None:
        """The open event as a ``CoverageRef`` (to hand its closing to someone else)."""
        o = self._open.get(event_id)
        if o is None:
            return None
        r = o.row
        return CoverageRef(r.event_id, r.kind, r.scope, r.window_start, r.window_end, dict(o.detail))

    def adopt_ref(self, ref: CoverageRef, ticker: str | None = None) -> None:
        if ref.event_id not in self._open:
            self.adopt(ref.event_id, ref.kind, ref.scope, ref.window_start, ref.window_end,
                       ticker=ticker, detail=ref.detail)

    def is_open(self, event_id: str) -> bool:
        return event_id in self._open

    def open_count(self) -> int:
        return len(self._open)
