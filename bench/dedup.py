"""dedup: deduplicator merge of 3 gatherers with overlapping data vs keyset read + binary COPY into
staging + INSERT ON CONFLICT DO NOTHING; and merge lag at 5,000 rows/s across three gatherers.

Throughput: three fresh gatherer databases hold the same ``n`` orderbook_delta rows (three
redundant gatherers saw the same events). Both sides process all 3n rows (n land, 2n are
duplicates); rows/s counts rows read from gatherers. Raw: for each gatherer in turn, 10k-row
keyset pages ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` streamed into a production TEMP
staging table, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, commit. Ours: the real
deduplicator ``App`` (every table synced, defaults: 10k pages, max_concurrency 8), from start to
every loop caught up. Each rep gets a fresh production database (untimed).

Lag: three gatherer databases receive the same 5,000 rows/s (250-row transactions every 50 ms,
each with ``pg_notify`` as the gatherer's writer does, ``received_at`` = insert time), the
deduplicator runs, and lag = production ``merged_at`` - ``received_at`` of each row. On a loaded
machine the inserter may fall short of 5,000 rows/s; ``rate_achieved`` says what it reached.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from deduplicator.app import App
from deduplicator.config import DeduplicatorConfig
from deduplicator.tables import SPECS
from shared.config import Environment, parse_config
from shared.pgcluster import free_port

from ._db import ROLE_PASSWORDS, fresh_database
from ._harness import Sample, peak_rss_bytes, summarise
from ._model import Context, Row

PAGE = 10_000
LAG_RATE = 5_000  # rows/s, the same stream into each of three gatherers
COLS = SPECS["orderbook_deltas"].column_names


def fill(dsn: str, n: int, seed_ts: int) -> None:
    """``n`` deltas (identical in every gatherer given the same seed_ts), in 10 transactions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        step = max(1, n // 10)
        for start in range(0, n, step):
            conn.execute(
                "INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, occurrence,"
                " seq, sid, received_at) SELECT 'KXB-' || (i %% 2000), %s + i * 37, "
                "CASE WHEN i %% 2 = 0 THEN 'yes' ELSE 'no' END, 100 * (1 + i %% 99), "
                "100 * (1 + i %% 50) * (CASE WHEN i %% 3 = 0 THEN -1 ELSE 1 END), 0, i, 1, %s + i "
                "FROM generate_series(%s::bigint, %s::bigint) i",
                (seed_ts, seed_ts, start, min(n, start + step) - 1))
        conn.execute("VACUUM ANALYZE orderbook_deltas")


def _db_section(dsn: str, role: str, workdir: Path) -> dict[str, Any]:
    d = conninfo_to_dict(dsn)
    pw = workdir / f"{role}.pw"
    pw.write_text(ROLE_PASSWORDS[role])
    return {"host": d["host"], "port": int(str(d["port"])), "dbname": d["dbname"], "user": role,
            "password_file": str(pw), "sslmode": "disable", "connect_timeout_s": 5,
            "pool_max": 8}


def make_app(gatherers: list[str], production: str, workdir: Path) -> App:
    doc = {
        "gatherers": [{"id": f"g{i}", "database": _db_section(g, "dedup_reader", workdir)}
                      for i, g in enumerate(gatherers)],
        "production": _db_section(production, "deduplicator", workdir),
        "sync": {"retry_max_s": 1.0},
        "health": {"host": "127.0.0.1", "port": free_port()},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "ERROR", "format": "text"},
    }
    cfg = parse_config(yaml.safe_dump(doc), DeduplicatorConfig, Environment(env={}))
    return App(cfg, CollectorRegistry(), rng=random.Random(1))


async def _caught_up(app: App) -> bool:
    return all(lp.source.healthy and lp.lag_seconds() == 0.0 for lp in app.loops)


async def ours_once(ctx: Context, gatherers: list[str], n: int) -> Sample:
    prod = fresh_database(ctx.pg_dsn, "production", "bench_prod")
    app = make_app(gatherers, prod, Path(ctx.workdir))
    c0, t0 = time.process_time(), time.perf_counter()
    await app.start()
    try:
        async with await psycopg.AsyncConnection.connect(prod, autocommit=True) as conn:
            while True:
                cur = await conn.execute("SELECT count(*) FROM orderbook_deltas")
                row = await cur.fetchone()
                if row and row[0] >= n and await _caught_up(app):
                    break
                await asyncio.sleep(0.02)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await app.stop()
    return Sample(3 * n, wall, cpu)


