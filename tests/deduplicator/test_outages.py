"""A gatherer database stopped and restarted; production stopped and restarted: nothing lost,
nothing doubled, the others keep flowing, and /health + metrics say what is going on."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from shared.migrate import apply_migrations, apply_roles
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
from tests.fix_db import ROLE_PASSWORDS, fresh_database


def migrated(cluster: PgCluster, target: str) -> str:
    dsn = cluster.create_database(f"own_{target}")
    apply_migrations(dsn, target)  # type: ignore[arg-type]
    apply_roles(dsn, ROLE_PASSWORDS)
    return dsn


async def _has(prod: str, rows: list[dict[str, object]]) -> bool:
    ids = [r["trade_id"] for r in rows]
    return await scalar(prod, "SELECT count(*) FROM trades WHERE trade_id = ANY(%s)", (ids,)) == len(ids)


async def _exact(prod: str, ex: Exchange) -> None:
    ids = [r[0] for r in await fetch(prod, "SELECT trade_id FROM trades")]
    assert len(ids) == len(set(ids)) and set(ids) == {r["trade_id"] for r in ex.rows["trades"]}


async def test_gatherer_stopped_and_restarted(pg_cluster: PgCluster, own_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(11))
    g1 = migrated(own_cluster, "gatherer")
    g2, g3 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2, "gatherer-3": g3}, prod,
                                       tables=["trades", "markets"]))
    m = app.metrics
    try:
        first = [ex.trade() for _ in range(50)]
        for g in (g1, g2, g3):
            await insert(gatherer_role(g), "trades", first)
        await wait_for(lambda: _has(prod, first), 15, "first batch")

        own_cluster.stop()
        during = [ex.trade() for _ in range(50)]
        for g in (g2, g3):
            await insert(gatherer_role(g), "trades", during)
        await wait_for(lambda: _has(prod, during), 15, "others keep flowing while gatherer-1 is down")
        await asyncio.sleep(1.2)  # metrics refresh
        h = app.health()
        assert h["gatherers"]["gatherer-1"]["status"] == "down" and h["gatherers"]["gatherer-1"]["error"]
        assert h["gatherers"]["gatherer-2"]["status"] == "healthy"
        assert h["status"] == "degraded" and app.ready()[0]
        lag1 = h["gatherers"]["gatherer-1"]["lag_seconds"]
        assert lag1 > 0  # reported, not hidden
        assert m.dedup_gatherer_health.labels(gatherer="gatherer-1")._value.get() == 0
        assert m.dedup_gatherer_health.labels(gatherer="gatherer-2")._value.get() == 1
        assert m.dedup_errors_total.labels(gatherer="gatherer-1", type="connection")._value.get() > 0
        assert m.dedup_errors_total.labels(gatherer="production", type="connection")._value.get() == 0
        await asyncio.sleep(0.5)
        assert app.health()["gatherers"]["gatherer-1"]["lag_seconds"] > lag1  # and growing

        own_cluster.start()
        after = [ex.trade() for _ in range(50)]
        await insert(gatherer_role(g1), "trades", during + after)  # its backlog overlaps what others sent
        await wait_for(lambda: _has(prod, after), 15, "gatherer-1 backlog after restart")
        await wait_for(lambda: _healthy(app), 10, "healthy again")
        await _exact(prod, ex)
        await asyncio.sleep(1.2)  # metrics refresh
        assert m.dedup_gatherer_health.labels(gatherer="gatherer-1")._value.get() == 1
    finally:
        await app.stop()


async def test_production_stopped_and_restarted(pg_cluster: PgCluster, own_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(12))
    prod = migrated(own_cluster, "production")
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, tables=["trades"]))
    m = app.metrics
    try:
        first = [ex.trade() for _ in range(40)]
        await insert(gatherer_role(g1), "trades", first)
        await wait_for(lambda: _has(prod, first), 15, "first batch")
        assert app.ready() == (True, "ok")

        own_cluster.stop()
        during = [ex.trade() for _ in range(60)]
        await insert(gatherer_role(g1), "trades", during[:40])
        await insert(gatherer_role(g2), "trades", during[20:])

        async def down() -> bool:
            return app.health()["status"] == "unhealthy"
        await wait_for(down, 15, "unhealthy while production is down")
        await asyncio.sleep(1.2)
        h = app.health()
        assert h["components"]["production"]["status"] == "down" and h["components"]["production"]["error"]
        assert h["gatherers"]["gatherer-1"]["status"] == "healthy"  # the gatherers are fine
        assert h["components"]["sync"]["max_lag_seconds"] > 0
        assert app.ready()[0] is False
        assert m.dedup_rds_connected._value.get() == 0
        assert m.dedup_errors_total.labels(gatherer="production", type="connection")._value.get() > 0

        own_cluster.start()
        await wait_for(lambda: _has(prod, during), 20, "backlog merged after production returns")
        await wait_for(lambda: _healthy(app), 10, "healthy again")
        await _exact(prod, ex)
        await asyncio.sleep(1.2)
        assert m.dedup_rds_connected._value.get() == 1
    finally:
        await app.stop()


async def _healthy(app) -> bool:  # type: ignore[no-untyped-def]
    return bool(app.health()["status"] == "healthy")
