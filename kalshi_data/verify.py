"""``kalshi-data verify``: the runbook's "Data Validation" as one command (and a Python API).

::

    kalshi-data verify --fleet DIR/fleet.json --since 1h [--truth DIR/truth.jsonl]
    kalshi-data verify --production "host=... dbname=kalshi_prod user=analyst" \\
        --gatherer gatherer-1="host=... dbname=kalshi_ts user=dedup_reader" ... --since 2026-11-24T00:00

Checks, each over the window ``[--since, --until)`` (µs on the exchange clock):

* **counts** per event table on every gatherer and on production (information);
* **missing**: a gatherer row at or below its deduplicator cursor (so merged by definition) that
  production does not hold under the row's identity key (data-model.md);
* **duplicate**: one ``trade_id`` stored more than once (the only identity no primary key enforces:
  trade keys include ``exchange_ts``, which paths may disagree on);
* **trade_gap**: a stretch longer than ``--max-gap`` with no trade at all in production (the
  runbook's ``LEAD()`` query); the largest per-market gaps are listed as information;
* **backlog** per cursor: unmerged rows past the cursor whose oldest is older than
  ``--max-backlog``; **cursor**: a cursor recorded for another database (``db_uuid``);
* **coverage_events** summary by gatherer/kind/recovered, and **unrecovered**: a window in which
  EVERY gatherer says it lost a market's data (so production cannot have it);
* with ``--truth`` (the simulator's JSONL ground truth): every truth trade exactly once in
  production by ``trade_id`` with the same fields and nothing extra (**truth_missing**,
  **truth_extra**, **truth_mismatch**); every truth delta present exactly once unless it falls in
  an unrecovered coverage window, or in a window where EVERY gatherer's orderbook stream was
  interrupted (socket down, seq gap, resync, process down: the gatherer "recovers" the book with
  a fresh snapshot, but those deltas exist nowhere), or was withheld from WebSockets by fault
  injection; each market's book rebuilt from production (kalshi_data/books.py, the one rebuild)
  equals the truth's book at the end of the window, or just before the last window in which no
  gatherer's orderbook stream was intact (**truth_book**); and the coverage ledger checked
  against the truth both ways (kalshi_data/ledger_check.py): every window a gatherer calls
  recovered is complete (**ledger_false_recovered**), every row production lacks lies in a
  window every gatherer calls unrecovered (**ledger_silent_loss**); such declared losses are
  counted in the info lines.

Exit codes: 0 no problem, 1 one line per problem on stdout, 2 could not verify (bad argument,
database unreachable: one line on stderr).

Limits: the truth diff compares only the span production holds (first to last production trade)
unless ``--since``/``--until`` are given explicitly, so a fleet started after the simulator is not
blamed for trades from before it existed. Boundary milliseconds are excluded from delta diffs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from kalshi_data import ledger_check
from kalshi_data.books import book_at, market_lossy_windows, record_starts
from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.info import database_dsns, load_fleet_file
from kalshi_data.progress import Progress
from shared.kalshi.replay import plain_replay

Conn = psycopg.Connection[Any]
MAX_LINES_PER_KIND = 20
BATCH = 5_000
US = 1_000_000
# Without an explicit window the truth diff ends this long before production's newest row: a
# fleet's trade and orderbook sockets stop a moment apart (measured: up to ~1.2 s on 2 busy cores).
TAIL_US = 3 * US

# Event tables: time column for the window, identity columns on the gatherer, and the matching
# production primary-key columns (snapshots add gatherer_id: production keeps each gatherer's).
COUNT_TABLES = {"trades": "exchange_ts", "orderbook_deltas": "exchange_ts",
                "orderbook_snapshots": "snapshot_ts", "tickers": "exchange_ts",
                "coverage_events": "window_start"}
KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "orderbook_deltas": (("ticker", "text"), ("exchange_ts", "bigint"), ("side", "text"),
                         ("price", "integer"), ("delta", "bigint"), ("occurrence", "smallint")),
    "tickers": (("ticker", "text"), ("exchange_ts", "bigint"), ("content_hash", "bigint")),
    "orderbook_snapshots": (("ticker", "text"), ("snapshot_ts", "bigint"), ("source", "text")),
    "coverage_events": (("gatherer_id", "text"), ("event_id", "uuid")),
}
# Tables the deduplicator keeps cursors for, with the column that dates a pending row.
SYNC_TABLES = {"trades": "received_at", "orderbook_deltas": "received_at",
               "orderbook_snapshots": "received_at", "tickers": "received_at",
               "coverage_events": "updated_at", "markets": "received_at", "events": "received_at",
               "series": "received_at"}
NIL_UUID = "00000000-0000-0000-0000-000000000000"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong; ``kind`` is stable (tests and scripts match on it), ``text`` is for humans."""

    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


