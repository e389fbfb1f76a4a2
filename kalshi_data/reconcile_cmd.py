"""``kalshi-data reconcile --day YYYY-MM-DD`` (or ``--since``): compare production with Kalshi's
own trade history and have a gatherer backfill what production lacks (kalshi_data/reconcile.py).

Kalshi is read with a gatherer's key and token budget (``--gatherer-config``, the gatherer's own
YAML: kalshi, rate_limit and admin sections); missing trades are backfilled through the admin
API of every ``--gatherer-config`` given, the first that answers. Production is ``--dsn`` or the
database section of ``--config`` (the export's file), as a role that may write reconcile_runs
(deduplicator). ``--fleet fleet.json`` takes all of it from a local demo fleet.

Exit codes: 0 every day reconciled and complete (nothing still missing, no extra or mismatched
trade); 1 reconciled with differences (printed, kept in reconcile_trades); 2 bad flags, config,
secret or database; 75 (EX_TEMPFAIL) Kalshi could not be read to the end: the run is kept and
the next run of the day resumes it (the systemd unit retries).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from kalshi_data._cli import first_line, parse_duration

if TYPE_CHECKING:
    import psycopg

    from gatherer.config import GathererConfig
    from gatherer.rest import RestClient
    from kalshi_data.reconcile import Run, SliceResult

PROG = "kalshi-data reconcile"
EX_TEMPFAIL = 75
US = 1_000_000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reconcile", help="compare production's trades with Kalshi's trade history and backfill the missing",
        description="Page Kalshi's global trade listing for a UTC day (within the key's token budget), "
                    "report missing / extra / mismatched trades per series, have a gatherer backfill "
                    "the missing ones, and record the run in production's reconcile_runs.")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--day", metavar="DAY", help="UTC day: YYYY-MM-DD, yesterday or today")
    when.add_argument("--since", metavar="DAY",
                      help="every day from DAY to yesterday without a finished run (resuming interrupted ones)")
    p.add_argument("--gatherer-config", action="append", default=[], metavar="FILE",
                   help="a gatherer's YAML (repeatable): the first gives the Kalshi key and budget; "
                        "each one with an admin token is asked to backfill, in order")
    p.add_argument("--dsn", help="production DSN (password via PGPASSWORD or ~/.pgpass)")
    p.add_argument("--config", metavar="FILE", help="YAML with a database section (the export's file)")
    p.add_argument("--fleet", metavar="FLEET_JSON", help="take production and the gatherers from a demo fleet")
    p.add_argument("--slice", default="1h", help="compare this much of the day at a time; progress is "
                   "saved after each (default 1h)")
    p.add_argument("--margin", default="5s", help="read both sides this far beyond a slice (REST vs "
                   "WebSocket time; default 5s)")
    p.add_argument("--settle", default="10m", help="for today: compare only up to now minus this "
                   "(trades still being merged; default 10m)")
    p.add_argument("--fix-timeout", default="10m", help="how long to wait for backfilled trades to "
                   "reach production (default 10m)")
    p.add_argument("--no-fix", action="store_true", help="report only; do not ask for backfills")
    p.add_argument("--restart", action="store_true", help="abandon an interrupted run of the day instead of resuming it")
    p.add_argument("--metrics-file", metavar="PATH", help="node-exporter textfile to update with reconcile_* metrics")
    p.set_defaults(run=run)


@dataclass(frozen=True)
class Setup:
    days: list[date]
    dsn: str | None
    dbcfg: Any
    gatherers: list[GathererConfig]
    slice_s: int
    margin_s: int
    settle_us: int
    fix_timeout_s: float


def resolve(args: argparse.Namespace, today: date) -> Setup:
    """Flags and config files; raises ValueError / ConfigError / SecretError / FleetError."""
    from gatherer.config import GathererConfig
    from kalshi_data.archive.config import ArchiveConfig
    from kalshi_data.fleet.info import load_fleet_file
    from kalshi_data.reconcile import parse_day
    from shared.config import Environment, fetch_secrets, load_config

    if args.day:
        days = [parse_day(args.day, today)]
        if days[0] > today:
            raise ValueError(f"--day {args.day} is in the future")
    else:
        first = parse_day(args.since, today)
        if first >= today:
            raise ValueError(f"--since {args.since} must be before today")
        days = [date.fromordinal(o) for o in range(first.toordinal(), today.toordinal())]
    slice_us, margin_us = parse_duration(args.slice), parse_duration(args.margin)
    settle_us, fix_us = parse_duration(args.settle), parse_duration(args.fix_timeout)
    if slice_us % US or 86_400 * US % slice_us:
        raise ValueError(f"--slice {args.slice} must be whole seconds dividing a day (e.g. 10m, 1h)")
    if margin_us % US:
        raise ValueError(f"--margin {args.margin} must be whole seconds")
    env = Environment.from_os()
    dsn: str | None = args.dsn
    configs = list(args.gatherer_config)
    if args.fleet:
        info = load_fleet_file(args.fleet)
        dsn = dsn or str(info["databases"]["production"]["dsn"])
        configs += [str(p["config"]) for n, p in sorted(info["processes"].items()) if n.startswith("gatherer-")]
    dbcfg = None
    if not dsn:
        if not args.config:
            raise ValueError("no production database: give --dsn, --config or --fleet")
        dbcfg = load_config(args.config, ArchiveConfig, env).database
        fetch_secrets(dbcfg)
    if not configs:
        raise ValueError("no Kalshi key: give --gatherer-config FILE (a gatherer's YAML) or --fleet")
    gatherers = []
    for path in configs:
        cfg = load_config(path, GathererConfig, env)
        fetch_secrets(cfg)
        gatherers.append(cfg)
    return Setup(days, dsn, dbcfg, gatherers, slice_us // US, margin_us // US, settle_us, fix_us / US)


def run(args: argparse.Namespace) -> int:
    from kalshi_data.fleet.errors import FleetError
    from kalshi_data.reconcile import ReconcileError
    from shared.errors import ConfigError, SecretError

    today = datetime.now(UTC).date()
    try:
        s = resolve(args, today)
    except (ValueError, ConfigError, SecretError, FleetError) as exc:
        print(f"{PROG}: {first_line(exc)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, s))
    except ReconcileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def _connect(s: Setup) -> psycopg.Connection[Any]:
    import psycopg

    from shared.db import connect_kwargs

    if s.dsn:
        return psycopg.connect(s.dsn, autocommit=True, connect_timeout=10, application_name="kalshi-data-reconcile")
    return psycopg.connect(s.dbcfg.dsn or "", autocommit=True, **connect_kwargs(s.dbcfg, "kalshi-data-reconcile"))


async def _run(args: argparse.Namespace, s: Setup) -> int:
    import psycopg
    from prometheus_client import CollectorRegistry

    from gatherer.errors import AuthRejected, RestError
    from kalshi_data.reconcile import AdminBackfill, Options, ReconcileError
    from shared.metrics import ReconcileMetrics

    try:
        conn = _connect(s)
    except psycopg.Error as exc:
        print(f"{PROG}: cannot connect to production: {first_line(exc)}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    metrics = ReconcileMetrics(registry)
    client, spent = await _client(s.gatherers[0])
    admins = [(f"http://{g.admin.host}:{g.admin.port}", g.admin.token.reveal().strip())
              for g in s.gatherers if g.admin.token is not None]
    opts = Options(slice_s=s.slice_s, margin_s=s.margin_s, restart=args.restart)
    worst = 0
    try:
        with conn:
            await client.discover_limits()
            for day in s.days:
                if args.since and _finished(conn, day):
                    continue
                t0 = time.monotonic()
                try:
                    backfill = None if args.no_fix else AdminBackfill(admins)
                    result = await _one_day(conn, client, spent, day, s, opts, backfill)
                except (RestError, ReconcileError) as exc:
                    print(f"{PROG}: {day}: {exc}; the run is kept and the next run resumes it", file=sys.stderr)
                    worst = max(worst, EX_TEMPFAIL if isinstance(exc, RestError) else 2)
                    continue
                still = int(result["missing"]) - int(result["fixed"])
                metrics.reconcile_missing_trades.set(still)
                metrics.reconcile_found_missing_trades.set(int(result["missing"]))
                metrics.reconcile_fixed_trades.set(int(result["fixed"]))
                metrics.reconcile_extra_trades.set(int(result["extra"]))
                metrics.reconcile_mismatched_trades.set(int(result["mismatched"]))
                metrics.reconcile_kalshi_trades.set(int(result["kalshi_trades"]))
                metrics.reconcile_rest_tokens.set(int(result["rest_tokens"]))
                metrics.reconcile_duration_seconds.set(time.monotonic() - t0)
                metrics.reconcile_day_timestamp.set(_day_s(day))
                metrics.succeeded(time.time())
                if still or result["extra"] or result["mismatched"]:
                    worst = max(worst, 1)
    except AuthRejected as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        worst = 2
    except psycopg.Error as exc:
        print(f"{PROG}: production database: {first_line(exc)}", file=sys.stderr)
        worst = 2
    finally:
        await client.aclose()
        _write_metrics(args.metrics_file, registry)
    return worst


def _day_s(day: date) -> int:
    from kalshi_data.reconcile import day_start_s

    return day_start_s(day)


def _finished(conn: psycopg.Connection[Any], day: date) -> bool:
    row = conn.execute("SELECT 1 FROM reconcile_runs WHERE day = %s AND finished IS NOT NULL "
                       "AND error IS NULL LIMIT 1", (day,)).fetchone()
    return row is not None


async def _client(cfg: GathererConfig) -> tuple[RestClient, Any]:
    """A RestClient on the gatherer's key and budget, and a function giving (tokens, pages)
    spent so far (read from the client's own metrics)."""
    from prometheus_client import CollectorRegistry

    from gatherer.errors import KeyInvalid
    from gatherer.rest import RestClient
    from kalshi_data.reconcile import ReconcileError
    from shared.kalshi.auth import KeyLoadError, load_private_key
    from shared.metrics import GathererMetrics

    kalshi = cfg.kalshi.with_api_key()
    assert kalshi.private_key is not None  # the config schema requires one
    try:
        key = load_private_key(kalshi.private_key.reveal().encode(), kalshi.api_key_id)
    except KeyLoadError as exc:
        raise ReconcileError(str(KeyInvalid(kalshi.api_key_id, exc.reason))) from None
    reg = CollectorRegistry()
    client = RestClient(kalshi, key, cfg.rate_limit, GathererMetrics(reg), auth_retry_s=kalshi.auth_retry_s)
    return client, spent_reader(reg)


def spent_reader(reg: Any) -> Any:
    """A function giving the (read tokens, trade-history pages) a RestClient built on ``reg``'s
    GathererMetrics has spent so far."""

    def spent() -> tuple[int, int]:
        tokens = reg.get_sample_value("rest_tokens_spent_total", {"bucket": "read"}) or 0.0
        pages = sum(reg.get_sample_value("rest_requests_total", {"endpoint": e, "status": "200"}) or 0.0
                    for e in ("/markets/trades", "/historical/trades"))
        return int(tokens), int(pages)

    return spent


async def _one_day(conn: psycopg.Connection[Any], client: RestClient, spent: Any, day: date, s: Setup,
                   opts: Any, backfill: Any) -> dict[str, Any]:
    from kalshi_data.reconcile import (
        ReconcileError,
        compare_day,
        day_start_s,
        finish,
        fix_missing,
        lock_day,
        note_error,
        start_or_resume,
    )

    lock_day(conn, day)
    try:
        start_us = day_start_s(day) * US
        window_end = min(start_us + 86_400 * US, time.time_ns() // 1000 - s.settle_us)
        if window_end <= start_us:
            raise ReconcileError(f"{day} has not settled yet (--settle {s.settle_us // US} s)")
        r = start_or_resume(conn, day, window_end, s.slice_s, opts.restart)
        partial = "" if r.window_end >= start_us + 86_400 * US else \
            f" up to {datetime.fromtimestamp(r.window_end / US, UTC):%H:%M:%S}Z (day not over)"
        head = f"resuming run {r.run_id} at slice {r.slices_done + 1}/{r.slices_total}" if r.resumed \
            else f"run {r.run_id}, {r.slices_total} slice(s) of {r.slice_s} s"
        print(f"reconcile {day}{partial}: {head}", flush=True)
        try:
            await compare_day(conn, client, r, opts, spent, on_slice=_progress(r))
        except Exception as exc:
            note_error(conn, r, f"{type(exc).__name__}: {first_line(exc)}")
            raise
        if backfill is not None:
            found, fixed = await fix_missing(conn, r, backfill, s.fix_timeout_s)
            if found:
                print(f"  fix pass: asked for a backfill of {found:,} missing trade(s); {fixed:,} reached production",
                      flush=True)
        result = finish(conn, r)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (20_020, day.toordinal()))
    _print(day, result)
    return result


def _progress(r: Run) -> Any:
    def on_slice(i: int, res: SliceResult) -> None:
        if res.missing or res.extra or res.mismatched or res.rejected:
            print(f"  slice {i + 1}/{r.slices_total}: kalshi {res.kalshi:,}, production {res.production:,}, "
                  f"missing {len(res.missing):,}, extra {len(res.extra):,}, mismatched {len(res.mismatched):,}"
                  + (f", unreadable on Kalshi {res.rejected:,}" if res.rejected else ""), flush=True)
    return on_slice


def _print(day: date, r: dict[str, Any]) -> None:
    secs = (r["finished"] - r["started"]) / US
    print(f"reconcile {day}: kalshi {r['kalshi_trades']:,} trade(s), production {r['production_trades']:,}; "
          f"missing {r['missing']:,} (fixed {r['fixed']:,}, still missing {r['missing'] - r['fixed']:,}), "
          f"extra {r['extra']:,}, mismatched {r['mismatched']:,}; {r['rest_pages']:,} REST page(s), "
          f"{r['rest_tokens']:,} token(s); {secs:,.1f} s since the run started")
    for series, c in sorted(r["by_series"].items()):
        print(f"  {series}: " + ", ".join(f"{k} {c[k]:,}" for k in ("missing", "extra", "mismatched") if c.get(k)))


def _write_metrics(path: str | None, registry: Any) -> None:
    from kalshi_data.export_cmd import _write_metrics as write

    write(path, registry, PROG)
