"""Trade backfill over REST: makes the trades table complete even when a socket was down.

Every window of trades to fetch becomes a row of the durable queue (``backfill_queue``, see
backfill_queue.py) BEFORE any fetch, and stays pending until its trades are committed. Windows
come from:

- start-up: since the newest stored trade (minus a sweep and the overlap), at most
  ``backfill.max_window_s`` back; a previous run's pending windows simply carry on;
- every reconnect or resubscribe of a trade socket (its outage window; that ``ws_down`` coverage
  event is closed by the backfill, not by the reconnect) and every trade-channel seq gap;
- the admin API (one market);
- the sweep, every ``backfill.sweep_interval_s``: the all-markets feed from where the previous
  sweep ended (kept in the queue, so across restarts too) to now. Sweeps are contiguous: a slow
  sweep (429s, 5xx) delays the next one's start, it never leaves a slice uncovered.

The drain loop takes due windows oldest first (merging pending windows of the same market, or of
all markets, that overlap), converts them to exchange time (``_exclock.ExchangeClock``) widened
by ``overlap_s``, reads EVERY page of trades (``RestClient.trades``: ``/markets/trades`` and, for
the part older than Kalshi's historical cutoff, ``/historical/trades``; a listing cut short, or a
tier the window needed failing, is a failure), hands the rows to the trades writer and waits
for the writer to COMMIT them (``settled``). Only then is the window ``done`` and its ``trade_backfill`` coverage event (and
any linked one) closed as recovered; an empty answer read to the end proves there were none. A
failed window is retried after ``retry_min_s`` doubling up to ``retry_max_s`` (with jitter),
forever, and counted (``backfill_failures_total``); ``backfill_oldest_pending_seconds`` and the
``BackfillWindowStale`` alert say when one waits too long. Inserts are idempotent by trade_id
(hardening 1), so overlap and retries never duplicate. The coverage event's detail names the
tiers that answered (``sources``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from gatherer._exclock import ExchangeClock
from gatherer._types import CommitSink, NowUs
from gatherer.backfill_queue import BackfillQueue, Window
from gatherer.config import BackfillConfig
from gatherer.coverage import CoverageLedger
from gatherer.errors import RestError
from gatherer.rest import RestClient
from gatherer.router import BackfillRequest
from shared.kalshi.models import Rejected, TradeRow
from shared.kalshi.objects import trade_from_rest
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.backfill")

#: Above this many markets one all-markets query is cheaper than one query per market.
PER_MARKET_MAX = 20
#: Pending windows merged into one fetch at most (a backlog after a long outage).
MERGE_MAX = 50
_DB_ERRORS = (psycopg.Error, OSError, PoolTimeout)

T = TypeVar("T")


class Backfill:
    """Queues backfill windows durably and drains them; see the module docstring."""

    def __init__(
        self,
        cfg: BackfillConfig,
        rest: RestClient,
        trades: CommitSink,
        coverage: CoverageLedger,
        metrics: GathererMetrics,
        *,
        requests: asyncio.Queue[BackfillRequest],
        queue: BackfillQueue,
        exclock: ExchangeClock,
        now_us: NowUs,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._trades = trades
        self._coverage = coverage
        self._m = metrics
        self.requests = requests
        self._queue = queue
        self._ex = exclock
        self._now = now_us
        self._rng = rng
        self._rl = RateLimitedLog(log, 60.0)
        self._wake = asyncio.Event()
        self._sweep_end: int | None = None
        self._oldest_created: int | None = None
        self.last_done_us: int | None = None
        self.in_progress = 0

    # -- queueing --------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Take back the windows a previous run left pending (and the coverage events they will
        close) and where its last sweep ended; returns how many windows are pending."""
        pending = await self._db(self._queue.pending)
        for w in pending:
            if w.coverage_event:
                self._coverage.adopt(w.coverage_event, "trade_backfill", _scope(w.ticker), w.start_us,
                                     w.end_us, ticker=w.ticker,
                                     detail={"reason": w.reason, "queue_id": w.id},
                                     created_at=w.created_us)
            for ref in w.linked:
                self._coverage.adopt_ref(ref)
        self._sweep_end = await self._db(self._queue.last_sweep_end)
        if pending:
            log.warning("trade backfill: %d window(s) left pending by the previous run; resuming",
                        len(pending), extra={"windows": len(pending)})
        self._wake.set()
        return len(pending)

    async def enqueue(self, req: BackfillRequest) -> list[Window]:
        """Write the window(s) of ``req`` to the queue (waiting out a database outage) with
        their unrecovered ``trade_backfill`` coverage events; the drain loop does the rest."""
        end = req.end_us
        start = max(req.start_us, end - int(self._cfg.max_window_s * 1e6))
        if start > req.start_us:
            self._rl.log(logging.ERROR, "too_old", "trade backfill (%s): window older than "
                         "backfill.max_window_s; fetching only the last %.0f s", req.reason,
                         self._cfg.max_window_s, reason=req.reason)
        self._m.backfill_requests_total.labels(reason=req.reason).inc()
        tickers: Sequence[str | None]
        if req.tickers is None or len(req.tickers) > PER_MARKET_MAX:
            tickers = [None]
        else:
            tickers = list(req.tickers)
        out = []
        for i, t in enumerate(tickers):
            detail: dict[str, Any] = {"reason": req.reason}
            if req.conn_id:
                detail["conn_id"] = req.conn_id
            if t is None and req.tickers is not None:
                detail["markets"] = len(req.tickers)
            eid = await self._coverage.open("trade_backfill", _scope(t), start, ticker=t,
                                            window_end=end, detail=detail)
            links = (req.link,) if (req.link is not None and i == 0) else ()
            w = await self._db(partial(self._queue.add, t, start, end, req.reason, self._now(), eid, links))
            out.append(w)
        self._oldest_created = min(self._oldest_created or out[0].created_us, out[0].created_us)
        self._wake.set()
        return out

    async def run(self, window_us: int, reason: str, *, tickers: Sequence[str] | None = None,
                  end_us: int | None = None) -> int:
        """Queue a window and work on it right away (admin API, start-up); returns the trades
        fetched, or -1 when it failed (it stays queued and is retried)."""
        end = self._now() if end_us is None else end_us
        windows = await self.enqueue(BackfillRequest(
            None if tickers is None else tuple(tickers), window_us, end, reason))
        n = 0
        for w in windows:
            got = await self._process([w])
            if got < 0:
                return -1
            n += got
        return n

    # -- loops -------------------------------------------------------------------------------------

    async def run_requests(self) -> None:
        """Persist every request from the router / connection manager as queue rows."""
        while True:
            await self.enqueue(await self.requests.get())

    async def run_sweep(self) -> None:
        """Contiguous all-markets sweeps: each from where the previous one ended to now."""
        cfg = self._cfg
        first = True
        while True:
            if not (first and self._sweep_end is not None):
                await asyncio.sleep(cfg.sweep_interval_s)
            first = False  # after a restart the first sweep covers the downtime at once
            now = self._now()
            start = self._sweep_end if self._sweep_end is not None else now - int(cfg.sweep_interval_s * 1e6)
            await self.enqueue(BackfillRequest(None, start, now, "sweep"))
            self._sweep_end = now

    async def run_drain(self) -> None:
        """Work the queue forever: due windows oldest first, failures retried with backoff."""
        while True:
            try:
                await self._stats()
                due = await self._queue.due(self._now(), MERGE_MAX * 2)
            except _DB_ERRORS as exc:
                self._rl.log(logging.WARNING, "db", "trade backfill queue unreadable (%s); retrying",
                             _short(exc))
                await asyncio.sleep(1.0)
                continue
            if not due:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            await self._process(_merge_group(due, int(self._cfg.overlap_s * 1e6)))

    # -- one fetch --------------------------------------------------------------------------------

    async def _process(self, group: list[Window]) -> int:
        """Fetch the union of ``group`` (same market, or all markets), commit, mark done."""
        start = min(w.start_us for w in group)
        end = max(w.end_us for w in group)
        ticker = group[0].ticker
        ids = [w.id for w in group]
        reasons = "+".join(sorted({w.reason for w in group}))
        ov = self._cfg.overlap_s
        min_ts = int(self._ex.to_exchange(start) // 1_000_000 - ov)
        max_ts = int(-(-self._ex.to_exchange(end) // 1_000_000) + ov)
        # What the answer can prove: only whole seconds that ended before the listing began (the
        # overlap may reach past "now"; trades of that slice do not exist yet). The ledger claims
        # no more (detail min_ts..max_ts); the next sweep, which starts at this one's end minus
        # the overlap, covers the rest.
        proven_ts = max(min_ts, min(max_ts, int(self._ex.to_exchange(self._now()) // 1_000_000) - 1))
        self.in_progress += 1
        t0 = time.monotonic()
        sources: set[str] = set()
        try:
            n = await self._fetch(min_ts, max_ts, ticker, sources)
        except RestError as exc:
            attempts = max(w.attempts for w in group) + 1
            delay = self._retry_delay(attempts)
            self._m.backfill_failures_total.inc()
            self._rl.log(logging.ERROR, f"fail:{reasons}", "trade backfill (%s) of %d window(s) "
                         "failed (attempt %d): %s; retrying in %.1f s", reasons, len(group), attempts,
                         exc, delay, reason=reasons, ticker=ticker)
            now, err = self._now(), str(exc)
            await self._db(lambda: self._queue.failed(ids, now + int(delay * 1e6), err, now))
            return -1
        finally:
            self.in_progress -= 1
        # Evidence first: the window is recovered once its trades are committed, not fetched.
        await self._trades.settled(self._trades.mark)
        now = self._now()
        await self._db(lambda: self._queue.done(ids, n, now))
        seconds = round(time.monotonic() - t0, 3)
        for w in group:
            if w.coverage_event:
                await self._coverage.close(w.coverage_event, window_end=w.end_us, recovered=True, detail={
                    "trades": n, "min_ts": min_ts, "max_ts": proven_ts, "query_max_ts": max_ts,
                    "attempts": w.attempts + 1, "queue_id": w.id, "seconds": seconds,
                    "sources": sorted(sources)})
            for ref in w.linked:
                self._coverage.adopt_ref(ref)
                await self._coverage.close(ref.event_id, recovered=True,
                                           detail={"trades": f"backfilled (queue id {w.id})"})
        self._m.backfill_windows_done_total.inc(len(group))
        self.last_done_us = now
        log.info("trade backfill (%s): %d trades in %.2f s", reasons, n, seconds,
                 extra={"reason": reasons, "trades": n, "ticker": ticker, "windows": len(group)})
        return n

    async def run_exchange_window(self, ticker: str, min_ts: int, max_ts: int,
                                  reason: str) -> tuple[int, bool]:
        """Backfill ``ticker``'s trades created in [min_ts, max_ts] (Unix seconds, exchange
        clock, as the caller read them on Kalshi); returns (rows fetched, succeeded). For a
        window someone else found incomplete (``kalshi-data reconcile``), so it is not clamped
        to ``max_window_s`` nor moved by the receive clock."""
        self._m.backfill_requests_total.labels(reason=reason).inc()
        start, end = min_ts * 1_000_000, (max_ts + 1) * 1_000_000
        eid = await self._coverage.open("trade_backfill", "market", start, ticker=ticker,
                                        detail={"reason": reason, "min_ts": min_ts, "max_ts": max_ts})
        t0 = time.monotonic()
        sources: set[str] = set()
        n, ok = 0, True
        self.in_progress += 1
        try:
            n = await self._fetch(min_ts, max_ts, ticker, sources)
        except RestError as exc:
            ok = False
            log.error("trade backfill (%s) of %s failed: %s", reason, ticker, exc,
                      extra={"reason": reason, "ticker": ticker})
        finally:
            self.in_progress -= 1
        await self._coverage.close(eid, window_end=end, recovered=ok,
                                   detail={"trades": n, "seconds": round(time.monotonic() - t0, 3),
                                           "sources": sorted(sources)})
        log.info("trade backfill (%s) of %s: %d trades", reason, ticker, n,
                 extra={"reason": reason, "trades": n, "ticker": ticker})
        return n, ok

    async def _fetch(self, min_ts: int, max_ts: int, ticker: str | None, sources: set[str]) -> int:
        n = 0
        query = self._rest.trades(ticker=ticker, min_ts=min_ts, max_ts=max_ts,
                                  limit=self._cfg.page_limit)
        async for page in query:
            rx = self._now()
            rows: list[TradeRow] = []
            for obj in page:
                row = trade_from_rest(obj, rx)
                if isinstance(row, Rejected):
                    self._m.router_parse_errors_total.labels(reason=row.reason).inc()
                    self._rl.log(logging.WARNING, f"bad_trade:{row.reason}", "REST trade rejected: "
                                 "%s %s", row.reason, row.detail)
                    continue
                rows.append(row)
            if rows:
                await self._trades.put_many(rows)
                self._m.backfill_trades_total.inc(len(rows))
                n += len(rows)
        sources |= query.sources
        return n

    def _retry_delay(self, attempts: int) -> float:
        cfg = self._cfg
        step = min(cfg.retry_max_s, cfg.retry_min_s * float(1 << min(attempts - 1, 30)))
        return step / 2 + self._rng() * step / 2

    async def _stats(self) -> None:
        n, oldest, _next = await self._queue.stats()
        self._oldest_created = oldest
        self._m.backfill_pending_windows.set(n)
        self._refresh_age()

    def _refresh_age(self) -> None:
        o = self._oldest_created
        self._m.backfill_oldest_pending_seconds.set(0 if o is None else max(0.0, (self._now() - o) / 1e6))

    async def _db(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run a queue operation, waiting out a database outage (one log line a minute)."""
        delay = 0.5
        while True:
            try:
                return await op()
            except _DB_ERRORS as exc:
                self._refresh_age()
                self._rl.log(logging.WARNING, "db", "trade backfill queue: database unavailable (%s); "
                             "retrying", _short(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def _scope(ticker: str | None) -> str:
    return "process" if ticker is None else "market"


def _merge_group(due: list[Window], overlap_us: int) -> list[Window]:
    """The oldest due window plus every other due window of the same market (or of all
    markets) that overlaps or touches the growing union: one fetch instead of many."""
    first = due[0]
    lo, hi = first.start_us, first.end_us
    group = [first]
    rest = sorted((w for w in due[1:] if w.ticker == first.ticker), key=lambda w: w.start_us)
    changed = True
    while changed and len(group) < MERGE_MAX:
        changed = False
        for w in rest:
            if w in group:
                continue
            if w.start_us <= hi + overlap_us and w.end_us >= lo - overlap_us:
                group.append(w)
                lo, hi = min(lo, w.start_us), max(hi, w.end_us)
                changed = True
                if len(group) >= MERGE_MAX:
                    break
    return group


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]

