"""Operator-facing behaviour: lifecycle churn, /health + /ready + /metrics, auth rejection,
the admin API, the raw frame log (retention: test_retention.py)."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fix_db import ROLE_PASSWORDS
from tests.gatherer import _harness as h


async def _started(run_app: Any, doc: dict[str, Any]) -> Any:
    app = await run_app(doc)
    await h.wait_for(lambda: app.health.ready()[0], 10, "gatherer ready")
    return app


async def test_lifecycle_churn_subscribes_new_and_drops_closed_markets(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf())
    await asyncio.sleep(0.5)
    n0 = len(gsim.truth.lifecycle())
    gsim.engine.churn_per_s = 5.0
    await asyncio.sleep(6.0)
    gsim.engine.churn_per_s = 0.0
    await asyncio.sleep(2.5)  # created markets open 2 s after creation
    life = gsim.truth.lifecycle(since=n0)
    created = {r["ticker"] for r in life if r.get("event_type") == "created"}
    closed = {r["ticker"] for r in life if r.get("event_type") == "close_date_updated"}
    assert created and closed, "no churn happened"
    # open markets: active, or paused (inactive) which keep their books
    active = set(gsim.market_tickers(status="active", limit=10_000)) | set(
        gsim.market_tickers(status="inactive", limit=10_000))
    owned = set(app.conns.planner.owner)
    assert owned == active, (sorted(active - owned)[:5], sorted(owned - active)[:5])
    new_open = created & active
    assert new_open, "no created market opened during the run"
    # each new open market has a WS snapshot in the DB; closed ones left the shards
    snap = {r[0] for r in await h.aquery(gatherer_dsn, "SELECT DISTINCT ticker FROM orderbook_snapshots "
                                                       "WHERE source IN ('ws', 'resync')")}
    assert new_open <= snap
    assert not (closed & owned)
    assert h.metric(app, "market_registry_lifecycle_events_total", type="created") == len(created)
    assert h.metric(app, "market_registry_lifecycle_events_total", type="close_date_updated") == len(closed)
    assert h.metric(app, "market_registry_active_markets") == len(active)
    # the reference rows of new markets come from REST (full objects), not from the frame
    rows = await h.aquery(gatherer_dsn, "SELECT count(*) FROM markets WHERE ticker = ANY(%s) "
                                        "AND raw ? 'price_level_structure'", (sorted(created),))
    assert rows[0][0] == len(created)
    await h.assert_complete(gsim, gatherer_dsn)


async def test_health_ready_and_metrics_over_http(gsim: Any, gconf: Any, run_app: Any,
                                                  key_files: Any, pw_file: Path, storage: str) -> None:
    doc = gconf(admin={"token_file": str(pw_file)})
    app = await _started(run_app, doc)
    # one poll cycle: 50 markets in batches the Basic budget can pay for, queued behind the
    # registry and the start-up backfill
    await h.wait_for(lambda: app.poller.cycles >= 1, 20, "a first poll cycle")
    base = f"http://127.0.0.1:{doc['health']['port']}"
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(base + "/health")
        ready = await c.get(base + "/ready")
        metrics = await c.get(f"http://127.0.0.1:{doc['metrics']['port']}/metrics")
    assert r.status_code == 200 and ready.status_code == 200
    body = r.json()
    assert set(body) == {"status", "gatherer_id", "version", "uptime_s", "components"}
    assert body["status"] == "healthy" and body["gatherer_id"] == "gatherer-t"
    comp = body["components"]
    assert set(comp) == {"websocket", "database", "registry", "poller", "exchange"}
    assert set(comp["websocket"]) == {"status", "connections", "healthy", "subscribed_markets"}
    assert set(comp["database"]) == {"status", "writable", "queue_rows", "queue_max_rows", "spool_rows"}
    assert set(comp["registry"]) == {"status", "markets", "active_markets", "last_sync_age_s"}
    assert set(comp["poller"]) == {"status", "last_cycle_s", "last_cycle_age_s"}
    assert set(comp["exchange"]) == {"status", "exchange_active", "trading_active"}
    active = len(gsim.market_tickers(status="active", limit=10_000))
    assert comp["websocket"] == {"status": "healthy", "connections": 5, "healthy": 5,
                                 "subscribed_markets": active}
    assert comp["registry"]["markets"] == 50 and comp["registry"]["active_markets"] == active
    assert comp["database"]["writable"] is True
    assert comp["poller"]["last_cycle_s"] is not None
    assert comp["exchange"]["exchange_active"] is True
    text = metrics.text
    for name in ("gatherer_markets_active", "gatherer_websocket_connections", "market_registry_markets_total",
                 "market_registry_active_markets", "market_registry_last_sync_timestamp",
                 "market_registry_exchange_active", "ws_client_connected{", "ws_client_messages_received_total{",
                 "ws_client_bytes_received_total{", "ws_client_last_ping_timestamp{",
                 "conn_manager_connections_total", "conn_manager_connections_healthy{",
                 "conn_manager_subscriptions_total", "conn_manager_markets_total",
                 "router_messages_routed_total{", "writer_inserts_total{", "writer_queue_rows{",
                 "poller_snapshots_fetched_total", "poller_markets_polled", "poller_poll_duration_seconds",
                 "backfill_trades_total", "backfill_requests_total{", "retention_blocked_partitions",
                 "rest_requests_total{"):
        assert name in text, name
    assert h.metric(app, "gatherer_markets_active") == active
    assert h.metric(app, "ws_client_last_ping_timestamp", conn_id="orderbook-1") > 0
    # TimescaleDB creates chunks as rows arrive: there are no partitions to run out of.
    assert ("db_partitions_ahead_days{" in text) == (storage == "native")
    if storage == "native":
        assert h.metric(app, "db_partitions_ahead_days", database="gatherer", table="trades") >= 2
    # no secret anywhere: not the key, not the DB password, not the admin token
    secrets = [key_files[1].read_text().splitlines()[1], ROLE_PASSWORDS["gatherer"]]
    for s in secrets:
        assert s not in r.text and s not in text
    assert "ticker=" not in text  # no per-market label


async def test_auth_rejected_degrades_health_then_recovers(gsim: Any, gconf: Any, run_app: Any,
                                                           key_files: Any, caplog: Any) -> None:
    app = await _started(run_app, gconf(kalshi={"auth_retry_s": 0.5}))
    await h.wait_for(lambda: app.health.doc()["status"] == "healthy", 10, "/health healthy")
    gsim.faults.clock_skew(ms=120_000)  # our (correct) timestamps now look stale: 401
    await h.wait_for(lambda: app.health.doc()["status"] == "degraded", 10, "/health degraded")
    assert app.health.doc()["components"]["registry"]["status"] == "degraded"
    lines = [r.getMessage() for r in caplog.records if "rejected API key id" in r.getMessage()]
    assert lines and key_files[0] in lines[0] and "retrying" in lines[0]
    pem = key_files[1].read_text()
    assert not any(pem.splitlines()[1] in r.getMessage() for r in caplog.records)
    gsim.faults.clock_skew(ms=0)
    await h.wait_for(lambda: app.health.doc()["status"] == "healthy", 10, "/health healthy again")


async def test_admin_api_requires_the_bearer_token(gsim: Any, gconf: Any, run_app: Any, tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cret-admin-token\n")
    doc = gconf(admin={"token_file": str(token)})
    app = await _started(run_app, doc)
    await asyncio.sleep(1.0)
    ticker = min(app.conns.planner.owner)
    url = f"http://127.0.0.1:{doc['admin']['port']}"
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(f"{url}/admin/poll-market", params={"ticker": ticker})
        assert r.status_code == 401
        r = await c.post(f"{url}/admin/resync", params={"ticker": ticker},
                         headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await c.post(f"{url}/admin/resync", params={"ticker": ticker},
                         headers={"Authorization": "Basic s3cret-admin-token"})
        assert r.status_code == 401
        good = {"Authorization": "Bearer s3cret-admin-token"}
        before = h.metric(app, "poller_snapshots_fetched_total")
        r = await c.post(f"{url}/admin/poll-market", params={"ticker": ticker}, headers=good)
        assert r.status_code == 200, r.text
        assert r.json()["ticker"] == ticker and r.json()["trades_backfilled"] >= 0
        assert h.metric(app, "poller_snapshots_fetched_total") == before + 1
        assert h.metric(app, "backfill_requests_total", reason="admin") == 1
        r = await c.post(f"{url}/admin/resync", params={"ticker": ticker}, headers=good)
        assert r.status_code == 200, r.text
        r = await c.post(f"{url}/admin/resync", headers=good)
        assert r.status_code == 400
        r = await c.post(f"{url}/admin/resync", params={"ticker": "NOPE-1"}, headers=good)
        assert r.status_code == 404


async def test_admin_api_is_off_without_a_token(gsim: Any, gconf: Any, run_app: Any) -> None:
    doc = gconf()
    app = await _started(run_app, doc)
    assert app.admin is None
    async with httpx.AsyncClient(timeout=2) as c:
        with pytest.raises(httpx.ConnectError):
            await c.post(f"http://127.0.0.1:{doc['admin']['port']}/admin/resync", params={"ticker": "X"},
                         headers={"Authorization": "Bearer x"})


async def test_raw_frame_log_writes_gzip_lines(gsim: Any, gconf: Any, run_app: Any, tmp_path: Path) -> None:
    d = tmp_path / "raw"
    app = await _started(run_app, gconf(raw_log={"enabled": True, "directory": str(d),
                                                 "flush_interval_s": 0.2, "max_bytes": 20_000, "backups": 3}))
    await asyncio.sleep(3.0)
    await app.stop()
    files = sorted(d.glob("*.jsonl.gz"))
    assert 1 <= len(files) <= 3  # rotated at 20 kB, only 3 kept
    lines = [json.loads(x) for f in files for x in gzip.decompress(f.read_bytes()).splitlines()]
    assert lines and {"received_at", "conn_id", "frame"} <= set(lines[0])
    types = {orjson.loads(x["frame"]).get("type") for x in lines if "frame" in x}
    assert {"orderbook_delta", "ticker"} <= types, types
    assert {x["conn_id"] for x in lines} <= {c.conn_id for c in app.conns.conns}
    assert app.rawlog is not None and app.rawlog.frames >= len(lines) and app.rawlog.dropped == 0
