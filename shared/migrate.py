"""Migration runner: applies ``migrations/<target>/NNN_*.sql`` in order, one transaction each.

``schema_migrations`` records every applied file with its SHA-256; a file that changed after it
was applied stops the run (``MigrationError``) instead of leaving two databases that claim the
same version but differ. A session advisory lock makes two runners starting at once safe: the
second waits, then finds everything applied.

The same files also run standalone under ``psql -v ON_ERROR_STOP=1 -f`` (the runbook does that);
the runner adds only the bookkeeping.

The files are read from the ``migrations`` package through ``importlib.resources``: the
repository's ``migrations/`` folder in a checkout, the wheel's package data once installed, so a
host with nothing but the wheel can migrate. An installation without them fails with one line.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg

from shared.errors import MigrationError

Target = Literal["gatherer", "production"]
ROLES = ("gatherer", "dedup_reader", "deduplicator", "analyst")
# Any 64-bit constant shared by every runner; spells "kalshimg".
_LOCK_KEY = 0x6B616C7368696D67


def migrations_dir() -> Path:
    """The folder of the installed ``migrations`` package (the repository's migrations/ in a
    checkout); raises ``MigrationError`` when this installation has none."""
    try:
        root = importlib.resources.files("migrations")
    except ModuleNotFoundError:
        root = None
    # pip always installs wheels onto the file system, where files() is a real directory.
    if not isinstance(root, Path) or not (root / "roles.sql").is_file():
        raise MigrationError("migrations", "not installed with this kalshi-data (no migrations package "
                             "data next to shared/); reinstall from a complete wheel")
    return root


@dataclass(frozen=True)
class MigrationFile:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def list_migrations(target: Target, root: Path | None = None) -> list[MigrationFile]:
    folder = (root or migrations_dir()) / target
    if not folder.is_dir():
        raise MigrationError(str(folder), "migrations folder not found")
    out = []
    for p in sorted(folder.glob("*.sql")):
        m = re.match(r"^(\d+)_.+\.sql$", p.name)
        if not m:
            raise MigrationError(p.name, "file name must look like NNN_name.sql")
        out.append(MigrationFile(int(m.group(1)), p.name, p))
    if not out:
        raise MigrationError(str(folder), "no migration files (NNN_name.sql) in this installation")
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(str(folder), "two files share a version number")
    return out


def schema_version(target: Target, root: Path | None = None) -> int:
    """The newest version this code base ships for ``target``."""
    files = list_migrations(target, root)
    return files[-1].version if files else 0


def applied_version(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
    """The newest version applied to the connected database (0 when none)."""
    if conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0] is None:  # type: ignore[index]
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(dsn: str, target: Target, root: Path | None = None) -> list[str]:
    """Apply every pending file; returns the names applied (empty when up to date)."""
    files = list_migrations(target, root)
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
                " target TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {int(v): (n, c) for v, n, c in
                    conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()}
            for f in files:
                if f.version in done:
                    name, checksum = done[f.version]
                    if checksum != f.checksum:
                        raise MigrationError(f.name, f"changed after it was applied (recorded checksum "
                                             f"{checksum[:12]}, file now {f.checksum[:12]}); add a new "
                                             "migration instead of editing an applied one")
                    continue
                try:
                    with conn.transaction():
                        conn.execute(f.sql)  # type: ignore[arg-type]  # a trusted file from our repo
                        conn.execute("INSERT INTO schema_migrations (version, name, checksum, target) "
                                     "VALUES (%s, %s, %s, %s)", (f.version, f.name, f.checksum, target))
                except psycopg.Error as exc:
                    raise MigrationError(f.name, _first_line(exc)) from None
                applied_now.append(f.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def apply_roles(dsn: str, passwords: dict[str, str], root: Path | None = None) -> None:
    """Run roles.sql with the given role passwords (set as transaction-local settings only)."""
    path = (root or migrations_dir()) / "roles.sql"
    unknown = set(passwords) - set(ROLES)
    if unknown:
        raise MigrationError("roles.sql", f"unknown role(s): {', '.join(sorted(unknown))}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            with conn.transaction():
                for role, pw in passwords.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (f"kalshi.{role}_password", pw))
                conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise MigrationError("roles.sql", _first_line(exc)) from None
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
