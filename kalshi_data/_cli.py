"""What the read-side commands (``gaps``, ``book``, ``trades``) share: which database to read,
durations, and one-line error text."""

from __future__ import annotations

import argparse
import re

from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.info import load_fleet_file

US = 1_000_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_US = {"ms": 1_000, "s": US, "m": 60 * US, "h": 3600 * US, "d": 86400 * US}


def add_db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database to read (production by default; any role that may SELECT)")
    p.add_argument("--fleet", metavar="FLEET_JSON", help="take the DSN from a demo's fleet.json")
    p.add_argument("--database", default="production", help="with --fleet: production or gatherer-N")


def dsn_from_args(args: argparse.Namespace, command: str) -> str:
    """The DSN chosen by ``--dsn`` or ``--fleet``/``--database``; FleetError otherwise."""
    if args.dsn:
        return str(args.dsn)
    if args.fleet:
        dbs = load_fleet_file(args.fleet)["databases"]
        if args.database not in dbs:
            raise FleetError(f"--database {args.database}", f"not in fleet.json; one of {', '.join(dbs)}")
        return str(dbs[args.database]["dsn"])
    raise FleetError(command, "give --dsn DSN or --fleet FLEET_JSON")


def parse_duration(text: str) -> int:
    """µs from ``500ms``, ``30s``, ``1m``, ``1h``, ``1d``."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 1m, 1h, 1d)")
    return int(float(m.group(1)) * _UNIT_US[m.group(2)])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_exit(prog: str, exc: BaseException) -> int:
    """One line on stderr for an expected failure (bad argument, unreachable or failing
    database); returns the exit code 2."""
    import sys

    import psycopg

    why = f"cannot read the database: {first_line(exc)}" if isinstance(exc, psycopg.Error) else first_line(exc)
    print(f"{prog}: {why}", file=sys.stderr)
    return 2