@dataclass
class Report:
    since_us: int
    until_us: int
    problems: list[Problem] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def add(self, kind: str, lines: Sequence[str]) -> None:
        """Add one problem per line, at most MAX_LINES_PER_KIND, then one summary line."""
        for text in lines[:MAX_LINES_PER_KIND]:
            self.problems.append(Problem(kind, text))
        if len(lines) > MAX_LINES_PER_KIND:
            self.problems.append(Problem(kind, f"... and {len(lines) - MAX_LINES_PER_KIND} more"))


class VerifyError(Exception):
    """Verification could not run (unreachable database, unreadable truth); one line."""


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------
_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now_us: int) -> int:
    """µs since the epoch from ``now``, a relative age (``90s``, ``15m``, ``1h``, ``2d`` = that
    long ago), an ISO-8601 time (naive = UTC) or an epoch number (s, ms or µs by magnitude)."""
    t = text.strip()
    if t == "now":
        return now_us
    m = _REL.match(t)
    if m:
        return now_us - int(float(m.group(1)) * _UNIT_S[m.group(2)] * US)
    if re.fullmatch(r"\d+", t):
        v = int(t)
        return v if v >= 10**15 else v * 1000 if v >= 10**12 else v * US
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use now, 30m, 1h, 2d, ISO-8601 or epoch seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * US)


def fmt_us(us: int | None) -> str:
    """ISO-8601 UTC with milliseconds (the exchange's precision)."""
    if us is None:
        return "open"
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * US)


# --------------------------------------------------------------------------------------------
# Entry point (Python API)
# --------------------------------------------------------------------------------------------
def verify(production: str, gatherers: Mapping[str, str] | None = None, *, since_us: int, until_us: int,
           truth: str | Path | None = None, max_gap_s: float = 300.0, max_backlog_s: float = 60.0,
           explicit_truth_window: bool = False) -> Report:
    """Run every check; returns a Report (``.ok``, ``.problems``, ``.info``).

    ``production`` and ``gatherers`` are libpq DSNs (any role that may SELECT). Raises
    VerifyError when a database cannot be reached or the truth file cannot be read.
    """
    report = Report(since_us, until_us)
    conns: dict[str, Conn] = {}
    try:
        prod = _connect("production", production)
        conns["production"] = prod
        for name, dsn in (gatherers or {}).items():
            conns[name] = _connect(name, dsn)
        gconns = {n: c for n, c in conns.items() if n != "production"}
        _counts(report, prod, gconns)
        cursors = _cursors(prod)
        for name, conn in gconns.items():
            _cursor_identity(report, name, conn, cursors)
            _missing(report, prod, name, conn, cursors)
            _backlog(report, name, conn, cursors, max_backlog_s)
        _duplicates(report, "production", prod)
        for name, conn in gconns.items():
            _duplicates(report, name, conn)
        _trade_gaps(report, prod, max_gap_s)
        fleet = sorted(gconns) or sorted({g for g, _t in cursors})
        # coverage windows are on each gatherer's clock: compare them in exchange time
        clock = ledger_check.ClockMap(prod, gconns, since_us, until_us)
        unrecovered = _coverage(report, prod, fleet, clock)
        if truth is not None:
            span = _truth(report, prod, Path(truth), unrecovered, explicit_truth_window)
            if span is not None:  # the ledger against the truth, both ways (ledger_check.py)
                ledger_check.check(report, prod, gconns, *span, fleet)
    except psycopg.Error as exc:
        raise VerifyError(f"database error: {_first_line(exc)}") from None
    finally:
        for c in conns.values():
            c.close()
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect(name: str, dsn: str) -> Conn:
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise VerifyError(f"{name}: cannot connect: {_first_line(exc)}") from None
    conn.execute("SET statement_timeout = '300s'")
    return conn


def _window(col: str) -> str:
    return f"{col} >= %(lo)s AND {col} < %(hi)s"


# --------------------------------------------------------------------------------------------
# Counts, cursors, missing rows, backlog
# --------------------------------------------------------------------------------------------
def _counts(report: Report, prod: Conn, gconns: Mapping[str, Conn]) -> None:
    args = {"lo": report.since_us, "hi": report.until_us}
    report.info.append(f"window {fmt_us(report.since_us)} .. {fmt_us(report.until_us)}")
    for table, col in COUNT_TABLES.items():
        parts = []
        for name, conn in [("production", prod), *gconns.items()]:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE {_window(col)}", args).fetchone()
            parts.append(f"{name}={int(row[0]) if row else 0:,}")
        report.info.append(f"counts {table}: " + " ".join(parts))


