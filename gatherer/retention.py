"""Partition upkeep: partitions ahead, partition health gauges, ack-aware retention.

At start and every ``retention.interval_s``: ``ensure_partitions(partitions_ahead_days)`` (under a
lock timeout, so a busy catalog never blocks us), ``partition_status()`` into
``db_default_partition_rows{table}`` / ``db_partitions_ahead_days{table}``, then
``drop_expired_partitions(table, keep_days, consumers)`` per event table; a partition kept because
a consumer has not acknowledged it is logged with the reason and counted in
``retention_blocked_partitions`` (data-model.md "Retention never drops unmerged rows").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from gatherer.config import RetentionConfig
from shared.db import classify
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.retention")

TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")


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
        out: dict[str, Any] = {"created": 0, "dropped": [], "blocked": []}
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("SET lock_timeout = '5s'")
            cur = await conn.execute("SELECT ensure_partitions(%s)", (self._cfg.partitions_ahead_days,))
            row = await cur.fetchone()
            out["created"] = int(row[0]) if row and row[0] is not None else 0
            cur = await conn.execute("SELECT table_name, default_rows, days_ahead FROM partition_status()")
            for table, default_rows, days_ahead in await cur.fetchall():
                self._m.db_default_partition_rows.labels(table=table).set(default_rows or 0)
                self._m.db_partitions_ahead_days.labels(table=table).set(days_ahead if days_ahead is not None else -1)
                if default_rows:
                    self._rl.log(logging.WARNING, f"default:{table}", "%d rows sit in %s_default "
                                 "(a partition was missing when they arrived)", default_rows, table,
                                 table=table)
            if self._cfg.enabled:
                for table in TABLES:
                    cur = await conn.execute(
                        "SELECT partition_name, dropped, reason FROM drop_expired_partitions(%s, %s, %s)",
                        (table, self.keep_days(table), list(self._cfg.consumers)))
                    for name, dropped, reason in await cur.fetchall():
                        if dropped:
                            out["dropped"].append(name)
                            log.info("dropped expired partition %s (%s)", name, reason,
                                     extra={"table": table})
                        else:
                            out["blocked"].append(name)
                            self._rl.log(logging.WARNING, f"blocked:{name}", "keeping expired "
                                         "partition %s: %s", name, reason, table=table)
        self._m.retention_blocked_partitions.set(len(out["blocked"]))
        if out["created"]:
            log.info("created %d partitions ahead", out["created"])
        return out

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
