"""``kalshi-data import``: load archived table-days from S3 back into a database.

Each day is verified against its manifest (sizes, sha256, row counts) and merged with
``ON CONFLICT DO NOTHING`` in one transaction (see kalshi_data/archive/importer.py).
Exit codes: 0 every day imported and checked; 1 a failure (one line each); 2 bad flags, config or secret.
"""

from __future__ import annotations

import argparse
import sys

from kalshi_data import progress
from kalshi_data.export_cmd import add_common

PROG = "kalshi-data import"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import", help="load archived table-days from S3 Parquet into a database",
        description="Read the day's _manifest.json, verify every part (size, sha256, rows), and "
                    "merge the rows with INSERT ... ON CONFLICT DO NOTHING, one transaction per day.")
    add_common(p)
    progress.add_flags(p)
    p.add_argument("--no-create-partition", action="store_true",
                   help="do not create a missing daily partition for the imported day")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kalshi_data.archive import _cli
    from kalshi_data.archive.importer import import_day
    from shared.errors import ConfigError, KalshiDataError, SecretError
    from shared.logging import setup_logging

    try:
        s = _cli.resolve(args)
    except (_cli.UsageError, ConfigError, SecretError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    setup_logging(s.config.logging)
    try:
        st = _cli.store(s)
        conn = _cli.connect(s, "kalshi-data-import")
    except KalshiDataError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    failures = 0
    database = _cli.display_name(s)
    bar = progress.Progress("import", total=len(s.tables) * len(s.days), unit="table-days", rows=True,
                            enabled=args.progress)
    with conn, bar:
        for spec in s.tables:
            for day in s.days:
                try:
                    r = import_day(conn, st, spec, day, s.tmp_dir, database,
                                   create_partition=not args.no_create_partition, on_rows=bar.add_rows)
                except KalshiDataError as exc:
                    failures += 1
                    print(f"{PROG}: {spec.name} {day}: {exc}", file=sys.stderr)
                    continue
                finally:
                    bar.advance(1)
                extra = f", {r.superseded:,} superseded by trade_ids" if r.superseded else ""
                print(f"imported {r.table} {r.day}: {r.rows:,} rows checked against the manifest "
                      f"({r.inserted:,} new, {r.present:,} already present{extra}) from {r.parts} "
                      f"part(s) in {r.seconds:.1f} s")
    return 1 if failures else 0
