"""Order books from production rows: the I/O side of ``shared.kalshi.replay``.

::

    book = book_at(conn, "KXBTCD-26MAY1417-T98999.99", at_us)       # RebuiltBook
    for book in book_series(conn, ticker, start_us, end_us, step_us): ...   # streamed

Both read only SELECTable rows (any role, ``analyst`` included) and give the same answer as the
production function ``book_state()`` (the tests check it). ``book_series`` keeps one book and
streams the deltas of the whole range through a server-side cursor, so memory is one book plus
one batch however long the range; it starts over from a fresh base only after a window in which
no gatherer's orderbook stream was intact.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import psycopg

from shared.kalshi.replay import (
    HOLE_SLACK_US,
    MAX_CANDIDATES,
    QUIET_US,
    Cut,
    Interval,
    RebuiltBook,
    StoredDelta,
    StoredSnapshot,
    SumBook,
    book_relevant,
    choose_base,
    lossy_windows,
    near_range,
    needed,
    no_snapshot,
    overlaps,
    rebuild,
)

Conn = psycopg.Connection[Any]
BATCH = 20_000
_cursor_ids = itertools.count()

_DELTA_COLS = "exchange_ts, side, price, delta, occurrence, ts_rank"
# production keeps each gatherer's snapshots (gatherer_id); a gatherer's own database has no
# such column, and the same rebuild reads it (tests rebuild a gatherer's books this way)
_SNAP_SQL = (
    "SELECT snapshot_ts, source, {gid}, yes_levels, no_levels, cut_kind, cut_ts, cut_side, "
    "cut_price, cut_delta, cut_occurrence FROM orderbook_snapshots "
    "WHERE ticker = %s AND source <> 'rest' AND snapshot_ts <= %s "
    "ORDER BY snapshot_ts DESC, {gid}, source LIMIT %s")


def _levels(raw: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(raw, str | bytes):
        raw = orjson.loads(raw)
    return tuple((int(p), int(s)) for p, s in raw or ())


def _snapshot(r: Sequence[Any]) -> StoredSnapshot:
    ts, source, gid, yes, no, kind, cts, cside, cprice, cdelta, cocc = r
    key = (int(cts), cside, int(cprice), int(cdelta), int(cocc)) if cts is not None else None
    return StoredSnapshot(int(ts), source, gid, _levels(yes), _levels(no), kind, key)


def _delta(r: Sequence[Any]) -> StoredDelta:
    return StoredDelta(int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), None if r[5] is None else int(r[5]))


def deltas_between(conn: Conn, ticker: str, lo: int, hi: int) -> list[StoredDelta]:
    rows = conn.execute(f"SELECT {_DELTA_COLS} FROM orderbook_deltas WHERE ticker = %s "
                        "AND exchange_ts BETWEEN %s AND %s", (ticker, lo, hi)).fetchall()
    return [_delta(r) for r in rows]


def _moves(conn: Conn, ticker: str, cut: Cut, at_us: int) -> list[StoredDelta]:
    """What ``rebuild`` needs to go from the snapshot to ``at_us``: the cut's own millisecond row
    by row, and every whole millisecond strictly between the cut and the instant pre-summed per
    (side, price) by the database (order-free), stamped so ``Cut.includes`` classifies them."""
    out = deltas_between(conn, ticker, cut.ts, cut.ts)
    if at_us >= cut.ts:
        lo, hi, stamp = cut.ts, at_us + 1, at_us  # after the cut, up to the instant: added
    else:
        lo, hi, stamp = at_us, cut.ts, at_us + 1  # before the cut, after the instant: taken off
    for side, price, total, n in conn.execute(
            "SELECT side, price, sum(delta)::bigint, count(*) FROM orderbook_deltas WHERE ticker = %s "
            "AND exchange_ts > %s AND exchange_ts < %s GROUP BY 1, 2", (ticker, lo, hi)).fetchall():
        out.append(StoredDelta(stamp, side, int(price), int(total), count=int(n)))
    return out


def stream_deltas(conn: Conn, ticker: str, lo: int, hi: int) -> Iterator[tuple[int, str, int, int]]:
    """(exchange_ts, side, price, delta) of the market's deltas with lo <= exchange_ts <= hi in
    the total order, in batches from a server-side cursor."""
    with conn.transaction(), conn.cursor(name=f"kalshi_books_{next(_cursor_ids)}") as cur:
        cur.itersize = BATCH
        cur.execute("SELECT exchange_ts, side, price, delta FROM orderbook_deltas WHERE ticker = %s "
                    "AND exchange_ts BETWEEN %s AND %s ORDER BY exchange_ts, ts_rank NULLS LAST, side, "
                    "price, delta, occurrence", (ticker, lo, hi))
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                return
            yield from rows


def record_starts(conn: Conn) -> dict[str, int]:
    """Where each market's record starts: the stream position (µs) of its first WebSocket
    snapshot, the last delta it includes or its own time. Nothing before it can be compared with
    a truth: a market opening mid-run moves a moment before any gatherer subscribes it."""
    return {t: int(ts) for t, ts in conn.execute(
        "SELECT ticker, min(coalesce(last_delta_ts, snapshot_ts)) FROM orderbook_snapshots "
        "WHERE source <> 'rest' GROUP BY ticker").fetchall() if ts is not None}


def market_lossy_windows(conn: Conn, ticker: str) -> list[Interval]:
    """book_lossy_windows(ticker) computed in Python from coverage_events (the same rules). On a
    gatherer's own database (no sync_cursors) the fleet is that gatherer."""
    fleet: list[str] = []
    row = conn.execute("SELECT to_regclass('sync_cursors') IS NOT NULL").fetchone()
    if row and row[0]:
        fleet = [g for (g,) in conn.execute(
            "SELECT DISTINCT gatherer_id FROM sync_cursors WHERE table_name = 'orderbook_deltas'").fetchall()]
    if not fleet:
        fleet = [g for (g,) in conn.execute("SELECT DISTINCT gatherer_id FROM coverage_events").fetchall()]
    per: dict[str, list[Interval]] = {}
    for g, kind, role, a, b in conn.execute(
            "SELECT gatherer_id, kind, detail->>'role', window_start, window_end FROM coverage_events "
            "WHERE ticker = %s OR scope <> 'market'", (ticker,)).fetchall():
        if book_relevant(kind, role):
            per.setdefault(g, []).append((int(a) - HOLE_SLACK_US, None if b is None else int(b)))
    return lossy_windows(per, fleet)


