"""``kalshi-data query "SQL"``: SQL over the Parquet archive where it lies, with DuckDB.

::

    kalshi-data query --archive s3://kalshi-prod-archive \\
        "SELECT ticker, count(*) AS trades FROM trades WHERE date = '2026-11-24' GROUP BY 1 ORDER BY 2 DESC"
    kalshi-data query --archive /data/archive --format parquet --output spread.parquet "SELECT ..."

Each archived table is a view named like the production table (``trades``, ``orderbook_deltas``,
``markets``, ...) over exactly the parts its manifests list, plus a ``date`` column (the Hive
partition, ``YYYY-MM-DD``) that prunes whole days; see kalshi_data/archive/query.py. For users
without AWS analytics (Athena reads the same layout through the optional Glue catalog,
terraform/glue.tf).

DuckDB is an optional extra: ``pip install 'kalshi-data[query]'``.

Exit codes: 0 the result; 2 bad argument, DuckDB missing, archive unreadable or SQL error.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from typing import Any

import orjson

PROG = "kalshi-data query"
FETCH = 50_000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("query", help="SQL over the Parquet archive (local or S3) with DuckDB",
                       description="Run SQL with DuckDB over the archive where it lies: one view "
                                   "per archived table plus its `date` partition column.")
    p.add_argument("sql", help="the query (DuckDB SQL)")
    p.add_argument("--archive", metavar="ROOT",
                   help="local directory or s3://bucket[/prefix] (default: archive.bucket/prefix of --config)")
    p.add_argument("--config", metavar="FILE", help="YAML with an archive section (as for export/import)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--region", help="AWS region of the bucket")
    p.add_argument("--table", action="append", metavar="TABLE",
                   help="expose only these tables (repeatable; default: the tables the SQL names)")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                   help="table (default), csv, json (lines), parquet (needs --output)")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(run=run)


def _root(args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    from kalshi_data.archive.config import ArchiveConfig
    from shared.config import load_config

    endpoint, region = args.endpoint_url, args.region
    if args.archive:
        return args.archive, endpoint, region
    if args.config:
        a = load_config(args.config, ArchiveConfig).archive
        if a.bucket:
            root = f"s3://{a.bucket}/{a.prefix.strip('/')}".rstrip("/")
            return root, endpoint or a.endpoint_url, region or a.region
    raise ValueError("give --archive ROOT (a directory or s3://bucket/prefix), or --config with archive.bucket")


def run(args: argparse.Namespace) -> int:
    try:
        import duckdb
    except ImportError:
        print(f"{PROG}: DuckDB is not installed; it is an optional extra: pip install 'kalshi-data[query]'",
              file=sys.stderr)
        return 2
    from kalshi_data.archive.errors import ArchiveError
    from kalshi_data.archive.query import attach_archive
    from kalshi_data.archive.schema import TABLES
    from shared.errors import ConfigError

    try:
        if args.format == "parquet" and not args.output:
            raise ValueError("--format parquet needs --output FILE")
        for t in args.table or ():
            if t not in TABLES:
                raise ValueError(f"unknown table {t!r} (one of {', '.join(TABLES)})")
        root, endpoint, region = _root(args)
        # only the tables the query names: each costs a read of every one of its days' manifests
        tables = args.table or [t for t in TABLES if re.search(rf"\b{t}\b", args.sql)] or list(TABLES)
        con = duckdb.connect()
        found = attach_archive(con, root, endpoint_url=endpoint, region=region, tables=tables)
        if not found:
            raise ValueError(f"no archived table-day under {root} (layout table=<t>/date=<d>/_manifest.json)")
        result = con.sql(args.sql)
        n = 0 if result is None else _write(result, args.format, args.output)
    except (ValueError, ConfigError, ArchiveError, OSError) as exc:
        print(f"{PROG}: {_first(exc)}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"{PROG}: {_first(exc)}", file=sys.stderr)
        return 2
    if args.output:
        print(f"{PROG}: {n:,} row(s) -> {args.output}", file=sys.stderr)
    return 0


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write(result: Any, fmt: str, path: str | None) -> int:
    """Stream the result in batches; returns the row count."""
    # a relation's Arrow reader: to_arrow_reader in DuckDB 2, fetch_arrow_reader before
    fetch = getattr(result, "to_arrow_reader", None) or result.fetch_arrow_reader
    reader = fetch(FETCH)
    names = list(reader.schema.names)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = 0
        with pq.ParquetWriter(str(path), reader.schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)
                n += batch.num_rows
        return n
    out = open(path, "w", encoding="utf-8", newline="") if path else sys.stdout  # noqa: SIM115
    try:
        n = 0
        if fmt == "table":
            rows = [tuple(r.values()) for b in reader for r in b.to_pylist()]
            out.write(_table(names, rows))
            return len(rows)
        w = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if w is not None:
            w.writerow(names)
        for batch in reader:
            for r in batch.to_pylist():
                if w is not None:
                    w.writerow(r.values())
                else:
                    out.write(orjson.dumps(r, default=str).decode() + "\n")
            n += batch.num_rows
        return n
    finally:
        if path:
            out.close()
        else:
            out.flush()


def _table(names: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    line = "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths, strict=True))
            for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _numeric(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True
