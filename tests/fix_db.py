"""PostgreSQL fixtures: one throwaway cluster per test session, a fresh database per test.

Fresh databases are cloned from migrated templates (``CREATE DATABASE ... TEMPLATE``), which is
much faster than re-running the migrations for every test. Service roles get the fixed test
passwords in ``ROLE_PASSWORDS`` so tests connect as ``gatherer``, ``dedup_reader``,
``deduplicator`` or ``analyst`` for real (scram-sha-256 over TCP).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.migrate import apply_migrations, apply_roles
from shared.pgcluster import PgCluster

ROLE_PASSWORDS = {"gatherer": "test-gatherer-pw", "dedup_reader": "test-reader-pw",
                  "deduplicator": "test-dedup-pw", "analyst": "test-analyst-pw"}
_counter = itertools.count()


def role_dsn(dsn: str, role: str) -> str:
    """The same database as ``dsn``, connecting as ``role`` with its test password."""
    return make_conninfo(dsn, user=role, password=ROLE_PASSWORDS[role])


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway cluster, with migrated templates for both targets."""
    cluster = PgCluster.create(fast=True, name="test")
    try:
        for target in ("gatherer", "production"):
            dsn = cluster.create_database(f"template_{target}")
            apply_migrations(dsn, target)
            apply_roles(dsn, ROLE_PASSWORDS)
        yield cluster
    finally:
        cluster.destroy()


def fresh_database(cluster: PgCluster, target: str, prefix: str | None = None) -> str:
    """A new database cloned from the migrated template; returns its superuser DSN."""
    import psycopg

    name = f"{prefix or target}_{next(_counter)}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "template_{target}"')
    dsn = cluster.dsn(name)
    # a cloned database keeps the template's identity; every gatherer DB must have its own
    if target == "gatherer":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE gatherer_meta SET db_uuid = gen_random_uuid()")
    return dsn


def _drop_quietly(cluster: PgCluster, dsn: str) -> None:
    # Dropping as we go keeps the session cluster small: removing dozens of databases' files
    # at the end of the run cost ~30 s on a loaded machine.
    if cluster.is_running():
        try:
            cluster.drop_database(dbname_of(dsn))
        except Exception:  # noqa: BLE001 - cleanup only; the cluster is removed at the end anyway
            pass


@pytest.fixture
def gatherer_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """Superuser DSN of a fresh, migrated gatherer database (roles applied); dropped afterwards."""
    dsn = fresh_database(pg_cluster, "gatherer")
    yield dsn
    _drop_quietly(pg_cluster, dsn)


@pytest.fixture
def production_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """Superuser DSN of a fresh, migrated production database (roles applied); dropped afterwards."""
    dsn = fresh_database(pg_cluster, "production")
    yield dsn
    _drop_quietly(pg_cluster, dsn)


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A private cluster a test may stop, kill and restart without disturbing the others."""
    cluster = PgCluster.create(fast=True, name="own")
    try:
        yield cluster
    finally:
        cluster.destroy()
