"""Router: decoder events of every WebSocket connection -> writers, books and I/O requests.

Public API (the connection layer calls these; everything else is private)::

    router = Router(writers, metrics, resync_q=..., backfill_q=..., lifecycle_q=...)
    router.attach(conn_id, role) -> Decoder      # on (re)connect, before the first frame
    await router.route(conn_id, raw, received_at_us) -> Sequence[ControlEvent]
                                                 # every text frame; returns the command replies
                                                 # (Subscribed / Unsubscribed / Ok / ErrorFrame)
    router.detach(conn_id)                       # on disconnect: its sids and books are void
    router.book(ticker) -> Book | None           # clean reconstructed book, if any
    router.compare(rest_snapshot, depth=None) -> BookDiff | None   # poller mismatch check
    await router.request_resync(ticker, reason)  # poller/admin: resync one market
    await router.adopt_snapshot(row)             # resync machine: a REST snapshot as the book
    router.on_snapshot = fn(ticker, rx_us)       # hook: a fresh snapshot went to the writer
    router.on_snapshot_arrived = fn(ticker)      # hook: a WS snapshot arrived (maybe held)
    router.flush_metrics()                       # push batched counters (also done every ~1 s)
    router.expire_holds(); await router.drain()  # every ~1 s and at stop (held snapshots, below)

``writers`` maps table name -> anything with ``async put(row)`` (``gatherer.writer.Writer``):
``trades``, ``orderbook_deltas``, ``orderbook_snapshots``, ``tickers``. ``put`` is the
backpressure point: when a writer's queue is full, ``route`` waits, and so does the socket read.

What goes on the request queues (consumed by the I/O layer):

- ``resync_q``: ``ResyncRequest(conn_id, sid, tickers, reason, since_us)``: for the resync
  machine (gatherer/resync.py). Reasons: ``seq_gap``, ``no_snapshot`` (delta before any
  snapshot), ``negative_level``, ``rejected_frame``, ``book_mismatch``, and whatever
  ``request_resync`` is given. ``since_us`` is where the loss may begin: the last good frame of
  the sid for a gap, the last moment the book was known good (its snapshot, or a poller
  comparison that matched) for a divergence.
- ``backfill_q``: ``BackfillRequest(tickers, start_us, end_us, reason, conn_id)``: REST trade
  backfill; ``tickers=None`` means all markets of that trade subscription. Raised on a trade-channel
  seq gap (window: previous frame's receive time .. the frame that revealed the gap).
- ``lifecycle_q``: ``Lifecycle`` events for the market registry, and ``SeqGap`` of a lifecycle
  sid (a missed state change: reconcile over REST).

Order-book rules (data-model.md hardening 6): a market's deltas are accepted only from the sid
whose snapshot it last received (its owner) and only after that snapshot; others are dropped and
counted (``router_messages_routed_total{type="delta_dropped"}``). After a seq gap every book of
that sid is dirty: its deltas are still stored (they are real exchange events) but not applied,
until the resync snapshot replaces the book. ``occurrence`` numbers identical
(ticker, exchange_ts, side, price, delta) in arrival order among stored deltas; only the current
exchange_ts of each market is tracked, so an identical delta that comes back after a newer
exchange_ts would be numbered 0 again (exchange timestamps do not go backwards within a market's
stream).

Total order and snapshot places (issue 19; migrations/gatherer/004_book_order.sql):

- ``ts_rank`` numbers ALL of a market's stored deltas within one exchange_ts in arrival order,
  which is the exchange's order on every subscription, so every gatherer that saw the whole
  millisecond gives the same ranks. It is None when this gatherer cannot vouch for that: the
  millisecond of the first delta after a break (a fresh subscription snapshot, a seq gap, a
  rejected frame), since deltas of that millisecond may have come before the break.
- A snapshot's place in the stream is one boundary delta. When a delta of the market has been
  stored since the last break, the snapshot includes exactly the deltas up to it (``cut_kind
  'last'``), and it is written at once. Otherwise (a fresh subscription, or nothing since a
  gap) it is HELD until the market's next delta, which is the first one it does not include
  (``'next'``); if a prompt frame arrives HOLD_US after it with no delta of the market, it is
  written as ``'quiet'``; after MAX_HOLD_S, or when the subscription ends or breaks first, it is
  written with cut_kind None (place unknown). Held snapshots are never dropped: ``detach``,
  ``expire_holds`` and ``drain`` write them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gatherer.coverage import CoverageRef
from shared.kalshi.book import Book, BookDiff
from shared.kalshi.decode import DATA_TYPES, REJECT_REASONS, UNKNOWN_TYPE, Decoder
from shared.kalshi.models import (
    ControlEvent,
    DeltaRow,
    Duplicate,
    ErrorFrame,
    Lifecycle,
    MissingTimestamp,
    Ok,
    Profile,
    Rejected,
    SeqGap,
    SnapshotRow,
    TickerRow,
    TradeRow,
    Unsubscribed,
)
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

__all__ = ["TERMINAL_ERROR_CODES", "BackfillRequest", "ResyncRequest", "Router", "RowSink"]

#: Kalshi error codes after which a subscription is dead and must be resubscribed.
TERMINAL_ERROR_CODES = frozenset((10, 25))

# Batched counter pushes: a labelled Counter.inc costs ~0.4 µs (a lock and a float add); local
# int adds flushed every FLUSH_EVERY messages or FLUSH_INTERVAL_S cut that to ~0.05 µs/msg.
FLUSH_EVERY = 1024
FLUSH_INTERVAL_S = 1.0

# A snapshot waits this long (receive clock) for the market's next delta before it is written as
# 'quiet'. The production rebuild places a quiet snapshot at its own time only when no delta of
# the market lies within 3 s of it (migrations/production/003_book_rebuild.sql), so a longer hold
# only delays the row; 5 s catches the next delta of any market that trades every few seconds.
HOLD_US = 5_000_000
# Only a frame delivered at most this long after its exchange time ends a hold as 'quiet': a
# frame read late (backpressure, a stalled socket) says nothing about what the exchange sent.
PROMPT_US = 2_000_000
# A held snapshot is written (place unknown) after this long on the monotonic clock whatever
# happens, so production never waits long for a snapshot of a quiet market.
MAX_HOLD_S = 30.0

_ROUTED_TYPES = (
    "orderbook_delta",
    "orderbook_snapshot",
    "trade",
    "ticker",
    "lifecycle",
    "control",
    "delta_dropped",
)
_NO_CONTROL: tuple[ControlEvent, ...] = ()


class RowSink(Protocol):
    """What the router needs from a writer: ``offer`` (accept now or return False) and ``put``
    (wait for room: the backpressure point)."""

    def offer(self, row: Any) -> bool: ...

    async def put(self, row: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    """Fetch fresh snapshots for ``tickers`` on subscription ``sid`` of ``conn_id``; the books
    may have gone wrong from ``since_us`` (receive clock; None = now)."""

    conn_id: str
    sid: int
    tickers: tuple[str, ...]
    reason: str
    since_us: int | None = None


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """Fetch REST trades in [start_us, end_us] (our receive clock; add overlap when querying).
    ``tickers=None``: every market of the affected trade subscription. ``link``: a coverage event
    the backfill recovers and closes once its trades are committed (a trade socket's outage)."""

    tickers: tuple[str, ...] | None
    start_us: int
    end_us: int
    reason: str
    conn_id: str | None = None
    link: CoverageRef | None = None


class _Market:
    """Per-market routing state."""

    __slots__ = ("anchored", "book", "checked_at", "dirty", "held", "last_key", "last_occ", "last_ts",
                 "occ", "occ_ts", "owner", "pending", "rank_n", "rank_ok", "sid")

    def __init__(self) -> None:
        self.owner: _Conn | None = None
        self.sid: int | None = None
        self.book: Book | None = None
        self.dirty = False
        self.pending = False  # a resync was requested and its snapshot has not arrived
        self.occ_ts = -1
        self.occ: dict[tuple[str, int, int], int] = {}
        self.last_ts: int | None = None
        self.last_occ: int | None = None
        self.checked_at: int | None = None  # rx of the last snapshot / matching REST comparison
        # identity of the last stored delta; meaningful while ``anchored`` (a delta of this market
        # was stored from its owner since the last break of the stream)
        self.last_key: tuple[int, str, int, int, int] | None = None
        self.anchored = False
        self.rank_n = 0  # deltas stored so far at occ_ts
        self.rank_ok = False  # whether rank_n counts from the start of occ_ts
        self.held: list[SnapshotRow] = []  # snapshots waiting for their place in the stream


class _Conn:
    __slots__ = ("busy", "conn_id", "decoder", "dups", "gaps", "holds", "role", "sids")

    def __init__(self, conn_id: str, role: str, decoder: Decoder, metrics: GathererMetrics) -> None:
        self.conn_id = conn_id
        self.role = role
        self.decoder = decoder
        self.sids: dict[int, set[str]] = {}  # sid -> markets this sid owns
        self.gaps = metrics.conn_manager_sequence_gaps_total.labels(role=role)
        self.dups = metrics.router_duplicates_total.labels(role=role)
        # (received_at_us, monotonic time, ticker, row) of snapshots held on this connection,
        # oldest first; an entry whose row was written meanwhile is skipped
        self.holds: deque[tuple[int, float, str, SnapshotRow]] = deque()
        self.busy = False  # inside route(): a frame of this socket is being handled


class Router:
    """Routes decoded frames; one per gatherer process. See the module docstring for the API."""

    def __init__(
        self,
        writers: Mapping[str, RowSink],
        metrics: GathererMetrics,
        *,
        resync_q: asyncio.Queue[ResyncRequest],
        backfill_q: asyncio.Queue[BackfillRequest],
        lifecycle_q: asyncio.Queue[Lifecycle | SeqGap],
        profile_hint: Profile | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trades = writers["trades"]
        self._deltas = writers["orderbook_deltas"]
        self._snapshots = writers["orderbook_snapshots"]
        self._tickers = writers["tickers"]
        self._m = metrics
        self._resync_q = resync_q
        self._backfill_q = backfill_q
        self._lifecycle_q = lifecycle_q
        self._profile_hint = profile_hint
        self._log = logger or logging.getLogger("gatherer.router")
        self._rl = RateLimitedLog(self._log, 60.0)
        self._clock = clock
        self._conns: dict[str, _Conn] = {}
        self._outbox: list[ResyncRequest] = []
        self._snap_out: list[SnapshotRow] = []  # released snapshots the writer could not take yet
        self._markets: dict[str, _Market] = {}
        # pre-bound children: no label lookup on the per-message path
        self._routed = {
            t: metrics.router_messages_routed_total.labels(type=t) for t in _ROUTED_TYPES
        }
        self._parse = {
            r: metrics.router_parse_errors_total.labels(reason=r) for r in REJECT_REASONS
        }
        self._n = dict.fromkeys(_ROUTED_TYPES, 0)
        self._ts_missing = 0
        self._pending_n = 0
        self._last_flush = clock()
        #: called with (ticker, received_at_us) once a fresh snapshot went to the writer
        self.on_snapshot: Callable[[str, int], None] | None = None
        #: called with the ticker when a WebSocket snapshot arrives, before it may be held for
        #: its place in the stream (the resync machine stops its step timers; it completes on
        #: ``on_snapshot``, once the row is in the writer)
        self.on_snapshot_arrived: Callable[[str], None] | None = None

    # -- connection lifecycle -----------------------------------------------------------------

    def attach(self, conn_id: str, role: str) -> Decoder:
        """Register a (re)connected socket; returns its fresh decoder. A previous attachment under
        the same id is detached first (its sids died with the old socket)."""
        if conn_id in self._conns:
            self.detach(conn_id)
        dec = Decoder(self._profile_hint)
        self._conns[conn_id] = _Conn(conn_id, role, dec, self._m)
        return dec

    def detach(self, conn_id: str) -> None:
        """Forget a closed socket: every market it owned loses its book until a new snapshot."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        for sid in list(conn.sids):
            self._release_sid(conn, sid)

    # -- per frame ----------------------------------------------------------------------------

    async def route(
        self, conn_id: str, raw: bytes | str, received_at_us: int
    ) -> Sequence[ControlEvent]:
        """Decode one frame of ``conn_id`` and act on it. Waits when a writer queue is full.

        Returns the command replies in the frame (usually none) for the connection layer.
        Raises KeyError if ``conn_id`` was never attached.
        """
        conn = self._conns[conn_id]
        conn.busy = True
        try:
            return await self._route(conn, raw, received_at_us)
        finally:
            conn.busy = False

    async def _route(self, conn: _Conn, raw: bytes | str, received_at_us: int) -> Sequence[ControlEvent]:
        control: list[ControlEvent] | None = None
        ex_ts: int | None = None  # exchange time of the frame's last delta (hold promptness)
        for ev in conn.decoder.feed(raw, received_at_us):
            cls = type(ev)
            if cls is DeltaRow:
                # sync bookkeeping + offer(): no coroutine per delta unless a queue is full
                row = self._delta_row(conn, ev)  # type: ignore[arg-type]
                ex_ts = ev.exchange_ts  # type: ignore[union-attr]
                if row is not None and not self._deltas.offer(row):
                    await self._deltas.put(row)
            elif cls is TradeRow:
                self._n["trade"] += 1
                if not self._trades.offer(ev):
                    await self._trades.put(ev)
            elif cls is TickerRow:
                self._n["ticker"] += 1
                if not self._tickers.offer(ev):
                    await self._tickers.put(ev)
            elif cls is SnapshotRow:
                await self._on_snapshot(conn, ev)  # type: ignore[arg-type]
            elif cls is Lifecycle:
                self._n["lifecycle"] += 1
                await self._lifecycle_q.put(ev)  # type: ignore[arg-type]
            elif cls is SeqGap:
                await self._on_gap(conn, ev)  # type: ignore[arg-type]
            elif cls is Duplicate:
                conn.dups.inc()
            elif cls is MissingTimestamp:
                # Kalshi may omit ts/ts_ms (both optional): the delta that follows is stored
                # with its receive time as exchange time, counted, and not resynced.
                self._ts_missing += 1
                self._rl.log(logging.WARNING, "ts_missing", "orderbook delta without ts/ts_ms; "
                             "stored with its receive time", now=self._clock(),
                             conn_id=conn.conn_id, ticker=ev.ticker)  # type: ignore[union-attr]
            elif cls is Rejected:
                await self._on_rejected(conn, ev)  # type: ignore[arg-type]
            else:
                self._n["control"] += 1
                self._on_control(conn, ev)  # type: ignore[arg-type]
                if control is None:
                    control = []
                control.append(ev)  # type: ignore[arg-type]
        if self._outbox:
            await self._drain_outbox()
        if conn.holds and ex_ts is not None and received_at_us - ex_ts <= PROMPT_US:
            self._quiet(conn, received_at_us)
        if self._snap_out:
            await self.drain()
        self._pending_n += 1
        if self._pending_n >= FLUSH_EVERY or self._clock() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush_metrics()
        return _NO_CONTROL if control is None else control

    def _delta_row(self, conn: _Conn, row: DeltaRow) -> DeltaRow | None:
        """Ownership, occurrence and book for one delta; the row to store, or None to drop.
        Resync requests it raises wait in the outbox (sent by ``route`` after the frame)."""
        m = self._markets.get(row.ticker)
        if m is None or m.owner is not conn or m.sid != row.sid:
            # Not this sid's market (stale subscription), or no snapshot yet: not stored, since
            # another gatherer's numbering would not match ours (hardening 6).
            self._n["delta_dropped"] += 1
            if (m is None or m.owner is None) and row.sid is not None:
                if m is None:
                    m = self._markets[row.ticker] = _Market()
                if not m.pending:
                    m.pending = True
                    self._rl.log(
                        logging.WARNING,
                        "no_snapshot",
                        "delta before snapshot; resync",
                        now=self._clock(),
                        conn_id=conn.conn_id,
                        ticker=row.ticker,
                    )
                    self._outbox.append(
                        ResyncRequest(conn.conn_id, row.sid, (row.ticker,), "no_snapshot")
                    )
            return None
        ts = row.exchange_ts
        if ts != m.occ_ts:
            m.occ_ts = ts
            if m.occ:
                m.occ = {}
            m.rank_n = 0
            m.rank_ok = m.anchored
        side, price, delta = row.side, row.price, row.delta
        key = (side, price, delta)
        n = m.occ.get(key, 0)
        m.occ[key] = n + 1
        rank = m.rank_n if m.rank_ok else None
        m.rank_n += 1
        row = _new(DeltaRow, (row.ticker, ts, side, price, delta, n, row.seq, row.sid,
                              row.received_at, rank))
        m.last_ts = ts
        m.last_occ = n
        m.last_key = (ts, side, price, delta, n)
        m.anchored = True
        if m.held:
            self._release(m, list(m.held), "next")
        if not m.dirty and m.book is not None:
            if not m.book.apply_delta(row.side, row.price, row.delta, ts, n):
                m.dirty = m.pending = True
                self._rl.log(
                    logging.WARNING,
                    "negative_level",
                    "delta drove a level below zero; resync",
                    now=self._clock(),
                    conn_id=conn.conn_id,
                    ticker=row.ticker,
                )
                if row.sid is not None:
                    self._outbox.append(
                        ResyncRequest(
                            conn.conn_id, row.sid, (row.ticker,), "negative_level", m.checked_at
                        )
                    )
        self._n["orderbook_delta"] += 1
        return row

    async def _drain_outbox(self) -> None:
        box, self._outbox = self._outbox, []
        for req in box:
            await self._resync_q.put(req)

    async def _on_snapshot(self, conn: _Conn, row: SnapshotRow) -> None:
        ticker = row.ticker
        m = self._markets.get(ticker)
        if m is None:
            m = self._markets[ticker] = _Market()
        # The table has no sid column; the decoder remembers the sid of the frame it just fed.
        snap_sid = conn.decoder.frame_sid
        if m.owner is not conn or m.sid != snap_sid:
            # a new subscription: the stream before it is not this one's (hardening 6)
            self._break(m)
            if m.owner is not None and m.sid is not None:
                owned = m.owner.sids.get(m.sid)
                if owned is not None:
                    owned.discard(ticker)
            m.owner = conn
            m.sid = snap_sid
            if snap_sid is not None:
                conn.sids.setdefault(snap_sid, set()).add(ticker)
        was_resync = m.pending or m.dirty
        if self.on_snapshot_arrived is not None:
            self.on_snapshot_arrived(ticker)
        m.dirty = False
        m.pending = False
        m.checked_at = row.received_at
        row = row._replace(
            source="resync" if (was_resync or row.source == "resync") else row.source,
            last_delta_ts=None,
            last_delta_occurrence=None,
        )
        if m.book is None:
            m.book = Book.from_snapshot(row)
        else:
            m.book.apply_snapshot(row)
        self._n["orderbook_snapshot"] += 1
        if m.anchored and m.last_key is not None:
            # in-stream, with this market's stream intact since its last delta: the snapshot
            # includes exactly the deltas up to that one
            row = _with_cut(row, "last", m.last_key)
            if not self._snapshots.offer(row):
                await self._snapshots.put(row)
            self._handed(row)
        else:
            # held until its place is known; on_snapshot fires when it reaches the writer
            m.held.append(row)
            conn.holds.append((row.received_at, self._clock(), ticker, row))

    def _handed(self, row: SnapshotRow) -> None:
        """``row`` is now in the snapshots writer: tell the resync machine (which waits for
        the writer to commit it before calling the book recovered)."""
        if self.on_snapshot is not None:
            self.on_snapshot(row.ticker, row.received_at)

    async def adopt_snapshot(self, row: SnapshotRow) -> bool:
        """Make a (REST) snapshot the book of its market, as the resync machine's last step, and
        store it. False when no subscription owns the market (stored anyway: the evidence).
        A REST snapshot has no place in the WebSocket stream, so it is stored with none."""
        m = self._markets.get(row.ticker)
        owned = m is not None and m.owner is not None
        row = row._replace(last_delta_ts=None, last_delta_occurrence=None)
        if m is not None and m.owner is not None:
            m.dirty = m.pending = False
            m.checked_at = row.received_at
            if m.book is None:
                m.book = Book.from_snapshot(row)
            else:
                m.book.apply_snapshot(row)
        self._n["orderbook_snapshot"] += 1
        await self._snapshots.put(row)
        self._handed(row)
        return owned

    async def _on_gap(self, conn: _Conn, gap: SeqGap) -> None:
        conn.gaps.inc()
        self._rl.log(
            logging.WARNING,
            f"seq_gap:{conn.role}",
            "sequence gap on sid %s: expected %s got %s",
            gap.sid,
            gap.expected,
            gap.got,
            now=self._clock(),
            conn_id=conn.conn_id,
        )
        ft = gap.frame_type
        channel = gap.channel or conn.decoder.channel(gap.sid)
        if ft.startswith("orderbook") or channel == "orderbook_delta":
            tickers = conn.sids.get(gap.sid)
            if tickers:
                for t in tickers:
                    self._mark_dirty(self._markets[t])
                    self._break(self._markets[t])
                await self._request(conn, gap.sid, tuple(sorted(tickers)), "seq_gap", force=True,
                                    since_us=gap.last_received_at)
        elif ft == "trade" or channel == "trade":
            start = gap.last_received_at if gap.last_received_at is not None else gap.received_at
            await self._backfill_q.put(
                BackfillRequest(None, start, gap.received_at, "seq_gap", conn.conn_id)
            )
        elif ft in DATA_TYPES or (channel or "").endswith("lifecycle_v2"):
            await self._lifecycle_q.put(gap)

    async def _on_rejected(self, conn: _Conn, rej: Rejected) -> None:
        child = self._parse.get(rej.reason)
        if child is None:
            child = self._parse[rej.reason] = self._m.router_parse_errors_total.labels(
                reason=rej.reason
            )
        child.inc()
        if rej.reason == UNKNOWN_TYPE:
            self._m.router_unknown_messages_total.inc()
        self._rl.log(
            logging.WARNING,
            f"rejected:{rej.reason}",
            "frame rejected: %s (%s)",
            rej.reason,
            rej.detail,
            now=self._clock(),
            conn_id=conn.conn_id,
            frame_type=rej.frame_type,
        )
        # A lost orderbook frame means the book no longer matches the exchange.
        if rej.sid is not None and rej.frame_type in ("orderbook_delta", "orderbook_snapshot"):
            owned = conn.sids.get(rej.sid, set())
            if rej.ticker is not None and rej.ticker in owned:
                targets: Sequence[str] = (rej.ticker,)
            elif rej.ticker is None:
                targets = sorted(owned)
            else:
                targets = ()
            for t in targets:
                self._mark_dirty(self._markets[t])
                self._break(self._markets[t])
            if targets:
                checked = [self._markets[t].checked_at for t in targets]
                since = min((c for c in checked if c is not None), default=None)
                await self._request(conn, rej.sid, tuple(targets), "rejected_frame", force=True,
                                    since_us=since)

    def _on_control(self, conn: _Conn, ev: ControlEvent) -> None:
        if isinstance(ev, Unsubscribed):
            if ev.sid is not None:
                self._release_sid(conn, ev.sid)
        elif isinstance(ev, ErrorFrame):
            self._rl.log(
                logging.WARNING,
                f"error_frame:{ev.code}",
                "error frame code %s: %s",
                ev.code,
                ev.msg,
                now=self._clock(),
                conn_id=conn.conn_id,
            )
            if ev.code in TERMINAL_ERROR_CODES and ev.sid is not None:
                self._release_sid(conn, ev.sid)
                conn.decoder.forget(ev.sid)
        elif isinstance(ev, Ok) and ev.sid is not None and ev.market_tickers is not None:
            keep = set(ev.market_tickers)
            owned = conn.sids.get(ev.sid)
            if owned:
                for t in [t for t in owned if t not in keep]:  # delete_markets
                    self._release_market(t)
        # Subscribed: nothing to do until the snapshot arrives.

    # -- helpers ------------------------------------------------------------------------------

    def _mark_dirty(self, m: _Market) -> None:
        m.dirty = True

    def _break(self, m: _Market) -> None:
        """The market's stream is no longer known to be complete here: ranks of the current
        millisecond and the next are unknown, and a held snapshot's next delta may be lost."""
        m.anchored = False
        m.rank_ok = False
        if m.held:
            self._release(m, list(m.held), None)

    def _release(self, m: _Market, rows: list[SnapshotRow], kind: str | None) -> None:
        """Write held snapshots ``rows`` of ``m`` with their place: 'next' (m's last stored
        delta is the first after them), 'quiet', or None (unknown)."""
        for row in rows:
            m.held.remove(row)
            if kind == "next":
                assert m.last_key is not None
                row = _with_cut(row, "next", m.last_key)
            elif kind == "quiet":
                row = row._replace(cut_kind="quiet")
            if self._snapshots.offer(row):
                self._handed(row)
            else:
                self._snap_out.append(row)

    def _quiet(self, conn: _Conn, now_us: int) -> None:
        """A prompt frame at ``now_us``: snapshots held HOLD_US or longer saw no delta since."""
        holds = conn.holds
        while holds and holds[0][0] + HOLD_US <= now_us:
            _rx, _t, ticker, row = holds.popleft()
            m = self._markets.get(ticker)
            if m is not None and any(h is row for h in m.held):
                self._release(m, [row], "quiet")

    def expire_holds(self, now_us: int | None = None) -> None:
        """Call about once a second, then ``drain``. With ``now_us`` (wall clock, the receive
        clock's): on a socket that is idle (no frame being handled: everything it received has
        been routed), snapshots held HOLD_US with no delta since are written as 'quiet'. Then
        every snapshot held longer than MAX_HOLD_S is written with its place unknown."""
        if now_us is not None:
            for conn in self._conns.values():
                if conn.holds and not conn.busy:
                    self._quiet(conn, now_us)
        limit = self._clock() - MAX_HOLD_S
        for conn in self._conns.values():
            holds = conn.holds
            while holds and holds[0][1] <= limit:
                _rx, _t, ticker, row = holds.popleft()
                m = self._markets.get(ticker)
                if m is not None and any(h is row for h in m.held):
                    self._release(m, [row], None)

    def release_all(self) -> None:
        """Write every held snapshot now (place unknown): the gatherer is stopping."""
        for m in self._markets.values():
            if m.held:
                self._release(m, list(m.held), None)
        for conn in self._conns.values():
            conn.holds.clear()

    async def drain(self) -> None:
        """Hand released snapshots the writer could not take at once to it (waits for room)."""
        while self._snap_out:
            out, self._snap_out = self._snap_out, []
            for row in out:
                await self._snapshots.put(row)
                self._handed(row)

    @property
    def undrained_snapshots(self) -> int:
        """Released snapshots not yet handed to the writer (``drain`` hands them over)."""
        return len(self._snap_out)

    @property
    def held_snapshots(self) -> int:
        """Snapshots waiting for their place in the stream (for /health and tests)."""
        return sum(len(m.held) for m in self._markets.values())

    async def _request(
        self,
        conn: _Conn,
        sid: int,
        tickers: tuple[str, ...],
        reason: str,
        force: bool = False,
        since_us: int | None = None,
    ) -> None:
        todo = []
        for t in tickers:
            m = self._markets.get(t)
            if m is None:
                continue
            if force or not m.pending:
                m.pending = True
                todo.append(t)
        if todo:
            await self._resync_q.put(ResyncRequest(conn.conn_id, sid, tuple(todo), reason, since_us))

    def _release_market(self, ticker: str) -> None:
        m = self._markets.get(ticker)
        if m is None:
            return
        if m.owner is not None and m.sid is not None:
            owned = m.owner.sids.get(m.sid)
            if owned is not None:
                owned.discard(ticker)
        m.owner = None
        m.sid = None
        m.book = None
        m.dirty = False
        m.pending = False
        self._break(m)

    def _release_sid(self, conn: _Conn, sid: int) -> None:
        for t in list(conn.sids.pop(sid, ())):
            m = self._markets.get(t)
            if m is not None and m.owner is conn and m.sid == sid:
                m.owner = None
                m.sid = None
                m.book = None
                m.dirty = False
                m.pending = False
                self._break(m)

    # -- queries for the poller / admin API ---------------------------------------------------

    def book(self, ticker: str) -> Book | None:
        """The reconstructed book if the market is owned and clean, else None."""
        m = self._markets.get(ticker)
        if m is None or m.book is None or m.dirty or m.owner is None:
            return None
        return m.book

    def books_held(self) -> int:
        """Markets with a clean reconstructed book (a snapshot applied, owned, not dirty)."""
        return sum(1 for m in self._markets.values()
                   if m.book is not None and m.owner is not None and not m.dirty)

    def compare(self, snapshot: SnapshotRow, depth: int | None = None) -> BookDiff | None:
        """Diff a (REST) snapshot against our book; None when we have no clean book to compare.
        The caller counts a non-empty diff and calls ``request_resync``."""
        book = self.book(snapshot.ticker)
        if book is None:
            return None
        diff = book.diff(snapshot, depth)
        if not diff:
            m = self._markets[snapshot.ticker]
            m.checked_at = max(m.checked_at or 0, snapshot.received_at)  # known good until here
        return diff

    async def request_resync(self, ticker: str, reason: str = "book_mismatch") -> bool:
        """Mark a market dirty and ask its owning connection for a fresh snapshot.
        False when no connection owns it (nothing to resync on)."""
        m = self._markets.get(ticker)
        if m is None or m.owner is None or m.sid is None:
            return False
        self._mark_dirty(m)
        await self._request(m.owner, m.sid, (ticker,), reason, force=True, since_us=m.checked_at)
        return True

    def flush_metrics(self) -> None:
        """Push the locally batched counters to Prometheus."""
        n = self._n
        for t, c in n.items():
            if c:
                self._routed[t].inc(c)
                n[t] = 0
        if self._ts_missing:
            self._m.router_delta_timestamps_missing_total.inc(self._ts_missing)
            self._ts_missing = 0
        self._pending_n = 0
        self._last_flush = self._clock()


_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__


def _with_cut(row: SnapshotRow, kind: str, key: tuple[int, str, int, int, int]) -> SnapshotRow:
    ts, side, price, delta, occ = key
    last = kind == "last"
    return row._replace(
        cut_kind=kind, cut_ts=ts, cut_side=side, cut_price=price, cut_delta=delta,
        cut_occurrence=occ, last_delta_ts=ts if last else None,
        last_delta_occurrence=occ if last else None,
    )