Cursors = dict[tuple[str, str], tuple[str, int, int]]


def _cursors(prod: Conn) -> Cursors:
    """(gatherer, table) -> (db_uuid, cursor_xid, cursor_seq) from production sync_cursors."""
    rows = prod.execute("SELECT gatherer_id, table_name, db_uuid::text, cursor_xid, cursor_seq FROM sync_cursors").fetchall()
    return {(g, t): (u, int(x), int(s)) for g, t, u, x, s in rows}


def _cursor_identity(report: Report, name: str, conn: Conn, cursors: Cursors) -> None:
    row = conn.execute("SELECT db_uuid::text FROM gatherer_meta").fetchone()
    if row is None:
        return
    mine = row[0]
    other = sorted({u for (g, _t), (u, _x, _s) in cursors.items() if g == name and u not in (mine, NIL_UUID)})
    if other:
        report.add("cursor", [(f"{name}: production cursors belong to database {other[0]} but {name}'s database "
                               f"is {mine} (rebuilt or restored?); after checking, run kalshi-deduplicator "
                               f"--reset-cursor {name}")])


_POS = "(ingest_xid, ingest_seq) {op} ((%(cx)s)::text::xid8, %(cs)s)"


def _missing(report: Report, prod: Conn, name: str, conn: Conn, cursors: Cursors) -> None:
    """Rows this gatherer holds at or below its cursor (merged by definition) that production lacks."""
    lines: list[str] = []
    for table in ("trades", *KEYS):
        cur = cursors.get((name, table))
        if cur is None:
            continue
        args = {"lo": report.since_us, "hi": report.until_us, "cx": cur[1], "cs": cur[2]}
        if table == "trades":
            sel = "trade_id::text"
        else:
            sel = ", ".join(f"{c}::text" if t == "uuid" else c for c, t in KEYS[table])
        q = (f"SELECT {sel} FROM {table} WHERE {_window(COUNT_TABLES[table])} AND "
             + _POS.format(op="<="))
        missing, first = 0, None
        for batch in _batches(conn, q, args):
            absent = _absent_in_production(prod, table, name, batch)
            missing += len(absent)
            if absent and first is None:
                first = absent[0]
        if missing:
            lines.append(f"{table}: {missing:,} row(s) merged from {name} (at or below its cursor) are not in "
                         f"production; first: {_key_text(first)}")
    report.add("missing", lines)


def _batches(conn: Conn, query: str, args: Mapping[str, Any]) -> Iterator[list[tuple[Any, ...]]]:
    # A server-side cursor streams the rows: a large window never sits in memory whole.
    with conn.transaction(), conn.cursor(name="verify_stream") as cur:
        cur.itersize = BATCH
        cur.execute(query, args)  # type: ignore[arg-type]
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                return
            yield rows


