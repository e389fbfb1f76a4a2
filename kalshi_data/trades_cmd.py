"""``kalshi-data trades``: every trade over a range, streamed to CSV, JSON lines or Parquet.

::

    kalshi-data trades KXBTCD-26MAY1417-T98999.99 --from 2026-05-14 --to 2026-05-15 > trades.csv
    kalshi-data trades --series KXBTCD --from 2026-05-01 --to 2026-06-01 \\
        --format parquet --output may.parquet

Trades with ``from <= exchange_ts < to`` (µs on the exchange clock), oldest first, one row per
trade_id (production's identity). Read through a server-side cursor in batches, so memory stays
flat for any range; a progress bar (rows, rate, ETA) is drawn when stderr is a terminal.

Exit codes: 0 written (also when no trade matched: the summary says 0); 2 bad argument or
database unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg

from kalshi_data import progress
from kalshi_data._cli import add_db_flags, dsn_from_args, error_exit
from kalshi_data.fleet.errors import FleetError
from kalshi_data.output import FORMATS, open_sink
from kalshi_data.verify import fmt_us, now_us, parse_time

PROG = "kalshi-data trades"
BATCH = 20_000
COLUMNS = (("trade_id", "string"), ("ticker", "string"), ("exchange_ts", "int64"), ("time", "string"),
           ("yes_price", "int32"), ("no_price", "int32"), ("count", "int64"), ("taker_side", "string"),
           ("taker_outcome_side", "string"), ("taker_book_side", "string"), ("is_block_trade", "bool"),
           ("source", "string"))
_SELECT = ("SELECT t.trade_id::text, t.ticker, t.exchange_ts, t.yes_price, t.no_price, t.count, t.taker_side, "
           "t.taker_outcome_side, t.taker_book_side, t.is_block_trade, t.source FROM trades t")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trades", help="trades over a range, streamed to csv / json lines / parquet",
                       description="Every trade of some markets (or all) over [--from, --to), oldest "
                                   "first, from production.")
    p.add_argument("tickers", nargs="*", metavar="TICKER", help="markets (default: every market)")
    p.add_argument("--series", action="append", default=[], metavar="SERIES",
                   help="every market of a series (markets.series_ticker; repeatable)")
    p.add_argument("--event", action="append", default=[], metavar="EVENT",
                   help="every market of an event (markets.event_ticker; repeatable)")
    p.add_argument("--from", dest="start", required=True, help="first instant (inclusive)")
    p.add_argument("--to", dest="end", default="now", help="end (exclusive; default now)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), json (lines), parquet")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout (parquet needs it)")
    add_db_flags(p)
    progress.add_flags(p)
    p.set_defaults(run=run)


def _where(args: argparse.Namespace, start: int, end: int) -> tuple[str, list[Any]]:
    cond = ["t.exchange_ts >= %s", "t.exchange_ts < %s"]
    params: list[Any] = [start, end]
    any_of = []
    if args.tickers:
        any_of.append("t.ticker = ANY(%s)")
        params.append(list(args.tickers))
    if args.series:
        any_of.append("t.ticker IN (SELECT m.ticker FROM markets m WHERE m.series_ticker = ANY(%s))")
        params.append(list(args.series))
    if args.event:
        any_of.append("t.ticker IN (SELECT m.ticker FROM markets m WHERE m.event_ticker = ANY(%s))")
        params.append(list(args.event))
    if any_of:
        cond.append("(" + " OR ".join(any_of) + ")")
    return " WHERE " + " AND ".join(cond), params


def run(args: argparse.Namespace) -> int:
    try:
        now = now_us()
        start, end = parse_time(args.start, now), parse_time(args.end, now)
        if start >= end:
            raise ValueError(f"--from {args.start} is not before --to {args.end}")
        where, params = _where(args, start, end)
        dsn = dsn_from_args(args, "trades")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn, \
                open_sink(args.format, args.output, COLUMNS) as sink:
            row = conn.execute("SELECT count(*) FROM trades t" + where, params).fetchone()
            total = int(row[0]) if row else 0
            with progress.Progress("trades", total=total, enabled=args.progress) as bar, \
                    conn.transaction(), conn.cursor(name="kalshi_trades") as cur:
                cur.itersize = BATCH
                cur.execute(_SELECT + where + " ORDER BY t.exchange_ts, t.ticker, t.trade_id", params)
                while rows := cur.fetchmany(BATCH):
                    sink.write([(r[0], r[1], r[2], fmt_us(r[2]), *r[3:]) for r in rows])
                    bar.advance(len(rows))
    except (FleetError, ValueError, OSError, psycopg.Error) as exc:
        return error_exit(PROG, exc)
    print(f"{PROG}: {sink.rows:,} trade(s) from {fmt_us(start)} to {fmt_us(end)}"
          + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return 0
