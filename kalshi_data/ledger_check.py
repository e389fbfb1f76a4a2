"""``kalshi-data verify --truth``: the coverage ledger checked against the simulator's truth, both ways.

The ledger (``coverage_events``, gatherer/coverage.py) is each gatherer's own account of what it
may have missed. Against the simulator's ground truth it must hold in both directions:

1. **Every window called recovered is complete** (``ledger_false_recovered``):
   - a recovered ``trade_backfill`` window: every truth trade in the exchange-time range it
     queried (``detail.min_ts .. max_ts``; its market only, for a market window) is stored by
     that gatherer (its own database when given, else production);
   - a recovered ``ws_down`` of a trade socket: every truth trade of the outage is stored by it;
   - a recovered market ``resync``: that gatherer committed a snapshot of the market received
     exactly at the window's end (the evidence the window was closed on).
2. **Every row production lacks lies inside a window called unrecovered** (``ledger_silent_loss``):
   production holds the union of the gatherers, so a truth trade or delta missing there was
   missed by every gatherer, and EVERY gatherer's ledger must admit it: an unrecovered window for
   that data (trades: ``trade_backfill``, a trade socket's ``ws_down``; deltas: ``seq_gap``,
   ``book_mismatch``, ``process_down``, an orderbook socket's ``ws_down``) of that market or of
   all markets, containing the row's exchange time.

Windows are on each gatherer's receive clock; they are mapped to exchange time with that
gatherer's observed offset (exchange_ts - received_at of the WebSocket trades it stored): the
window becomes ``[start + p1 - slack, end + p99 + slack]``, p1/p99 being percentiles of the
offset, so latency and a skewed gatherer clock are accounted for, not excused blindly.

Deltas production lacks inside windows every gatherer admits are declared losses: counted and
reported (``LedgerCheck.declared_deltas``), not problems of the ledger (``unrecovered`` in
verify.py flags them for the operator).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from kalshi_data.books import record_starts

if TYPE_CHECKING:
    from kalshi_data.verify import Report, TruthLog

Conn = psycopg.Connection[Any]
US = 1_000_000
#: Added to both ends of a window mapped to exchange time (timestamp truncation to ms, jitter).
SLACK_US = 50_000
#: Used when a gatherer stored no WebSocket trade to measure its offset from.
DEFAULT_SPREAD_US = 1 * US
TRADE_KINDS = ("trade_backfill",)
DELTA_KINDS = ("seq_gap", "book_mismatch", "process_down")


@dataclass(frozen=True)
class LedgerWindow:
    gatherer: str
    event_id: str
    ticker: str | None  # None: every market (connection / process scope)
    kind: str
    role: str | None
    lo: int  # exchange time, µs (mapped, slack included)
    hi: int
    start: int  # as recorded (receive clock)
    end: int
    recovered: bool
    detail: dict[str, Any]

    @property
    def data(self) -> str | None:
        """What the window speaks about: trades, deltas, book, or None (not checked here)."""
        if self.kind in TRADE_KINDS or (self.kind == "ws_down" and self.role == "trade"):
            return "trades"
        if self.kind in DELTA_KINDS or (self.kind == "ws_down" and self.role == "orderbook"):
            return "deltas"
        if self.kind == "resync":
            return "book"
        return None


@dataclass
class LedgerCheck:
    """What was checked and found; ``declared_*`` are losses every gatherer's ledger admits."""

    windows: int = 0
    recovered_checked: int = 0
    missing_trades: list[tuple[str, int]] = field(default_factory=list)  # (trade_id, ts)
    missing_deltas: list[tuple[str, int, str, int, int]] = field(default_factory=list)  # ticker, ts, ...
    declared_trades: list[tuple[str, int]] = field(default_factory=list)
    declared_deltas: list[tuple[str, int, str, int, int]] = field(default_factory=list)
    silent_deltas: list[tuple[str, int, str, int, int]] = field(default_factory=list)
    false_recovered: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)


def offsets(conn: Conn, gatherer: str | None, lo: int, hi: int) -> tuple[int, int] | None:
    """(p1, p99) of exchange_ts - received_at over the WebSocket trades ``gatherer`` stored in
    [lo, hi) (``gatherer`` None: every row of ``conn``, a gatherer's own database)."""
    q = ("SELECT percentile_disc(0.01) WITHIN GROUP (ORDER BY exchange_ts - received_at), "
         "percentile_disc(0.99) WITHIN GROUP (ORDER BY exchange_ts - received_at) FROM trades "
         "WHERE source = 'ws' AND exchange_ts >= %s AND exchange_ts < %s")
    args: list[Any] = [lo, hi]
    if gatherer is not None:
        q += " AND gatherer_id = %s"
        args.append(gatherer)
    row = conn.execute(q, args).fetchone()  # type: ignore[arg-type]
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


