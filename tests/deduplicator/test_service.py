"""The service surface: CLI config errors, /health /ready /metrics over HTTP, NOTIFY wake-up."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import psycopg
import pytest

from deduplicator.__main__ import main
from deduplicator.config import DeduplicatorConfig
from shared.config import Environment, parse_config
from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert
from tests.deduplicator._fleet import gatherer_role, load, scalar, start_app, wait_for, write_config
from tests.fix_db import fresh_database

DEDUP_METRICS = ("dedup_sync_lag_seconds", "dedup_records_written_total", "dedup_duplicates_total",
                 "dedup_duplicate_rate", "dedup_records_per_second", "dedup_gatherer_health",
                 "dedup_rds_connected", "dedup_page_duration_seconds", "dedup_errors_total")


@pytest.mark.parametrize("text, where", [
    ("gatherers: []\nproduction: {host: x}\n", "gatherers: must not be empty"),
    ("gatherers: [{id: g, database: {port: 99999}}]\nproduction: {}\n", "gatherers[0].database.port"),
    ("gatherers: [{id: g, database: {password_file: /nonexistent/pw}}]\nproduction: {}\n",
     "gatherers[0].database.password_file: file /nonexistent/pw not found"),
    ("gatherers: [{id: g, database: {}}]\nproduction: {}\nsync: {tables: [trades, nope]}\n", "sync.tables[1]"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("config error: ") and where in err


def test_reset_cursor_of_unknown_gatherer_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("gatherers: [{id: gatherer-1, database: {}}]\nproduction: {}\n")
    assert main(["--config", str(path), "--reset-cursor", "gatherer-9"]) == 2
    assert "unknown gatherer \"gatherer-9\"" in capsys.readouterr().err


def test_example_config_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "deduplicator.yaml").read_text()
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = parse_config(text.replace("/etc/kalshi/secrets/dedup_reader.pw", str(pw)), DeduplicatorConfig,
                       Environment(env={}))
    assert [g.id for g in cfg.gatherers] == ["gatherer-1", "gatherer-2", "gatherer-3"]
    assert cfg.sync.page_size == 10000 and cfg.sync.poll_interval_ms == 100 and len(cfg.sync.tables) == 8
    assert cfg.production.password is not None and cfg.production.password.source == "aws:kalshi/prod/deduplicator-db-password"


async def test_health_ready_and_metrics_over_http(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(31))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    rows = [ex.trade() for _ in range(30)]
    for g in (g1, g2):
        await insert(gatherer_role(g), "trades", rows)
    cfg_path = write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod)
    cfg = load(cfg_path)
    app = await start_app(cfg_path)
    base = f"http://127.0.0.1:{cfg.health.port}"
    try:
        await wait_for(lambda: _rows_read(prod, 60), 10, "merged")
        await asyncio.sleep(1.1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
                doc = await r.json()
            async with http.get(f"{base}/ready") as r:
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{cfg.metrics.port}/metrics") as r:
                metrics = await r.text()
        assert doc["status"] == "healthy"
        assert set(doc["gatherers"]) == {"gatherer-1", "gatherer-2"}
        assert doc["gatherers"]["gatherer-1"]["status"] == "healthy"
        assert doc["gatherers"]["gatherer-1"]["lag_seconds"] == 0.0
        assert doc["components"]["production"]["status"] == "healthy"
        sync = doc["components"]["sync"]
        assert sync["max_lag_seconds"] == 0.0 and sync["tables"]["trades"]["rows_merged"] == 30
        assert sync["tables"]["trades"]["rows_duplicate"] == 30
        assert "password" not in str(doc) and "test-" not in str(doc)
        for name in DEDUP_METRICS:
            assert f"\n# TYPE {name} " in metrics, name
        assert 'dedup_records_written_total{table="trades"} 30.0' in metrics
        assert 'dedup_duplicates_total{table="trades"} 30.0' in metrics
        assert 'dedup_gatherer_health{gatherer="gatherer-2"} 1.0' in metrics
        assert "dedup_rds_connected 1.0" in metrics
        assert 'dedup_sync_lag_seconds{gatherer="gatherer-1",table="trades"} 0.0' in metrics
    finally:
        await app.stop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{base}/health")


async def test_notify_wakes_the_loop_before_the_poll_interval(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(32))
    g = fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    app = await start_app(write_config(tmp_path, {"gatherer-1": g}, prod, tables=["trades"],
                                       poll_interval_ms=20000, listen=True))
    try:
        async def listening() -> bool:
            return bool(await scalar(g, "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'"))
        await wait_for(listening, 10, "LISTEN connection")
        await asyncio.sleep(0.5)  # the wake-up that follows LISTEN has been served
        silent, loud = [ex.trade()], [ex.trade()]
        await insert(gatherer_role(g), "trades", silent)
        await asyncio.sleep(1.0)
        assert await scalar(prod, "SELECT count(*) FROM trades") == 0  # polling alone is 20 s away
        conn = await psycopg.AsyncConnection.connect(gatherer_role(g), autocommit=True)
        async with conn, conn.transaction():
            await insert(conn, "trades", loud)
            await conn.execute("NOTIFY kalshi_ingest, 'trades'")
        await wait_for(lambda: _rows_read(prod, 2), 3, "merged on NOTIFY")
    finally:
        await app.stop()


async def _rows_read(prod: str, n: int) -> bool:
    return bool(await scalar(prod, "SELECT coalesce(sum(rows_merged + rows_duplicate), 0) FROM sync_cursors") == n)


