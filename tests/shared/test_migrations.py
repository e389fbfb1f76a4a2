"""Migrations on a real PostgreSQL: apply, re-apply, tamper detection, concurrency, partitions,
roles and grants, retention safety, and the runbook's queries against both schemas."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerrors

from shared.errors import MigrationError
from shared.migrate import apply_migrations, apply_roles, list_migrations, migrations_dir, schema_version
from shared.pgcluster import PgCluster
from tests.fix_db import ROLE_PASSWORDS, role_dsn

DAY_US = 86_400_000_000
EVENT_TABLES = ["trades", "orderbook_deltas", "orderbook_snapshots", "tickers"]
PRODUCTION_TABLES = {"trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "markets", "events",
                     "series", "sync_cursors", "coverage_events"}


def _now_us(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
    return int(conn.execute("SELECT now_us()").fetchone()[0])  # type: ignore[index]


@pytest.fixture
def empty_db(pg_cluster: PgCluster) -> str:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    return pg_cluster.create_database(name)


@pytest.mark.parametrize("target", ["gatherer", "production"])
def test_apply_then_reapply_is_noop(empty_db: str, target: str) -> None:
    applied = apply_migrations(empty_db, target)  # type: ignore[arg-type]
    assert applied == [f.name for f in list_migrations(target)]  # type: ignore[arg-type]
    assert apply_migrations(empty_db, target) == []  # type: ignore[arg-type]
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute("SELECT version, target FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [f.version for f in list_migrations(target)]  # type: ignore[arg-type]
    assert rows[-1][0] == schema_version(target)  # type: ignore[arg-type]


def test_changed_applied_file_is_refused(empty_db: str, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), root)
    apply_migrations(empty_db, "production", root)
    target = root / "production" / "001_schema.sql"
    target.write_text(target.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError) as err:
        apply_migrations(empty_db, "production", root)
    assert "001_schema.sql" in str(err.value) and "changed after it was applied" in str(err.value)


def test_failed_migration_rolls_back_that_file_only(empty_db: str, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), root, symlinks=False)
    (root / "production" / "099_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT 1/0;\n")
    with pytest.raises(MigrationError) as err:
        apply_migrations(empty_db, "production", root)
    assert str(err.value).startswith("migration 099_broken.sql: division by zero")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None  # type: ignore[index]
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()]
    assert 99 not in versions and 1 in versions


def test_two_runners_at_once(empty_db: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(empty_db, "gatherer"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, len(list_migrations("gatherer"))]


def test_production_lists_tables_and_partitions(production_dsn: str) -> None:
    with psycopg.connect(production_dsn) as conn:
        # what psql's \dt shows: ordinary and partitioned tables in visible schemas
        tables = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r','p') AND n.nspname = 'public'").fetchall()}
        assert PRODUCTION_TABLES <= tables
        status = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM partition_status()").fetchall()}
    assert set(status) == set(EVENT_TABLES)
    for table, (default_rows, days_ahead) in status.items():
        assert default_rows == 0, table
        assert days_ahead >= 3, table


@pytest.mark.parametrize("fixture", ["gatherer_dsn", "production_dsn"])
def test_rows_land_in_the_right_partition(fixture: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue(fixture)
    with psycopg.connect(dsn) as conn:
        now = _now_us(conn)
        extra = ", gatherer_id, merged_at" if fixture == "production_dsn" else ""
        vals = ", 'g1', 0" if fixture == "production_dsn" else ""
        for ts in (now, now + 2 * DAY_US, now - 400 * DAY_US):
            conn.execute(f"INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, "
                         f"taker_side, source, received_at{extra}) VALUES (%s, 'KX-A', %s, 5600, 4400, 100, "
                         f"'yes', 'ws', %s{vals})", (uuid.uuid4(), ts, now))
        rows = conn.execute("SELECT tableoid::regclass::text, exchange_ts FROM trades ORDER BY exchange_ts").fetchall()
        day = conn.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD'), "
                           "to_char((now() + interval '2 days') AT TIME ZONE 'UTC', 'YYYYMMDD')").fetchone()
    assert rows[0][0] == "trades_default"  # far past: no daily partition, DEFAULT catches it
    assert rows[1][0] == f"trades_p{day[0]}"  # type: ignore[index]
    assert rows[2][0] == f"trades_p{day[1]}"  # type: ignore[index]


def test_gatherer_role_can_write_and_create_partitions(gatherer_dsn: str) -> None:
    with psycopg.connect(role_dsn(gatherer_dsn, "gatherer")) as conn:
        conn.execute("INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, received_at) "
                     "VALUES ('KX-A', now_us(), 'yes', 5600, 1200, now_us())")
        created = conn.execute("SELECT ensure_partitions(10)").fetchone()[0]  # type: ignore[index]
        assert created == 4 * 3  # days 8, 9, 10 ahead for four tables
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")


def test_dedup_reader_writes_only_sync_acks(gatherer_dsn: str) -> None:
    with psycopg.connect(role_dsn(gatherer_dsn, "dedup_reader"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 0  # type: ignore[index]
        conn.execute("INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at) "
                     "VALUES ('deduplicator', 'trades', 1, 1, now_us())")
        conn.execute("UPDATE sync_acks SET cursor_seq = 2")
        for stmt in [
            "INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, received_at) "
            "VALUES (gen_random_uuid(), 'X', 1, 1, 1, 1, 'ws', 1)",
            "UPDATE markets SET title = 'x'",
            "DELETE FROM trade_ids",
            "INSERT INTO coverage_events (event_id, gatherer_id, scope, kind, window_start, created_at, updated_at)"
            " VALUES (gen_random_uuid(), 'g', 'process', 'process_down', 0, 0, 0)",
            "DELETE FROM sync_acks",
            "TRUNCATE sync_acks",
            "SELECT ensure_partitions()",
        ]:
            with pytest.raises(pgerrors.InsufficientPrivilege):
                conn.execute(stmt)


def test_analyst_reads_only(production_dsn: str) -> None:
    with psycopg.connect(role_dsn(production_dsn, "analyst"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM sync_cursors").fetchone()[0] == 0  # type: ignore[index]
        for stmt in [
            "INSERT INTO markets (ticker, raw, received_at, updated_at, gatherer_id, merged_at) "
            "VALUES ('X', '{}', 0, 0, 'g', 0)",
            "UPDATE sync_cursors SET rows_merged = 0",
            "DELETE FROM trades",
            "CREATE TABLE mine (x int)",
            "SELECT ensure_partitions()",
        ]:
            with pytest.raises(pgerrors.InsufficientPrivilege):
                conn.execute(stmt)


def test_deduplicator_role_writes_production(production_dsn: str) -> None:
    with psycopg.connect(role_dsn(production_dsn, "deduplicator")) as conn:
        conn.execute("INSERT INTO sync_cursors (gatherer_id, table_name, db_uuid, updated_at) "
                     "VALUES ('gatherer-1', 'trades', gen_random_uuid(), now_us())")
        conn.execute("UPDATE sync_cursors SET cursor_xid = 5")
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("DELETE FROM sync_cursors")


def test_wrong_password_is_rejected(gatherer_dsn: str) -> None:
    from psycopg.conninfo import make_conninfo

    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(make_conninfo(gatherer_dsn, user="gatherer", password="wrong"))
    assert "password authentication failed" in str(err.value)


def test_retention_refuses_unacknowledged_partitions(gatherer_dsn: str) -> None:
    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        # an old partition with one row, 10 days back
        conn.execute("SELECT ensure_partitions(7, 10)")
        old = _now_us(conn) - 10 * DAY_US
        conn.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                     "received_at) VALUES (gen_random_uuid(), 'KX-A', %s, 100, 9900, 100, 'ws', %s)", (old, old))
        part = conn.execute("SELECT tableoid::regclass::text, ingest_xid::text::bigint, ingest_seq FROM trades"
                            ).fetchone()
        assert part is not None and part[0] != "trades_default"

    with psycopg.connect(role_dsn(gatherer_dsn, "gatherer"), autocommit=True) as conn:
        def run(consumers: list[str]) -> dict[str, tuple[bool, str]]:
            rows = conn.execute("SELECT * FROM drop_expired_partitions('trades', 7, %s)", (consumers,)).fetchall()
            return {r[0]: (r[1], r[2]) for r in rows}

        assert run([])[part[0]] == (False, "no consumers configured")
        assert run(["deduplicator"])[part[0]] == (
            False, "consumer deduplicator has not acknowledged past this partition")
        conn.execute("INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, updated_at) "
                     "VALUES ('deduplicator', 'trades', %s, %s, now_us())", (part[1], part[2] - 1))
        assert run(["deduplicator"])[part[0]][0] is False  # acked just short of the newest row
        conn.execute("UPDATE sync_acks SET cursor_seq = %s", (part[2],))
        assert run(["deduplicator", "dedup-2"])[part[0]][0] is False  # a second consumer has not acked
        result = run(["deduplicator"])
        assert result[part[0]] == (True, "expired and acknowledged by every consumer")
        assert conn.execute("SELECT to_regclass(%s)", (part[0],)).fetchone()[0] is None  # type: ignore[index]
        # empty expired partitions go too; recent ones are never listed
        assert all(name < f"trades_p{part[0][-8:]}" or ok for name, (ok, _) in run(["deduplicator"]).items())


def test_ingest_cursor_restamped_on_update(gatherer_dsn: str) -> None:
    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO markets (ticker, raw, received_at, updated_at) VALUES ('KX-A', '{}', 1, 1)")
        before = conn.execute("SELECT ingest_xid::text::bigint, ingest_seq FROM markets").fetchone()
        conn.execute("UPDATE markets SET status = 'closed'")
        after = conn.execute("SELECT ingest_xid::text::bigint, ingest_seq FROM markets").fetchone()
    assert after > before  # type: ignore[operator]


RUNBOOK_QUERIES = [
    # counts by received_at / exchange_ts windows in microseconds
    "SELECT count(*) FROM trades WHERE received_at >= (extract(epoch FROM now() - interval '1 hour') * 1e6)::bigint",
    "SELECT count(*) FROM trades WHERE exchange_ts BETWEEN (extract(epoch FROM now() - interval '1 day') * 1e6)::bigint"
    " AND (extract(epoch FROM now()) * 1e6)::bigint",
    # latest snapshots for one market, with source
    "SELECT ticker, snapshot_ts, source FROM orderbook_snapshots WHERE ticker = 'KX-A' ORDER BY snapshot_ts DESC LIMIT 10",
    # per-minute trade counts for one ticker
    "SELECT date_trunc('minute', to_timestamp(exchange_ts / 1e6)) AS minute, count(*) FROM trades "
    "WHERE ticker = 'KX-A' GROUP BY 1 ORDER BY 1",
    # gap detection over exchange_ts with LEAD()
    "SELECT ticker, exchange_ts, next_ts, (next_ts - exchange_ts) / 1e6 AS gap_s FROM ("
    " SELECT ticker, exchange_ts, LEAD(exchange_ts) OVER (PARTITION BY ticker ORDER BY exchange_ts) AS next_ts"
    " FROM trades) t WHERE next_ts - exchange_ts > 60 * 1e6 ORDER BY gap_s DESC LIMIT 20",
    "SELECT ticker, kind, window_start, window_end, recovered FROM coverage_events ORDER BY window_start DESC LIMIT 20",
]


@pytest.mark.parametrize("fixture", ["gatherer_dsn", "production_dsn"])
def test_runbook_queries_run(fixture: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue(fixture)
    with psycopg.connect(dsn) as conn:
        now = _now_us(conn)
        extra, vals = (", gatherer_id, merged_at", ", 'g1', 0") if fixture == "production_dsn" else ("", "")
        for i, gap in enumerate([0, 1, 2, 120]):
            conn.execute(f"INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                         f"received_at{extra}) VALUES (gen_random_uuid(), 'KX-A', %s, 5000, 5000, 100, 'ws', %s{vals})",
                         (now - 3_600_000_000 + (i + gap) * 1_000_000, now))
        results = [conn.execute(q).fetchall() for q in RUNBOOK_QUERIES]
        if fixture == "production_dsn":
            assert conn.execute("SELECT * FROM sync_cursors").fetchall() == []
    assert results[0] == [(4,)] and results[1] == [(4,)]
    assert sum(r[1] for r in results[3]) == 4
    assert len(results[4]) == 1 and results[4][0][3] == 119  # offsets 0, 2, 4, 123 s: one 119-second hole


def test_production_files_run_standalone_under_psql(pg_cluster: PgCluster) -> None:
    psql = pg_cluster.binaries.bin_dir / "psql"
    assert psql.exists(), f"psql not found beside the server binaries in {pg_cluster.binaries.bin_dir}"
    dsn = pg_cluster.create_database(f"psql_{uuid.uuid4().hex[:6]}")
    for f in list_migrations("production"):
        res = subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(f.path)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{f.name}: {res.stderr}"
    # and then the runner accepts the database? No: it has no schema_migrations; it would re-apply,
    # and every file is idempotent, so that must work too.
    assert len(apply_migrations(dsn, "production")) == len(list_migrations("production"))
    apply_roles(dsn, ROLE_PASSWORDS)
