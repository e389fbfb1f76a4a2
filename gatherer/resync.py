"""The resync state machine: every dirty order book until a fresh snapshot of it is COMMITTED.

A book turns dirty on a seq gap, a delta that drove a level negative, a rejected orderbook frame,
a REST/WS mismatch (poller) or an operator's request; the router then queues a
``ResyncRequest``. Per market, the machine walks::

    get_snapshot ──(get_snapshot_timeout_s, no snapshot)──> resubscribe the socket
        ──(resubscribe_timeout_s, still none)──> REST snapshot (retried every rest_retry_s)

and is done when ANY fresh snapshot of that market reaches the router (the get_snapshot answer,
the new subscription's, a reconnect's, or the REST one) AND the snapshots writer has committed
it. Each step is counted (``resync_steps_total{step}``), each completion by the step that did it
(``resync_completed_total{how}``); ``resync_dirty_books`` and ``resync_oldest_dirty_seconds``
(alert ``OrderbookResyncStuck``) say when a book stays dirty too long.

The coverage ledger gets the truth (gatherer/coverage.py): a ``resync`` event over the real window,
from the last good frame (or the last moment the book was known good) to the snapshot, recovered
only once that snapshot is committed; and the deltas lost: a ``seq_gap`` event from the last good
frame to the one that revealed the gap, or a ``book_mismatch`` event from the last moment the
book was known good to the detection (a withheld delta, a negative level), both unrecovered,
since no source serves past deltas. A market that stops being subscribed before its snapshot
(closed, moved) ends its resync unrecovered.

This module replaces the connection manager's fire-and-forget get_snapshot; it talks to sockets
only through ``ConnectionManager`` (``by_id``, ``get_snapshot``, ``resubscribe``, ``find``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets

from gatherer._types import CommitSink, NowUs
from gatherer.config import ResyncConfig
from gatherer.coverage import CoverageLedger
from gatherer.errors import RestError
from gatherer.router import ResyncRequest
from shared.kalshi.models import Rejected, SnapshotRow
from shared.kalshi.objects import snapshot_from_rest
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.resync")

#: Above this many markets one connection-scope coverage event stands for them all.
MARKET_EVENTS_MAX = 100
#: Reasons whose detection means deltas were lost somewhere since the book was known good.
LOST_SINCE_GOOD = frozenset(("negative_level", "rejected_frame", "book_mismatch"))
TICK_S = 0.5


class _Conns(Protocol):
    def by_id(self, conn_id: str) -> Any: ...

    def find(self, ticker: str) -> Any: ...


class _Router(Protocol):
    async def adopt_snapshot(self, row: SnapshotRow) -> bool: ...


class _Rest(Protocol):
    async def orderbook(self, ticker: str) -> dict[str, Any]: ...


@dataclass
class _Group:
    """One request's coverage event when it covers many markets (connection scope)."""

    event_id: str
    left: set[str]
    how: set[str] = field(default_factory=set)
    last_rx: int = 0


@dataclass
class _Pending:
    ticker: str
    conn_id: str
    sid: int
    reason: str
    since_us: int
    started: float  # monotonic
    step: str = "get_snapshot"
    step_at: float = 0.0  # monotonic time the current step began
    event_id: str | None = None  # the market's own resync event
    group: _Group | None = None
    steps: list[str] = field(default_factory=list)
    arrived: bool = False  # a WS snapshot came; the router holds it for its place in the stream


