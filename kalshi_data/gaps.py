"""``kalshi-data gaps --ticker T --since 1h``: one market's completeness, minute by minute.

Prints per-minute trade counts (and contracts and orderbook deltas) over the window, zero
minutes included so a hole is visible, then the market's coverage history: every
``coverage_events`` row for the ticker, plus connection/process-wide ones (which cover every
market), overlapping the window, with whether it was recovered; and its orderbook snapshots by
source (``resync`` ones follow a detected gap).

Reads production by default (``--dsn`` or ``--fleet``); ``--database gatherer-2`` with ``--fleet``
reads that gatherer's own database instead (same tables).

Exit codes: 0 printed; 1 the ticker is unknown (no market row, trade, delta or coverage event);
2 bad argument or database unreachable (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg

from kalshi_data._cli import add_db_flags, dsn_from_args
from kalshi_data.fleet.errors import FleetError
from kalshi_data.verify import US, fmt_us, now_us, parse_time

MINUTE = 60 * US


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gaps", help="per-minute trade counts and coverage history of one market",
                       description="Per-minute trades/deltas of one market and its coverage_events "
                                   "(seq gaps, outages, resyncs, backfills) over a window.")
    p.add_argument("--ticker", required=True, help="market ticker")
    p.add_argument("--since", default="1h", help="window start: now, 30m, 1h, 2d, ISO-8601 or epoch (default 1h)")
    p.add_argument("--until", default="now", help="window end (default now)")
    add_db_flags(p)
    p.set_defaults(run=run)


def minute_counts(conn: psycopg.Connection[Any], ticker: str, since: int, until: int) -> list[tuple[int, int, int, int]]:
    """(minute start µs, trades, contracts x100, deltas) for every minute in the window."""
    q = """
        WITH m AS (SELECT generate_series((%(lo)s / %(m)s) * %(m)s, %(hi)s - 1, %(m)s) AS minute),
             t AS (SELECT (exchange_ts / %(m)s) * %(m)s AS minute, count(*) AS n, sum(count) AS c
                     FROM trades WHERE ticker = %(t)s AND exchange_ts >= %(lo)s AND exchange_ts < %(hi)s GROUP BY 1),
             d AS (SELECT (exchange_ts / %(m)s) * %(m)s AS minute, count(*) AS n
                     FROM orderbook_deltas WHERE ticker = %(t)s AND exchange_ts >= %(lo)s AND exchange_ts < %(hi)s GROUP BY 1)
        SELECT m.minute, coalesce(t.n, 0), coalesce(t.c, 0), coalesce(d.n, 0)
          FROM m LEFT JOIN t USING (minute) LEFT JOIN d USING (minute) ORDER BY m.minute"""
    rows = conn.execute(q, {"lo": since, "hi": until, "m": MINUTE, "t": ticker}).fetchall()
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in rows]


def coverage_history(conn: psycopg.Connection[Any], ticker: str, since: int, until: int) -> list[tuple[Any, ...]]:
    """coverage_events of the market (and market-wide scopes) overlapping the window, oldest first."""
    return conn.execute(
        "SELECT gatherer_id, scope, ticker, kind, window_start, window_end, recovered, detail FROM coverage_events "
        "WHERE (ticker = %(t)s OR (ticker IS NULL AND scope <> 'market')) "
        "AND window_start < %(hi)s AND coalesce(window_end, %(hi)s) >= %(lo)s ORDER BY window_start, gatherer_id",
        {"t": ticker, "lo": since, "hi": until}).fetchall()


def run(args: argparse.Namespace) -> int:
    try:
        now = now_us()
        since, until = parse_time(args.since, now), parse_time(args.until, now)
        if since >= until:
            raise ValueError(f"--since {args.since} is not before --until {args.until}")
        dsn = dsn_from_args(args, "gaps")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            minutes = minute_counts(conn, args.ticker, since, until)
            history = coverage_history(conn, args.ticker, since, until)
            snaps = conn.execute(
                "SELECT source, count(*), max(snapshot_ts) FROM orderbook_snapshots WHERE ticker = %s "
                "AND snapshot_ts >= %s AND snapshot_ts < %s GROUP BY 1 ORDER BY 1",
                (args.ticker, since, until)).fetchall()
            known = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM markets WHERE ticker = %(t)s) OR EXISTS (SELECT 1 FROM trades WHERE ticker = %(t)s)"
                " OR EXISTS (SELECT 1 FROM orderbook_deltas WHERE ticker = %(t)s) "
                " OR EXISTS (SELECT 1 FROM coverage_events WHERE ticker = %(t)s)", {"t": args.ticker}).fetchone()
    except (FleetError, ValueError) as exc:
        print(f"kalshi-data gaps: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kalshi-data gaps: cannot read the database: {first}", file=sys.stderr)
        return 2
    if not (known and known[0]):
        print(f"kalshi-data gaps: ticker {args.ticker} not found (no market row, trade, delta or coverage event)",
              file=sys.stderr)
        return 1
    total = sum(m[1] for m in minutes)
    empty = sum(1 for m in minutes if m[1] == 0)
    print(f"{args.ticker}: {total:,} trade(s) in {len(minutes)} minute(s) from {fmt_us(since)} to {fmt_us(until)}; "
          f"{empty} minute(s) without a trade")
    print(f"{'minute (UTC)':<20} {'trades':>8} {'contracts':>12} {'deltas':>8}")
    for minute, n, contracts, deltas in minutes:
        print(f"{fmt_us(minute)[:16] + 'Z':<20} {n:>8,} {contracts / 100:>12,.2f} {deltas:>8,}")
    print(f"coverage history ({len(history)} event(s)):")
    for g, scope, ticker, kind, a, b, recovered, detail in history:
        dur = f"{(b - a) / US:,.1f}s" if b is not None else "ongoing"
        who = "" if ticker else f" [{scope}-wide]"
        print(f"  {fmt_us(a)} .. {fmt_us(b)} ({dur}) {g} {kind}{who} "
              f"{'recovered' if recovered else 'NOT RECOVERED'}"
              + (f" {json.dumps(detail, separators=(',', ':'))}" if detail else ""))
    if snaps:
        print("orderbook snapshots: " + ", ".join(f"{src} x{n} (last {fmt_us(last)})" for src, n, last in snaps))
    else:
        print("orderbook snapshots: none in window")
    return 0
