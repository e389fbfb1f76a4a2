"""``kalshi-data book``: a market's order book at any instant, or a series of books over a range.

::

    kalshi-data book KXBTCD-26MAY1417-T98999.99 --at 2026-05-14T16:02:11.204Z [--depth 5]
        [--format table|json|csv] --dsn "host=... dbname=kalshi_prod user=analyst"
    kalshi-data book TICKER --every 1m --from 2026-05-14T00:00 --to 2026-05-15T00:00 --depth 1 \\
        --format parquet --output book.parquet

The book is rebuilt from production exactly as the SQL function ``book_state()`` does (the same
rules, kalshi_data/books.py over shared/kalshi/replay.py): the newest snapshot at or before the
instant whose place in the delta stream is exact, plus the deltas after it. An instant means
"after every delta stamped at or before it" (exchange times have millisecond precision).
Prices are dollars x 10,000 and sizes contracts x 100 in json/csv/parquet, dollars and contracts
in the table.

Exit codes: 0 the book(s); 3 printed, but at least one book is uncertain (a coverage gap between
its snapshot and the instant, no exactly-placed snapshot, ...: the reasons are printed); 1 no
snapshot of the market at or before the instant; 2 bad argument or database unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import psycopg

from kalshi_data import progress
from kalshi_data._cli import add_db_flags, dsn_from_args, error_exit, parse_duration
from kalshi_data.books import book_at, book_series, instants
from kalshi_data.fleet.errors import FleetError
from kalshi_data.output import open_sink
from kalshi_data.verify import fmt_us, now_us, parse_time
from shared.kalshi.replay import RebuiltBook

PROG = "kalshi-data book"
EXIT_UNCERTAIN = 3
COLUMNS = (("ticker", "string"), ("at_us", "int64"), ("time", "string"), ("side", "string"),
           ("level", "int32"), ("price", "int32"), ("size", "int64"), ("uncertain", "bool"),
           ("reasons", "string"))
REASON_TEXT = {
    "coverage_gap": "between the snapshot and the instant lies a window in which no gatherer's "
                    "orderbook stream was intact (coverage_events): deltas there may be lost",
    "snapshot_place_unknown": "no snapshot with an exact place in the delta stream could be used",
    "negative_level": "the stored deltas drive a level below zero (an inconsistent record)",
    "no_snapshot": "no snapshot of this market at or before the instant",
}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("book", help="a market's order book at an instant (or every N over a range)",
                       description="Rebuild a market's order book from production at an instant "
                                   "(--at) or at every step of a range (--every/--from/--to).")
    p.add_argument("ticker", help="market ticker")
    p.add_argument("--at", help="the instant: now, 30m (ago), ISO-8601 (naive = UTC) or epoch s/ms/µs")
    p.add_argument("--every", help="series: step between books (500ms, 30s, 1m, 1h, ...)")
    p.add_argument("--from", dest="start", help="series: first instant")
    p.add_argument("--to", dest="end", help="series: last instant (inclusive)")
    p.add_argument("--depth", type=int, help="keep only the N best levels of each side")
    p.add_argument("--format", choices=("table", "json", "csv", "parquet"), default=None,
                   help="output: table (default for --at), json, csv (default for a series), parquet")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout (parquet needs it)")
    add_db_flags(p)
    progress.add_flags(p)
    p.set_defaults(run=run)


def _rows(b: RebuiltBook) -> list[tuple[Any, ...]]:
    t = fmt_us(b.at_us)
    reasons = ",".join(b.reasons)
    out: list[tuple[Any, ...]] = []
    for side in ("yes", "no"):
        levels = b.yes if side == "yes" else b.no
        for i, (price, size) in enumerate(reversed(levels), start=1):
            out.append((b.ticker, b.at_us, t, side, i, price, size, b.uncertain, reasons))
    if not out:  # an empty book still marks its instant
        out.append((b.ticker, b.at_us, t, None, 0, None, None, b.uncertain, reasons))
    return out


def render_table(b: RebuiltBook) -> str:
    """The book for a person: best bids first, dollars and contracts."""
    lines = [f"{b.ticker} order book at {fmt_us(b.at_us)} (after every delta stamped at or before it)"]
    yes, no = list(reversed(b.yes)), list(reversed(b.no))
    lines.append(f"  {'YES bids':<24}{'NO bids':<24}")
    lines.append(f"  {'price':>8} {'size':>13}  {'price':>8} {'size':>13}")
    for i in range(max(len(yes), len(no))):
        left = f"{yes[i][0] / 10_000:>8.4f} {yes[i][1] / 100:>13,.2f}" if i < len(yes) else " " * 22
        right = f"{no[i][0] / 10_000:>8.4f} {no[i][1] / 100:>13,.2f}" if i < len(no) else ""
        lines.append(f"  {left}  {right}".rstrip())
    if not yes and not no:
        lines.append("  (empty book)")
    by, bn = b.best("yes"), b.best("no")
    if by and bn:
        lines.append(f"  spread: yes bid {by[0] / 10_000:.4f} / yes ask {(10_000 - bn[0]) / 10_000:.4f}")
    if b.snapshot_ts is not None:
        lines.append(f"  from the {b.snapshot_source} snapshot of {fmt_us(b.snapshot_ts)} ({b.snapshot_gatherer}, "
                     f"cut {b.cut} {fmt_us(b.cut_ts)}) + {b.deltas_applied:,} delta(s)")
    for r in b.reasons:
        lines.append(f"  UNCERTAIN: {r}: {REASON_TEXT.get(r, r)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    series = args.every is not None or args.start is not None or args.end is not None
    try:
        if series == (args.at is not None):
            raise ValueError("give --at TIME, or --every STEP --from TIME --to TIME")
        if args.depth is not None and args.depth < 0:
            raise ValueError("--depth must be >= 0")
        now = now_us()
        if series:
            if not (args.every and args.start and args.end):
                raise ValueError("a series needs --every, --from and --to")
            step = parse_duration(args.every)
            start, end = parse_time(args.start, now), parse_time(args.end, now)
            if start > end:
                raise ValueError(f"--from {args.start} is after --to {args.end}")
        else:
            at = parse_time(args.at, now)
        fmt = args.format or ("csv" if series else "table")
        if fmt == "parquet" and not args.output:
            raise ValueError("--format parquet needs --output FILE")
        dsn = dsn_from_args(args, "book")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            if series:
                return _series(conn, args, fmt, start, end, step)
            book = book_at(conn, args.ticker, at).depth(args.depth)
    except (FleetError, ValueError, OSError, psycopg.Error) as exc:
        return error_exit(PROG, exc)
    if book.reasons == ("no_snapshot",):
        print(f"{PROG}: {args.ticker}: no snapshot at or before {fmt_us(book.at_us)} "
              "(unknown ticker, or before the fleet first saw its book)", file=sys.stderr)
        return 1
    if fmt == "table":
        text = render_table(book) + "\n"
    elif fmt == "json":
        text = orjson.dumps(book.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        with open_sink(fmt, args.output, COLUMNS) as sink:
            sink.write(_rows(book))
        text = ""
    if text:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    if book.uncertain:
        print(f"{PROG}: uncertain: {', '.join(book.reasons)}", file=sys.stderr)
        return EXIT_UNCERTAIN
    return 0


def _series(conn: psycopg.Connection[Any], args: argparse.Namespace, fmt: str, start: int, end: int,
            step: int) -> int:
    if fmt == "table":
        raise ValueError("a series is written as csv, json (lines) or parquet")
    n = len(instants(start, end, step))
    uncertain = 0
    with open_sink(fmt, args.output, COLUMNS) as sink, \
            progress.Progress(f"book {args.ticker}", total=n, unit="books", enabled=args.progress) as bar:
        for book in book_series(conn, args.ticker, start, end, step):
            sink.write(_rows(book.depth(args.depth)))
            uncertain += book.uncertain
            bar.advance(1)
    print(f"{PROG}: {n:,} book(s) of {args.ticker} from {fmt_us(start)} to {fmt_us(end)} every "
          f"{args.every}, {sink.rows:,} row(s)" + (f" -> {args.output}" if args.output else "")
          + (f"; {uncertain:,} uncertain" if uncertain else ""), file=sys.stderr)
    return EXIT_UNCERTAIN if uncertain else 0
