"""Reconciliation of production against Kalshi's own trade history, one UTC day at a time.

Kalshi lists every trade on ``GET /markets/trades`` (and, older than its historical cutoff, on
``/historical/trades``): that listing is the authority production is compared with. A run:

1. walks the day in slices (``slice_s``, default an hour) and for each one pages Kalshi's global
   listing (no ticker filter, ``min_ts``/``max_ts``, ``limit=1000``, cursor) through the
   gatherer's token-budgeted ``RestClient`` (``gatherer/rest.py``: the same costs, budget,
   retries and tier choice as the gatherers'), reads production's trades of the slice, and
   records what differs in ``reconcile_trades`` and the totals in ``reconcile_runs``
   (migrations/production/004_reconcile.sql) -- after every slice, so an interrupted run is
   resumed where it stopped;
2. the fix pass: asks a gatherer's admin API to backfill each market's missing trades
   (``POST /admin/backfill-trades``: REST -> the gatherer's writer -> its DB -> the deduplicator,
   the normal path; reconcile never writes a trade into production) and waits for them to reach
   production's ``trade_ids``; ``fixed`` counts those that did.

A trade is *missing* when Kalshi lists it and production has no row with its ``trade_id``;
*extra* when production holds it and Kalshi does not list it; *mismatched* when both hold it
with a different yes price, count or taker side (reported, never overwritten: the first-seen
value is production's record). Kalshi's REST ``created_time`` and the WebSocket ``ts``
production may hold can differ slightly, so each slice's comparison reads both sides
``margin_s`` beyond its edges, while counting each trade in the one slice its own time falls in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from gatherer._ratelimit import Priority
from gatherer.rest import RestClient
from shared.kalshi.models import Rejected
from shared.kalshi.objects import trade_from_rest

US = 1_000_000
DAY_S = 86_400
#: Advisory-lock namespace: one run per day at a time (the second gets a clear error).
LOCK_NS = 20_020
Fields = tuple[str, int, int, int, str | None]  # (ticker, exchange_ts µs, yes_price, count, taker_side)


class ReconcileError(Exception):
    """An expected failure (another run holds the day, a day not yet over, no gatherer to fix
    through); printed as one line."""


@dataclass
class SliceResult:
    kalshi: int = 0
    production: int = 0
    rejected: int = 0
    missing: list[tuple[str, Fields]] = field(default_factory=list)
    extra: list[tuple[str, Fields]] = field(default_factory=list)
    mismatched: list[tuple[str, Fields, Fields]] = field(default_factory=list)


@dataclass
class Run:
    run_id: int
    day: date
    window_end: int
    slice_s: int
    slices_total: int
    slices_done: int
    resumed: bool
    by_series: dict[str, dict[str, int]]


def day_start_s(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def parse_day(text: str, today: date) -> date:
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return date.fromordinal(today.toordinal() - 1)
    try:
        return date.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not a day: {text!r} (use YYYY-MM-DD, yesterday or today)") from None


def series_of(ticker: str, known: dict[str, str | None]) -> str:
    """The market's series from production's ``markets``; the ticker's first part otherwise."""
    s = known.get(ticker)
    return s if s else ticker.split("-", 1)[0]


# ---- the two sides ---------------------------------------------------------------------------
async def kalshi_trades(client: RestClient, min_ts: int, max_ts: int, page_limit: int = 1000) -> tuple[dict[str, Fields], int]:
    """Kalshi's trades created in [min_ts, max_ts] (Unix seconds, inclusive), by trade_id, and
    how many objects could not be read (counted, never guessed)."""
    out: dict[str, Fields] = {}
    rejected = 0
    async for page in client.trades(min_ts=min_ts, max_ts=max_ts, limit=page_limit,
                                    priority=Priority.BACKFILL):
        for obj in page:
            row = trade_from_rest(obj, 0)
            if isinstance(row, Rejected):
                rejected += 1
                continue
            out[row.trade_id] = (row.ticker, row.exchange_ts, row.yes_price, row.count, row.taker_side)
    return out, rejected


def production_trades(conn: psycopg.Connection[Any], lo_us: int, hi_us: int) -> dict[str, Fields]:
    """Production's trades with exchange_ts in [lo_us, hi_us), by trade_id."""
    rows = conn.execute(
        "SELECT trade_id::text, ticker, exchange_ts, yes_price, count, taker_side FROM trades "
        "WHERE exchange_ts >= %s AND exchange_ts < %s", (lo_us, hi_us))
    return {r[0]: (r[1], int(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows}


def compare(kalshi: dict[str, Fields], prod: dict[str, Fields], lo_us: int, hi_us: int) -> SliceResult:
    """Diff of one slice [lo_us, hi_us); both maps may reach beyond it (the margins)."""
    res = SliceResult()
    for tid, k in kalshi.items():
        if not lo_us <= k[1] < hi_us:
            continue
        res.kalshi += 1
        p = prod.get(tid)
        if p is None:
            res.missing.append((tid, k))
        elif (p[2], p[3], p[4]) != (k[2], k[3], k[4]):
            res.mismatched.append((tid, k, p))
    for tid, p in prod.items():
        if not lo_us <= p[1] < hi_us:
            continue
        res.production += 1
        if tid not in kalshi:
            res.extra.append((tid, p))
    return res


# ---- persistence -----------------------------------------------------------------------------
def lock_day(conn: psycopg.Connection[Any], day: date) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NS, day.toordinal())).fetchone()
    if not (row and row[0]):
        raise ReconcileError(f"another reconcile of {day} is running (advisory lock held)")


