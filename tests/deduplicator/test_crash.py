"""kill -9 of the real ``kalshi-deduplicator`` process twenty times while gatherers keep writing:
production ends exact (every event once, markets at their newest version)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from pathlib import Path
from typing import Any

import psycopg

from shared.pgcluster import PgCluster
from tests.deduplicator._data import Exchange, insert, upsert_market
from tests.deduplicator._fleet import fetch, gatherer_role, scalar, wait_for, write_config
from tests.fix_db import fresh_database

EXE = str(Path(sys.executable).parent / "kalshi-deduplicator")
MARKETS = ("KXA-1", "KXB-2", "KXC-3", "KXD-4")


async def _writer(ex: Exchange, gdsn: list[str], stop: asyncio.Event, versions: dict[str, int]) -> None:
    rng = ex.rng
    version = 0
    conns = [await psycopg.AsyncConnection.connect(gatherer_role(d), autocommit=True) for d in gdsn]
    try:
        while not stop.is_set():
            trades = [ex.trade() for _ in range(rng.randrange(5, 30))]
            deltas = [ex.delta() for _ in range(rng.randrange(5, 30))]
            for conn in rng.sample(conns, 2):  # every event reaches two of the three gatherers
                await insert(conn, "trades", trades, batches=2)
                await insert(conn, "orderbook_deltas", deltas)
            version += 1
            t = rng.choice(MARKETS)
            versions[t] = version
            await upsert_market(rng.choice(conns), ex.market(t, version, status=f"v{version}"))
            await asyncio.sleep(rng.uniform(0.05, 0.15))
    finally:
        for conn in conns:
            await conn.close()


async def test_kill9_twenty_times_while_data_flows(pg_cluster: PgCluster, tmp_path: Path) -> None:
    rng = random.Random(20251125)
    ex = Exchange(random.Random(99))
    gdsn = {f"gatherer-{i}": fresh_database(pg_cluster, "gatherer") for i in (1, 2, 3)}
    prod = fresh_database(pg_cluster, "production")
    cfg = write_config(tmp_path, gdsn, prod, page_size=100, tables=["trades", "orderbook_deltas", "markets"])
    stop = asyncio.Event()
    versions: dict[str, int] = {}
    writer = asyncio.create_task(_writer(ex, list(gdsn.values()), stop, versions))
    log = tmp_path / "dedup.log"
    kills = 0
    try:
        with log.open("ab") as err:
            for _ in range(20):
                size = log.stat().st_size
                start_total = await _merged(prod)
                proc = await asyncio.create_subprocess_exec(EXE, "--config", str(cfg), stderr=err,
                                                            stdout=asyncio.subprocess.DEVNULL)
                await _started(log, size, proc)
                # kill at a seeded-random moment after this process has begun merging pages
                await wait_for(lambda t=start_total: _progressed(prod, t), 20, "the process merging")
                await asyncio.sleep(rng.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
                assert await proc.wait() == -signal.SIGKILL
                kills += 1
            stop.set()
            await writer
            size = log.stat().st_size
            proc = await asyncio.create_subprocess_exec(EXE, "--config", str(cfg), stderr=err,
                                                        stdout=asyncio.subprocess.DEVNULL)
            try:
                await _started(log, size, proc)
                await wait_for(lambda: _complete(prod, ex), 40, "production complete after the kills")
                await asyncio.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                rc = await asyncio.wait_for(proc.wait(), 30)
            assert rc == 0
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer

    assert kills == 20
    trade_ids = [r[0] for r in await fetch(prod, "SELECT trade_id FROM trades")]
    assert len(trade_ids) == len(set(trade_ids)) == len(ex.rows["trades"])
    assert set(trade_ids) == {r["trade_id"] for r in ex.rows["trades"]}
    deltas = await fetch(prod, "SELECT ticker, exchange_ts, side, price, delta, occurrence FROM orderbook_deltas")
    want = {(r["ticker"], r["exchange_ts"], r["side"], r["price"], r["delta"], r["occurrence"])
            for r in ex.rows["orderbook_deltas"]}
    assert len(deltas) == len(set(deltas)) and set(deltas) == want
    markets = dict(await fetch(prod, "SELECT ticker, exchange_updated_ts FROM markets"))
    assert markets == versions
    text = log.read_text()
    for line in ("connected to production RDS", "connected to gatherer-1", "connected to gatherer-3",
                 "sync started for trades"):
        assert line in text


async def _merged(prod: str) -> int:
    return int(await scalar(prod, "SELECT coalesce(sum(rows_merged + rows_duplicate), 0) FROM sync_cursors"))


async def _progressed(prod: str, start_total: int) -> bool:
    return await _merged(prod) > start_total


async def _started(log: Path, size: int, proc: asyncio.subprocess.Process) -> None:
    """Wait until this process logged its first line (imports done), so the kill lands in its work."""
    for _ in range(400):
        if log.stat().st_size > size or proc.returncode is not None:
            return
        await asyncio.sleep(0.025)


async def _complete(prod: str, ex: Exchange) -> Any:
    n = await scalar(prod, "SELECT count(*) FROM trades")
    d = await scalar(prod, "SELECT count(*) FROM orderbook_deltas")
    return n >= len(ex.rows["trades"]) and d >= len({(r["ticker"], r["exchange_ts"], r["side"], r["price"],
                                                       r["delta"], r["occurrence"]) for r in ex.rows["orderbook_deltas"]})
