"""storage: TimescaleDB against native partitions for the gatherer database, in the same run.

One throwaway cluster that preloads TimescaleDB holds two gatherer databases, migrated with
storage native and storage timescaledb, so both engines share one server, its settings and the
machine's noise. Per table (orderbook_deltas, trades):

- **ingest**: our writer (Writer + PgSink, the gatherer's path) into each engine, reps
  interleaved; ``raw`` is native partitions, ``ours`` TimescaleDB, so the ratio is
  TimescaleDB / native;
- **disk**: bytes per million rows after the last rep, on native partitions (every partition,
  indexes included), on TimescaleDB before compression (``hypertable_size``) and after compressing
  every chunk with the settings gatherer migration 005 gives it; ``raw`` is uncompressed
  TimescaleDB, ``ours`` compressed, so the ratio is compressed / uncompressed. The seconds
  compression took per million rows are in ``extra`` (a chunk's compression holds back the
  deduplicator's read horizon for that long).

Rows are the router's output for the recorded fp2026 frames (medium simulator), restricted to the
``TICKERS`` most active markets and replicated by shifting time (deltas) or with fresh trade ids
(trades), starting today at 00:00 UTC so native daily partitions exist for them. How well
columnar compression does depends on rows per ticker per chunk: the note says what this run had.
Needs the TimescaleDB-enabled PostgreSQL ``make setup`` provides.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import psycopg

from shared.migrate import apply_migrations, apply_roles
from shared.pgcluster import PgCluster

from ._db import ROLE_PASSWORDS, fresh_database
from ._harness import Stat, ainterleave, peak_rss_bytes
from ._model import Context, Row
from .writer import router_rows, writer_path

TICKERS = 100  # markets kept from the recording: sets rows per ticker per chunk
DAY_US = 86_400_000_000


def _cluster() -> PgCluster:
    cluster = PgCluster.create(fast=True, name="bench-ts", timescaledb=True)
    try:
        for storage in ("native", "timescaledb"):
            dsn = cluster.create_database(f"template_{storage}")
            apply_migrations(dsn, "gatherer", storage=storage)  # type: ignore[arg-type]
            apply_roles(dsn, ROLE_PASSWORDS)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def spread(rows: list[Any], n: int, kind: str, start_us: int) -> list[Any]:
    """``n`` distinct rows of the ``TICKERS`` busiest tickers: copy k is shifted by k times the
    recording's span (and, for trades, has fresh trade ids), the first starting at ``start_us``."""
    busiest = {t for t, _ in Counter(r.ticker for r in rows).most_common(TICKERS)}
    base = [r for r in rows if r.ticker in busiest]
    lo = min(r.exchange_ts for r in base)
    span = max(r.exchange_ts for r in base) - lo + 1000
    out: list[Any] = []
    k = 0
    while len(out) < n:
        shift = start_us - lo + k * span
        for r in base:
            moved = r._replace(exchange_ts=r.exchange_ts + shift, received_at=r.received_at + shift)
            out.append(moved._replace(trade_id=str(uuid.uuid4())) if kind == "trades" else moved)
            if len(out) >= n:
                break
        k += 1
    return out


def _one(dsn: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, args or None).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def _native_bytes(dsn: str, table: str) -> int:
    return int(_one(dsn, "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                         "WHERE i.inhparent = %s::regclass", table))


def _compress_all(dsn: str, table: str) -> float:
    """Compress every chunk (the retention loop's call, without its age and ack conditions, which
    these future-free test rows would not all meet); returns the seconds it took."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        chunks = [r[0] for r in conn.execute("SELECT show_chunks(%s)", (table,)).fetchall()]
        t0 = time.perf_counter()
        for c in chunks:
            conn.execute("CALL convert_to_columnstore(%s::regclass)", (c,))
        return time.perf_counter() - t0


def _single(value: float) -> Stat:
    return Stat(median=value, min=value, max=value, q1=value, q3=value, reps=1, cpu_s_per_m=0.0,
                rates=[round(value, 1)])


async def arun(ctx: Context) -> list[Row]:
    deltas, trades = await router_rows(ctx)
    n_d = 100_000 if ctx.quick else 400_000
    n_t = 30_000 if ctx.quick else 100_000
    cluster = _cluster()
    out: list[Row] = []
    try:
        server = cluster.dsn("postgres")
        dsns = {s: fresh_database(server, s, f"bench_{s}") for s in ("native", "timescaledb")}
        start = _one(dsns["native"], "SELECT now_us() / %s * %s", DAY_US, DAY_US)
        for table, rows in (("orderbook_deltas", spread(deltas, n_d, "deltas", start)),
                            ("trades", spread(trades, n_t, "trades", start))):
            st = await ainterleave({s: writer_path(dsn, table, rows) for s, dsn in dsns.items()},
                                   min(ctx.reps, 3), warmup=1)
            per_ticker = len(rows) / len({r.ticker for r in rows})
            out.append(Row("storage", f"ingest {table}: TimescaleDB / native", "rows/s", st["native"],
                           st["timescaledb"], "(TimescaleDB / native)", None, peak_rss=peak_rss_bytes(),
                           note=f"{len(rows)} rows, Writer+PgSink into each engine, reps interleaved"))
            native = _native_bytes(dsns["native"], table)
            before = int(_one(dsns["timescaledb"], "SELECT hypertable_size(%s::regclass)", table))
            seconds = _compress_all(dsns["timescaledb"], table)
            after = int(_one(dsns["timescaledb"], "SELECT hypertable_size(%s::regclass)", table))
            per_m = 1e6 / len(rows)
            out.append(Row(
                "storage", f"disk {table}: compressed / uncompressed", "bytes/M rows",
                _single(before * per_m), _single(after * per_m), "(compressed / uncompressed)", None, ok=True,
                extra={"native_bytes_per_m": round(native * per_m),
                       "timescaledb_bytes_per_m": round(before * per_m),
                       "compressed_bytes_per_m": round(after * per_m),
                       "compression_ratio": round(before / after, 2) if after else None,
                       "compress_s_per_m": round(seconds * per_m, 2)},
                note=f"{len(rows)} rows, {per_ticker:.0f} per ticker, segmentby ticker, orderby exchange_ts"))
    finally:
        cluster.destroy()
    return out


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))
