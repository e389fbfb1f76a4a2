"""A bounded set of connections to one database, opened on demand and dropped when unusable.

Deliberately simpler than a pool: no background reconnect thread with its own backoff, no
health-check timer. A caller that cannot get a connection gets the connect error at once (mapped
by shared/db.py) and backs off on its own schedule, so an outage is reported by the loop that met
it and recovery is as fast as the loop's next attempt. The semaphore is what bounds concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from shared.pool_metrics import PoolStats

T = TypeVar("T")


class Slots(Generic[T]):
    """At most ``size`` connections in use at once; idle ones are reused, broken ones closed."""

    def __init__(self, open_conn: Callable[[], Awaitable[T]],
                 conn_of: Callable[[T], psycopg.AsyncConnection[Any]], size: int) -> None:
        self._open = open_conn
        self._conn_of = conn_of
        self._sem = asyncio.Semaphore(size)
        self._size = size
        self._in_use = 0
        self._waiting = 0
        self._idle: list[T] = []
        self._closed = False

    def stats(self) -> PoolStats:
        """Occupancy for ``db_pool_*`` (shared/pool_metrics.py): borrowed, limit, queued callers."""
        return PoolStats(in_use=self._in_use, max=self._size, waiting=self._waiting)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[T]:
        """Borrow a connection; it goes back to the idle list only if it is healthy and idle."""
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        self._in_use += 1
        try:
            item: T | None = None
            while self._idle and item is None:
                cand = self._idle.pop()
                if not self._conn_of(cand).closed:
                    item = cand
            if item is None:
                item = await self._open()
            try:
                yield item
            finally:
                conn = self._conn_of(item)
                if (not self._closed and not conn.closed
                        and conn.info.transaction_status == TransactionStatus.IDLE):
                    self._idle.append(item)
                else:
                    with contextlib.suppress(Exception):
                        await conn.close()
        finally:
            self._in_use -= 1
            self._sem.release()

    async def discard_idle(self) -> None:
        """Close idle connections (after an outage they are most likely dead)."""
        idle, self._idle = self._idle, []
        for item in idle:
            with contextlib.suppress(Exception):
                await self._conn_of(item).close()

    async def close(self) -> None:
        """Close idle connections now and borrowed ones when they are returned."""
        self._closed = True
        await self.discard_idle()
