"""A row that commits late on a gatherer (after rows with larger seq/time were merged) is merged."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import psycopg

from deduplicator.cursors import Cursor
from deduplicator.pull import page_select_sql, probe
from deduplicator.tables import TRADES
from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert
from tests.deduplicator._fleet import gatherer_role, scalar, start_app, wait_for, write_config
from tests.fix_db import fresh_database, role_dsn

INSERT = ("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, taker_side, source, "
          "received_at) VALUES (%(trade_id)s, %(ticker)s, %(exchange_ts)s, %(yes_price)s, %(no_price)s, %(count)s, "
          "%(taker_side)s, %(source)s, %(received_at)s) RETURNING ingest_seq")


async def test_open_transaction_row_is_merged_after_it_commits(pg_cluster: PgCluster, tmp_path: Path) -> None:
    ex = Exchange(random.Random(3))
    g = fresh_database(pg_cluster, "gatherer")
    prod = fresh_database(pg_cluster, "production")
    await _create_time_partitions_now(g)
    app = await start_app(write_config(tmp_path, {"gatherer-1": g}, prod, tables=["trades"]))
    a = await psycopg.AsyncConnection.connect(gatherer_role(g))
    b = await psycopg.AsyncConnection.connect(gatherer_role(g))
    try:
        # B takes its xid first; A then inserts the "late" row (older time, smaller seq, larger xid)
        await b.execute("SELECT pg_current_xact_id()")
        late = ex.trade(ts_us=ex.trade()["exchange_ts"] - 60_000_000)
        ex.rows["trades"].pop(0)
        late_seq = (await (await a.execute(INSERT, late)).fetchone())[0]  # type: ignore[index]
        early = [ex.trade() for _ in range(5)]
        for r in early:
            await b.execute(INSERT, r)
        await b.commit()  # B's rows: larger seq and time than the late row, smaller xid

        await wait_for(lambda: _count(prod, early), 10, "B's rows merged while A is open")
        assert not await _present(prod, late["trade_id"])
        cur_seq = await scalar(prod, "SELECT cursor_seq FROM sync_cursors WHERE table_name = 'trades'")
        assert cur_seq > late_seq  # a seq- or time-ordered cursor would now be past the late row

        # rows committed after A's xid are held back (not lost) while A is open, and lag says so
        after = [ex.trade() for _ in range(3)]
        await insert(gatherer_role(g), "trades", after)
        await asyncio.sleep(0.6)
        assert not any([await _present(prod, r["trade_id"]) for r in after])
        assert app.loops[0].lag_seconds() > 0
        assert app.health()["gatherers"]["gatherer-1"]["lag_seconds"] > 0

        await a.commit()
        await wait_for(lambda: _count(prod, [late, *early, *after]), 10, "late row merged")
        assert await scalar(prod, "SELECT count(*) FROM trades") == 9
        await wait_for(lambda: _zero(app), 5, "lag back to 0")
    finally:
        await a.close()
        await b.close()
        await app.stop()


async def test_page_never_returns_rows_at_or_above_xmin(gatherer_dsn: str) -> None:
    """pull.py alone: an open transaction's xid bounds what a page and the probe may return."""
    ex = Exchange(random.Random(4))
    gw = gatherer_role(gatherer_dsn)
    await insert(gw, "trades", [ex.trade() for _ in range(3)])
    a = await psycopg.AsyncConnection.connect(gw)
    reader = await psycopg.AsyncConnection.connect(role_dsn(gatherer_dsn, "dedup_reader"), autocommit=True)
    try:
        await a.execute(INSERT, ex.trade())  # open: holds xmin
        await insert(gw, "trades", [ex.trade() for _ in range(4)])  # committed, larger xid
        rows = await (await reader.execute(page_select_sql(TRADES, Cursor(), 100))).fetchall()
        assert len(rows) == 3
        last = Cursor(rows[-1][-2], rows[-1][-1])
        pr = await probe(reader, TRADES, last)
        assert pr.pending and not pr.ready  # the 4 committed rows exist but must wait
        await a.commit()
        rows2 = await (await reader.execute(page_select_sql(TRADES, last, 100))).fetchall()
        assert len(rows2) == 5
        assert [tuple(r[-2:]) for r in rows2] == sorted(tuple(r[-2:]) for r in rows2)
    finally:
        await a.close()
        await reader.close()


async def _create_time_partitions_now(dsn: str) -> None:
    """Make sure the chunks for the next minutes exist (a no-op on native partitions, which are
    created days ahead). TimescaleDB creates a chunk inside the transaction of the first insert
    into its range, and a second transaction inserting into that range waits for the first to
    commit: brief between the gatherer's one-batch transactions, but forever here, where
    transaction A stays open on purpose while B must commit."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for offset_s in (-120, 0, 120):
            await conn.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, "
                               "source, received_at) VALUES (gen_random_uuid(), 'KX-PRIME', now_us() + %s, 1, "
                               "9999, 100, 'ws', now_us())", (offset_s * 1_000_000,))
        await conn.execute("DELETE FROM trades WHERE ticker = 'KX-PRIME'")


async def _present(prod: str, trade_id: object) -> bool:
    return bool(await scalar(prod, "SELECT count(*) FROM trades WHERE trade_id = %s", (trade_id,)))


async def _count(prod: str, rows: list[dict[str, object]]) -> bool:
    ids = [r["trade_id"] for r in rows]
    return await scalar(prod, "SELECT count(*) FROM trades WHERE trade_id = ANY(%s)", (ids,)) == len(ids)


async def _zero(app) -> bool:  # type: ignore[no-untyped-def]
    return all(lp.lag_seconds() == 0.0 for lp in app.loops)


