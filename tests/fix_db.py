"""PostgreSQL fixtures: throwaway clusters per test session, a fresh database per test.

Fresh databases are cloned from migrated templates (``CREATE DATABASE ... TEMPLATE``), which is
much faster than re-running the migrations for every test. Service roles get the fixed test
passwords in ``ROLE_PASSWORDS`` so tests connect as ``gatherer``, ``dedup_reader``,
``deduplicator`` or ``analyst`` for real (scram-sha-256 over TCP).

Gatherer storage engines. ``pg_cluster`` is the cluster of the test's ``storage``: ``native``
(daily partitions; the default everywhere) or ``timescaledb`` (a second session cluster that
preloads TimescaleDB; its gatherer template is migrated with storage timescaledb, its production
template is the same native schema as everywhere). A suite that must pass on both engines opts in
with ``pytest_generate_tests = both_storages`` in its conftest: every test there that reaches a
database through ``pg_cluster`` (``gatherer_dsn``, ``production_dsn``, ``fresh_database``) then
runs once per engine, with ids ``[native]`` / ``[timescaledb]``. ``--storage`` narrows the engines
(e.g. ``--storage native`` on a machine being set up); the default, and CI, is both.
``pg_cluster`` is function scoped, so a module- or session-scoped fixture takes
``native_cluster`` (or ``timescale_cluster``) itself.
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
STORAGES = ("native", "timescaledb")
_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--storage", default=",".join(STORAGES),
                     help="gatherer storage engines the both-engine suites run on (comma list of "
                          f"{', '.join(STORAGES)}; default: both)")


def storages(config: pytest.Config) -> list[str]:
    chosen = [s.strip() for s in str(config.getoption("storage")).split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STORAGES))
    if unknown or not chosen:
        raise pytest.UsageError(f"--storage: expected a comma list of {', '.join(STORAGES)}, got "
                                f"{config.getoption('storage')!r}")
    return chosen


def both_storages(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests`` for a suite that runs on every gatherer storage engine."""
    if "storage" in metafunc.fixturenames:
        metafunc.parametrize("storage", storages(metafunc.config), scope="session")


def role_dsn(dsn: str, role: str) -> str:
    """The same database as ``dsn``, connecting as ``role`` with its test password."""
    return make_conninfo(dsn, user=role, password=ROLE_PASSWORDS[role])


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def _cluster_with_templates(name: str, timescaledb: bool) -> PgCluster:
    cluster = PgCluster.create(fast=True, name=name, timescaledb=timescaledb)
    try:
        for target in ("gatherer", "production"):
            dsn = cluster.create_database(f"template_{target}")
            apply_migrations(dsn, target, storage="timescaledb" if timescaledb else "native")  # type: ignore[arg-type]
            apply_roles(dsn, ROLE_PASSWORDS)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@pytest.fixture(scope="session")
def native_cluster() -> Iterator[PgCluster]:
    """A running throwaway cluster, with migrated templates for both targets (native partitions)."""
    cluster = _cluster_with_templates("test", timescaledb=False)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def timescale_cluster() -> Iterator[PgCluster]:
    """A running cluster that preloads TimescaleDB; its gatherer template uses hypertables.

    Fails (never skips) with one line when no TimescaleDB-enabled PostgreSQL exists: setup
    builds one (scripts/timescaledb.sh).
    """
    cluster = _cluster_with_templates("test-ts", timescaledb=True)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def storage() -> str:
    """The gatherer storage engine of this test: native unless the suite runs both_storages."""
    return "native"


# Function scope on purpose: a session-scoped fixture depending on a parameter that only some
# suites set would be cached across them (a later native-only test got the TimescaleDB cluster).
@pytest.fixture
def pg_cluster(storage: str, request: pytest.FixtureRequest) -> PgCluster:
    """The session cluster for this test's storage engine (see the module docstring)."""
    cluster: PgCluster = request.getfixturevalue("timescale_cluster" if storage == "timescaledb"
                                                 else "native_cluster")
    return cluster


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
def timescale_gatherer_dsn(timescale_cluster: PgCluster) -> Iterator[str]:
    """A fresh TimescaleDB gatherer database, for tests about TimescaleDB itself."""
    dsn = fresh_database(timescale_cluster, "gatherer")
    yield dsn
    _drop_quietly(timescale_cluster, dsn)


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A private cluster a test may stop, kill and restart without disturbing the others."""
    cluster = PgCluster.create(fast=True, name="own")
    try:
        yield cluster
    finally:
        cluster.destroy()
