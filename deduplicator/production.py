"""The production database (RDS) as seen by the deduplicator, written as role ``deduplicator``.

Connections are autocommit (page transactions are explicit ``conn.transaction()`` blocks) and
carry the staging tables, created on a connection the first time it merges that table
(``ProductionConn.staging_for``): a fresh process starts merging after one CREATE, not eight. ``ping`` keeps ``dedup_rds_connected`` and
/health truthful while no page is flowing; ``ensure_partitions`` is the hourly partition top-up
every service runs (hardening 3), under a short lock timeout so it never queues behind DDL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from deduplicator._slots import Slots
from deduplicator.merge import create_staging
from deduplicator.tables import TableSpec
from shared.config import DatabaseConfig
from shared.db import classify, connect
from shared.logging import RateLimitedLog
from shared.pool_metrics import PoolStats

log = logging.getLogger("deduplicator.production")

Conn = psycopg.AsyncConnection[Any]


@dataclass
class ProductionConn:
    """A production connection and the staging tables it already has."""

    conn: Conn
    staged: set[str] = field(default_factory=set)

    async def staging_for(self, spec: TableSpec) -> Conn:
        """The connection, after making sure ``spec``'s staging table exists on it."""
        if spec.name not in self.staged:
            await create_staging(self.conn, [spec])
            self.staged.add(spec.name)
        return self.conn


class Production:
    """Bounded connections to production plus its reachability state."""

    def __init__(self, cfg: DatabaseConfig, slots: int) -> None:
        self.cfg = cfg
        self._slots: Slots[ProductionConn] = Slots(self._open, lambda c: c.conn, slots)
        self._rl = RateLimitedLog(log, 60.0)
        self.connected = False
        self.reached = False
        self.error: str | None = None

    @property
    def display_name(self) -> str:
        return self.cfg.display_name()

    async def _open(self) -> ProductionConn:
        return ProductionConn(await connect(self.cfg, autocommit=True))

    def pool_stats(self) -> PoolStats:
        """Occupancy of the production connections (``db_pool_*{database="production"}``)."""
        return self._slots.stats()

    def connection(self) -> Any:
        """``async with production.connection() as pc`` (a ``ProductionConn``); raises ``StorageError``
        when unreachable."""
        return self._slots.connection()

    def mark_up(self) -> None:
        if not self.connected:
            log.info("connected to production RDS (%s)", self.display_name)
        self.connected, self.reached, self.error = True, True, None

    def mark_down(self, error: str) -> None:
        if self.connected or self.error != error:
            self._rl.log(logging.WARNING, f"down:{error}", "production RDS (%s) unreachable: %s",
                         self.display_name, error)
        self.connected, self.error = False, error

    async def ping(self) -> None:
        """One trivial statement; raises ``StorageError`` (connection closed) on failure."""
        async with self.connection() as pc:
            try:
                await pc.conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise classify(exc, self.display_name) from None

    async def ensure_partitions(self) -> int:
        """Top up daily partitions; returns how many were created."""
        async with self.connection() as pc:
            conn = pc.conn
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '5s'")
                    row = await (await conn.execute("SELECT ensure_partitions()")).fetchone()
            except psycopg.Error as exc:
                raise classify(exc, self.display_name) from None
        return int(row[0]) if row and row[0] is not None else 0

    async def discard_idle(self) -> None:
        await self._slots.discard_idle()

    async def close(self) -> None:
        await self._slots.close()
