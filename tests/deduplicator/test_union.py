"""Three gatherers with overlapping, differently ordered, each-incomplete copies -> the exact union."""

from __future__ import annotations

import random
from pathlib import Path

from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert, key_of, seen_by
from tests.deduplicator._fleet import (
    fetch,
    gatherer_role,
    scalar,
    start_app,
    wait_for,
    write_config,
)
from tests.fix_db import fresh_database

EVENT_TABLES = ("trades", "orderbook_deltas", "tickers")


async def test_three_gatherers_merge_to_exact_union(pg_cluster: PgCluster, tmp_path: Path) -> None:
    rng = random.Random(7)
    ex = Exchange(rng)
    for _ in range(900):
        ex.trade()
    for _ in range(700):
        ex.delta()
    for _ in range(300):
        ex.ticker()
    for _ in range(60):
        ex.snapshot()
    gdsn = {f"gatherer-{i}": fresh_database(pg_cluster, "gatherer") for i in (1, 2, 3)}
    prod = fresh_database(pg_cluster, "production")

    # gatherer i misses the i-th third of every table (a different slice each); order differs
    expected: dict[str, set[tuple[object, ...]]] = {}
    for table in (*EVENT_TABLES, "orderbook_snapshots"):
        rows = ex.rows[table]
        n = len(rows)
        for i, (gid, dsn) in enumerate(gdsn.items()):
            keep = [r for j, r in enumerate(rows) if not (i * n // 3 <= j < (i + 1) * n // 3 and j % 2 == 0)]
            await insert(gatherer_role(dsn), table, seen_by(keep, 1000 * (i + 1), rng), batches=7)
        # every row is kept by at least two gatherers except none: union is all rows
        expected[table] = {key_of(table, r) for r in rows}

    app = await start_app(write_config(tmp_path, gdsn, prod, page_size=97))
    try:
        async def done() -> bool:
            return all([await scalar(prod, f"SELECT count(*) FROM {t}") == len(expected[t]) for t in EVENT_TABLES])
        await wait_for(done, 40, "union merged")
        await wait_for(lambda: _all_zero(app), 10, "lag 0")
        # exactly the union, once each
        trades = await fetch(prod, "SELECT trade_id FROM trades")
        assert sorted(r[0] for r in trades) == sorted(k[0] for k in expected["trades"])
        assert await scalar(prod, "SELECT count(*) FROM trade_ids") == len(expected["trades"])
        deltas = await fetch(prod, "SELECT ticker, exchange_ts, side, price, delta, occurrence FROM orderbook_deltas")
        assert len(deltas) == len(set(deltas)) and set(deltas) == expected["orderbook_deltas"]
        tick = await fetch(prod, "SELECT ticker, exchange_ts, content_hash FROM tickers")
        assert len(tick) == len(set(tick)) and set(tick) == expected["tickers"]
        # snapshots are observations: one row per (snapshot, gatherer that has it)
        seen = 0
        for dsn in gdsn.values():
            seen += await scalar(dsn, "SELECT count(*) FROM orderbook_snapshots")
        assert await scalar(prod, "SELECT count(*) FROM orderbook_snapshots") == seen
        # merged + duplicate == read, per gatherer and table
        total_read = sum([await scalar(d, f"SELECT count(*) FROM {t}") for d in gdsn.values() for t in EVENT_TABLES])
        merged, dup = (await fetch(prod, "SELECT sum(rows_merged), sum(rows_duplicate) FROM sync_cursors "
                                         "WHERE table_name = ANY(%s)", (list(EVENT_TABLES),)))[0]
        assert merged == sum(len(v) for k, v in expected.items() if k in EVENT_TABLES)
        assert merged + dup == total_read and dup > 0
        m = app.metrics
        assert m.dedup_records_written_total.labels(table="trades")._value.get() == len(expected["trades"])
        # every gatherer acked its final cursor for every table
        for gid, dsn in gdsn.items():
            acks = dict(await fetch(dsn, "SELECT table_name, cursor_seq FROM sync_acks WHERE consumer = 'deduplicator'"))
            for t in EVENT_TABLES:
                top = await scalar(dsn, f"SELECT max(ingest_seq) FROM {t}")
                assert acks[t] == top, (gid, t)
        # the delivering gatherer is recorded
        assert {r[0] for r in await fetch(prod, "SELECT DISTINCT gatherer_id FROM trades")} <= set(gdsn)
    finally:
        await app.stop()


async def _all_zero(app) -> bool:  # type: ignore[no-untyped-def]
    return all(lp.lag_seconds() == 0.0 for lp in app.loops)