def start_or_resume(conn: psycopg.Connection[Any], day: date, window_end_us: int, slice_s: int,
                    restart: bool) -> Run:
    """The day's interrupted run (finished IS NULL), or a new one."""
    if restart:
        conn.execute("UPDATE reconcile_runs SET finished = %s, error = coalesce(error, '') || "
                     "'abandoned by --restart' WHERE day = %s AND finished IS NULL", (time.time_ns() // 1000, day))
    row = conn.execute(
        "SELECT run_id, window_end, slice_s, slices_total, slices_done, by_series FROM reconcile_runs "
        "WHERE day = %s AND finished IS NULL ORDER BY run_id DESC LIMIT 1", (day,)).fetchone()
    if row is not None:
        return Run(int(row[0]), day, int(row[1]), int(row[2]), int(row[3]), int(row[4]), True, dict(row[5]))
    start_us = day_start_s(day) * US
    total = -(-(window_end_us - start_us) // (slice_s * US))
    rid = conn.execute(
        "INSERT INTO reconcile_runs (day, started, window_end, slice_s, slices_total) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING run_id",
        (day, time.time_ns() // 1000, window_end_us, slice_s, total)).fetchone()
    assert rid is not None
    return Run(int(rid[0]), day, window_end_us, slice_s, total, 0, False, {})


def record_slice(conn: psycopg.Connection[Any], run: Run, res: SliceResult, tokens: int, pages: int) -> None:
    """The slice's differences and the run's new totals, in one transaction."""
    tickers = sorted({f[0] for _, f in res.missing} | {f[0] for _, f in res.extra}
                     | {k[0] for _, k, _ in res.mismatched})
    known: dict[str, str | None] = {}
    if tickers:
        known = dict(conn.execute("SELECT ticker, series_ticker FROM markets WHERE ticker = ANY(%s)",
                                  (tickers,)).fetchall())
    per: dict[str, Counter[str]] = {}
    for kind, items in (("missing", res.missing), ("extra", res.extra)):
        for _, f in items:
            per.setdefault(series_of(f[0], known), Counter())[kind] += 1
    for _, k, _ in res.mismatched:
        per.setdefault(series_of(k[0], known), Counter())["mismatched"] += 1
    for s, c in per.items():
        cur = run.by_series.setdefault(s, {})
        for kind, n in c.items():
            cur[kind] = cur.get(kind, 0) + n
    rows: list[tuple[Any, ...]] = [(run.run_id, t, "missing", f[0], f[1], None) for t, f in res.missing]
    rows += [(run.run_id, t, "extra", f[0], f[1], None) for t, f in res.extra]
    rows += [(run.run_id, t, "mismatched", k[0], k[1], Jsonb({
        "kalshi": {"yes_price": k[2], "count": k[3], "taker_side": k[4]},
        "production": {"yes_price": p[2], "count": p[3], "taker_side": p[4]}}))
        for t, k, p in res.mismatched]
    with conn.transaction():
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO reconcile_trades (run_id, trade_id, kind, ticker, exchange_ts, detail) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        conn.execute(
            "UPDATE reconcile_runs SET slices_done = slices_done + 1, kalshi_trades = kalshi_trades + %s, "
            "production_trades = production_trades + %s, missing = missing + %s, extra = extra + %s, "
            "mismatched = mismatched + %s, rest_tokens = rest_tokens + %s, rest_pages = rest_pages + %s, "
            "by_series = %s WHERE run_id = %s",
            (res.kalshi, res.production, len(res.missing), len(res.extra), len(res.mismatched),
             tokens, pages, Jsonb(run.by_series), run.run_id))
    run.slices_done += 1


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class Options:
    slice_s: int = 3600
    margin_s: int = 5
    page_limit: int = 1000
    restart: bool = False


async def compare_day(conn: psycopg.Connection[Any], client: RestClient, run: Run, opts: Options,
                      spent: Callable[[], tuple[int, int]],
                      on_slice: Callable[[int, SliceResult], None] | None = None) -> None:
    """Every slice not done yet, in order, each recorded as it completes."""
    start_s = day_start_s(run.day)
    end_s_excl = -(-run.window_end // US)
    m = opts.margin_s
    while run.slices_done < run.slices_total:
        i = run.slices_done
        lo_s = start_s + i * run.slice_s
        hi_s = min(lo_s + run.slice_s, end_s_excl)
        lo_us, hi_us = lo_s * US, min(hi_s * US, run.window_end)
        tokens0, pages0 = spent()
        kalshi, rejected = await kalshi_trades(client, lo_s - m, hi_s - 1 + m, opts.page_limit)
        prod = production_trades(conn, lo_us - m * US, hi_us + m * US)
        res = compare(kalshi, prod, lo_us, hi_us)
        res.rejected = rejected
        tokens1, pages1 = spent()
        record_slice(conn, run, res, tokens1 - tokens0, pages1 - pages0)
        if on_slice is not None:
            on_slice(i, res)


Backfill = Callable[[str, int, int], Awaitable[None]]


async def fix_missing(conn: psycopg.Connection[Any], run: Run, backfill: Backfill, timeout_s: float,
                      poll_s: float = 1.0) -> tuple[int, int]:
    """Ask for a backfill of every market with missing trades, then wait (at most ``timeout_s``)
    for them to reach production. Returns (missing before, fixed); updates the run's rows."""
    rows = conn.execute(
        "SELECT trade_id::text, ticker, exchange_ts FROM reconcile_trades WHERE run_id = %s "
        "AND kind = 'missing' AND NOT fixed", (run.run_id,)).fetchall()
    if not rows:
        return 0, 0
    by_ticker: dict[str, list[int]] = {}
    for _, ticker, ts in rows:
        by_ticker.setdefault(ticker, []).append(int(ts))
    for ticker, ts in sorted(by_ticker.items()):
        # seconds, inclusive; a second either side for the REST/WS time difference
        await backfill(ticker, min(ts) // US - 1, max(ts) // US + 1)
    ids = [r[0] for r in rows]
    deadline = time.monotonic() + timeout_s
    arrived: set[str] = set()
    while True:
        got = conn.execute("SELECT trade_id::text FROM trade_ids WHERE trade_id = ANY(%s::uuid[])",
                           (ids,)).fetchall()
        arrived = {r[0] for r in got}
        if len(arrived) == len(ids) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_s)
    if arrived:
        with conn.transaction():
            conn.execute("UPDATE reconcile_trades SET fixed = true WHERE run_id = %s AND kind = 'missing' "
                         "AND trade_id = ANY(%s::uuid[])", (run.run_id, sorted(arrived)))
            conn.execute("UPDATE reconcile_runs SET fixed = (SELECT count(*) FROM reconcile_trades WHERE "
                         "run_id = %s AND kind = 'missing' AND fixed) WHERE run_id = %s",
                         (run.run_id, run.run_id))
    return len(ids), len(arrived)


def finish(conn: psycopg.Connection[Any], run: Run) -> dict[str, Any]:
    """Mark the run finished; returns its row as a dict."""
    row = conn.execute(
        "UPDATE reconcile_runs SET finished = %s, error = NULL WHERE run_id = %s RETURNING day, started, "
        "finished, window_end, kalshi_trades, production_trades, missing, extra, mismatched, fixed, "
        "rest_tokens, rest_pages, by_series", (time.time_ns() // 1000, run.run_id)).fetchone()
    assert row is not None
    keys = ("day", "started", "finished", "window_end", "kalshi_trades", "production_trades", "missing",
            "extra", "mismatched", "fixed", "rest_tokens", "rest_pages", "by_series")
    return dict(zip(keys, row, strict=True))


def note_error(conn: psycopg.Connection[Any], run: Run, why: str) -> None:
    """Why this session stopped; the run stays unfinished, so the next one resumes it."""
    conn.execute("UPDATE reconcile_runs SET error = %s WHERE run_id = %s", (why[:500], run.run_id))


# ---- the gatherer's admin API ----------------------------------------------------------------
class AdminBackfill:
    """``POST /admin/backfill-trades`` on the first gatherer that answers (then the next)."""

    def __init__(self, gatherers: Sequence[tuple[str, str]], timeout_s: float = 600.0) -> None:
        if not gatherers:
            raise ReconcileError("no gatherer admin API to backfill through")
        self._gatherers = list(gatherers)  # (base URL like http://host:port, bearer token)
        self._timeout = timeout_s
        self.requests = 0

    async def __call__(self, ticker: str, min_ts: int, max_ts: int) -> None:
        errors = []
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            for url, token in self._gatherers:
                try:
                    r = await http.post(f"{url.rstrip('/')}/admin/backfill-trades",
                                        params={"ticker": ticker, "min_ts": min_ts, "max_ts": max_ts},
                                        headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError as exc:
                    errors.append(f"{url}: {type(exc).__name__}")
                    continue
                self.requests += 1
                if r.status_code == 200:
                    return
                errors.append(f"{url}: HTTP {r.status_code}")
        raise ReconcileError(f"no gatherer could backfill {ticker}: {'; '.join(errors)}")
