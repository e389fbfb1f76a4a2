"""Market registry: every series, event and market this gatherer knows, in compact memory.

- **Full sync** at start: ``/series``, ``/events`` and ``/markets`` (per configured status),
  cursor-paginated through the rate-limited REST client; logs "loaded N markets from REST API".
- **Incremental reconcile** every ``registry.reconcile_interval_s``: ``/markets`` and ``/events``
  with ``min_updated_ts`` (the only filter it may be combined with, kalshi-protocol.md §3.2).
- **Lifecycle frames** (``market_lifecycle_v2``) are applied at once; the full REST object of a
  touched market is fetched in batches afterwards (``/markets?tickers=``) so the reference row
  is the exchange's, not our partial reconstruction.
- **Implicit transitions**: Kalshi does not announce ``initialized -> active`` at ``open_time`` nor
  ``-> closed`` at ``close_time``; a timer heap schedules them from the REST times.
- **Open/close notices** go to the connection manager on a bounded queue (``changes``).

Memory: one dict ticker -> index plus flat arrays (status byte, open/close seconds, a "live"
byte). ~200 B per market, so 1,000,000 markets fit in a few hundred MB (measured in the tests).
Reference rows go through the writers, whose SQL merges newest-wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gatherer._types import NowUs, RowSink
from gatherer.config import RegistryConfig
from gatherer.errors import RestError
from gatherer.rest import RestClient
from shared.kalshi.models import Lifecycle, Rejected, SeqGap
from shared.kalshi.objects import event_from_rest, market_from_rest, series_from_rest
from shared.kalshi.units import UnitError, rfc3339_to_us
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.markets")

STATUS_CODES: dict[str, int] = {
    "initialized": 1, "unopened": 1, "active": 2, "open": 2, "inactive": 3, "paused": 3,
    "closed": 4, "determined": 5, "disputed": 6, "amended": 7, "finalized": 8, "settled": 8,
}
_INITIALIZED, _ACTIVE, _INACTIVE = 1, 2, 3
#: status filters /events accepts (kalshi-protocol.md §3.2); /markets also takes "paused"
_EVENT_STATUSES = frozenset(("unopened", "open", "closed", "settled"))
_IDX_BITS = 24  # heap entries pack (when_s << 24 | idx): 16M markets
_IDX_MASK = (1 << _IDX_BITS) - 1
_NEVER = 0


@dataclass(frozen=True, slots=True)
class MarketChange:
    """A market became subscribable (``opened=True``) or stopped being so."""

    ticker: str
    opened: bool


class MarketRegistry:
    """All known markets; the source of truth for which markets get orderbook subscriptions."""

    def __init__(
        self,
        cfg: RegistryConfig,
        rest: RestClient,
        metrics: GathererMetrics,
        *,
        markets_sink: RowSink,
        events_sink: RowSink,
        series_sink: RowSink,
        now_us: NowUs,
        changes_max: int = 100_000,
    ) -> None:
        self._cfg = cfg
        self._close_grace_s = int(cfg.close_grace_s)
        self._rest = rest
        self._m = metrics
        self._markets_sink = markets_sink
        self._events_sink = events_sink
        self._series_sink = series_sink
        self._now_us = now_us
        self.changes: asyncio.Queue[MarketChange] = asyncio.Queue(changes_max)
        self._index: dict[str, int] = {}
        self._tickers: list[str] = []
        self._status = bytearray()
        self._live = bytearray()
        self._open_s = array("q")
        self._close_s = array("q")
        self._timers: list[int] = []
        self._active_count = 0  # markets with _live == 1
        self._emitting = False
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        # reconciles started / the start number of the newest completed one (wait_reconciled)
        self.reconciles_started = 0
        self.reconciled_through = 0
        self._reconciled = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self.loaded = False
        self.last_sync_us: int | None = None
        self.exchange_active: bool | None = None
        self.trading_active: bool | None = None
        self._rl = RateLimitedLog(log, 60.0)
        #: called with the ticker of every market_lifecycle_v2 frame (the connection manager
        #: retries a quarantined market on its lifecycle change)
        self.on_lifecycle: Callable[[str], None] | None = None

    # ---- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tickers)

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._index

    @property
    def active_count(self) -> int:
        return self._active_count

    def is_open(self, ticker: str) -> bool:
        i = self._index.get(ticker)
        return i is not None and self._live[i] == 1

    def open_tickers(self) -> list[str]:
        """Markets currently subscribable, in registry order."""
        t, live = self._tickers, self._live
        return [t[i] for i in range(len(t)) if live[i]]

    def take_open_set(self) -> list[str]:
        """The open set now, and from now on every change is announced on ``changes``.

        Called once by the connection manager; nothing can slip between the two because the
        event loop runs this without yielding.
        """
        self._emitting = True
        return self.open_tickers()

    def status_of(self, ticker: str) -> str | None:
        i = self._index.get(ticker)
        if i is None:
            return None
        code = self._status[i]
        for name, c in STATUS_CODES.items():
            if c == code:
                return name
        return None

    # ---- state updates --------------------------------------------------------------------
    def _should_be_live(self, i: int, now_s: int) -> bool:
        st = self._status[i]
        close = self._close_s[i]
        # REST close_time is whole seconds while the exchange's closing deltas carry ms: keep
        # listening a grace period past it so the last deltas of the book are not missed.
        if close != _NEVER and close + self._close_grace_s <= now_s:
            return False
        if st in (_ACTIVE, _INACTIVE):
            return True
        if st == _INITIALIZED:
            op = self._open_s[i]
            return op != _NEVER and op <= now_s
        return False

    def _evaluate(self, i: int, now_s: int) -> None:
        want = self._should_be_live(i, now_s)
        if want == bool(self._live[i]):
            return
        self._live[i] = 1 if want else 0
        self._active_count += 1 if want else -1
        if self._emitting:
            change = MarketChange(self._tickers[i], want)
            try:
                self.changes.put_nowait(change)
            except asyncio.QueueFull:
                # The consumer is far behind; the next resync of the open set repairs it.
                self._m.market_registry_change_notices_dropped_total.inc()
                self._rl.log(logging.ERROR, "changes_full", "market change queue full; "
                             "dropping notice for %s (the periodic shard check repairs it)",
                             change.ticker)

    def _schedule(self, i: int, when_s: int, now_s: int) -> None:
        if when_s != _NEVER and when_s > now_s:
            heapq.heappush(self._timers, (when_s << _IDX_BITS) | i)

    def upsert(self, ticker: str, status: str | None, open_s: int | None, close_s: int | None) -> int:
        """Record or update one market; returns its index. Unknown status keeps the old one."""
        now_s = self._now_us() // 1_000_000
        i = self._index.get(ticker)
        if i is None:
            i = len(self._tickers)
            self._index[ticker] = i
            self._tickers.append(ticker)
            self._status.append(0)
            self._live.append(0)
            self._open_s.append(_NEVER)
            self._close_s.append(_NEVER)
        if status is not None and status in STATUS_CODES:
            self._status[i] = STATUS_CODES[status]
        if open_s is not None:
            self._open_s[i] = open_s
            self._schedule(i, open_s, now_s)
        if close_s is not None:
            self._close_s[i] = close_s
            self._schedule(i, close_s + self._close_grace_s, now_s)
        self._evaluate(i, now_s)
        return i

    def tick(self) -> int:
        """Apply due implicit transitions (open_time/close_time passed); returns how many."""
        now_s = self._now_us() // 1_000_000
        limit = (now_s + 1) << _IDX_BITS
        n = 0
        while self._timers and self._timers[0] < limit:
            i = heapq.heappop(self._timers) & _IDX_MASK
            self._evaluate(i, now_s)
            n += 1
        return n

    def _update_gauges(self) -> None:
        self._m.market_registry_markets_total.set(len(self._tickers))
        self._m.market_registry_active_markets.set(self._active_count)

    # ---- REST sync -----------------------------------------------------------------------
    async def _ingest_markets(self, items: list[dict[str, Any]]) -> int:
        rx = self._now_us()
        rows = []
        for obj in items:
            row = market_from_rest(obj, rx)
            if isinstance(row, Rejected):
                self._m.router_parse_errors_total.labels(reason=row.reason).inc()
                self._rl.log(logging.WARNING, f"bad_market:{row.reason}", "skipping REST market "
                             "%s: %s %s", row.ticker, row.reason, row.detail)
                continue
            rows.append(row)
            self.upsert(row.ticker, row.status, _s(row.open_time), _s(row.close_time))
        if rows:
            await self._markets_sink.put_many(rows)
        return len(rows)

    async def _ingest_events(self, items: list[dict[str, Any]]) -> None:
        rx = self._now_us()
        rows = []
        for obj in items:
            row = event_from_rest(obj, rx)
            if isinstance(row, Rejected):
                self._m.router_parse_errors_total.labels(reason=row.reason).inc()
                continue
            rows.append(row)
        if rows:
            await self._events_sink.put_many(rows)

    async def _ingest_series(self, items: list[dict[str, Any]]) -> None:
        rx = self._now_us()
        rows = [r for r in (series_from_rest(o, rx) for o in items) if not isinstance(r, Rejected)]
        if rows:
            await self._series_sink.put_many(rows)

    def _mve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Kalshi lists multivariate (combo) markets in /markets unless asked not to; we leave
        them out unless configured (``registry.multivariate``). ``mve_filter=exclude`` is the
        one filter ``min_updated_ts`` combines with (kalshi-protocol.md §3.2)."""
        if self._cfg.multivariate == "exclude":
            return {**params, "mve_filter": "exclude"}
        return params

    async def full_sync(self) -> int:
        """Load every series, event and market (configured statuses); returns the market count."""
        t0 = time.monotonic()
        self._m.market_registry_reconciling.set(1)
        started_us = self._now_us()
        try:
            await self.refresh_exchange_status()
            try:
                body = await self._rest.get("/series")
                await self._ingest_series(list(body.get("series") or []))
            except RestError as exc:
                log.warning("series listing failed (%s); continuing with events and markets", exc)
            for status in self._cfg.statuses:
                if status not in _EVENT_STATUSES:  # /events rejects e.g. "paused" (HTTP 400)
                    continue
                async for page in _prefetched(self._rest.paginate(
                        "/events", {"status": status}, "events",
                        limit=min(200, self._cfg.page_limit))):
                    await self._ingest_events(page)
            n = 0
            for status in self._cfg.statuses:
                async for page in _prefetched(self._rest.paginate(
                        "/markets", self._mve({"status": status}), "markets",
                        limit=self._cfg.page_limit)):
                    n += await self._ingest_markets(page)
        finally:
            self._m.market_registry_reconciling.set(0)
        self.last_sync_us = started_us
        self.loaded = True
        self._m.market_registry_last_sync_timestamp.set(started_us / 1e6)
        self._m.market_registry_reconcile_duration_seconds.observe(time.monotonic() - t0)
        self._update_gauges()
        log.info("loaded %d markets from REST API", len(self._tickers),
                 extra={"markets": len(self._tickers), "active_markets": self._active_count,
                        "seconds": round(time.monotonic() - t0, 2)})
        return n

    async def reconcile(self) -> int:
        """Fetch what changed since the last sync (with a minute of overlap)."""
        if self.last_sync_us is None:
            return await self.full_sync()
        t0 = time.monotonic()
        started_us = self._now_us()
        since_s = max(0, self.last_sync_us // 1_000_000 - 60)
        n = 0
        self._m.market_registry_reconciling.set(1)
        try:
            async for page in self._rest.paginate("/markets", self._mve({"min_updated_ts": since_s}),
                                                  "markets", limit=self._cfg.page_limit):
                n += await self._ingest_markets(page)
            async for page in self._rest.paginate("/events", {"min_updated_ts": since_s}, "events",
                                                  limit=min(200, self._cfg.page_limit)):
                await self._ingest_events(page)
        finally:
            self._m.market_registry_reconciling.set(0)
        self.last_sync_us = started_us
        self._m.market_registry_last_sync_timestamp.set(started_us / 1e6)
        self._m.market_registry_reconcile_duration_seconds.observe(time.monotonic() - t0)
        self._update_gauges()
        log.info("registry reconcile: %d markets updated", n, extra={"markets_updated": n})
        return n

    async def refresh_exchange_status(self) -> None:
        try:
            body = await self._rest.exchange_status()
        except RestError as exc:
            self._rl.log(logging.WARNING, "exchange_status", "exchange status unavailable: %s", exc)
            return
        self.exchange_active = bool(body.get("exchange_active", False))
        self.trading_active = bool(body.get("trading_active", False))
        self._m.market_registry_exchange_active.set(1 if self.exchange_active else 0)

    # ---- lifecycle -----------------------------------------------------------------------
    def apply_lifecycle(self, ev: Lifecycle) -> None:
        """Apply one ``market_lifecycle_v2`` / ``event_lifecycle`` frame at once."""
        self._m.market_registry_lifecycle_events_total.labels(type=ev.event_type or ev.kind).inc()
        if ev.kind != "market_lifecycle_v2":
            return
        msg, t = ev.msg, ev.ticker
        et = ev.event_type
        if et == "created":
            self.upsert(t, "initialized", _int(msg.get("open_ts")), _int(msg.get("close_ts")))
        elif et in ("activated", "deactivated"):
            deact = msg.get("is_deactivated")
            paused = deact if isinstance(deact, bool) else et == "deactivated"
            self.upsert(t, "inactive" if paused else "active", None, None)
        elif et == "close_date_updated":
            self.upsert(t, None, None, _int(msg.get("close_ts")))
        elif et == "determined":
            self.upsert(t, "determined", None, None)
        elif et == "settled":
            self.upsert(t, "finalized", None, None)
        elif t not in self._index:
            self.upsert(t, None, None, None)
        self._dirty.add(t)
        self._dirty_event.set()
        self._update_gauges()
        if self.on_lifecycle is not None:
            self.on_lifecycle(t)

    async def _fetch_dirty(self) -> None:
        """Fetch the full REST objects of markets touched by lifecycle frames, 100 per call."""
        while self._dirty:
            batch = [self._dirty.pop() for _ in range(min(100, len(self._dirty)))]
            try:
                body = await self._rest.get("/markets", {"tickers": ",".join(batch), "limit": 1000})
            except RestError as exc:
                self._rl.log(logging.WARNING, "dirty_fetch", "fetching %d lifecycle-touched markets "
                             "failed (%s); the next reconcile covers them", len(batch), exc)
                return
            await self._ingest_markets(list(body.get("markets") or []))

    # ---- loops ---------------------------------------------------------------------------
    async def run_lifecycle(self, frames: asyncio.Queue[Lifecycle | SeqGap]) -> None:
        """Consume the router's lifecycle queue forever (a ``SeqGap`` there means a missed
        state change: reconcile over REST, kalshi-protocol.md §4.7)."""
        while True:
            ev = await frames.get()
            if isinstance(ev, SeqGap):
                self.request_reconcile()
            else:
                self.apply_lifecycle(ev)

    async def run_timers(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if self.tick():
                self._update_gauges()

    async def run_dirty_fetch(self, min_interval_s: float = 1.0) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            await asyncio.sleep(min_interval_s)  # gather a batch
            await self._fetch_dirty()

    async def wait_reconciled(self, since: int) -> None:
        """Return once a reconcile that started after ``reconciles_started`` was ``since`` has
        completed (one already running when a change was missed does not count)."""
        while self.reconciled_through <= since:
            self._reconciled.clear()
            await self._reconciled.wait()

    def request_reconcile(self) -> None:
        """Reconcile soon (a lifecycle socket reconnected or its seq jumped: changes were missed)."""
        self._reconcile_now.set()

    async def run_reconcile(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), self._cfg.reconcile_interval_s)
            self._reconcile_now.clear()
            self.reconciles_started += 1
            number = self.reconciles_started
            try:
                await self.reconcile()
                self.reconciled_through = number
                self._reconciled.set()
            except RestError as exc:
                self._rl.log(logging.ERROR, "reconcile", "registry reconcile failed: %s", exc)

    async def run_exchange_status(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.exchange_status_interval_s)
            await self.refresh_exchange_status()

    # ---- bulk helpers for tests/bench ----------------------------------------------------------
    def bulk_load(self, entries: Iterable[tuple[str, str, int, int]]) -> int:
        """Load (ticker, status, open_s, close_s) tuples without REST (benchmarks, RSS tests)."""
        n = 0
        for t, st, op, cl in entries:
            self.upsert(t, st, op, cl)
            n += 1
        self.loaded = True
        self._update_gauges()
        return n

    def tickers(self) -> Iterator[str]:
        return iter(self._tickers)


async def _prefetched(pages: AsyncIterator[list[dict[str, Any]]]
                      ) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages of ``pages``, the next one already being fetched while the caller ingests
    this one: the server builds a page (on its own core) while we convert the previous one,
    so a full sync takes about the longer of the two instead of their sum (bench/registry.py:
    1,000 pages of 1,000 markets). At most one page waits in between."""
    q: asyncio.Queue[list[dict[str, Any]] | Exception | None] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for page in pages:
                await q.put(page)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there
            await q.put(exc)
            return
        await q.put(None)

    task = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            item = await q.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _s(us: int | None) -> int | None:
    return None if us is None else us // 1_000_000


def _int(v: Any) -> int | None:
    if type(v) is int:
        return v
    if isinstance(v, str):
        if v.isdigit():
            return int(v)
        try:
            return rfc3339_to_us(v) // 1_000_000
        except UnitError:
            return None
    return None
