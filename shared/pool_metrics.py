"""``db_pool_*{database}`` read from the pools themselves, at scrape time.

``shared/metrics.py`` declares the gauges; this module binds one label set per pool to a
function that asks the pool when Prometheus scrapes (``Gauge.set_function``), so the numbers
are never stale and no refresher task is needed. ConnectionPoolExhaustion
(``db_pool_connections_in_use / db_pool_connections_max > 0.9``) and the Database Performance
pool panels read them.

Two kinds of pool feed it: psycopg_pool's ``AsyncConnectionPool`` (the gatherer's auxiliary
pool; ``get_stats()``) and the deduplicator's ``Slots`` (anything with a ``stats()`` returning
:class:`PoolStats`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from shared.metrics import DbPoolMetrics


@dataclass(frozen=True)
class PoolStats:
    """One pool's occupancy right now."""

    in_use: int  # connections checked out
    max: int  # the pool's size limit
    waiting: int  # callers queued for a connection


def psycopg_pool_stats(pool: AsyncConnectionPool) -> PoolStats:
    """``get_stats()`` of a psycopg pool: connections it holds minus the idle ones are in use."""
    s = pool.get_stats()
    return PoolStats(in_use=max(0, s.get("pool_size", 0) - s.get("pool_available", 0)),
                     max=s.get("pool_max", 0), waiting=s.get("requests_waiting", 0))


def track_pool(metrics: DbPoolMetrics, database: str, stats: Callable[[], PoolStats]) -> None:
    """Export ``stats()`` as ``db_pool_connections_in_use|max`` and ``db_pool_requests_waiting``
    with ``database=<database>`` (a name an operator recognises: ``local``, ``production``,
    ``gatherer-2``; never a DSN)."""
    metrics.db_pool_connections_in_use.labels(database=database).set_function(lambda: stats().in_use)
    metrics.db_pool_connections_max.labels(database=database).set_function(lambda: stats().max)
    metrics.db_pool_requests_waiting.labels(database=database).set_function(lambda: stats().waiting)