def _candidates(conn: Conn, ticker: str, at_us: int, quiet_us: int
                ) -> Iterator[tuple[StoredSnapshot, list[StoredDelta]]]:
    row = conn.execute("SELECT to_regclass('gatherer_meta') IS NULL").fetchone()
    gid = "gatherer_id" if row and row[0] else "NULL::text"
    for r in conn.execute(_SNAP_SQL.format(gid=gid), (ticker, at_us, MAX_CANDIDATES)).fetchall():
        snap = _snapshot(r)
        lo, hi = near_range(snap, quiet_us)
        yield snap, deltas_between(conn, ticker, lo, hi)


def book_at(conn: Conn, ticker: str, at_us: int, *, quiet_us: int = QUIET_US,
            lossy: Sequence[Interval] | None = None) -> RebuiltBook:
    """The book of ``ticker`` after every delta stamped at or before ``at_us`` (see
    ``shared.kalshi.replay``). ``lossy``: the market's lossy windows when the caller has them."""
    chosen = choose_base(_candidates(conn, ticker, at_us, quiet_us), quiet_us)
    if chosen is None:
        return no_snapshot(ticker, at_us)
    snap, cut, reasons = chosen
    windows = market_lossy_windows(conn, ticker) if lossy is None else lossy
    return rebuild(ticker, snap, cut, _moves(conn, ticker, cut, at_us), at_us, reasons, windows)


def instants(start_us: int, end_us: int, step_us: int) -> list[int]:
    """start, start + step, ... up to and including end."""
    if step_us <= 0:
        raise ValueError("the step must be positive")
    return list(range(start_us, end_us + 1, step_us))


def book_series(conn: Conn, ticker: str, start_us: int, end_us: int, step_us: int, *,
                quiet_us: int = QUIET_US, progress: Callable[[int], None] | None = None
                ) -> Iterator[RebuiltBook]:
    """The book of ``ticker`` at start, start + step, ... <= end, streamed.

    One base for the first instant, then the range's deltas in order, one pass. Where a lossy
    window lies between two instants the book is rebuilt from the newest base at the later one
    (a book kept across such a window would carry its losses). ``progress(n)`` is called with the
    number of deltas read since the last call.
    """
    times = instants(start_us, end_us, step_us)
    if not times:
        return
    lossy = market_lossy_windows(conn, ticker)
    first = book_at(conn, ticker, times[0], quiet_us=quiet_us, lossy=lossy)
    yield first
    book = SumBook(first.yes, first.no)
    reasons = [r for r in first.reasons if r != "coverage_gap"]
    base = first
    prev = times[0]
    pending = 0
    stream = stream_deltas(conn, ticker, times[0] + 1, times[-1])
    nxt = next(stream, None)
    for t in times[1:]:
        applied = 0
        while nxt is not None and nxt[0] <= t:
            book.add(nxt[1], nxt[2], nxt[3])
            applied += 1
            nxt = next(stream, None)
        pending += applied
        if progress is not None and pending >= BATCH:
            progress(pending)
            pending = 0
        if base.snapshot_ts is None or overlaps(lossy, prev + 1, t):
            # nothing to continue from, or deltas may be lost between the two instants
            fresh = book_at(conn, ticker, t, quiet_us=quiet_us, lossy=lossy)
            book = SumBook(fresh.yes, fresh.no)
            reasons = [r for r in fresh.reasons if r != "coverage_gap"]
            base = fresh
            yield fresh
        else:
            why = list(reasons)
            if book.negative:
                why.append("negative_level")
            if base.cut_ts is not None and overlaps(lossy, *needed(
                    Cut(base.cut_ts, base.cut == "time", base.cut or "time"), t)):
                why.append("coverage_gap")
            yield RebuiltBook(ticker, t, book.levels("yes"), book.levels("no"), tuple(why),
                              base.snapshot_ts, base.snapshot_source, base.snapshot_gatherer,
                              base.cut, base.cut_ts, base.deltas_applied + applied)
        prev = t
    if progress is not None and pending:
        progress(pending)