class ClockMap:
    """Maps a gatherer's receive-clock window to exchange time: ``[start + p1 - SLACK_US,
    end + p99 + SLACK_US]``, p1/p99 being that gatherer's observed exchange_ts - received_at
    (its own database when given, else the rows it delivered to production); for a gatherer that
    stored no WebSocket trade, the row's ``exchange_offset_us`` +- DEFAULT_SPREAD_US."""

    def __init__(self, prod: Conn, gconns: Mapping[str, Conn], lo: int, hi: int) -> None:
        self._prod, self._gconns, self._lo, self._hi = prod, gconns, lo, hi
        self._spread: dict[str, tuple[int, int] | None] = {}

    def window(self, gatherer: str, start: int, end: int, detail: Mapping[str, Any] | None) -> tuple[int, int]:
        if gatherer not in self._spread:
            conn = self._gconns.get(gatherer)
            self._spread[gatherer] = (offsets(conn, None, self._lo, self._hi) if conn is not None
                                      else offsets(self._prod, gatherer, self._lo, self._hi))
        sp = self._spread[gatherer]
        if sp is None:
            off = int((detail or {}).get("exchange_offset_us", 0))
            sp = (off - DEFAULT_SPREAD_US, off + DEFAULT_SPREAD_US)
        return start + sp[0] - SLACK_US, end + sp[1] + SLACK_US


def windows(prod: Conn, gconns: Mapping[str, Conn], lo: int, hi: int) -> list[LedgerWindow]:
    """Every coverage window of production overlapping [lo, hi] (exchange time, roughly)."""
    rows = prod.execute(
        "SELECT gatherer_id, event_id::text, scope, ticker, kind, window_start, "
        "coalesce(window_end, %(far)s), recovered, detail FROM coverage_events "
        "WHERE window_start < %(hi)s AND coalesce(window_end, %(far)s) >= %(lo)s",
        {"lo": lo - 60 * US, "hi": hi + 60 * US, "far": hi + 3600 * US}).fetchall()
    clock = ClockMap(prod, gconns, lo, hi)
    out = []
    for g, eid, scope, ticker, kind, start, end, rec, detail in rows:
        a, b = clock.window(g, int(start), int(end), detail)
        out.append(LedgerWindow(g, eid, ticker if scope == "market" else None, kind,
                                (detail or {}).get("role"), a, b, int(start), int(end), bool(rec),
                                dict(detail or {})))
    return out


def check(report: Report, prod: Conn, gconns: Mapping[str, Conn], log: TruthLog, lo: int, hi: int,
          fleet: Sequence[str]) -> LedgerCheck:
    """Run both directions over exchange time [lo, hi); add problems and info to ``report``."""
    res = LedgerCheck()
    wins = windows(prod, gconns, lo, hi)
    res.windows = len(wins)
    truth_trades = sorted((ts_ms * 1000, tid, ticker) for tid, (ticker, ts_ms, *_r) in log.trades.items())
    prod_ids = _trade_ids(prod, lo, hi)
    _recovered_complete(res, prod, gconns, wins, truth_trades, prod_ids, lo, hi)
    _missing_admitted(res, prod, wins, log, truth_trades, prod_ids, lo, hi, fleet)
    report.info.append(
        f"ledger: {res.windows} window(s); {res.recovered_checked} recovered window(s) checked complete; "
        f"production lacks {len(res.missing_trades)} truth trade(s) and {len(res.missing_deltas)} truth "
        f"delta(s), of which {len(res.declared_trades)} trade(s) and {len(res.declared_deltas)} delta(s) "
        f"lie in windows every gatherer calls unrecovered")
    report.add("ledger_false_recovered", res.false_recovered)
    report.add("ledger_silent_loss", res.silent)
    return res


def _trade_ids(conn: Conn, lo: int, hi: int) -> set[str]:
    slack = 10 * US  # REST and WS times of one trade may differ; the first seen is stored
    return {r[0] for r in conn.execute("SELECT trade_id::text FROM trades WHERE exchange_ts >= %s AND "
                                       "exchange_ts < %s", (lo - slack, hi + slack)).fetchall()}


def _in_range(trades: list[tuple[int, str, str]], a: int, b: int) -> list[tuple[int, str, str]]:
    return trades[bisect.bisect_left(trades, (a, "", "")):bisect.bisect_left(trades, (b, "", ""))]


