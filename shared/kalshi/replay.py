"""Rebuilding a market's order book from stored rows: the ONE replay in the codebase (sans-I/O).

The gatherer's live book is ``book.Book`` (one delta at a time, as frames arrive). Everything
that rebuilds a book from what was stored -- ``kalshi-data book``, ``kalshi-data verify``, the
tests, the benchmarks -- goes through this module, and the production SQL function
``book_state()`` (migrations/production/003_book_rebuild.sql; its 'quiet' rule as amended by
006_quiet_cut.sql) implements the same rules; the tests check the two against each other and
against :func:`plain_replay`.

The rules (why: data-model.md hardening 6 and issue 19):

* **Total order** of a market's deltas: :func:`order_key`, ``(exchange_ts, ts_rank NULLS LAST,
  side, price, delta, occurrence)``. ``ts_rank`` is the exchange's order inside a millisecond,
  identical on every gatherer that saw the whole millisecond.
* **A book at an instant** ``at`` (µs) is the book after every delta stamped at or before ``at``.
  Exchange times have millisecond precision, so an instant means "after everything of its
  millisecond". Such a book is the snapshot plus the SUM of the deltas after its cut: sums do not
  depend on the order inside a millisecond, and sizes are summed without clamping (a true book
  never goes negative, so a negative level means an inconsistent record and is reported).
* **A snapshot's cut** (:class:`Cut`) says which stored deltas it already includes: all deltas
  before its boundary delta in the total order, plus the boundary itself for ``cut_kind
  'last'``. It is exact only when the boundary is stored and ordered against every other delta
  of its millisecond. A ``'quiet'`` or unknown cut is the snapshot's time. An unknown one is
  exact when no delta lies within ``quiet_us`` of it (a snapshot reaches a gatherer within that
  long of when the exchange made it), and marks the book uncertain. A ``'quiet'`` one is exact
  when no delta lies in the ``quiet_us`` AFTER it: its gatherer held it and saw no delta of the
  market follow on its subscription, so every delta stamped before it is in it (one the exchange
  made after the snapshot would have followed it there). Only a delta stamped just after it can
  be one the snapshot holds (a receive clock behind the exchange's), and that is refused.
* **Uncertain**: a window in which no gatherer's orderbook stream was intact (the coverage
  ledger) lies between the cut and the instant: deltas there may be lost everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .models import Level

__all__ = [
    "HOLE_SLACK_US",
    "QUIET_US",
    "Cut",
    "Interval",
    "RebuiltBook",
    "StoredDelta",
    "StoredSnapshot",
    "SumBook",
    "book_relevant",
    "choose_base",
    "intersect",
    "lossy_windows",
    "merge",
    "needed",
    "order_key",
    "overlaps",
    "plain_replay",
    "rebuild",
    "resolve",
]

#: A snapshot without a boundary delta is placed at its own time only when no delta of its
#: market lies within this many µs of it (the same default as book_state()'s p_quiet_us).
QUIET_US = 3_000_000
#: A coverage window reaches back this far: frames queued just before an outage was noticed
#: were lost too (the same constant as book_lossy_windows()).
HOLE_SLACK_US = 1_000_000
#: Candidate snapshots tried, newest first, before falling back (book_state()'s LIMIT).
MAX_CANDIDATES = 256

DeltaKey = tuple[str, int, int, int]  # (side, price, delta, occurrence): identity within a ts
Interval = tuple[int, int | None]  # [start, end] µs; end None = still open


@dataclass(frozen=True, slots=True)
class StoredDelta:
    """One ``orderbook_deltas`` row of a market, as the rebuild needs it; or, with ``count`` > 1,
    the sum of ``count`` rows of one (side, price) that all lie on the same side of a cut and of
    the instant (sums are order-free, so the I/O side may pre-sum whole milliseconds)."""

    exchange_ts: int
    side: str
    price: int
    delta: int
    occurrence: int = 0
    ts_rank: int | None = None
    count: int = 1

    @property
    def ident(self) -> DeltaKey:
        return (self.side, self.price, self.delta, self.occurrence)


def order_key(d: StoredDelta) -> tuple[Any, ...]:
    """The total order of a market's stored deltas (see the module docstring)."""
    return (d.exchange_ts, d.ts_rank is None, d.ts_rank or 0, d.side, d.price, d.delta, d.occurrence)


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """One ``orderbook_snapshots`` row. ``cut_key`` is (cut_ts, side, price, delta, occurrence)."""

    snapshot_ts: int
    source: str
    gatherer_id: str | None
    yes: tuple[Level, ...]
    no: tuple[Level, ...]
    cut_kind: str | None = None
    cut_key: tuple[int, str, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Cut:
    """Which stored deltas a snapshot includes: by position (``boundary`` at ``ts`` with its
    ``rank``; the boundary itself included when ``kind == 'last'``) or, ``by_time``, every delta
    stamped at or before ``ts``."""

    ts: int
    by_time: bool
    kind: str  # 'last' | 'next' | 'time'
    boundary: DeltaKey | None = None
    rank: int | None = None

    def includes(self, d: StoredDelta) -> bool:
        if self.by_time:
            return d.exchange_ts <= self.ts
        if d.exchange_ts != self.ts:
            return d.exchange_ts < self.ts
        if d.ident == self.boundary:
            return self.kind == "last"
        # resolve() admits a position cut only when every other delta here has a rank
        assert d.ts_rank is not None and self.rank is not None
        return d.ts_rank < self.rank


def resolve(snap: StoredSnapshot, near: Sequence[StoredDelta], quiet_us: int = QUIET_US) -> Cut | None:
    """The exact cut of ``snap``, or None when it cannot be had from the stored rows.

    ``near``: the market's stored deltas at the boundary's exchange_ts when ``snap`` has a
    boundary ('last'/'next'), else those within ``quiet_us`` of ``snap.snapshot_ts``.
    """
    if snap.cut_kind in ("last", "next"):
        if snap.cut_key is None:
            return None
        ts, *rest = snap.cut_key
        ident: DeltaKey = (rest[0], rest[1], rest[2], rest[3])  # type: ignore[assignment]
        here = [d for d in near if d.exchange_ts == ts]
        mine = [d for d in here if d.ident == ident]
        if not mine:
            return None  # the boundary is not stored: its place cannot be found
        rank = mine[0].ts_rank
        if any(d.ident != ident and (d.ts_rank is None or rank is None) for d in here):
            return None  # ordered against its millisecond's other deltas by nothing known
        return Cut(ts, False, snap.cut_kind, ident, rank)
    # a quiet snapshot saw nothing follow it, so only the time after it can be ambiguous
    lo = snap.snapshot_ts + (1 if snap.cut_kind == "quiet" else -quiet_us)
    hi = snap.snapshot_ts + quiet_us
    if any(lo <= d.exchange_ts <= hi for d in near):
        return None
    return Cut(snap.snapshot_ts, True, "time")


def near_range(snap: StoredSnapshot, quiet_us: int = QUIET_US) -> tuple[int, int]:
    """The exchange_ts range (inclusive) whose deltas :func:`resolve` needs for ``snap``."""
    if snap.cut_kind in ("last", "next"):
        return (snap.cut_key[0], snap.cut_key[0]) if snap.cut_key is not None else (0, -1)
    return snap.snapshot_ts - quiet_us, snap.snapshot_ts + quiet_us


def choose_base(candidates: Iterable[tuple[StoredSnapshot, Sequence[StoredDelta]]],
                quiet_us: int = QUIET_US) -> tuple[StoredSnapshot, Cut, list[str]] | None:
    """The base of a rebuild: the first candidate (newest first: snapshot_ts DESC, gatherer_id,
    source; WebSocket ones only) whose cut resolves; else the newest placed at its own time,
    with ``snapshot_place_unknown``. None when there is no candidate at all."""
    first: StoredSnapshot | None = None
    for snap, near in candidates:
        if first is None:
            first = snap
        cut = resolve(snap, near, quiet_us)
        if cut is not None:
            return snap, cut, ([] if snap.cut_kind is not None else ["snapshot_place_unknown"])
    if first is None:
        return None
    return first, Cut(first.snapshot_ts, True, "time"), ["snapshot_place_unknown"]


class SumBook:
    """Signed sums per (side, price): the order-free form of a book (see the module docstring)."""

    __slots__ = ("no", "yes")

    def __init__(self, yes: Iterable[Level] = (), no: Iterable[Level] = ()) -> None:
        self.yes: dict[int, int] = {p: s for p, s in yes if s > 0}
        self.no: dict[int, int] = {p: s for p, s in no if s > 0}

    def add(self, side: str, price: int, size: int) -> None:
        levels = self.yes if side == "yes" else self.no
        v = levels.get(price, 0) + size
        if v:
            levels[price] = v
        else:
            levels.pop(price, None)

    def levels(self, side: str) -> tuple[Level, ...]:
        """Non-zero levels of one side ascending by price (Kalshi's order: best bid last)."""
        return tuple(sorted((self.yes if side == "yes" else self.no).items()))

    @property
    def negative(self) -> bool:
        return any(v < 0 for v in self.yes.values()) or any(v < 0 for v in self.no.values())


@dataclass(frozen=True)
class RebuiltBook:
    """A market's book at ``at_us``; ``uncertain`` with ``reasons`` as book_state() gives them."""

    ticker: str
    at_us: int
    yes: tuple[Level, ...]
    no: tuple[Level, ...]
    reasons: tuple[str, ...] = ()
    snapshot_ts: int | None = None
    snapshot_source: str | None = None
    snapshot_gatherer: str | None = None
    cut: str | None = None
    cut_ts: int | None = None
    deltas_applied: int = 0

    @property
    def uncertain(self) -> bool:
        return bool(self.reasons)

    def best(self, side: str) -> Level | None:
        """Best bid of a side (highest price), or None."""
        levels = self.yes if side == "yes" else self.no
        return levels[-1] if levels else None

    def depth(self, n: int | None) -> RebuiltBook:
        """The same book keeping only the ``n`` best levels of each side (None = all)."""
        if n is None:
            return self
        return _replace(self, yes=self.yes[max(len(self.yes) - n, 0):] if n else (),
                        no=self.no[max(len(self.no) - n, 0):] if n else ())

    def as_dict(self) -> dict[str, Any]:
        return {"ticker": self.ticker, "at_us": self.at_us, "yes": [list(x) for x in self.yes],
                "no": [list(x) for x in self.no], "uncertain": self.uncertain,
                "reasons": list(self.reasons), "snapshot_ts": self.snapshot_ts,
                "snapshot_source": self.snapshot_source, "snapshot_gatherer": self.snapshot_gatherer,
                "cut": self.cut, "cut_ts": self.cut_ts, "deltas_applied": self.deltas_applied}


def _replace(b: RebuiltBook, **kw: Any) -> RebuiltBook:
    from dataclasses import replace

    return replace(b, **kw)


def span(cut: Cut, at_us: int) -> tuple[int, int]:
    """The exchange_ts range (inclusive) of the deltas :func:`rebuild` needs."""
    return min(cut.ts, at_us), max(cut.ts, at_us)


def needed(cut: Cut, at_us: int) -> tuple[int, int]:
    """The exchange times (inclusive) whose deltas the book at ``at_us`` depends on beyond the
    snapshot: after the cut up to the instant, or after the instant up to the cut. Deltas stamped
    at a time cut are in the snapshot; at a position cut's millisecond some may follow it."""
    if at_us >= cut.ts:
        return (cut.ts + 1 if cut.by_time else cut.ts), at_us
    return at_us + 1, cut.ts


def rebuild(ticker: str, snap: StoredSnapshot, cut: Cut, deltas: Iterable[StoredDelta], at_us: int,
            reasons: Sequence[str] = (), lossy: Sequence[Interval] = ()) -> RebuiltBook:
    """The book of ``ticker`` at ``at_us`` from ``snap`` and its ``cut``.

    ``deltas``: the market's stored deltas in :func:`span` (any order). ``lossy``: the windows of
    :func:`lossy_windows`; one overlapping the span adds ``coverage_gap``.
    """
    book = SumBook(snap.yes, snap.no)
    n = 0
    for d in deltas:
        inc = cut.includes(d)
        if inc and d.exchange_ts > at_us:
            book.add(d.side, d.price, -d.delta)
            n += d.count
        elif not inc and d.exchange_ts <= at_us:
            book.add(d.side, d.price, d.delta)
            n += d.count
    why = list(reasons)
    if book.negative:
        why.append("negative_level")
    if overlaps(lossy, *needed(cut, at_us)):
        why.append("coverage_gap")
    return RebuiltBook(ticker, at_us, book.levels("yes"), book.levels("no"), tuple(why),
                       snap.snapshot_ts, snap.source, snap.gatherer_id,
                       cut.kind, cut.ts, n)


def no_snapshot(ticker: str, at_us: int) -> RebuiltBook:
    return RebuiltBook(ticker, at_us, (), (), ("no_snapshot",))


# ---------------------------------------------------------------------------------------------
# Coverage: where no gatherer's orderbook stream was intact
# ---------------------------------------------------------------------------------------------
def book_relevant(kind: str, role: str | None) -> bool:
    """Whether a coverage event can mean lost deltas: every kind but trade backfills, and
    ``ws_down`` only for orderbook sockets (a missing role counts as orderbook)."""
    if kind == "trade_backfill":
        return False
    return kind != "ws_down" or (role or "orderbook") == "orderbook"


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of closed intervals (end None = open), sorted."""
    out: list[Interval] = []
    for a, b in sorted(intervals, key=lambda x: x[0]):
        if out and (out[-1][1] is None or a <= out[-1][1]):
            pa, pb = out[-1]
            out[-1] = (pa, None if pb is None or b is None else max(pb, b))
        else:
            out.append((a, b))
    return out


def intersect(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(x) and j < len(y):
        a = max(x[i][0], y[j][0])
        ends = [e for e in (x[i][1], y[j][1]) if e is not None]
        b = min(ends) if ends else None
        if b is None or a <= b:
            out.append((a, b))
        xe, ye = x[i][1], y[j][1]
        if xe is not None and (ye is None or xe < ye):
            i += 1
        else:
            j += 1
    return merge(out)


def lossy_windows(per_gatherer: Mapping[str, Sequence[Interval]], fleet: Iterable[str]) -> list[Interval]:
    """Windows in which EVERY gatherer of ``fleet`` had a book-relevant coverage window (each
    already widened by HOLE_SLACK_US); empty when the fleet is empty or one gatherer has none."""
    common: list[Interval] | None = None
    for g in fleet:
        mine = merge(per_gatherer.get(g, ()))
        common = mine if common is None else intersect(common, mine)
        if not common:
            return []
    return common or []


def overlaps(windows: Sequence[Interval], lo: int, hi: int) -> bool:
    """Whether a window meets [lo, hi] (False for an empty range, lo > hi)."""
    return lo <= hi and any(a <= hi and (b is None or b >= lo) for a, b in windows)


# ---------------------------------------------------------------------------------------------
# The plain replay: a known starting book and every delta in order (the simulator's truth,
# the property tests' reference)
# ---------------------------------------------------------------------------------------------
def plain_replay(yes: Mapping[int, int], no: Mapping[int, int],
                 deltas: Iterable[tuple[str, int, int]]) -> SumBook:
    """``yes``/``no`` then every (side, price, delta) in order, levels at zero removed."""
    book = SumBook(yes.items(), no.items())
    for side, price, delta in deltas:
        book.add(side, price, delta)
    return book
