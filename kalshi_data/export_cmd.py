"""``kalshi-data export``: archive table-days from production to S3 as Parquet (see
kalshi_data/archive/export.py for the layout and guarantees).

An archived day whose production rows no longer match its manifest (trades backfilled into it
later, a coverage window closed since) is exported again. ``--verify`` only compares, one line
per table-day (``ok`` / ``differs`` / ``missing`` / ``snapshot``), and writes nothing.

Exit codes: 0 every table-day exported or already archived (``--verify``: every day matches);
1 a failure (one line each on stderr; ``--verify``: a day differs or has no manifest); 2 bad
flags, config or secret; 75 (EX_TEMPFAIL) the deduplicator has not caught up past the day's end
yet and nothing else failed — the systemd unit retries later.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from kalshi_data import progress

if TYPE_CHECKING:  # the heavy modules (pyarrow, boto3) are imported when the command runs
    from prometheus_client import CollectorRegistry

    from kalshi_data.archive.export import ExportResult
    from kalshi_data.archive.s3 import S3Store
    from kalshi_data.archive.schema import TableSpec
    from shared.metrics import ArchiveMetrics

# Must equal kalshi_data.archive.schema.TABLES (tests/archive/test_cli.py checks).
TABLE_NAMES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "coverage_events",
               "markets", "events", "series")
EX_TEMPFAIL = 75
ERROR_TYPES = ("s3", "database", "parquet", "manifest")
# How many of the newest date= directories are checked for a manifest when computing the lag.
_LAG_LOOKBACK = 14
PROG = "kalshi-data export"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export", help="export table-days from production to S3 Parquet",
        description="Write s3://BUCKET/[PREFIX/]table=<table>/date=YYYY-MM-DD/part-<run>-NNNN.parquet "
                    "(zstd, sorted by ticker then time) and then _manifest.json. Re-running an "
                    "archived day does nothing; --force replaces it atomically.")
    add_common(p)
    progress.add_flags(p)
    p.add_argument("--force", action="store_true", help="re-export days that are already archived")
    p.add_argument("--verify", action="store_true",
                   help="only compare each day's manifest with production's rows (exit 1 on a difference)")
    p.add_argument("--allow-empty", action="store_true",
                   help="record a day with no rows as archived (empty manifest) instead of failing")
    p.add_argument("--no-wait-for-sync", action="store_true",
                   help="export even if sync_cursors are not past the day's end")
    p.add_argument("--sync-margin", type=int, metavar="SECONDS",
                   help="how far past the day's end every cursor must be (default 600)")
    p.add_argument("--max-rows-per-part", type=int, metavar="N",
                   help="rows per Parquet part (default 5000000)")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="node-exporter textfile to update with export_* metrics")
    p.set_defaults(run=run)


def add_common(p: argparse.ArgumentParser) -> None:
    """Flags shared by export and import."""
    p.add_argument("--config", metavar="FILE", help="YAML with database/archive/logging sections")
    p.add_argument("--dsn", help="libpq DSN (password via PGPASSWORD or ~/.pgpass); overrides "
                   "the config's database section")
    p.add_argument("--table", action="append", required=True, metavar="TABLE",
                   help=f"table to process (repeatable), or 'all': {', '.join(TABLE_NAMES)}")
    p.add_argument("--day", metavar="DAY", help="UTC day: YYYY-MM-DD, yesterday or today")
    p.add_argument("--from", dest="first", metavar="DAY", help="first day of a range (inclusive)")
    p.add_argument("--to", dest="last", metavar="DAY", help="last day of a range (inclusive)")
    p.add_argument("--bucket", help="S3 bucket (overrides archive.bucket)")
    p.add_argument("--prefix", help="key prefix inside the bucket (overrides archive.prefix)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--region", help="AWS region of the bucket")
    p.add_argument("--tmp-dir", metavar="DIR", help="local spool directory (one part at a time)")


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from kalshi_data.archive import _cli
    from kalshi_data.archive.errors import NotCaughtUp, error_type
    from kalshi_data.archive.export import ExportOptions, export_day
    from kalshi_data.archive.sync import check_caught_up
    from shared.errors import ConfigError, KalshiDataError, SecretError
    from shared.logging import setup_logging
    from shared.metrics import ArchiveMetrics

    try:
        s = _cli.resolve(args)
    except (_cli.UsageError, ConfigError, SecretError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    setup_logging(s.config.logging)
    a = s.config.archive
    margin_s = args.sync_margin if args.sync_margin is not None else a.sync_margin_s
    max_rows = args.max_rows_per_part or a.max_rows_per_part
    if max_rows <= 0 or margin_s < 0:
        print(f"{PROG}: --max-rows-per-part must be > 0 and --sync-margin >= 0", file=sys.stderr)
        return 2
    bar = progress.Progress("export", total=len(s.tables) * len(s.days), unit="table-days", rows=True,
                            enabled=args.progress)
    options = ExportOptions(max_rows_per_part=max_rows, force=args.force,
                            allow_empty=args.allow_empty, tmp_dir=s.tmp_dir, on_rows=bar.add_rows)
    registry = CollectorRegistry()
    metrics = ArchiveMetrics(registry)
    for spec in s.tables:  # every error series exists from the first run, so increase() sees 0 -> 1
        for t in ERROR_TYPES:
            metrics.export_errors_total.labels(table=spec.name, type=t)
    failures = waits = 0
    st: S3Store | None = None
    try:
        st = _cli.store(s)
        conn = _cli.connect(s, "kalshi-data-export")
    except KalshiDataError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        for spec in s.tables:
            metrics.export_errors_total.labels(table=spec.name, type=error_type(exc)).inc()
        _write_metrics(args.metrics_file or a.metrics_file, registry)
        return 1
    database = _cli.display_name(s)
    if args.verify:
        with conn:
            return _verify(conn, st, s.tables, s.days, database)
    with conn, bar:
        for spec in s.tables:
            for day in s.days:
                started = time.monotonic()
                try:
                    if not args.no_wait_for_sync:
                        check_caught_up(conn, spec.name, day.isoformat(), _day_end_us(day),
                                        margin_s * 1_000_000)
                    result = export_day(conn, st, spec, day, options, database)
                except NotCaughtUp as exc:
                    waits += 1
                    print(f"{PROG}: {spec.name} {day}: {exc}", file=sys.stderr)
                    continue
                except KalshiDataError as exc:
                    failures += 1
                    metrics.export_errors_total.labels(table=spec.name, type=error_type(exc)).inc()
                    print(f"{PROG}: {spec.name} {day}: {exc}", file=sys.stderr)
                    metrics.export_duration_seconds.labels(table=spec.name).observe(
                        time.monotonic() - started)
                    continue
                finally:
                    bar.advance(1)
                metrics.export_duration_seconds.labels(table=spec.name).observe(result.seconds)
                if result.status in ("exported", "re-exported"):
                    metrics.export_rows_total.labels(table=spec.name).inc(result.rows)
                    metrics.export_bytes_total.labels(table=spec.name).inc(result.bytes)
                print(_describe(result))
            _set_lag(metrics, st, spec)
    _write_metrics(args.metrics_file or a.metrics_file, registry)
    if failures:
        return 1
    return EX_TEMPFAIL if waits else 0


def _verify(conn: object, st: S3Store, tables: tuple[TableSpec, ...], days: tuple[date, ...],
            database: str) -> int:
    """``--verify``: one line per table-day; 1 when any day differs from its manifest."""
    from kalshi_data.archive.export import verify_day
    from shared.errors import KalshiDataError

    bad = 0
    for spec in tables:
        for day in days:
            try:
                c = verify_day(conn, st, spec, day, database)  # type: ignore[arg-type]
            except KalshiDataError as exc:
                print(f"{PROG}: {spec.name} {day}: {exc}", file=sys.stderr)
                bad += 1
                continue
            upd = (f", newest update {c.production_updated} vs {c.archived_updated}"
                   if c.production_updated != c.archived_updated else "")
            if c.status == "ok":
                print(f"ok {c.table} {c.day}: {c.production_rows:,} rows in production and in the archive")
            elif c.status == "snapshot":
                print(f"snapshot {c.table} {c.day}: archived copy of {c.archived_rows:,} rows "
                      f"(a dated snapshot; production now has {c.production_rows:,})")
            elif c.status == "missing":
                bad += 1
                print(f"missing {c.table} {c.day}: no manifest; production has {c.production_rows:,} rows")
            else:
                bad += 1
                print(f"differs {c.table} {c.day}: production {c.production_rows:,} rows, archive "
                      f"{c.archived_rows:,}{upd} (the next export run exports it again)")
    return 1 if bad else 0


def _day_end_us(day: date) -> int:
    from kalshi_data.archive.days import day_range_us

    return day_range_us(day)[1]


def _describe(r: ExportResult) -> str:
    if r.status == "legacy":
        return (f"unchanged {r.table} {r.day}: archived in the layout before table=/date= "
                f"({r.rows:,} rows in {r.parts} part(s)) at {r.url}; move it as docs/runbook.md "
                "says, or --force re-exports into the new layout")
    if r.status == "unchanged":
        return (f"unchanged {r.table} {r.day}: already archived ({r.rows:,} rows in {r.parts} "
                f"part(s)) at {r.url}; --force re-exports")
    if r.status == "re-exported":
        return (f"re-exported {r.table} {r.day}: production differed from the archive; now "
                f"{r.rows:,} rows in {r.parts} part(s) -> {r.url}")
    rate = r.rows / r.seconds if r.seconds > 0 else 0.0
    return (f"exported {r.table} {r.day}: {r.rows:,} rows in {r.parts} part(s), "
            f"{r.bytes / 1e6:.1f} MB, {r.seconds:.1f} s ({rate:,.0f} rows/s) -> {r.url}")


def _set_lag(metrics: ArchiveMetrics, st: S3Store, spec: TableSpec, now_s: float | None = None) -> None:
    """export_lag_seconds: how long the oldest closed day after the newest archived one has been
    closed without an archive (0 when yesterday is archived). Left unset if nothing is archived."""
    import logging

    from kalshi_data.archive.days import DAY_US, day_range_us
    from kalshi_data.archive.export import table_prefix
    from kalshi_data.archive.manifest import MANIFEST_NAME
    from shared.errors import KalshiDataError

    try:
        newest: date | None = None
        # the Hive layout, then the one before it (kept readable until moved)
        for base in (table_prefix(st, spec), st.location.key(spec.name) + "/"):
            days = sorted((d.rstrip("/").rsplit("date=", 1)[-1] for d in st.list_dirs(base)), reverse=True)
            for text in days[:_LAG_LOOKBACK]:
                try:
                    d = date.fromisoformat(text)
                except ValueError:
                    continue
                if st.head(f"{base}date={text}/{MANIFEST_NAME}") is not None:
                    newest = d if newest is None else max(newest, d)
                    break
    except KalshiDataError as exc:
        logging.getLogger("kalshi_data.archive.export").warning("cannot compute export lag: %s", exc)
        return
    if newest is None:
        return
    now_us = int((time.time() if now_s is None else now_s) * 1_000_000)
    pending_end = day_range_us(newest)[1] + DAY_US
    metrics.export_lag_seconds.labels(table=spec.name).set(max(0, now_us - pending_end) / 1e6)


def _write_metrics(path: str | None, registry: CollectorRegistry, prog: str = PROG) -> None:
    """Merge ``registry`` into the node-exporter textfile (also used by ``reconcile``)."""
    from kalshi_data.archive.textfile import write_textfile

    if not path:
        return
    try:
        write_textfile(Path(path), registry)
    except OSError as exc:
        print(f"{prog}: cannot write metrics file {path}: {exc.strerror or exc}", file=sys.stderr)
