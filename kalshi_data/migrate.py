"""``kalshi-data migrate --target gatherer|production --dsn ...`` (and ``--roles``)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from shared.config import Environment, Secret
from shared.errors import KalshiDataError, MigrationError, SecretError
from shared.migrate import ROLES, STORAGES, apply_migrations, apply_roles


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("migrate", help="apply database migrations (idempotent)",
                       description="Apply migrations/<target>/*.sql in order, one transaction each. "
                                   "With --roles, also (re)apply migrations/roles.sql.")
    p.add_argument("--target", choices=("gatherer", "production"), required=True)
    p.add_argument("--dsn", required=True, help="libpq DSN of the database owner (password via PGPASSWORD "
                   "or ~/.pgpass, not on the command line)")
    p.add_argument("--storage", choices=STORAGES, default="auto",
                   help="gatherer engine when the database is created: auto (TimescaleDB when it is installed "
                        "and in shared_preload_libraries, else native partitions with a note), native, or "
                        "timescaledb (refuse when it is not usable); an existing database keeps its engine "
                        "(default: auto)")
    p.add_argument("--roles", action="store_true", help="apply roles.sql after the migrations")
    p.add_argument("--role-password-file", action="append", default=[], metavar="ROLE=PATH",
                   help="password for ROLE read from PATH (repeatable)")
    p.add_argument("--role-password-secret", action="append", default=[], metavar="ROLE=NAME",
                   help="password for ROLE from AWS Secrets Manager secret NAME (repeatable)")
    p.set_defaults(run=run)


def _role_passwords(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec, kind in [(s, "file") for s in args.role_password_file] + \
                      [(s, "secret") for s in args.role_password_secret]:
        role, sep, ref = spec.partition("=")
        if not sep or role not in ROLES or not ref:
            raise MigrationError("roles.sql", f"expected ROLE=VALUE with ROLE one of {', '.join(ROLES)}, "
                                 f"got \"{role}{'=...' if sep else ''}\"")
        if kind == "file":
            try:
                out[role] = open(ref, encoding="utf-8").read().strip()
            except OSError as exc:
                raise SecretError(f"file:{ref}", f"not readable ({exc.strerror})") from None
        else:
            out[role] = Secret(f"aws:{ref}", None, Environment.from_os().fetch_secret).reveal()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        passwords = _role_passwords(args) if args.roles else {}
        notices: list[str] = []
        try:
            applied = apply_migrations(args.dsn, args.target, storage=args.storage, notices=notices)
        finally:
            for note in notices:
                print(f"kalshi-data migrate: note: {note}", file=sys.stderr)
        if args.roles:
            apply_roles(args.dsn, passwords)
    except KalshiDataError as exc:
        print(f"kalshi-data migrate: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kalshi-data migrate: cannot connect to the database: {first}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied {len(applied)} migration(s) to {args.target}: {', '.join(applied)}")
    else:
        print(f"{args.target} schema is up to date")
    if args.roles:
        print(f"roles applied ({', '.join(sorted(passwords)) or 'no passwords changed'})")
    return 0
