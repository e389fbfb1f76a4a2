"""What ``kalshi-data export`` and ``kalshi-data import`` share: settings and connections.

The flags themselves are declared in kalshi_data/export_cmd.py (kept import-light, so other
``kalshi-data`` commands do not pay for pyarrow and boto3). Flags override the optional ``--config`` file. Expected failures become ``UsageError`` (exit 2)
or the archive/storage errors the commands print as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from kalshi_data.archive.config import ArchiveConfig
from kalshi_data.archive.days import days_between, parse_day, utc_today
from kalshi_data.archive.s3 import S3Location, S3Store
from kalshi_data.archive.schema import TABLES, TableSpec
from shared.config import DatabaseConfig, Environment, fetch_secrets, load_config
from shared.db import KEEPALIVES, classify, connect_kwargs

ALL = "all"  # --table all: every table of schema.TABLES, event tables first


class UsageError(Exception):
    """A bad or missing flag; printed as one line, exit 2."""


@dataclass(frozen=True)
class Settings:
    config: ArchiveConfig
    database: DatabaseConfig
    dsn: str | None
    location: S3Location
    tables: tuple[TableSpec, ...]
    days: tuple[date, ...]
    tmp_dir: Path | None


def resolve(args: argparse.Namespace, now_s: float | None = None) -> Settings:
    """Merge the config file and the flags; raises ``UsageError``, ``ConfigError`` or, for a
    database password that cannot be read, ``SecretError``.

    The S3 endpoint is ``--endpoint-url``, else ``archive.endpoint_url``, else the standard
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` override (shared/config.py), else AWS's own.
    """
    environment = Environment.from_os()
    cfg = load_config(args.config, ArchiveConfig, environment) if args.config else ArchiveConfig()
    a = cfg.archive
    bucket = args.bucket or a.bucket
    if not bucket:
        raise UsageError("missing bucket: give --bucket or archive.bucket in --config")
    if not args.dsn and not args.config:
        raise UsageError("no database: give --dsn or --config")
    location = S3Location(bucket=bucket, prefix=args.prefix if args.prefix is not None else a.prefix,
                          endpoint_url=args.endpoint_url or a.endpoint_url
                          or environment.aws_endpoint_url("s3"),
                          region=args.region or a.region)
    names: list[str] = []
    for t in args.table:
        for name in (TABLES if t == ALL else [t]):
            if name not in TABLES:
                raise UsageError(f"unknown table {name!r} (expected one of {', '.join(TABLES)} or {ALL})")
            if name not in names:
                names.append(name)
    today = utc_today(time.time() if now_s is None else now_s)
    try:
        if args.day and (args.first or args.last):
            raise UsageError("give --day or --from/--to, not both")
        if args.day:
            days = [parse_day(args.day, today)]
        elif args.first and args.last:
            days = days_between(parse_day(args.first, today), parse_day(args.last, today))
        else:
            raise UsageError("give --day DAY, or --from DAY --to DAY")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tmp = args.tmp_dir or a.tmp_dir
    if not args.dsn:
        fetch_secrets(cfg.database)  # fail now, naming the secret, rather than at connect
    return Settings(cfg, cfg.database, args.dsn, location, tuple(TABLES[n] for n in names),
                    tuple(days), Path(tmp) if tmp else None)


def display_name(s: Settings) -> str:
    return (dataclasses.replace(s.database, dsn=s.dsn) if s.dsn else s.database).display_name()


def connect(s: Settings, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection without a statement timeout (a day's COPY can take minutes)."""
    name = display_name(s)
    try:
        if s.dsn:
            kw: dict[str, Any] = {"application_name": application_name, **KEEPALIVES}
            conn = psycopg.connect(s.dsn, autocommit=True, **kw)
        else:
            conn = psycopg.connect(s.database.dsn or "", autocommit=True,
                                   **connect_kwargs(s.database, application_name))
        conn.execute("SET statement_timeout = 0")
        return conn
    except psycopg.Error as exc:
        raise classify(exc, name) from None


def store(s: Settings) -> S3Store:
    st = S3Store(s.location)
    st.check_bucket()
    return st
