"""The fleet's four throwaway PostgreSQL clusters (three gatherer-local, one production).

Each cluster is a ``shared.pgcluster.PgCluster`` on its planned port, with one database migrated
for its target (gatherers on their planned storage engine; a TimescaleDB gatherer's cluster
preloads the extension) and ``roles.sql`` applied. Service role passwords are random, generated into
``DIR/secrets/<database>-<role>.pw`` (mode 600) and handed to the services as ``password_file``,
so no password is ever on a command line, in a config file or in ``fleet.json``; the superuser
``postgres`` is trusted on 127.0.0.1 only, which is what ``fleet.json``'s DSNs use.

Clusters start in parallel (initdb dominates start-up). If any fails, every cluster already
created is destroyed before the error propagates.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.plan import DatabasePlan, FleetPlan
from shared.errors import MigrationError
from shared.migrate import apply_migrations, apply_roles
from shared.pgcluster import PgCluster, PgClusterError, find_binaries, find_timescaledb_binaries


def write_secret(path: Path, value: str) -> None:
    """Create ``path`` with mode 600 from the start (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    os.chmod(path, 0o600)


def _reachable_by(path: Path, user: str) -> bool:
    """True when ``user`` can traverse every ancestor of ``path`` (PostgreSQL refuses root, so as
    root the server runs as another account that must reach its data directory)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == pw.pw_gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


class FleetClusters:
    """Creates, holds and tears down the fleet's clusters; ``cluster(name)`` for tests."""

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self._clusters: dict[str, PgCluster] = {}

    def check_binaries(self) -> None:
        """Fail early, with one line, when no usable PostgreSQL is installed."""
        try:
            find_binaries()
            if any(d.timescaledb for d in self.plan.databases):
                find_timescaledb_binaries()
        except PgClusterError as exc:
            raise FleetError("PostgreSQL", str(exc)) from None

    def start(self) -> None:
        """Create, start, migrate and secure every planned cluster (in parallel)."""
        self.check_binaries()
        self.plan.pg_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=len(self.plan.databases)) as pool:
            futures = {db.name: pool.submit(self._start_one, db) for db in self.plan.databases}
            errors: list[FleetError] = []
            try:
                for name, fut in futures.items():
                    try:
                        self._clusters[name] = fut.result()
                    except FleetError as exc:
                        errors.append(exc)
            except BaseException:
                # Ctrl-C while clusters are being created: keep every one that got created so
                # it is destroyed too, not orphaned until interpreter exit.
                for name, fut in futures.items():
                    if name not in self._clusters and fut.exception() is None:
                        self._clusters[name] = fut.result()
                self.destroy()
                raise
        if errors:
            self.destroy()
            raise errors[0]

    def _base_dir(self, db: DatabasePlan) -> Path | None:
        # As root the server runs as `nobody`, which may not reach a private work directory
        # (pytest's tmp dirs are 0700): then PgCluster uses its own world-traversable temp dir.
        if os.geteuid() == 0 and not _reachable_by(db.base_dir.parent, "nobody"):
            return None
        return db.base_dir

    def _start_one(self, db: DatabasePlan) -> PgCluster:
        try:
            cluster = PgCluster.create(self._base_dir(db), port=db.port, fast=self.plan.fast_pg, name=db.name,
                                       timescaledb=db.timescaledb)
        except PgClusterError as exc:
            raise FleetError(db.name, f"PostgreSQL: {exc}") from None
        try:
            dsn = cluster.create_database(db.dbname)
            apply_migrations(dsn, db.target, storage=db.storage)  # type: ignore[arg-type]
            passwords = {}
            for role in db.roles:
                pw = secrets.token_urlsafe(24)
                write_secret(self.plan.password_file(db.name, role), pw)
                passwords[role] = pw
            apply_roles(dsn, passwords)
        except (MigrationError, PgClusterError) as exc:
            cluster.destroy()
            raise FleetError(db.name, str(exc)) from None
        except (psycopg.Error, OSError) as exc:
            cluster.destroy()
            raise FleetError(db.name, f"cannot prepare database {db.dbname}: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        return cluster

    # --- access for tests and the status view ------------------------------------------------
    def cluster(self, name: str) -> PgCluster:
        return self._clusters[name]

    def names(self) -> list[str]:
        return list(self._clusters)

    def dsn(self, name: str) -> str:
        """Superuser DSN (trusted on 127.0.0.1 only; contains no password)."""
        db = self.plan.database(name)
        return self._clusters[name].dsn(db.dbname)

    def role_dsn(self, name: str, role: str) -> str:
        """DSN as a service role, password read from its secret file."""
        db = self.plan.database(name)
        pw = self.plan.password_file(name, role).read_text(encoding="utf-8")
        return self._clusters[name].dsn(db.dbname, user=role, password=pw)

    def data_dir(self, name: str) -> Path:
        return self._clusters[name].data_dir

    # --- teardown ----------------------------------------------------------------------------
    def stop(self, fast: bool = True) -> list[str]:
        """Stop every cluster (``fast``: clean shutdown; else immediate) and remove its data.

        Returns one line per cluster that could not be stopped (empty when all went down).
        """
        problems = []
        for name, cluster in list(self._clusters.items()):
            try:
                cluster.stop(mode="fast" if fast else "immediate", timeout=30)
            except PgClusterError as exc:
                problems.append(f"{name}: {exc}")
            cluster.destroy()
            if cluster.is_running():
                problems.append(f"{name}: PostgreSQL (pid {cluster.pid()}) still running")
            del self._clusters[name]
        return problems

    def destroy(self) -> None:
        self.stop(fast=False)
