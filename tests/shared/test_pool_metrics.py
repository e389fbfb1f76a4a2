"""db_pool_* gauges follow real pools at scrape time: a psycopg pool and the deduplicator's Slots,
both holding connections to a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from deduplicator._slots import Slots
from shared.metrics import DeduplicatorMetrics, GathererMetrics
from shared.pool_metrics import psycopg_pool_stats, track_pool


def _gauges(reg: CollectorRegistry, database: str) -> tuple[float | None, float | None, float | None]:
    labels = {"database": database}
    return (reg.get_sample_value("db_pool_connections_in_use", labels),
            reg.get_sample_value("db_pool_connections_max", labels),
            reg.get_sample_value("db_pool_requests_waiting", labels))


def test_psycopg_pool_occupancy_is_exported(gatherer_dsn: str) -> None:
    async def scenario() -> None:
        reg = CollectorRegistry()
        m = GathererMetrics(reg)
        pool = AsyncConnectionPool(gatherer_dsn, min_size=1, max_size=3, open=False)
        await pool.open(wait=True)  # the min_size connection is idle in the pool
        try:
            track_pool(m, "local", lambda: psycopg_pool_stats(pool))
            assert _gauges(reg, "local") == (0.0, 3.0, 0.0)
            async with pool.connection(), pool.connection():
                assert _gauges(reg, "local")[:2] == (2.0, 3.0)
            assert _gauges(reg, "local")[0] == 0.0
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_slots_occupancy_and_waiters_are_exported(gatherer_dsn: str) -> None:
    async def scenario() -> None:
        reg = CollectorRegistry()
        m = DeduplicatorMetrics(reg)

        async def open_conn() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(gatherer_dsn, autocommit=True)

        slots: Slots[psycopg.AsyncConnection[Any]] = Slots(open_conn, lambda c: c, 2)
        track_pool(m, "gatherer-1", slots.stats)
        assert _gauges(reg, "gatherer-1") == (0.0, 2.0, 0.0)
        release = asyncio.Event()
        held = asyncio.Event()
        count = 0

        async def hold() -> None:
            nonlocal count
            async with slots.connection() as conn:
                await conn.execute("SELECT 1")
                count += 1
                if count == 2:
                    held.set()
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(3)]
        await held.wait()
        await asyncio.sleep(0)  # the third caller is now queued on the semaphore
        assert _gauges(reg, "gatherer-1") == (2.0, 2.0, 1.0)
        release.set()
        await asyncio.gather(*tasks)
        assert _gauges(reg, "gatherer-1") == (0.0, 2.0, 0.0)
        await slots.close()

    asyncio.run(scenario())
