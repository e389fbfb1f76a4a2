"""Partition upkeep: partitions ahead, partition health gauges, ack-aware retention and compression.

At start and every ``retention.interval_s``, on either storage engine (gatherer migration 005
holds the SQL; native partitions or TimescaleDB chunks, the same rule for both):

1. ``ensure_partitions(partitions_ahead_days)`` (under a lock timeout, so a busy catalog never
   blocks us) and ``partition_status()`` into ``db_default_partition_rows{database,table}`` /
   ``db_partitions_ahead_days{database,table}`` (TimescaleDB has no partitions to report: chunks
   are created as rows arrive);
2. with ``enabled``: ``drop_expired_partitions(table, keep_days, consumers)`` per event table,
   then ``prune_trade_ids`` (guard rows of trades that were dropped);
3. with ``compress`` (TimescaleDB only; nothing on native): ``compress_acknowledged_chunks``,
   one chunk per transaction, for chunks older than ``compress_after_days``.

A partition or chunk kept because a consumer has not acknowledged it is logged with the reason and
counted: ``retention_blocked_partitions`` (expired, not dropped) and
``retention_compression_blocked_chunks`` (old enough, not compressed) (data-model.md "Retention
never drops unmerged rows"). Nothing here uses TimescaleDB's own age-only policies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from gatherer.config import RetentionConfig
from shared.db import classify
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.retention")

TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")
DATABASE_LABEL = "gatherer"


class Retention:
    def __init__(self, cfg: RetentionConfig, pool: AsyncConnectionPool, metrics: GathererMetrics,
                 database: str) -> None:
        self._cfg = cfg
        self._pool = pool
        self._m = metrics
        self._db = database
        self._rl = RateLimitedLog(log, 300.0)
        self.last_ok: bool | None = None

    def keep_days(self, table: str) -> int:
        return self._cfg.keep_days_deltas if table == "orderbook_deltas" else self._cfg.keep_days_other

    async def once(self) -> dict[str, Any]:
        """One upkeep pass; returns what it did (for logs and tests)."""
        out: dict[str, Any] = {"created": 0, "dropped": [], "blocked": [], "trade_ids_pruned": 0,
                               "compressed": [], "compression_blocked": []}
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("SET lock_timeout = '5s'")
            cur = await conn.execute("SELECT ensure_partitions(%s)", (self._cfg.partitions_ahead_days,))
            row = await cur.fetchone()
            out["created"] = int(row[0]) if row and row[0] is not None else 0
            await self._partition_gauges(conn)
            if self._cfg.enabled:
                await self._drop_expired(conn, out)
            if self._cfg.compress:
                for table in TABLES:
                    await self._compress(conn, table, out)
        self._m.retention_blocked_partitions.set(len(out["blocked"]))
        self._m.retention_compression_blocked_chunks.set(len(out["compression_blocked"]))
        if out["created"]:
            log.info("created %d partitions ahead", out["created"])
        return out

    async def _partition_gauges(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute("SELECT table_name, default_rows, days_ahead FROM partition_status()")
        for table, default_rows, days_ahead in await cur.fetchall():
            labels = {"database": DATABASE_LABEL, "table": table}
            self._m.db_default_partition_rows.labels(**labels).set(default_rows or 0)
            self._m.db_partitions_ahead_days.labels(**labels).set(days_ahead if days_ahead is not None else -1)
            if default_rows:
                self._rl.log(logging.WARNING, f"default:{table}", "%d rows sit in %s_default "
                             "(a partition was missing when they arrived)", default_rows, table, table=table)

    async def _drop_expired(self, conn: psycopg.AsyncConnection[Any], out: dict[str, Any]) -> None:
        for table in TABLES:
            cur = await conn.execute(
                "SELECT partition_name, dropped, reason FROM drop_expired_partitions(%s, %s, %s)",
                (table, self.keep_days(table), list(self._cfg.consumers)))
            for name, dropped, reason in await cur.fetchall():
                if dropped:
                    out["dropped"].append(name)
                    log.info("dropped expired partition %s of %s (%s)", name, table, reason, extra={"table": table})
                else:
                    out["blocked"].append(name)
                    self._rl.log(logging.WARNING, f"blocked:{name}", "keeping expired partition %s of %s: %s",
                                 name, table, reason, table=table)
        # Guard rows of dropped trades (hardening 1 keeps one per trade ever seen).
        cur = await conn.execute("SELECT prune_trade_ids(%s)", (self.keep_days("trades"),))
        row = await cur.fetchone()
        pruned = int(row[0]) if row and row[0] else 0
        if pruned:
            out["trade_ids_pruned"] = pruned
            self._m.retention_trade_ids_pruned_total.inc(pruned)
            log.info("pruned %d trade_ids rows of dropped trades", pruned)

    async def _compress(self, conn: psycopg.AsyncConnection[Any], table: str, out: dict[str, Any]) -> None:
        """Compress eligible chunks of ``table`` one per transaction (each holds back the snapshot
        xmin the deduplicator reads below for as long as it runs)."""
        blocked: dict[str, str] = {}
        compressed_now: set[str] = set()
        while True:
            async with conn.transaction():
                # A day's chunk may take minutes; the pool's statement timeout is for queries.
                await conn.execute("SET LOCAL statement_timeout = 0")
                cur = await conn.execute(
                    "SELECT chunk_name, compressed, reason FROM compress_acknowledged_chunks(%s, %s, %s, 1)",
                    (table, self._cfg.compress_after_days, list(self._cfg.consumers)))
                rows = await cur.fetchall()
            # A chunk reported twice would mean compression did not stick: stop rather than loop.
            done = [name for name, compressed, _ in rows if compressed and name not in compressed_now]
            compressed_now.update(done)
            for name, compressed, reason in rows:
                if not compressed:
                    blocked[name] = reason
            for name in done:
                out["compressed"].append(name)
                self._m.retention_chunks_compressed_total.labels(table=table).inc()
                log.info("compressed chunk %s of %s", name, table, extra={"table": table})
            if not done:
                break
        for name, reason in blocked.items():
            out["compression_blocked"].append(name)
            self._rl.log(logging.WARNING, f"uncompressed:{name}", "not compressing chunk %s of %s yet: %s",
                         name, table, reason, table=table)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.interval_s)
            await self.safe_once()

    async def safe_once(self) -> dict[str, Any] | None:
        try:
            r = await self.once()
            self.last_ok = True
            return r
        except Exception as exc:  # a DB outage must not kill the upkeep loop
            self.last_ok = False
            err = classify(exc, self._db) if not isinstance(exc, TimeoutError) else exc
            self._rl.log(logging.WARNING, "fail", "partition upkeep failed: %s; retrying next interval", err)
            return None
