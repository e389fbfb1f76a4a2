"""Identity and newest-wins rules: WS+REST trade once, reference tables never regress, coverage
updates in place, a fourth gatherer by config only."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from psycopg.types.json import Jsonb

from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert, now_us, upsert_market
from tests.deduplicator._fleet import (
    fetch,
    gatherer_role,
    scalar,
    start_app,
    wait_for,
    write_config,
)
from tests.fix_db import fresh_database


async def test_same_trade_via_ws_and_rest_backfill_is_one_row(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(5))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    ws = ex.trade()
    # REST backfill of the same trade: created_time disagrees with ts_ms (hardening 1)
    rest = dict(ws, exchange_ts=ws["exchange_ts"] - 1000 * 7, source="rest", received_at=ws["received_at"] + 5 * 10**6)
    legacy = dict(ws, exchange_ts=ws["exchange_ts"] // 10**6 * 10**6)  # legacy `ts` in whole seconds
    await insert(gatherer_role(g1), "trades", [ws])
    await insert(gatherer_role(g1), "trades", [rest])  # the same gatherer stored both paths
    await insert(gatherer_role(g2), "trades", [rest])
    await insert(gatherer_role(g2), "trades", [legacy])
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1}, prod, tables=["trades"]))
    try:
        await wait_for(lambda: _count(prod, 1), 10, "gatherer-1 merged")
        await app.stop()
        app = await start_app(write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, name="b.yaml",
                                           tables=["trades"]))
        await wait_for(lambda: _rows_read(prod, 4), 10, "gatherer-2 merged")
        rows = await fetch(prod, "SELECT trade_id, exchange_ts, source FROM trades")
        assert rows == [(ws["trade_id"], ws["exchange_ts"], "ws")]  # first seen in ingest order wins
        assert await fetch(prod, "SELECT trade_id, exchange_ts FROM trade_ids") == [(ws["trade_id"], ws["exchange_ts"])]
        assert await scalar(prod, "SELECT sum(rows_duplicate) FROM sync_cursors") == 3
    finally:
        await app.stop()


async def test_reference_tables_never_regress(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(6))
    g1, g2 = fresh_database(pg_cluster, "gatherer"), fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    t0 = now_us()
    # gatherer-2 received an OLDER exchange version LATER (slow poll): it must not win
    await upsert_market(gatherer_role(g1), ex.market("KXM-1", 200, "closed", received_at=t0))
    await upsert_market(gatherer_role(g2), ex.market("KXM-1", 100, "active", received_at=t0 + 10**6))
    # no exchange update time: received_at decides (NULL counts as -1)
    await upsert_market(gatherer_role(g1), ex.market("KXM-2", None, "v-old", received_at=t0))
    await upsert_market(gatherer_role(g2), ex.market("KXM-2", None, "v-new", received_at=t0 + 10**6))
    cfg = write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2}, prod, tables=["markets", "coverage_events"])
    app = await start_app(cfg)
    try:
        async def state(want: dict[str, str]) -> bool:
            return dict(await fetch(prod, "SELECT ticker, status FROM markets")) == want
        await wait_for(lambda: _rows_read(prod, 4), 10, "markets merged")
        assert await state({"KXM-1": "closed", "KXM-2": "v-new"})
        assert await scalar(prod, "SELECT gatherer_id FROM markets WHERE ticker = 'KXM-1'") == "gatherer-1"

        # an in-place update on a gatherer (trigger re-stamps ingest_xid) with a newer version wins
        await upsert_market(gatherer_role(g2), ex.market("KXM-1", 300, "settled", received_at=t0 + 2 * 10**6))
        await wait_for(lambda: state({"KXM-1": "settled", "KXM-2": "v-new"}), 10, "newer version merged")
        # ... and a later-arriving older one (250 < 300) does not
        await upsert_market(gatherer_role(g1), ex.market("KXM-1", 250, "reopened", received_at=t0 + 3 * 10**6))
        await upsert_market(gatherer_role(g1), ex.market("KXM-2", None, "v-stale", received_at=t0 + 5 * 10**5))
        await wait_for(lambda: _rows_read(prod, 7), 10, "older versions read")
        assert await state({"KXM-1": "settled", "KXM-2": "v-new"})
        assert await scalar(prod, "SELECT exchange_updated_ts FROM markets WHERE ticker = 'KXM-1'") == 300

        # coverage_events: updated in place on the gatherer; the newer updated_at replaces the row
        ev = uuid.uuid4()
        cov = {"event_id": ev, "gatherer_id": "gatherer-1", "scope": "market", "ticker": "KXM-1", "kind": "seq_gap",
               "window_start": t0, "window_end": None, "recovered": False, "detail": Jsonb({"sid": 3}),
               "created_at": t0, "updated_at": t0}
        await insert(gatherer_role(g1), "coverage_events", [cov])
        await wait_for(lambda: _cov(prod, False), 10, "coverage merged")
        await fetch(gatherer_role(g1), "UPDATE coverage_events SET recovered = true, window_end = %s, updated_at = %s "
                                       "WHERE event_id = %s RETURNING 1", (t0 + 10**6, t0 + 10**6, ev))
        await wait_for(lambda: _cov(prod, True), 10, "coverage update merged")
        assert await scalar(prod, "SELECT count(*) FROM coverage_events") == 1
    finally:
        await app.stop()


async def test_fourth_gatherer_added_by_config_only(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(8))
    gs = {f"gatherer-{i}": fresh_database(pg_cluster, "gatherer") for i in (1, 2, 3, 4)}
    prod = fresh_database(pg_cluster, "production")
    base = [ex.trade() for _ in range(120)]
    for gid in ("gatherer-1", "gatherer-2", "gatherer-3"):
        await insert(gatherer_role(gs[gid]), "trades", base)
    three = {k: v for k, v in gs.items() if k != "gatherer-4"}
    app = await start_app(write_config(tmp_path, three, prod, tables=["trades"]))
    try:
        await wait_for(lambda: _rows_read(prod, 360), 15, "three gatherers merged")
    finally:
        await app.stop()
    before = dict(await fetch(prod, "SELECT gatherer_id, cursor_seq FROM sync_cursors"))

    extra = [ex.trade() for _ in range(30)]
    await insert(gatherer_role(gs["gatherer-4"]), "trades", base[:50] + extra)
    app = await start_app(write_config(tmp_path, gs, prod, name="four.yaml", tables=["trades"]))
    try:
        await wait_for(lambda: _count(prod, 150), 15, "fourth gatherer's rows merged")
        await wait_for(lambda: _rows_read(prod, 440), 10, "fourth gatherer fully read")
        cur = dict(await fetch(prod, "SELECT gatherer_id, cursor_seq FROM sync_cursors"))
        assert {k: cur[k] for k in before} == before  # the first three were not re-read
        assert (await fetch(prod, "SELECT rows_merged, rows_duplicate FROM sync_cursors "
                                  "WHERE gatherer_id = 'gatherer-4'")) == [(30, 50)]
        assert app.health()["gatherers"]["gatherer-4"]["status"] == "healthy"
        ids = [r[0] for r in await fetch(prod, "SELECT trade_id FROM trades")]
        assert len(ids) == len(set(ids)) == 150
    finally:
        await app.stop()


async def _count(prod: str, n: int) -> bool:
    return bool(await scalar(prod, "SELECT count(*) FROM trades") == n)


async def _rows_read(prod: str, n: int) -> bool:
    return bool(await scalar(prod, "SELECT coalesce(sum(rows_merged + rows_duplicate), 0) FROM sync_cursors") == n)


async def _cov(prod: str, recovered: bool) -> bool:
    rows = await fetch(prod, "SELECT recovered FROM coverage_events")
    return rows == [(recovered,)]


async def test_a_known_ts_rank_fills_a_null_one_and_is_never_replaced(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """Issue 19: a gatherer that saw the whole millisecond knows a delta's rank where another did
    not; production keeps the known one whichever gatherer delivered the row first."""
    ex = Exchange(random.Random(19))
    g1, g2, g3 = (fresh_database(pg_cluster, "gatherer") for _ in range(3))
    prod = fresh_database(pg_cluster, "production")
    d = ex.delta()
    await insert(gatherer_role(g1), "orderbook_deltas", [dict(d, ts_rank=None)])
    await insert(gatherer_role(g2), "orderbook_deltas", [dict(d, ts_rank=3)])
    await insert(gatherer_role(g3), "orderbook_deltas", [dict(d, ts_rank=4)])  # would be a bug upstream
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1}, prod, tables=["orderbook_deltas"]))
    try:
        await wait_for(lambda: _rows_read(prod, 1), 10, "gatherer-1 merged")
        assert await fetch(prod, "SELECT ts_rank, gatherer_id FROM orderbook_deltas") == [(None, "gatherer-1")]
        await app.stop()
        app = await start_app(write_config(tmp_path, {"gatherer-1": g1, "gatherer-2": g2, "gatherer-3": g3}, prod,
                                           name="b.yaml", tables=["orderbook_deltas"]))
        await wait_for(lambda: _rows_read(prod, 3), 10, "gatherers 2 and 3 merged")
        rows = await fetch(prod, "SELECT ts_rank, gatherer_id FROM orderbook_deltas")
        assert rows in ([(3, "gatherer-1")], [(4, "gatherer-1")])  # one row; the first known rank stays
        assert await scalar(prod, "SELECT sum(rows_merged) FROM sync_cursors") == 2  # insert + one fill
    finally:
        await app.stop()
