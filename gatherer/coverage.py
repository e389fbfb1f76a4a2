"""Coverage ledger: what this gatherer knows about its own completeness.

Every gap (``seq_gap``), outage (``ws_down`` per connection), resync, backfill, book mismatch and
process downtime (``process_down``: from the newest stored row's ``received_at`` to start) becomes
a ``coverage_events`` row, written through the coverage writer (upsert by ``event_id``). An event
opened now and recovered later is written twice with the same ``event_id``; the second write
carries ``window_end``/``recovered``. "Is market X complete between A and B" is then a query.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from gatherer._types import NowUs, RowSink
from shared.kalshi.models import CoverageRow

log = logging.getLogger("gatherer.coverage")

#: Open events kept in memory for their later update; beyond this the oldest are forgotten
#: (their row stays open in the DB, which is the honest answer).
MAX_OPEN = 100_000


@dataclass
class _Open:
    row: CoverageRow
    detail: dict[str, Any]


class CoverageLedger:
    """Writes ``CoverageRow``s. ``open()`` returns an id for ``close()``; ``record()`` is one-shot."""

    def __init__(self, gatherer_id: str, sink: RowSink, now_us: NowUs) -> None:
        self._gid = gatherer_id
        self._sink = sink
        self._now = now_us
        self._open: dict[str, _Open] = {}

    async def open(self, kind: str, scope: str, window_start: int, *, ticker: str | None = None,
                   detail: dict[str, Any] | None = None) -> str:
        """Start an event whose end is not known yet (an outage, a pending backfill)."""
        eid = str(uuid.uuid4())
        now = self._now()
        d = dict(detail or {})
        row = CoverageRow(eid, self._gid, scope, ticker, kind, window_start, None, False,
                          orjson.dumps(d).decode(), now, now)
        if len(self._open) >= MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        self._open[eid] = _Open(row, d)
        await self._sink.put_many([row])
        return eid

    async def close(self, event_id: str, *, window_end: int | None = None, recovered: bool = True,
                    detail: dict[str, Any] | None = None) -> None:
        """End an open event (``window_end`` defaults to now)."""
        o = self._open.pop(event_id, None)
        if o is None:
            return
        d = {**o.detail, **(detail or {})}
        now = self._now()
        row = o.row._replace(window_end=now if window_end is None else window_end,
                             recovered=recovered, detail=orjson.dumps(d).decode(), updated_at=now)
        await self._sink.put_many([row])

    async def record(self, kind: str, scope: str, window_start: int, window_end: int | None, *,
                     ticker: str | None = None, recovered: bool = False,
                     detail: dict[str, Any] | None = None) -> str:
        """A complete event in one row."""
        eid = str(uuid.uuid4())
        now = self._now()
        row = CoverageRow(eid, self._gid, scope, ticker, kind, window_start, window_end, recovered,
                          orjson.dumps(detail or {}).decode(), now, now)
        await self._sink.put_many([row])
        return eid

    def open_count(self) -> int:
        return len(self._open)
