"""Books at random instants: production's rebuild against the simulator's truth (issue 19).

Call it after a run, once production holds everything the gatherers recorded::

    report = compare_books(production_dsn, truth_path, lo_us=lo, hi_us=hi)

For each instant (a random market that production holds snapshots of, a random millisecond in
``[lo_us, hi_us]`` after its first snapshot) the book is rebuilt twice -- by production's SQL
function ``book_state()`` and by ``kalshi_data.books`` (the ``kalshi-data book`` path) -- and:

* the two must agree in every field;
* at an instant inside a window in which no gatherer's orderbook stream was intact (the coverage
  ledger's lossy windows, ``book_lossy_windows()``), the book must be marked uncertain;
* anywhere else the book must equal the truth's book at that instant (``book0`` plus every truth
  delta stamped at or before it, ``shared.kalshi.replay.plain_replay``), or be marked uncertain:
  a wrong book is never presented as certain. Books marked uncertain outside the windows are
  counted (and how many of them were right anyway).

Instants after a delta the simulator withheld from every WebSocket (fault injection: no gatherer
can know it) are counted as ``excused_withheld`` and not compared. Raises AssertionError with
the first few failures; returns the counts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

from kalshi_data.books import book_at, market_lossy_windows
from kalshi_data.verify import fmt_us, read_truth
from shared.kalshi.replay import RebuiltBook, plain_replay

MS = 1000


def _sql_book(conn: psycopg.Connection[Any], ticker: str, at: int) -> RebuiltBook:
    r = conn.execute("SELECT * FROM book_state(%s, %s)", (ticker, at)).fetchone()
    assert r is not None
    (_t, at_us, yes, no, _u, reasons, snap_ts, source, gid, cut, cut_ts, applied) = r
    return RebuiltBook(ticker, at_us, tuple((p, s) for p, s in yes), tuple((p, s) for p, s in no),
                       tuple(reasons), snap_ts, source, gid, cut, cut_ts, applied)


def compare_books(production_dsn: str, truth_path: str | Path, *, lo_us: int, hi_us: int,
                  instants: int = 400, seed: int = 19) -> dict[str, int]:
    """See the module docstring. ``instants``: how many to draw (fewer if few markets qualify)."""
    log = read_truth(Path(truth_path))
    rng = random.Random(seed)
    withheld: dict[str, list[int]] = defaultdict(list)
    for ticker, rows in log.deltas.items():
        for ts_ms, _s, _p, _d, n in rows:
            if n in log.withheld_deltas:
                withheld[ticker].append(ts_ms * MS)
    stats = {"instants": 0, "equal": 0, "inside_lossy_windows": 0, "uncertain_outside": 0,
             "uncertain_outside_but_equal": 0, "excused_withheld": 0, "markets": 0}
    failures: list[str] = []
    with psycopg.connect(production_dsn, autocommit=True) as conn:
        firsts = {t: int(ts) for t, ts in conn.execute(
            "SELECT ticker, min(snapshot_ts) FROM orderbook_snapshots WHERE source <> 'rest' GROUP BY 1").fetchall()}
        busy = [t for (t,) in conn.execute(
            "SELECT ticker FROM orderbook_deltas WHERE exchange_ts BETWEEN %s AND %s GROUP BY 1 "
            "ORDER BY count(*) DESC LIMIT 20", (lo_us, hi_us)).fetchall()]
        pool = sorted(t for t in firsts if t in log.book0 and max(lo_us, firsts[t] + 1000 * MS) < hi_us)
        if not pool:
            raise AssertionError("no market has a production snapshot and a truth book in the window")
        picks: dict[str, list[int]] = defaultdict(list)
        for i in range(instants):
            # half the instants on the busiest markets (where ties and cuts matter), half anywhere
            choices = [t for t in busy if t in pool] if i % 2 == 0 else pool
            ticker = rng.choice(choices or pool)
            start = max(lo_us, firsts[ticker] + 1000 * MS) // MS
            picks[ticker].append(rng.randrange(start, hi_us // MS) * MS + MS - 1)  # end of a millisecond
        stats["markets"] = len(picks)
        for ticker, times in sorted(picks.items()):
            lossy = market_lossy_windows(conn, ticker)
            y0, n0 = log.book0[ticker]
            truth_deltas = log.deltas.get(ticker, [])
            for at in sorted(times):
                stats["instants"] += 1
                if any(w <= at for w in withheld.get(ticker, ())):
                    stats["excused_withheld"] += 1
                    continue
                sql = _sql_book(conn, ticker, at)
                py = book_at(conn, ticker, at, lossy=lossy)
                if sql != py:
                    failures.append(f"{ticker} at {fmt_us(at)}: SQL {sql} != Python {py}")
                    continue
                truth = plain_replay(y0, n0, ((s, p, d) for ts_ms, s, p, d, _n in truth_deltas if ts_ms * MS <= at))
                equal = (py.yes, py.no) == (truth.levels("yes"), truth.levels("no"))
                inside = any(a <= at and (b is None or at <= b) for a, b in lossy)
                if inside:
                    stats["inside_lossy_windows"] += 1
                    if not py.uncertain:
                        failures.append(f"{ticker} at {fmt_us(at)}: inside a lossy window but not marked uncertain")
                elif py.uncertain:
                    stats["uncertain_outside"] += 1
                    stats["uncertain_outside_but_equal"] += equal
                elif equal:
                    stats["equal"] += 1
                else:
                    failures.append(f"{ticker} at {fmt_us(at)}: certain but differs from the truth "
                                    f"(snapshot {py.snapshot_source} {fmt_us(py.snapshot_ts)} cut {py.cut} "
                                    f"{fmt_us(py.cut_ts)}, {py.deltas_applied} deltas): yes {py.yes} vs "
                                    f"{truth.levels('yes')}, no {py.no} vs {truth.levels('no')}")
    print(f"[books] {stats}", flush=True)
    assert not failures, f"{len(failures)} book(s) wrong: " + " | ".join(failures[:5])
    assert stats["equal"] > 0, stats
    return stats
