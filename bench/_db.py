"""The run's throwaway PostgreSQL: one fast cluster with migrated templates; fresh databases are
cloned from them per benchmark (``CREATE DATABASE ... TEMPLATE``: far faster than migrating)."""

from __future__ import annotations

import itertools
import os

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.migrate import apply_migrations, apply_roles
from shared.pgcluster import PgCluster

__all__ = ["ROLE_PASSWORDS", "create_cluster", "fresh_database", "role_dsn", "server_version"]

#: Throwaway passwords of the service roles in bench clusters (never used outside them).
ROLE_PASSWORDS = {
    "gatherer": "bench-gatherer-pw",
    "dedup_reader": "bench-reader-pw",
    "deduplicator": "bench-dedup-pw",
    "analyst": "bench-analyst-pw",
}
_counter = itertools.count()


def create_cluster(name: str = "bench") -> PgCluster:
    """A started fast cluster (fsync off) with ``template_gatherer`` and ``template_production``."""
    cluster = PgCluster.create(fast=True, name=name)
    try:
        for target in ("gatherer", "production"):
            dsn = cluster.create_database(f"template_{target}")
            apply_migrations(dsn, target)  # type: ignore[arg-type]
            apply_roles(dsn, ROLE_PASSWORDS)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def fresh_database(server_dsn: str, target: str, prefix: str | None = None) -> str:
    """A new database cloned from ``template_<target>``; returns its superuser DSN."""
    name = f"{prefix or target}_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "template_{target}"')
    dsn = make_conninfo(server_dsn, dbname=name)
    if target == "gatherer":  # every gatherer database must have its own identity
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE gatherer_meta SET db_uuid = gen_random_uuid()")
    return dsn


def role_dsn(dsn: str, role: str) -> str:
    """The same database as ``dsn``, connecting as ``role`` with its bench password."""
    return make_conninfo(dsn, user=role, password=ROLE_PASSWORDS[role])


def db_params(dsn: str) -> dict[str, str]:
    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"
