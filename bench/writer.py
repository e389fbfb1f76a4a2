"""local write: the writer path (router rows -> batch -> direct COPY, or staging + INSERT ON
CONFLICT for a batch the database refuses -> commit) vs psycopg binary COPY of the same
pre-built rows straight into the table, 10k batches. Trades are also written as the gatherer
receives them with its default two trade sockets (every trade twice), and the schema's floor for
trades (the same COPY into both trade_ids and trades) is shown against the one-table raw.

Rows are the router's output for the recorded fp2026 frames (deltas and trades), replicated with
shifted timestamps / fresh trade ids to ``n`` rows, and COPY'd into a fresh migrated gatherer
database (the tables are truncated, untimed, before each rep). Also timed: the writer with a
``NullSink`` (formatting alone, style.md §2.2), to split client-side cost from the database's.
CPU figures are client + server: this process plus the PostgreSQL backend of the COPY
connection (/proc/<backend pid>/stat), so they stay comparable when the machine is noisy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from gatherer.writer import SPECS, NullSink, PgSink, Writer
from shared.metrics import GathererMetrics

from . import frames
from ._db import fresh_database, role_dsn
from ._harness import Sample, ainterleave, peak_rss_bytes, proc_cpu_s
from ._model import Context, Row
from .decode import RX, make_router

RAW_BATCH = 10_000  # performance.md: raw limit is COPY in 10k batches


async def router_rows(ctx: Context) -> tuple[list[Any], list[Any]]:
    """(delta rows, trade rows) the router emits for the recorded fp2026 frames."""
    pre, stream = frames.load(ctx.frames, "fp2026")
    router, _ = make_router()
    got: dict[str, list[Any]] = {"orderbook_deltas": [], "trades": []}

    class Keep:
        def __init__(self, out: list[Any]) -> None:
            self.out = out

        def offer(self, row: Any) -> bool:
            self.out.append(row)
            return True

        async def put(self, row: Any) -> None:
            self.out.append(row)

    router._deltas = Keep(got["orderbook_deltas"])
    router._trades = Keep(got["trades"])
    router.attach("c0", "orderbook")
    for raw in pre:
        await router.route("c0", raw, RX)
    got["orderbook_deltas"].clear()
    for raw in stream:
        await router.route("c0", raw, RX)
    return got["orderbook_deltas"], got["trades"]


def replicate(rows: list[Any], n: int, kind: str) -> list[Any]:
    """``n`` distinct rows from ``rows``: copy k shifts exchange_ts by k days (deltas) or gets
    fresh trade ids (trades), so no copy conflicts with another."""
    if not rows:
        raise RuntimeError(f"no recorded {kind} to replicate: the frame recording holds none")
    out: list[Any] = []
    k = 0
    while len(out) < n:
        shift = k * 86_400_000_000
        for r in rows:
            if kind == "trades":
                out.append(r._replace(trade_id=str(uuid.uuid4()), exchange_ts=r.exchange_ts + shift))
            else:
                out.append(r._replace(exchange_ts=r.exchange_ts + shift))
            if len(out) >= n:
                break
        k += 1
    return out


async def _column_types(conn: psycopg.AsyncConnection[Any], table: str, cols: tuple[str, ...]
                        ) -> list[str]:
    cur = await conn.execute(
        "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.column_name "
        "WHERE c.table_name = %s", (table, table))
    types = dict(await cur.fetchall())
    return [types[c] for c in cols]


def raw_copy(dsn: str, table: str, rows: list[Any]) -> Callable[[], Awaitable[Sample]]:
    """Binary COPY of pre-built rows (already in the column types) in 10k-row transactions."""
    spec = SPECS[table]
    state: dict[str, Any] = {}

    async def once() -> Sample:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await _truncate(conn)
            if "types" not in state:
                state["types"] = await _column_types(conn, table, spec.columns)
                if table == "trades":
                    state["rows"] = [(uuid.UUID(r[0]), *r[1:]) for r in rows]
                else:
                    state["rows"] = [tuple(r) for r in rows]
            built = state["rows"]
            sql = f"COPY {table} ({', '.join(spec.columns)}) FROM STDIN (FORMAT BINARY)"
            pid = conn.info.backend_pid
            c0, s0, t0 = time.process_time(), proc_cpu_s(pid), time.perf_counter()
            for i in range(0, len(built), RAW_BATCH):
                async with conn.transaction(), conn.cursor().copy(sql) as cp:
                    cp.set_types(state["types"])
                    for r in built[i:i + RAW_BATCH]:
                        await cp.write_row(r)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0 + proc_cpu_s(pid) - s0
            return Sample(len(built), wall, cpu)

    return once


async def _truncate(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("TRUNCATE trades, trade_ids, orderbook_deltas")


def raw_copy_trades2(dsn: str, rows: list[Any]) -> Callable[[], Awaitable[Sample]]:
    """The floor of storing trades under hardening rule 1: binary COPY of pre-built rows into
    ``trade_ids`` and then ``trades`` (both tables, one transaction per 10k batch)."""
    state: dict[str, Any] = {}

    async def once() -> Sample:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await _truncate(conn)
            if "rows" not in state:
                state["types"] = await _column_types(conn, "trades", SPECS["trades"].columns)
                state["id_types"] = await _column_types(
                    conn, "trade_ids", ("trade_id", "exchange_ts", "ticker"))
                state["rows"] = [(uuid.UUID(r[0]), *r[1:]) for r in rows]
            built = state["rows"]
            cols = ", ".join(SPECS["trades"].columns)
            pid = conn.info.backend_pid
            c0, s0, t0 = time.process_time(), proc_cpu_s(pid), time.perf_counter()
            for i in range(0, len(built), RAW_BATCH):
                batch = built[i:i + RAW_BATCH]
                async with conn.transaction():
                    async with conn.cursor().copy("COPY trade_ids (trade_id, exchange_ts, "
                                                  "ticker) FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(state["id_types"])
                        for r in batch:
                            await cp.write_row((r[0], r[2], r[1]))
                    async with conn.cursor().copy(f"COPY trades ({cols}) FROM STDIN "
                                                  "(FORMAT BINARY)") as cp:
                        cp.set_types(state["types"])
                        for r in batch:
                            await cp.write_row(r)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0 + proc_cpu_s(pid) - s0
            return Sample(len(built), wall, cpu)

    return once


def writer_path(dsn: str, table: str, rows: list[Any], null: bool = False,
                stored: int | None = None) -> Callable[[], Awaitable[Sample]]:
    """Our writer, as the gatherer builds it (default batch size), from the first ``offer`` to
    every row committed (``close`` returned). ``stored``: the units to count (the distinct
    rows, when ``rows`` repeats them as two trade sockets do); default ``len(rows)``."""
    gdsn = role_dsn(dsn, "gatherer")

    async def once() -> Sample:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await _truncate(conn)
        pg = None if null else PgSink(gdsn)
        sink: NullSink | PgSink = NullSink() if pg is None else pg
        w = Writer(SPECS[table], sink, GathererMetrics(CollectorRegistry()))
        pid = 0
        if pg is not None:  # connect before the clock starts (the gatherer's is long-lived)
            conn = await pg._get()
            pid = conn.info.backend_pid
        w.start()
        c0, s0, t0 = time.process_time(), proc_cpu_s(pid) if pid else 0.0, time.perf_counter()
        offer = w.offer
        for r in rows:
            if not offer(r):
                await w.put(r)
        # the server's share, read before close() ends the backend
        w_server = 0.0
        while w.queued_rows:
            await asyncio.sleep(0.001)
        if pid:
            w_server = proc_cpu_s(pid) - s0
        left = await w.close(120)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + w_server
        if left:
            raise RuntimeError(f"writer left {left} rows")
        return Sample(len(rows) if stored is None else stored, wall, cpu)

    return once


async def arun(ctx: Context) -> list[Row]:
    deltas, trades = await router_rows(ctx)
    n_d = 40_000 if ctx.quick else 100_000
    n_t = 15_000 if ctx.quick else 30_000
    dsn = fresh_database(ctx.pg_dsn, "gatherer", "bench_write")
    out: list[Row] = []
    for table, rows in (("orderbook_deltas", replicate(deltas, n_d, "deltas")),
                        ("trades", replicate(trades, n_t, "trades"))):
        fns = {
            "raw": raw_copy(dsn, table, rows),
            "ours": writer_path(dsn, table, rows),
            "null": writer_path(dsn, table, rows, null=True),
        }
        if table == "trades":
            # production shape: the default two trade sockets deliver every trade twice, in
            # the same batch as a rule; the writer stores each once (rows/s counts trades)
            twice = [r for r in rows for _ in (0, 1)]
            fns["twice"] = writer_path(dsn, table, twice, stored=len(rows))
            fns["raw2"] = raw_copy_trades2(dsn, rows)
        st = await ainterleave(fns, min(ctx.reps, 3), warmup=1)
        rss = peak_rss_bytes()
        if table == "trades":
            out.append(Row("local write", "write trades, each delivered twice: Writer+PgSink",
                           "rows/s", st["raw"], st["twice"], "≥ 0.8 of raw", 0.8, peak_rss=rss,
                           note=f"{len(rows)} trades x 2 arrivals (2 trade sockets); rows/s = "
                                "trades stored; repeats dropped before the direct COPY"))
        out.append(Row("local write", f"write {table}: Writer+PgSink", "rows/s", st["raw"],
                       st["ours"], "≥ 0.8 of raw" if table != "trades" else "(distinct rows)",
                       0.8 if table != "trades" else None, peak_rss=rss,
                       note=f"{len(rows)} rows; batch 5000, direct COPY, staging on refusal"))
        if table == "trades":
            out.append(Row("local write", "write trades: raw COPY into trade_ids + trades",
                           "rows/s", st["raw"], st["raw2"], "(the schema's floor)", None,
                           peak_rss=rss, note="hardening rule 1 stores every trade in two "
                           "tables: the same pre-built rows COPY'd into both, vs trades alone"))
        out.append(Row("local write", f"write {table}: formatting only (NullSink)", "rows/s",
                       st["raw"], st["null"], "(where time goes)", None, peak_rss=rss,
                       note="CopyFormatter + queue, no database"))
    return out


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))