def _absent_in_production(prod: Conn, table: str, gatherer: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    if table == "trades":
        ids = [r[0] for r in rows]
        found = prod.execute(
            "SELECT i.trade_id::text FROM trade_ids i JOIN trades t ON t.ticker = i.ticker "
            "AND t.exchange_ts = i.exchange_ts AND t.trade_id = i.trade_id WHERE i.trade_id = ANY(%s::uuid[])",
            (ids,)).fetchall()
        have = {f[0] for f in found}
        return [r for r in rows if r[0] not in have]
    cols = KEYS[table]
    arrays = [[r[i] for r in rows] for i in range(len(cols))]
    unnest = ", ".join(f"%s::{t}[]" for _c, t in cols)
    names = ", ".join(c for c, _t in cols)
    cond = " AND ".join(f"p.{c} = k.{c}" for c, _t in cols)
    if table == "orderbook_snapshots":
        cond += " AND p.gatherer_id = %s"
        params: list[Any] = [*arrays, gatherer]
    else:
        params = list(arrays)
    q = (f"SELECT {', '.join('k.' + c + ('::text' if t == 'uuid' else '') for c, t in cols)} "
         f"FROM unnest({unnest}) AS k({names}) WHERE NOT EXISTS (SELECT 1 FROM {table} p WHERE {cond})")
    return [tuple(r) for r in prod.execute(q, params).fetchall()]  # type: ignore[arg-type]


def _key_text(key: tuple[Any, ...] | None) -> str:
    if key is None:
        return "-"
    return "(" + ", ".join(str(k) for k in key) + ")"


def _backlog(report: Report, name: str, conn: Conn, cursors: Cursors, max_backlog_s: float) -> None:
    parts, lines = [], []
    gnow = int(conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").fetchone()[0])  # type: ignore[index]
    for table, col in SYNC_TABLES.items():
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:  # type: ignore[index]
            continue
        _u, cx, cs = cursors.get((name, table), ("", 0, 0))
        row = conn.execute(f"SELECT count(*), min({col}) FROM {table} WHERE " + _POS.format(op=">"),
                           {"cx": cx, "cs": cs}).fetchone()
        n, oldest = (int(row[0]), row[1]) if row else (0, None)
        if n:
            parts.append(f"{table}={n:,}")
        if n and oldest is not None and (gnow - int(oldest)) > max_backlog_s * US:
            where = (f"past cursor ({cx}, {cs})" if (name, table) in cursors else
                     "with no cursor in production (known gatherer ids: "
                     + (", ".join(sorted({g for g, _t in cursors})) or "none") + ")")
            lines.append(f"{name}.{table}: {n:,} unmerged row(s) {where}, oldest received "
                         f"{(gnow - int(oldest)) / US:,.0f}s ago (limit {max_backlog_s:g}s)")
    report.info.append(f"backlog {name}: " + (" ".join(parts) if parts else "none"))
    report.add("backlog", lines)


# --------------------------------------------------------------------------------------------
# Duplicates and gaps
# --------------------------------------------------------------------------------------------
def _duplicates(report: Report, where: str, conn: Conn) -> None:
    rows = conn.execute(
        "SELECT trade_id::text, count(*), min(ticker), array_agg(exchange_ts ORDER BY exchange_ts) FROM trades "
        f"WHERE {_window('exchange_ts')} GROUP BY trade_id HAVING count(*) > 1 ORDER BY 2 DESC, 1",
        {"lo": report.since_us, "hi": report.until_us}).fetchall()
    report.add("duplicate", [f"trades in {where}: trade_id {tid} ({ticker}) stored {n} times, exchange_ts "
                             + ", ".join(fmt_us(t) for t in ts) for tid, n, ticker, ts in rows])


def _trade_gaps(report: Report, prod: Conn, max_gap_s: float) -> None:
    args = {"lo": report.since_us, "hi": report.until_us, "gap": int(max_gap_s * US)}
    if max_gap_s > 0:
        rows = prod.execute(
            "SELECT exchange_ts, nxt FROM (SELECT exchange_ts, LEAD(exchange_ts) OVER (ORDER BY exchange_ts) AS nxt "
            f"FROM trades WHERE {_window('exchange_ts')}) s WHERE nxt - exchange_ts > %(gap)s "
            "ORDER BY nxt - exchange_ts DESC", args).fetchall()
        report.add("trade_gap", [f"no trade in production from {fmt_us(a)} to {fmt_us(b)} ({(b - a) / US:,.0f}s > "
                                 f"--max-gap {max_gap_s:g}s)" for a, b in rows])
    top = prod.execute(
        "SELECT ticker, exchange_ts, nxt FROM (SELECT ticker, exchange_ts, LEAD(exchange_ts) OVER "
        f"(PARTITION BY ticker ORDER BY exchange_ts) AS nxt FROM trades WHERE {_window('exchange_ts')}) s "
        "WHERE nxt IS NOT NULL ORDER BY nxt - exchange_ts DESC LIMIT 5", args).fetchall()
    if top:
        report.info.append("largest per-market trade gaps: " + ", ".join(
            f"{t} {(b - a) / US:,.1f}s from {fmt_us(a)}" for t, a, b in top))


# --------------------------------------------------------------------------------------------
# Coverage
# --------------------------------------------------------------------------------------------
Interval = tuple[int, int]
GLOBAL = "*"


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(x: list[Interval], y: list[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass
class Unrecovered:
    """Where production may lack data, per ticker (``*`` = all markets).

    ``windows``: unrecovered coverage windows (any gatherer). ``delta_holes``: windows in which
    EVERY gatherer had its orderbook stream interrupted (an orderbook socket down, a seq gap or
    resync of the market, the process down), recovered or not: a gatherer "recovers" a book with
    a fresh snapshot, but the deltas sent meanwhile are gone for good, so no gatherer has them.
    """

    windows: dict[str, list[Interval]] = field(default_factory=dict)
    delta_holes: dict[str, list[Interval]] = field(default_factory=dict)

    def covers(self, ticker: str, ts: int) -> bool:
        return _inside(self.windows, ticker, ts)

    def covers_delta(self, ticker: str, ts: int) -> bool:
        return _inside(self.windows, ticker, ts) or _inside(self.delta_holes, ticker, ts)

    def book_breaks(self, ticker: str) -> list[Interval]:
        """Every window after which a book must be rebuilt from a newer snapshot."""
        return _merge([*self.windows.get(ticker, []), *self.windows.get(GLOBAL, []),
                       *self.delta_holes.get(ticker, []), *self.delta_holes.get(GLOBAL, [])])


def _inside(windows: Mapping[str, list[Interval]], ticker: str, ts: int) -> bool:
    for key in (ticker, GLOBAL):
        for a, b in windows.get(key, ()):
            if a <= ts <= b:
                return True
    return False


# A socket's outage starts when the gatherer notices it; frames the exchange had queued just
# before were lost too, so a delta hole reaches back this far on the exchange clock.
HOLE_SLACK_US = 1 * US
DELTA_HOLE_KINDS = ("seq_gap", "resync", "book_mismatch", "process_down")


def _delta_holes(prod: Conn, report: Report, fleet: Sequence[str],
                 clock: ledger_check.ClockMap | None = None) -> dict[str, list[Interval]]:
    rows = prod.execute(
        "SELECT gatherer_id, scope, ticker, kind, window_start, coalesce(window_end, %(hi)s), detail "
        "FROM coverage_events WHERE window_start < %(hi)s AND coalesce(window_end, %(hi)s) >= %(lo)s "
        "AND (kind = ANY(%(kinds)s) OR (kind = 'ws_down' AND coalesce(detail->>'role', 'orderbook') = 'orderbook'))",
        {"lo": report.since_us, "hi": report.until_us, "kinds": list(DELTA_HOLE_KINDS)}).fetchall()
    per: dict[str, dict[str, list[Interval]]] = defaultdict(lambda: defaultdict(list))
    for g, scope, ticker, _kind, a, b, detail in rows:
        key = ticker if (scope == "market" and ticker) else GLOBAL
        a, b = clock.window(g, int(a), int(b), detail) if clock is not None else (int(a), int(b))
        per[key][g].append((a - HOLE_SLACK_US, b))
    who = list(fleet) or sorted({g for d in per.values() for g in d})
    out: dict[str, list[Interval]] = {}
    for key, by_gatherer in per.items():
        common: list[Interval] | None = None
        for g in who:
            mine = _merge(by_gatherer.get(g, []) + (per.get(GLOBAL, {}).get(g, []) if key != GLOBAL else []))
            common = mine if common is None else _intersect(common, mine)
            if not common:
                break
        if common:
            out[key] = common
    return out


def _coverage(report: Report, prod: Conn, fleet: Sequence[str],
              clock: ledger_check.ClockMap | None = None) -> Unrecovered:
    """Summary and common unrecovered windows; with ``clock`` windows are mapped from each
    gatherer's receive clock to exchange time (ledger_check.ClockMap) before comparing."""
    args = {"lo": report.since_us, "hi": report.until_us}
    overlap = "window_start < %(hi)s AND coalesce(window_end, %(hi)s) >= %(lo)s"
    rows = prod.execute(
        f"SELECT gatherer_id, kind, recovered, count(*), count(*) FILTER (WHERE window_end IS NULL) "
        f"FROM coverage_events WHERE {overlap} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", args).fetchall()
    if rows:
        for g, kind, rec, n, open_n in rows:
            report.info.append(f"coverage {g}: {kind} {'recovered' if rec else 'UNRECOVERED'} x{n}"
                               + (f" ({open_n} still open)" if open_n else ""))
    else:
        report.info.append("coverage: no coverage events in window")
    events = prod.execute(
        f"SELECT gatherer_id, scope, ticker, kind, window_start, coalesce(window_end, %(hi)s), detail "
        f"FROM coverage_events WHERE NOT recovered AND {overlap}", args).fetchall()
    per: dict[str, dict[str, list[Interval]]] = defaultdict(lambda: defaultdict(list))
    kinds: dict[str, set[str]] = defaultdict(set)
    everything = Unrecovered()
    for g, scope, ticker, kind, a, b, detail in events:
        if clock is not None:
            a, b = clock.window(g, int(a), int(b), detail)
        key = ticker if (scope == "market" and ticker) else GLOBAL
        per[key][g].append((max(a, report.since_us), min(b, report.until_us)))
        everything.windows.setdefault(key, []).append((a, b))
        kinds[key].add(kind)
    lines = []
    for key in sorted(per):
        common: list[Interval] | None = None
        for g in fleet:
            mine = _merge(per[key].get(g, []) + (per[GLOBAL].get(g, []) if key != GLOBAL else []))
            common = mine if common is None else _intersect(common, mine)
            if not common:
                break
        for a, b in common or []:
            lines.append(f"{'all markets' if key == GLOBAL else key}: {fmt_us(a)} .. {fmt_us(b)} "
                         f"({(b - a) / US:,.1f}s): every gatherer ({', '.join(fleet)}) reports it lost "
                         f"({', '.join(sorted(kinds[key] | kinds[GLOBAL]))})")
    report.add("unrecovered", lines)
    for key in everything.windows:
        everything.windows[key] = _merge(everything.windows[key])
    everything.delta_holes = _delta_holes(prod, report, fleet, clock)
    if everything.delta_holes:
        n = sum(len(v) for v in everything.delta_holes.values())
        report.info.append(f"coverage: {n} window(s) in which every gatherer's orderbook stream was interrupted "
                           "(deltas there cannot exist anywhere)")
    return everything


# --------------------------------------------------------------------------------------------
# Ground truth (the simulator's JSONL log, kalshi_sim/truth.py)
# --------------------------------------------------------------------------------------------
@dataclass
class TruthLog:
    trades: dict[str, tuple[str, int, int, int, int, int, str]] = field(default_factory=dict)
    # ticker -> [(ts_ms, side, price, delta, n)]
    deltas: dict[str, list[tuple[int, str, int, int, int]]] = field(default_factory=lambda: defaultdict(list))
    book0: dict[str, tuple[dict[int, int], dict[int, int]]] = field(default_factory=dict)
    withheld_deltas: set[int] = field(default_factory=set)


def read_truth(path: Path) -> TruthLog:
    """Parse the truth JSONL; a half-written last line (the simulator still running) is skipped."""
    log = TruthLog()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise VerifyError(f"truth {path}: cannot read ({exc.strerror})") from None
    with f:
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = orjson.loads(line)
        except orjson.JSONDecodeError:
            if i >= len(lines) - 2:
                continue
            raise VerifyError(f"truth {path}: line {i + 1} is not JSON") from None
        k = r.get("k")
        if k == "trade":
            log.trades[r["trade_id"]] = (r["ticker"], int(r["ts_ms"]), int(r.get("rest_ts_us", r["ts_us"])),
                                         int(r["yes_price"]), int(r["no_price"]), int(r["count"]),
                                         str(r.get("taker_side")))
        elif k == "delta":
            log.deltas[r["ticker"]].append((int(r["ts_ms"]), r["side"], int(r["price"]), int(r["delta"]), int(r["n"])))
        elif k == "book0":
            log.book0[r["ticker"]] = ({int(p): int(s) for p, s in r["yes"]}, {int(p): int(s) for p, s in r["no"]})
        elif k == "withheld" and r.get("what") == "delta":
            log.withheld_deltas.add(int(r["n"]))
    return log


def _truth(report: Report, prod: Conn, path: Path, unrecovered: Unrecovered,
           explicit: bool) -> tuple[TruthLog, int, int] | None:
    """Diff production against the truth; returns (truth, lo, hi) of the span compared."""
    log = read_truth(path)
    lo, hi = report.since_us, report.until_us
    if not explicit:
        # Production's own span: from its first trade or delta to TAIL_US before the point where
        # BOTH streams still had data (the sockets of a fleet stop a moment apart).
        spans = [prod.execute(f"SELECT min(exchange_ts), max(exchange_ts) FROM {t} WHERE "
                              f"{_window('exchange_ts')}", {"lo": lo, "hi": hi}).fetchone()
                 for t in ("trades", "orderbook_deltas")]
        have = [s for s in spans if s is not None and s[0] is not None]
        if not have:
            report.add("truth_missing", ["production holds no trades and no deltas in the window; nothing to compare"]
                       if log.trades or log.deltas else [])
            return None
        lo = max(lo, min(int(s[0]) for s in have) + 1000)  # boundary ms excluded
        hi = min(hi, min(int(s[1]) for s in have) - TAIL_US)
        if lo >= hi:
            report.info.append("truth: production's span is too short to compare")
            return None
    report.info.append(f"truth window {fmt_us(lo)} .. {fmt_us(hi)}: {len(log.trades):,} trades, "
                       f"{sum(len(v) for v in log.deltas.values()):,} deltas in the whole log")
    _truth_trades(report, prod, log, lo, hi)
    _truth_deltas(report, prod, log, lo, hi, unrecovered)
    return log, lo, hi


def _truth_trades(report: Report, prod: Conn, log: TruthLog, lo: int, hi: int) -> None:
    slack = 5 * US  # REST and WS times of one trade may differ; the first seen is stored
    rows = prod.execute("SELECT trade_id::text, ticker, exchange_ts, yes_price, no_price, count, taker_side "
                        "FROM trades WHERE exchange_ts >= %s AND exchange_ts < %s",
                        (lo - slack, hi + slack)).fetchall()
    have: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        have[r[0]].append(r)
    missing, extra, mismatch = [], [], []
    for tid, (ticker, ts_ms, rest_us, yes, no, count, side) in log.trades.items():
        ts = ts_ms * 1000
        if not lo <= ts < hi:
            continue
        got = have.get(tid)
        if not got:
            missing.append(f"trade {tid} ({ticker} at {fmt_us(ts)}, {count / 100:g} @ {yes / 10000:.4f}) "
                           "is in the truth but not in production")
            continue
        _tid, pticker, pts, pyes, pno, pcount, pside = got[0]
        allowed_ts = {ts, (rest_us // 1000) * 1000}
        diffs = [f"{n} {p!r} != {t!r}" for n, p, t in (("ticker", pticker, ticker), ("yes_price", pyes, yes),
                                                       ("no_price", pno, no), ("count", pcount, count),
                                                       ("taker_side", pside, side)) if p != t]
        if pts not in allowed_ts:
            diffs.append(f"exchange_ts {fmt_us(pts)} != {fmt_us(ts)}")
        if diffs:
            mismatch.append(f"trade {tid}: production differs from the truth: {'; '.join(diffs)}")
    for tid, got in have.items():
        if tid not in log.trades and any(lo <= r[2] < hi for r in got):
            r = got[0]
            extra.append(f"trade {tid} ({r[1]} at {fmt_us(r[2])}) is in production but not in the truth")
    report.add("truth_missing", missing)
    report.add("truth_extra", extra)
    report.add("truth_mismatch", mismatch)


DeltaKey = tuple[int, str, int, int]  # (ts_us at ms precision, side, price, delta)


def _truth_deltas(report: Report, prod: Conn, log: TruthLog, lo: int, hi: int, unrecovered: Unrecovered) -> None:
    # Where each market's production record starts: its first snapshot's position in the stream.
    starts = record_starts(prod)
    pdeltas: dict[str, Counter[DeltaKey]] = defaultdict(Counter)
    for ticker, ts, side, price, delta in prod.execute(
            "SELECT ticker, exchange_ts, side, price, delta FROM orderbook_deltas WHERE exchange_ts >= %s "
            "AND exchange_ts < %s", (lo - 1000, hi + 1000)).fetchall():
        pdeltas[ticker][(int(ts), side, int(price), int(delta))] += 1
    missing, extra = [], []
    for ticker in sorted(set(log.deltas) | set(pdeltas)):
        start = max(lo, starts.get(ticker, hi) + 1000)  # after the first snapshot's millisecond
        if start >= hi:
            continue
        want: Counter[DeltaKey] = Counter()
        optional: Counter[DeltaKey] = Counter()
        for ts_ms, side, price, delta, n in log.deltas.get(ticker, ()):
            ts = ts_ms * 1000
            if start <= ts < hi:
                k = (ts, side, price, delta)
                if n in log.withheld_deltas or unrecovered.covers_delta(ticker, ts):
                    optional[k] += 1
                else:
                    want[k] += 1
        got = Counter({k: v for k, v in pdeltas.get(ticker, Counter()).items() if start <= k[0] < hi})
        for k, n in sorted(want.items()):
            if got[k] < n:
                missing.append(f"delta {ticker} {fmt_us(k[0])} {k[1]} {k[2]} {k[3]:+d}: truth has {n}, "
                               f"production {got[k]}")
        for k, n in sorted(got.items()):
            if n > want[k] + optional[k]:
                extra.append(f"delta {ticker} {fmt_us(k[0])} {k[1]} {k[2]} {k[3]:+d}: production has {n}, "
                             f"truth {want[k] + optional[k]}")
    report.add("truth_missing", missing)
    report.add("truth_extra", extra)
    _truth_books(report, prod, log, hi, unrecovered)


def _book_diff(a: dict[int, int], b: dict[int, int]) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [f"{p}: {a.get(p, 0)} vs {b.get(p, 0)}" for p in keys if a.get(p, 0) != b.get(p, 0)]
    return ", ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")


def _truth_book(log: TruthLog, ticker: str, at: int) -> tuple[dict[int, int], dict[int, int]]:
    """The truth's book of ``ticker`` after every delta stamped at or before ``at`` (µs)."""
    y0, n0 = log.book0[ticker]
    b = plain_replay(y0, n0, ((side, price, delta) for ts_ms, side, price, delta, _n in log.deltas.get(ticker, ())
                              if ts_ms * 1000 <= at))
    return dict(b.levels("yes")), dict(b.levels("no"))


def _truth_books(report: Report, prod: Conn, log: TruthLog, hi: int, unrecovered: Unrecovered) -> None:
    """Each market's book rebuilt from production (kalshi_data.books, the rebuild of ``kalshi-data
    book`` and book_state()) just before ``hi``, compared with the truth's (book0 + every truth
    delta). Where the rebuild is uncertain there (a window in which no gatherer's orderbook stream
    was intact lies between its snapshot and ``hi``), the instant just before the latest such
    window is compared instead; a market with no certain instant is not comparable."""
    tickers = [t for (t,) in prod.execute(
        "SELECT DISTINCT ticker FROM orderbook_snapshots WHERE source <> 'rest' AND snapshot_ts < %s "
        "ORDER BY 1", (hi,)).fetchall()]
    lines, checked, skipped = [], 0, 0
    with Progress("verify books", total=len(tickers), unit="markets") as bar:
        for ticker in tickers:
            bar.advance(1)
            if ticker not in log.book0:
                skipped += 1  # the truth never logged this market's book: nothing to compare with
                continue
            lossy = market_lossy_windows(prod, ticker)
            book = None
            for at in [hi - 1, *sorted((a - 1 for a, _b in lossy if a <= hi), reverse=True)]:
                book = book_at(prod, ticker, at, lossy=lossy)
                if not book.uncertain:
                    break
            if book is None or book.uncertain:
                skipped += 1
                continue
            checked += 1
            want_yes, want_no = _truth_book(log, ticker, book.at_us)
            if (dict(book.yes), dict(book.no)) != (want_yes, want_no):
                lines.append(f"{ticker}: book rebuilt from production ({book.snapshot_source} snapshot of "
                             f"{fmt_us(book.snapshot_ts)}, cut {book.cut} + {book.deltas_applied} deltas) differs "
                             f"from the truth at {fmt_us(book.at_us)}: yes [{_book_diff(dict(book.yes), want_yes)}] "
                             f"no [{_book_diff(dict(book.no), want_no)}]")
    report.info.append(f"books: {checked} market(s) rebuilt and compared"
                       + (f", {skipped} not comparable (no truth book or no certain instant)" if skipped else ""))
    report.add("truth_book", lines)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("verify", help="validate production against the gatherers (and the simulator's truth)",
                       description="The runbook's Data Validation: counts, missing rows, duplicates, trade gaps, "
                                   "unmerged backlog, coverage; --truth diffs against the simulator. "
                                   "Exit 0 clean, 1 problems (one line each), 2 could not verify.")
    p.add_argument("--fleet", metavar="FLEET_JSON", help="take every DSN from a demo's fleet.json (or its directory)")
    p.add_argument("--production", metavar="DSN", help="production database (libpq DSN)")
    p.add_argument("--gatherer", action="append", default=[], metavar="NAME=DSN",
                   help="a gatherer database; NAME is its gatherer_id (repeatable)")
    p.add_argument("--since", default=None, help="window start: now, 30m, 1h, 2d, ISO-8601 or epoch (default 1h)")
    p.add_argument("--until", default=None, help="window end (default now)")
    p.add_argument("--truth", metavar="PATH", help="the simulator's truth JSONL (kalshi-sim --truth)")
    p.add_argument("--max-gap", type=float, default=300.0, metavar="S",
                   help="flag any stretch of S seconds without a trade in production (0 = off; default 300)")
    p.add_argument("--max-backlog", type=float, default=60.0, metavar="S",
                   help="flag unmerged rows older than S seconds (default 60)")
    p.add_argument("--quiet", action="store_true", help="print only problems")
    p.set_defaults(run=run)


def _sources(args: argparse.Namespace) -> tuple[str, dict[str, str], str | None]:
    gatherers: dict[str, str] = {}
    production = args.production
    truth = args.truth
    if args.fleet:
        doc = load_fleet_file(args.fleet)
        prod_dsn, gatherers = database_dsns(doc)
        production = production or prod_dsn
    for spec in args.gatherer:
        name, sep, dsn = spec.partition("=")
        if not sep or not name or not dsn:
            raise VerifyError(f"--gatherer {spec!r}: expected NAME=DSN")
        gatherers[name] = dsn
    if not production:
        raise VerifyError("give --production DSN or --fleet FLEET_JSON")
    return production, gatherers, truth


def run(args: argparse.Namespace) -> int:
    try:
        production, gatherers, truth = _sources(args)
        now = now_us()
        since, until = parse_time(args.since or "1h", now), parse_time(args.until or "now", now)
        if since >= until:
            raise VerifyError(f"--since {args.since} is not before --until {args.until}")
        report = verify(production, gatherers, since_us=since, until_us=until, truth=truth,
                        max_gap_s=args.max_gap, max_backlog_s=args.max_backlog,
                        explicit_truth_window=args.since is not None or args.until is not None)
    except (VerifyError, FleetError, ValueError) as exc:
        print(f"kalshi-data verify: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for line in report.info:
            print(f"  {line}")
    for p in report.problems:
        print(str(p))
    print(f"verify: {len(report.problems)} problem(s)" if report.problems else "verify: OK")
    return 1 if report.problems else 0