def _recovered_complete(res: LedgerCheck, prod: Conn, gconns: Mapping[str, Conn], wins: list[LedgerWindow],
                        truth: list[tuple[int, str, str]], prod_ids: set[str], lo: int, hi: int) -> None:
    stored: dict[str, set[str]] = {}
    snaps: set[tuple[str, str, int]] | None = None
    for w in wins:
        if not w.recovered or w.data not in ("trades", "book"):
            continue
        if w.data == "book":
            if w.ticker is None:
                continue
            if snaps is None:
                snaps = {(g, t, int(rx)) for g, t, rx in prod.execute(
                    "SELECT gatherer_id, ticker, received_at FROM orderbook_snapshots "
                    "WHERE source <> 'rest' AND received_at >= %s", (lo - 120 * US,)).fetchall()}
            res.recovered_checked += 1
            if w.start >= lo - 60 * US and (w.gatherer, w.ticker, w.end) not in snaps:
                res.false_recovered.append(
                    f"{w.gatherer} resync of {w.ticker} called recovered at {w.end} but no snapshot of it "
                    "received then is stored")
            continue
        if w.kind == "trade_backfill":
            if "min_ts" not in w.detail:
                continue
            a, b = int(w.detail["min_ts"]) * US, (int(w.detail["max_ts"]) + 1) * US
        else:
            a, b = w.lo + 2 * SLACK_US, w.hi - 2 * SLACK_US  # the outage itself, no slack
        a, b = max(a, lo), min(b, hi)
        if a >= b:
            continue
        if w.gatherer not in stored:
            conn = gconns.get(w.gatherer)
            stored[w.gatherer] = _trade_ids(conn, lo, hi) if conn is not None else prod_ids
        have = stored[w.gatherer]
        res.recovered_checked += 1
        lacking = [tid for _ts, tid, ticker in _in_range(truth, a, b)
                   if (w.ticker is None or ticker == w.ticker) and tid not in have]
        if lacking:
            res.false_recovered.append(
                f"{w.gatherer} {w.kind} [{a}, {b}) called recovered, but {len(lacking)} truth trade(s) in "
                f"it are not stored, e.g. {lacking[0]}")


def _admitted_by(wins: list[LedgerWindow], data: str, ticker: str, ts: int) -> set[str]:
    return {w.gatherer for w in wins if not w.recovered and w.data == data
            and (w.ticker is None or w.ticker == ticker) and w.lo <= ts <= w.hi}


def _missing_admitted(res: LedgerCheck, prod: Conn, wins: list[LedgerWindow], log: TruthLog,
                      truth: list[tuple[int, str, str]], prod_ids: set[str], lo: int, hi: int,
                      fleet: Sequence[str]) -> None:
    everyone = set(fleet) or {w.gatherer for w in wins}
    for ts, tid, ticker in _in_range(truth, lo, hi):
        if tid in prod_ids:
            continue
        res.missing_trades.append((tid, ts))
        silent = everyone - _admitted_by(wins, "trades", ticker, ts)
        if silent:
            res.silent.append(f"trade {tid} ({ticker} at {ts}) is missing from production; the ledger of "
                              f"{', '.join(sorted(silent))} does not admit a loss there")
        else:
            res.declared_trades.append((tid, ts))
    # deltas: production's multiset against the truth's, from each market's first snapshot on
    starts = record_starts(prod)
    have: dict[str, Counter[tuple[int, str, int, int]]] = defaultdict(Counter)
    for t, ts, side, price, delta in prod.execute(
            "SELECT ticker, exchange_ts, side, price, delta FROM orderbook_deltas WHERE exchange_ts >= %s "
            "AND exchange_ts < %s", (lo, hi)).fetchall():
        have[t][(int(ts), side, int(price), int(delta))] += 1
    for ticker, rows in log.deltas.items():
        start = starts.get(ticker)
        if start is None:
            continue
        seen: Counter[tuple[int, str, int, int]] = Counter()
        for ts_ms, side, price, delta, _n in rows:
            ts = ts_ms * 1000
            if not (lo <= ts < hi and ts >= start + 1000):
                continue
            k = (ts, side, price, delta)
            seen[k] += 1
            if have[ticker][k] >= seen[k]:
                continue
            item = (ticker, ts, side, price, delta)
            res.missing_deltas.append(item)
            silent = everyone - _admitted_by(wins, "deltas", ticker, ts)
            if silent:
                res.silent_deltas.append(item)
                res.silent.append(f"delta {ticker} {ts} {side} {price} {delta:+d} is missing from production; "
                                  f"the ledger of {', '.join(sorted(silent))} does not admit a loss there")
            else:
                res.declared_deltas.append(item)