async def raw_once(ctx: Context, gatherers: list[str], n: int) -> Sample:
    prod = fresh_database(ctx.pg_dsn, "production", "bench_prod")
    cols = ", ".join(COLS)
    typed = ", ".join(f"{c}::{t}" for c, t in SPECS["orderbook_deltas"].columns)
    ddl_cols = ", ".join(f"{c} {t}" for c, t in SPECS["orderbook_deltas"].columns)
    async with await psycopg.AsyncConnection.connect(prod, autocommit=True) as p:
        await p.execute(f"CREATE TEMP TABLE stg ({ddl_cols}, x bigint, s bigint) "
                        "ON COMMIT DELETE ROWS")
        srcs = [await psycopg.AsyncConnection.connect(g, autocommit=True) for g in gatherers]
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            total = 0
            for gi, g in enumerate(srcs):
                x, s = 0, 0
                while True:
                    async with p.transaction():
                        pcur = p.cursor()
                        read = (f"COPY (SELECT {typed}, ingest_xid::text::bigint, ingest_seq "
                                f"FROM orderbook_deltas WHERE (ingest_xid, ingest_seq) > "
                                f"('{x}'::xid8, {s}) ORDER BY ingest_xid, ingest_seq "
                                f"LIMIT {PAGE}) TO STDOUT (FORMAT BINARY)")
                        async with pcur.copy("COPY stg FROM STDIN (FORMAT BINARY)") as dst, \
                                g.cursor().copy(read) as src:
                            async for data in src:
                                await dst.write(data)
                        got = pcur.rowcount
                        if got <= 0:
                            break
                        cur = await p.execute("SELECT x, s FROM stg ORDER BY x DESC, s DESC "
                                              "LIMIT 1")
                        last = await cur.fetchone()
                        assert last is not None
                        x, s = last
                        await p.execute(
                            f"INSERT INTO orderbook_deltas ({cols}, gatherer_id, merged_at) "
                            f"SELECT {cols}, %s, now_us() FROM stg ON CONFLICT DO NOTHING",
                            (f"g{gi}",))
                        total += got
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            for g in srcs:
                await g.close()
    return Sample(total, wall, cpu)


async def lag(ctx: Context, seconds: float) -> dict[str, float]:
    gatherers = [fresh_database(ctx.pg_dsn, "gatherer", "bench_lag") for _ in range(3)]
    prod = fresh_database(ctx.pg_dsn, "production", "bench_lagprod")
    app = make_app(gatherers, prod, Path(ctx.workdir))
    await app.start()
    conns = [await psycopg.AsyncConnection.connect(g, autocommit=True) for g in gatherers]
    per_tick = LAG_RATE // 20
    try:
        await asyncio.sleep(1.0)
        t_start = time.time_ns() // 1000
        t_begin = time.monotonic()
        i = 0
        next_t = time.monotonic()
        end = next_t + seconds
        while time.monotonic() < end:
            now = time.time_ns() // 1000
            for c in conns:
                async with c.transaction():
                    await c.execute(
                        "INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, "
                        "occurrence, seq, sid, received_at) SELECT 'KXL-' || (k %% 500), "
                        "%s + k, 'yes', 100 * (1 + k %% 99), 100, 0, k, 1, %s "
                        "FROM generate_series(%s::bigint, %s::bigint) k", (t_start, now, i, i + per_tick - 1))
                    await c.execute("SELECT pg_notify('kalshi_ingest', 'orderbook_deltas')")
            i += per_tick
            next_t += 0.05
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        achieved = i / (time.monotonic() - t_begin)
        # let the last rows merge, then read every row's lag
        deadline = time.monotonic() + 30
        async with await psycopg.AsyncConnection.connect(prod, autocommit=True) as pc:
            while time.monotonic() < deadline:
                cur = await pc.execute("SELECT count(*) FROM orderbook_deltas")
                r = await cur.fetchone()
                if r and r[0] >= i:
                    break
                await asyncio.sleep(0.1)
            cur = await pc.execute("SELECT merged_at - received_at FROM orderbook_deltas")
            lags = sorted(r[0] / 1e6 for r in await cur.fetchall())
    finally:
        for c in conns:
            await c.close()
        await app.stop()
    q = statistics.quantiles(lags, n=100)
    return {"rows": len(lags), "expected": i, "rate_achieved": round(achieved),
            "p50_s": round(q[49], 3), "p99_s": round(q[98], 3),
            "max_s": round(lags[-1], 3)}


async def arun(ctx: Context) -> list[Row]:
    n = 20_000 if ctx.quick else 60_000
    gatherers = [fresh_database(ctx.pg_dsn, "gatherer", "bench_dedup") for _ in range(3)]
    for g in gatherers:
        fill(g, n, 1_780_000_000_000_000)
    raw: list[Sample] = []
    ours: list[Sample] = []
    reps = min(ctx.reps, 3)
    for rep in range(reps + 1):
        r, o = await raw_once(ctx, gatherers, n), await ours_once(ctx, gatherers, n)
        if rep:
            raw.append(r)
            ours.append(o)
    rss = peak_rss_bytes()
    lag_stats = await lag(ctx, 8.0 if ctx.quick else 15.0)
    return [
        Row("dedup", "dedup merge: 3 gatherers → production", "rows/s", summarise(raw),
            summarise(ours), "≥ 0.5 of raw", 0.5, peak_rss=rss,
            note=f"{n} deltas in each of 3 gatherer DBs (full overlap); rows read/s"),
        Row("dedup", "dedup lag at 5,000 rows/s × 3 gatherers", "s", None, None,
            "p99 < 1 s", None, ok=lag_stats["p99_s"] < 1.0, peak_rss=peak_rss_bytes(),
            extra=lag_stats),
    ]


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))
