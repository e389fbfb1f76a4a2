"""Refusals concern one gatherer only: an older schema, a changed database identity (until
``--reset-cursor``), bad credentials. The others keep merging; /health names the cause."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from pathlib import Path

import pytest

from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert
from tests.deduplicator._fleet import (
    fetch,
    gatherer_role,
    scalar,
    start_app,
    wait_for,
    write_config,
)
from tests.fix_db import fresh_database

EXE = str(Path(sys.executable).parent / "kalshi-deduplicator")


async def _has(prod: str, rows: list[dict[str, object]]) -> bool:
    ids = [r["trade_id"] for r in rows]
    return bool(await scalar(prod, "SELECT count(*) FROM trades WHERE trade_id = ANY(%s)", (ids,)) == len(ids))


async def test_older_gatherer_schema_is_refused_alone(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(21))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    ((latest, name, checksum),) = await fetch(
        g2, "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations) "
            "RETURNING version, name, checksum")
    r1, r2 = [ex.trade() for _ in range(10)], [ex.trade() for _ in range(10)]
    await insert(gatherer_role(g1), "trades", r1)
    await insert(gatherer_role(g2), "trades", r2)
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, tables=["trades"]))
    try:
        await wait_for(lambda: _has(prod, r1), 10, "gatherer-1 merged")
        await asyncio.sleep(0.5)
        assert not await _has(prod, r2)
        g = app.health()["gatherers"]["gatherer-2"]
        assert g["status"] == "refused" and f"schema version {latest - 1} is older than required {latest}" in g["error"]
        assert app.health()["gatherers"]["gatherer-1"]["status"] == "healthy"
        assert app.metrics.dedup_errors_total.labels(gatherer="gatherer-2", type="schema")._value.get() >= 1
        # migrating the gatherer lifts the refusal without a restart
        await fetch(g2, "INSERT INTO schema_migrations (version, name, checksum, target) "
                        "VALUES (%s, %s, %s, 'gatherer') RETURNING 1", (latest, name, checksum))
        await wait_for(lambda: _has(prod, r2), 10, "gatherer-2 merged after migration")
    finally:
        await app.stop()


async def test_changed_database_identity_is_refused_until_reset_cursor(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(22))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    first = [ex.trade() for _ in range(20)]
    await insert(gatherer_role(g1), "trades", first)
    cfg = write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, tables=["trades", "markets"])
    app = await start_app(cfg)
    try:
        await wait_for(lambda: _has(prod, first), 10, "first rows")
        # the database behind gatherer-1 is "rebuilt": new identity, connections dropped
        await fetch(g1, "UPDATE gatherer_meta SET db_uuid = gen_random_uuid() RETURNING 1")
        await fetch(g1, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND usename = 'dedup_reader'")
        second = [ex.trade() for _ in range(20)]
        await insert(gatherer_role(g1), "trades", second)
        other = [ex.trade() for _ in range(5)]
        await insert(gatherer_role(g2), "trades", other)

        async def refused() -> bool:
            return app.health()["gatherers"]["gatherer-1"]["status"] == "refused"
        await wait_for(refused, 10, "gatherer-1 refused")
        await wait_for(lambda: _has(prod, other), 10, "gatherer-2 unaffected")
        err = app.health()["gatherers"]["gatherer-1"]["error"]
        assert "database identity changed" in err and "--reset-cursor gatherer-1" in err
        await asyncio.sleep(0.5)
        assert not await _has(prod, second)
        assert app.metrics.dedup_errors_total.labels(gatherer="gatherer-1", type="identity")._value.get() >= 1

        proc = await asyncio.create_subprocess_exec(EXE, "--config", str(cfg), "--reset-cursor", "gatherer-1",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and b"reset 1 cursor(s) of gatherer-1" in out  # markets had no rows: no cursor
        await wait_for(lambda: _has(prod, second), 15, "merged again after --reset-cursor")
        ids = [r[0] for r in await fetch(prod, "SELECT trade_id FROM trades")]
        assert len(ids) == len(set(ids)) == 45
        assert await scalar(prod, "SELECT db_uuid::text FROM sync_cursors WHERE gatherer_id = 'gatherer-1' "
                                  "AND table_name = 'trades'") == await scalar(g1, "SELECT db_uuid::text FROM gatherer_meta")
        await wait_for(lambda: _healthy(app), 10, "healthy")
    finally:
        await app.stop()


async def test_bad_credentials_are_one_line_naming_the_gatherer(
        pg_cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ex = Exchange(random.Random(23))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    rows = [ex.trade() for _ in range(5)]
    await insert(gatherer_role(g1), "trades", rows)
    cfg = write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, tables=["trades", "markets"])
    text = cfg.read_text().replace(str(tmp_path / "dedup_reader.pw"), str(tmp_path / "wrong.pw"), 1)
    text = text.replace(str(tmp_path / "wrong.pw"), str(tmp_path / "dedup_reader.pw"), 1)  # gatherer-1 keeps it
    (tmp_path / "wrong.pw").write_text("not-the-password\n")
    lines = text.splitlines()
    idx = [i for i, ln in enumerate(lines) if "dedup_reader.pw" in ln][1]  # gatherer-2's entry
    lines[idx] = lines[idx].replace("dedup_reader.pw", "wrong.pw")
    cfg.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.INFO)
    app = await start_app(cfg)
    try:
        await wait_for(lambda: _has(prod, rows), 10, "gatherer-1 merged")
        await asyncio.sleep(1.0)
        g = app.health()["gatherers"]["gatherer-2"]
        assert g["status"] == "down" and "password authentication failed" in g["error"]
        mine = [r.getMessage() for r in caplog.records if "gatherer-2" in r.getMessage()
                and r.levelno >= logging.WARNING]
        assert len(mine) == 1, mine
        assert "dedup_reader@127.0.0.1" in mine[0] and "password authentication failed" in mine[0]
        assert "not-the-password" not in mine[0] and "test-reader-pw" not in str(app.health())
    finally:
        await app.stop()


async def _healthy(app) -> bool:  # type: ignore[no-untyped-def]
    return bool(app.health()["status"] == "healthy")
