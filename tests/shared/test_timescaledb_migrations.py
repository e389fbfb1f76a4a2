"""The gatherer migrations on real TimescaleDB: the storage choice (checked before CREATE EXTENSION,
which is FATAL without the preload), the hypertable/compression schema, upgrading databases
migrated before TimescaleDB worked, standalone psql, and roles.sql next to TimescaleDB's API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerrors

from shared.errors import MigrationError
from shared.migrate import apply_migrations, apply_roles, list_migrations, migrations_dir
from shared.pgcluster import PgCluster, PgClusterError, find_timescaledb_binaries
from tests.fix_db import ROLE_PASSWORDS, role_dsn

DAY_US = 86_400_000_000
EVENT_TABLES = {"trades": "exchange_ts", "orderbook_deltas": "exchange_ts",
                "orderbook_snapshots": "snapshot_ts", "tickers": "exchange_ts"}
# The gatherer files as they were before TimescaleDB worked (what existing databases have applied).
BEFORE = ("001_schema.sql", "002_partitions.sql", "003_retention.sql")


@pytest.fixture(scope="module")
def unpreloaded_cluster() -> Iterator[PgCluster]:
    """A server whose installation HAS TimescaleDB but does not preload it: a plain package
    install, or any cluster started on a machine where TimescaleDB is installed."""
    cluster = PgCluster.create(fast=True, name="ts-nopreload", bin_dir=find_timescaledb_binaries().bin_dir)
    try:
        yield cluster
    finally:
        cluster.destroy()


def _new_db(cluster: PgCluster) -> str:
    return cluster.create_database(f"st_{uuid.uuid4().hex[:8]}")


def _storage(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SELECT storage FROM gatherer_meta").fetchone()[0])  # type: ignore[index]


def _jobs_on_hypertables(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM timescaledb_information.jobs "  # type: ignore[index]
                                "WHERE hypertable_name IS NOT NULL").fetchone()[0])


def test_installed_but_not_preloaded_auto_uses_native_with_one_notice(unpreloaded_cluster: PgCluster) -> None:
    dsn = _new_db(unpreloaded_cluster)
    notices: list[str] = []
    assert len(apply_migrations(dsn, "gatherer", notices=notices)) == len(list_migrations("gatherer"))
    assert _storage(dsn) == "partitioned"
    assert len(notices) == 1 and "not in shared_preload_libraries" in notices[0], notices
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM partition_status()").fetchone() == (4,)


def test_installed_but_not_preloaded_timescaledb_is_refused_in_one_line(unpreloaded_cluster: PgCluster) -> None:
    dsn = _new_db(unpreloaded_cluster)
    with pytest.raises(MigrationError) as err:
        apply_migrations(dsn, "gatherer", storage="timescaledb")
    msg = str(err.value)
    assert msg.startswith("migration 000_storage.sql: ") and "\n" not in msg
    assert "not in shared_preload_libraries" in msg and "connection is closed" not in msg
    with psycopg.connect(dsn) as conn:  # the server and the database are fine, nothing half-made
        assert conn.execute("SELECT to_regclass('gatherer_meta')").fetchone() == (None,)


def test_migrate_command_refuses_in_one_line(unpreloaded_cluster: PgCluster) -> None:
    dsn = _new_db(unpreloaded_cluster)
    res = subprocess.run([sys.executable, "-m", "kalshi_data", "migrate", "--target", "gatherer", "--dsn", dsn,
                          "--storage", "timescaledb"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "shared_preload_libraries" in lines[0], res.stderr
    res = subprocess.run([sys.executable, "-m", "kalshi_data", "migrate", "--target", "gatherer", "--dsn", dsn],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "native partitions" in res.stderr and "applied" in res.stdout


def test_auto_on_a_preloaded_server_makes_hypertables_with_acked_compression(timescale_cluster: PgCluster) -> None:
    dsn = _new_db(timescale_cluster)
    apply_migrations(dsn, "gatherer")
    assert _storage(dsn) == "timescaledb"
    assert _jobs_on_hypertables(dsn) == 0  # hardening 4: no TimescaleDB age-only policy, ever
    with psycopg.connect(dsn) as conn:
        dims = dict(conn.execute("SELECT hypertable_name, integer_interval FROM timescaledb_information.dimensions"
                                 ).fetchall())
        assert dims == dict.fromkeys(EVENT_TABLES, DAY_US)  # one-day chunks, in the schema's microseconds
        settings = {str(r[0]): (r[1], r[2], r[3]) for r in conn.execute(
            "SELECT hypertable, segmentby, orderby, index "
            "FROM timescaledb_information.hypertable_columnstore_settings").fetchall()}
        for table, time_column in EVENT_TABLES.items():
            segmentby, orderby, index = settings[table]
            assert segmentby == "ticker" and orderby.split(",")[0] == time_column, settings[table]
            assert "ingest_xid" in str(index), index  # the minmax sparse index pull.py relies on
        assert conn.execute("SELECT count(*) FROM partition_status()").fetchone() == (0,)


def test_explicit_storage_wins_and_a_database_keeps_its_engine(timescale_cluster: PgCluster) -> None:
    native = _new_db(timescale_cluster)
    apply_migrations(native, "gatherer", storage="native")
    assert _storage(native) == "partitioned"
    with pytest.raises(MigrationError) as err:
        apply_migrations(native, "gatherer", storage="timescaledb")
    assert "created with native partitions" in str(err.value) and "\n" not in str(err.value)
    assert apply_migrations(native, "gatherer", storage="auto") == []
    with pytest.raises(MigrationError, match="storage must be one of"):
        apply_migrations(native, "gatherer", storage="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["native", "timescaledb"])
def test_databases_migrated_before_timescaledb_worked_upgrade(
        engine: str, native_cluster: PgCluster, timescale_cluster: PgCluster, tmp_path: Path) -> None:
    """001-003 are never edited: a database that has them applied takes 000 (a no-op there) and
    004 and 005 without the runner refusing a changed file, and its old data ages out under the new rules."""
    old_root = tmp_path / "migrations"
    (old_root / "gatherer").mkdir(parents=True)
    for name in BEFORE:
        shutil.copy(migrations_dir() / "gatherer" / name, old_root / "gatherer" / name)
    cluster = timescale_cluster if engine == "timescaledb" else native_cluster
    dsn = _new_db(cluster)
    assert apply_migrations(dsn, "gatherer", old_root) == list(BEFORE)  # 001 alone decides, as it used to
    assert _storage(dsn) == ("timescaledb" if engine == "timescaledb" else "partitioned")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT ensure_partitions(7, 40)")
        conn.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                     "received_at) VALUES (gen_random_uuid(), 'KX-OLD', now_us() - 35 * %s, 1, 9999, 100, 'ws', 0)",
                     (DAY_US,))
        conn.execute("INSERT INTO trade_ids SELECT trade_id, exchange_ts, ticker FROM trades")
        if engine == "timescaledb":  # an operator's age-only policy, the kind hardening 4 forbids
            conn.execute("SELECT add_retention_policy('orderbook_deltas', drop_after => 7 * %s)", (DAY_US,))
    assert apply_migrations(dsn, "gatherer") == ["000_storage.sql", "004_book_order.sql", "005_timescale_retention.sql",
                                                 "006_recovery.sql"]
    if engine == "timescaledb":
        assert _jobs_on_hypertables(dsn) == 0
    apply_roles(dsn, ROLE_PASSWORDS)
    with psycopg.connect(role_dsn(dsn, "gatherer"), autocommit=True) as conn:
        conn.execute("INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at) "
                     "SELECT 'deduplicator', 'trades', ingest_xid::text::bigint, ingest_seq, 0 FROM trades")
        dropped = conn.execute("SELECT count(*) FILTER (WHERE dropped) FROM "
                               "drop_expired_partitions('trades', 30, ARRAY['deduplicator'])").fetchone()
        assert dropped is not None and dropped[0] >= 1
        assert conn.execute("SELECT prune_trade_ids(30)").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (0,)


@pytest.mark.parametrize("engine", ["native", "timescaledb"])
def test_gatherer_files_run_standalone_under_psql(engine: str, native_cluster: PgCluster,
                                                  timescale_cluster: PgCluster) -> None:
    cluster = timescale_cluster if engine == "timescaledb" else native_cluster
    psql = cluster.binaries.bin_dir / "psql"
    assert psql.exists(), f"psql not found beside the server binaries in {cluster.binaries.bin_dir}"
    dsn = _new_db(cluster)
    env = {"PATH": "/usr/bin:/bin", "PGOPTIONS": f"-c kalshi.storage={engine}"}
    for f in list_migrations("gatherer"):
        res = subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(f.path)],
                             capture_output=True, text=True, timeout=120, env=env, check=False)
        assert res.returncode == 0, f"{f.name}: {res.stderr}"
    assert _storage(dsn) == ("timescaledb" if engine == "timescaledb" else "partitioned")


def test_roles_leave_timescaledb_functions_alone(timescale_cluster: PgCluster) -> None:
    dsn = _new_db(timescale_cluster)
    apply_migrations(dsn, "gatherer")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # what roles.sql used to do: strip PUBLIC's EXECUTE from every function in public
        conn.execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC")
    apply_roles(dsn, ROLE_PASSWORDS)
    with psycopg.connect(role_dsn(dsn, "dedup_reader"), autocommit=True) as conn:
        assert conn.execute("SELECT time_bucket(10, 25)").fetchone() == (20,)  # TimescaleDB's API: given back
        assert conn.execute("SELECT count(*) FROM show_chunks('trades')").fetchone() == (0,)
        for stmt in ("SELECT * FROM drop_expired_partitions('trades', 1, ARRAY['deduplicator'])",
                     "SELECT * FROM compress_acknowledged_chunks('trades', 1, ARRAY['deduplicator'])",
                     "SELECT prune_trade_ids(1)", "SELECT * FROM newest_cursor('trades')"):
            with pytest.raises(pgerrors.InsufficientPrivilege):
                conn.execute(stmt)
    with psycopg.connect(role_dsn(dsn, "gatherer"), autocommit=True) as conn:
        # the gatherer writes into hypertables (creating chunks) and runs retention, nothing more
        conn.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                     "received_at) VALUES (gen_random_uuid(), 'KX-A', now_us() + 20 * %s, 1, 9999, 100, 'ws', 0)",
                     (DAY_US,))
        assert conn.execute("SELECT count(*) FROM compress_acknowledged_chunks('trades', 1, "
                            "ARRAY['deduplicator'])").fetchone() == (0,)
        assert conn.execute("SELECT prune_trade_ids(30)").fetchone() == (0,)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("SELECT drop_chunks('trades', older_than => 0)")


def test_missing_timescaledb_is_one_line_naming_where_it_looked(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "timescaledb-bin").write_text("error: no TimescaleDB source found (looked in: /x)\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    plain = tmp_path / "plain-bin"
    plain.mkdir()
    with pytest.raises(PgClusterError) as err:
        find_timescaledb_binaries()
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "timescaledb-bin") in msg
    assert "setup said: no TimescaleDB source found (looked in: /x)" in msg
    assert msg.count("no TimescaleDB source found") == 1, msg  # the reason once, not echoed
    with pytest.raises(PgClusterError, match=f"{plain} \\(no pg_ctl\\)"):
        find_timescaledb_binaries(plain)
