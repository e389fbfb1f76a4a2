"""Poison rows: a page production refuses is bisected to the rows at fault, which go to
production's rejected_rows with the reason; everything else merges and the cursor moves on."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import psycopg

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

POISON = 4242  # a price production's (drifted) schema refuses


async def test_refused_rows_are_set_aside_and_the_cursor_moves_on(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(15))
    g1 = fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    # Schema drift: production refuses what the gatherer accepted (a CHECK the gatherer lacks).
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("ALTER TABLE tickers ADD CONSTRAINT no_4242 CHECK (price IS DISTINCT FROM 4242)")
    rows = [ex.ticker() for _ in range(40)]
    bad = {3, 17, 18, 39}
    for i in bad:
        rows[i]["price"] = POISON
    await insert(gatherer_role(g1), "tickers", rows[:20])
    app = await start_app(write_config(tmp_path, {"gatherer-1": g1}, prod, tables=["tickers"], page_size=500))
    try:
        await wait_for(lambda: _merged(prod, 17), 15, "the good rows of the first page")
        await insert(gatherer_role(g1), "tickers", rows[20:])  # later rows are not stuck behind
        await wait_for(lambda: _merged(prod, 36), 15, "the rows after the poisoned page")
        got = await fetch(prod, "SELECT gatherer_id, table_name, reason, payload FROM rejected_rows ORDER BY id")
        assert len(got) == len(bad)
        assert all(g == "gatherer-1" and t == "tickers" and "23514" in r and "no_4242" in r for g, t, r, _p in got)
        payloads = [orjson.loads(p) for *_x, p in got]
        assert sorted(p["ticker"] + p["exchange_ts"] for p in payloads) == sorted(
            rows[i]["ticker"] + str(rows[i]["exchange_ts"]) for i in bad)
        assert all(p["price"] == str(POISON) for p in payloads)
        assert await scalar(prod, "SELECT rows_merged FROM sync_cursors WHERE table_name = 'tickers'") == 36
        # the cursor is past every row of the gatherer, the refused ones included
        last = await scalar(gatherer_role(g1), "SELECT max(ingest_seq) FROM tickers")
        assert await scalar(prod, "SELECT cursor_seq FROM sync_cursors WHERE table_name = 'tickers'") == last
        m = app.registry.get_sample_value("dedup_rejected_rows_total", {"gatherer": "gatherer-1", "table": "tickers"})
        assert m == len(bad)
        assert app.production.connected
    finally:
        await app.stop()


async def _merged(prod: str, n: int) -> bool:
    return int(await scalar(prod, "SELECT count(*) FROM tickers")) == n