class ResyncMachine:
    """See the module docstring. ``on_snapshot`` is the router's hook; ``run`` the loop."""

    def __init__(self, cfg: ResyncConfig, conns: _Conns, router: _Router, rest: _Rest,
                 snapshots: CommitSink, coverage: CoverageLedger, metrics: GathererMetrics, *,
                 requests: asyncio.Queue[ResyncRequest], now_us: NowUs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._conns = conns
        self._router = router
        self._rest = rest
        self._snapshots = snapshots
        self._coverage = coverage
        self._m = metrics
        self.requests = requests
        self._now = now_us
        self._clock = clock
        self._rl = RateLimitedLog(log, 60.0)
        self.pending: dict[str, _Pending] = {}
        self._arrived: list[tuple[_Pending, int, int]] = []  # (state, snapshot rx, writer mark)
        self._wake = asyncio.Event()
        self._finishing: set[asyncio.Task[None]] = set()

    # -- the router's hook -----------------------------------------------------------------------

    def on_snapshot(self, ticker: str, received_at_us: int) -> None:
        """A fresh snapshot of ``ticker`` was handed to the snapshots writer (sync: called from
        the router's frame loop). Ends that market's resync once the snapshot is committed."""
        p = self.pending.pop(ticker, None)
        if p is None:
            return
        self._arrived.append((p, received_at_us, self._snapshots.mark))
        self._wake.set()

    def on_snapshot_arrived(self, ticker: str) -> None:
        """A WebSocket snapshot of ``ticker`` arrived (the router may hold it until its place in
        the stream is known, up to router.MAX_HOLD_S): the step timers stop; the resync ends in
        ``on_snapshot`` once it is in the writer, and is recovered once committed."""
        p = self.pending.get(ticker)
        if p is not None:
            p.arrived = True

    # -- loop --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests, snapshot arrivals and step timeouts until cancelled."""
        reader = asyncio.create_task(self._read_requests(), name="resync-requests")
        try:
            while True:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                if self._arrived:
                    arrived, self._arrived = self._arrived, []
                    t = asyncio.create_task(self._finish(arrived), name="resync-finish")
                    self._finishing.add(t)
                    t.add_done_callback(self._finishing.discard)
                await self._advance()
                self._gauges()
        finally:
            reader.cancel()
            for t in list(self._finishing):
                t.cancel()

    async def _read_requests(self) -> None:
        while True:
            req = await self.requests.get()
            try:
                await self.request(req)
            except Exception:  # a bug here must not stop every later resync
                log.exception("resync request %s failed", req.reason)

    async def request(self, req: ResyncRequest) -> None:
        """Start (or join) the resync of ``req.tickers``: ledger first, then get_snapshot."""
        now = self._now()
        mono = self._clock()
        since = req.since_us if req.since_us is not None else now
        new = [t for t in req.tickers if t not in self.pending]
        self._m.resync_requests_total.labels(reason=req.reason).inc(len(req.tickers))
        many = len(req.tickers) > MARKET_EVENTS_MAX
        detail: dict[str, Any] = {"reason": req.reason, "conn_id": req.conn_id, "sid": req.sid}
        # The deltas lost: a gap loses the frames between the last good one and the one that
        # revealed it; a divergence found later lost something since the book was last known good.
        loss = "seq_gap" if req.reason == "seq_gap" else (
            "book_mismatch" if req.reason in LOST_SINCE_GOOD else None)
        if loss is not None:
            lost = {**detail, "lost": "orderbook deltas (no source serves them again)"}
            if many:
                await self._coverage.record(loss, "connection", since, now, recovered=False,
                                            detail={**lost, "markets": len(req.tickers)})
            else:
                for t in req.tickers:
                    await self._coverage.record(loss, "market", since, now, ticker=t,
                                                recovered=False, detail=lost)
        group = None
        if many and new:
            eid = await self._coverage.open("resync", "connection", since,
                                            detail={**detail, "markets": len(new)})
            group = _Group(eid, set(new))
        for t in new:
            p = _Pending(t, req.conn_id, req.sid, req.reason, since, mono, step_at=mono, group=group)
            if group is None:
                p.event_id = await self._coverage.open("resync", "market", since, ticker=t, detail=detail)
            self.pending[t] = p
        for t in req.tickers:  # a second request for a waiting market: it follows the new sid
            waiting = self.pending.get(t)
            if waiting is not None:
                waiting.conn_id, waiting.sid = req.conn_id, req.sid
        await self._get_snapshot(req.conn_id, req.sid, [t for t in req.tickers if t in self.pending])

    # -- steps -------------------------------------------------------------------------------------

    async def _get_snapshot(self, conn_id: str, sid: int, tickers: list[str]) -> None:
        if not tickers:
            return
        conn = self._conns.by_id(conn_id)
        sent = False
        if conn is not None:
            try:
                sent = await conn.get_snapshot(sid, tickers)
            except (websockets.ConnectionClosed, OSError):
                sent = False
        self._m.resync_steps_total.labels(step="get_snapshot").inc()
        mono = self._clock()
        for t in tickers:
            p = self.pending.get(t)
            if p is not None:
                p.step, p.step_at = "get_snapshot", mono
                p.steps.append("get_snapshot" if sent else "get_snapshot_unsent")
        if not sent:
            # The socket is down (its reconnect brings fresh snapshots) or the sid was replaced
            # (the new subscription does): wait for those under the same timeout.
            self._rl.log(logging.INFO, "unsent", "get_snapshot for %d market(s) not sent on %s "
                         "(socket down or subscription replaced); waiting for its fresh snapshots",
                         len(tickers), conn_id, conn_id=conn_id)

    async def _advance(self) -> None:
        """Move every market whose step timed out to the next step."""
        if not self.pending:
            return
        mono = self._clock()
        cfg = self._cfg
        resub: dict[str, list[_Pending]] = {}
        rest: list[_Pending] = []
        for p in list(self.pending.values()):
            if self._conns.find(p.ticker) is None:
                await self._abandon(p, "the market is no longer subscribed (closed or moved)")
                continue
            if p.arrived:
                continue  # its snapshot is on its way to the writer
            waited = mono - p.step_at
            if p.step == "get_snapshot" and waited >= cfg.get_snapshot_timeout_s:
                resub.setdefault(p.conn_id, []).append(p)
            elif p.step == "resubscribe" and waited >= cfg.resubscribe_timeout_s or p.step == "rest_snapshot" and waited >= cfg.rest_retry_s:
                rest.append(p)
        for conn_id, ps in resub.items():
            conn = self._conns.by_id(conn_id)
            self._m.resync_steps_total.labels(step="resubscribe").inc()
            self._rl.log(logging.WARNING, f"resub:{conn_id}", "no snapshot %.0f s after get_snapshot "
                         "for %d market(s) (e.g. %s); resubscribing %s", cfg.get_snapshot_timeout_s,
                         len(ps), ps[0].ticker, conn_id, conn_id=conn_id)
            if conn is not None:
                with contextlib.suppress(websockets.ConnectionClosed, OSError):
                    await conn.resubscribe_markets(
                        f"resync: no snapshot after get_snapshot ({ps[0].reason})", [p.ticker for p in ps])
            for p in ps:
                p.step, p.step_at = "resubscribe", self._clock()
                p.steps.append("resubscribe")
        for p in rest:
            await self._rest_snapshot(p)

    async def _rest_snapshot(self, p: _Pending) -> None:
        self._m.resync_steps_total.labels(step="rest_snapshot").inc()
        p.step, p.step_at = "rest_snapshot", self._clock()
        p.steps.append("rest_snapshot")
        try:
            body = await self._rest.orderbook(p.ticker)
        except RestError as exc:
            self._rl.log(logging.WARNING, "rest", "REST snapshot for the resync of %s failed: %s; "
                         "retrying in %.0f s", p.ticker, exc, self._cfg.rest_retry_s, ticker=p.ticker)
            return
        snap = snapshot_from_rest(body, p.ticker, self._now())
        if isinstance(snap, Rejected):
            self._m.router_parse_errors_total.labels(reason=snap.reason).inc()
            return
        if self.pending.get(p.ticker) is not p:
            return  # a WS snapshot won the race meanwhile
        log.warning("resync of %s: no WebSocket snapshot after get_snapshot and a resubscribe; "
                    "using a REST snapshot", p.ticker, extra={"ticker": p.ticker})
        # adopt_snapshot stores it (source 'resync') and calls on_snapshot, which ends this
        await self._router.adopt_snapshot(snap._replace(source="resync"))
        if self.pending.get(p.ticker) is p:  # the router holds no book for it: stored anyway
            self.on_snapshot(p.ticker, snap.received_at)

    async def _abandon(self, p: _Pending, why: str) -> None:
        self.pending.pop(p.ticker, None)
        self._m.resync_completed_total.labels(how="abandoned").inc()
        await self._close(p, self._now(), recovered=False, how="abandoned", why=why)

    # -- completion --------------------------------------------------------------------------------

    async def _finish(self, arrived: list[tuple[_Pending, int, int]]) -> None:
        """Wait until the snapshots are committed, then close their resync events recovered."""
        await self._snapshots.settled(max(mark for _p, _rx, mark in arrived))
        for p, rx, _mark in arrived:
            # the step that brought the snapshot; an unsent get_snapshot means it came with the
            # socket's reconnect (or its replacement subscription)
            how = "reconnect" if p.steps and p.steps[-1] == "get_snapshot_unsent" else p.step
            self._m.resync_completed_total.labels(how=how).inc()
            await self._close(p, rx, recovered=True, how=how)

    async def _close(self, p: _Pending, end_us: int, *, recovered: bool, how: str,
                     why: str | None = None) -> None:
        detail: dict[str, Any] = {"how": how, "steps": p.steps,
                                  "dirty_s": round(self._clock() - p.started, 3)}
        if why:
            detail["why"] = why
        if p.event_id is not None:
            await self._coverage.close(p.event_id, window_end=end_us, recovered=recovered, detail=detail)
            return
        g = p.group
        if g is None:
            return
        g.left.discard(p.ticker)
        g.how.add(how)
        g.last_rx = max(g.last_rx, end_us)
        if not recovered:
            g.how.add("abandoned")
        if not g.left:
            await self._coverage.close(g.event_id, window_end=g.last_rx,
                                       recovered="abandoned" not in g.how,
                                       detail={"how": sorted(g.how)})

    def _gauges(self) -> None:
        self._m.resync_dirty_books.set(len(self.pending))
        oldest = min((p.started for p in self.pending.values()), default=None)
        self._m.resync_oldest_dirty_seconds.set(0 if oldest is None else self._clock() - oldest)
