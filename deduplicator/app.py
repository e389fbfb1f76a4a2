"""Builds the deduplicator from its config and owns start/stop order.

Start: HTTP listeners (so /health answers from the first second), then one ``TableSync`` task per
(gatherer, table), one LISTEN task per gatherer (``sync.listen``), the production monitor (ping,
``ensure_partitions`` at start and hourly) and the metrics refresher.
Stop (SIGTERM/SIGINT via ``request_stop``): loops finish the page they are merging and exit;
listeners and monitors are cancelled; connections and listeners are closed.

Concurrency bounds: at most ``min(sync.max_concurrency, production.pool_max)`` production
connections in use, and at most ``min(ceil(max_concurrency / number of gatherers), pool_max)`` per
gatherer (plus one LISTEN connection), so a gatherer that hangs mid-page can hold only its share
of production connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from deduplicator.config import DeduplicatorConfig
from deduplicator.cursors import Cursor, reset_cursors
from deduplicator.health import build_health, readiness
from deduplicator.listen import listen
from deduplicator.production import Production
from deduplicator.pull import write_ack
from deduplicator.sources import Source
from deduplicator.sync import TableSync
from deduplicator.tables import SPECS
from shared.db import classify, connect, error_type
from shared.errors import StorageError
from shared.http import HttpServer, start_servers
from shared.metrics import DeduplicatorMetrics, add_process_collectors
from shared.migrate import schema_version
from shared.pool_metrics import track_pool

log = logging.getLogger("deduplicator.app")

PING_UP_S = 5.0
PING_DOWN_S = 1.0
PARTITIONS_EVERY_S = 3600.0
RATES_EVERY_S = 5.0
STOP_TIMEOUT_S = 30.0


def _version() -> str:
    try:
        return metadata.version("kalshi-data")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


class App:
    """The whole deduplicator process; dependencies (registry, RNG, clock) are arguments."""

    def __init__(self, cfg: DeduplicatorConfig, registry: CollectorRegistry, *,
                 rng: random.Random | None = None, wall: Callable[[], float] = time.time,
                 process_metrics: bool = False) -> None:
        self.cfg = cfg
        self.registry = registry
        self.metrics = DeduplicatorMetrics(registry)
        self.metrics.init_labels([g.id for g in cfg.gatherers], cfg.sync.tables)  # every known series at 0
        if process_metrics:
            add_process_collectors(registry)
        self._rng = rng or random.Random()
        self._wall = wall
        self._version = _version()
        self._started = time.monotonic()
        self._stop = asyncio.Event()
        required = schema_version("gatherer")
        per_gatherer = max(1, math.ceil(cfg.sync.max_concurrency / len(cfg.gatherers)))
        self.production = Production(cfg.production, min(cfg.sync.max_concurrency, cfg.production.pool_max))
        self.sources = [Source(g, required, min(per_gatherer, g.database.pool_max)) for g in cfg.gatherers]
        self.loops = [TableSync(src, self.production, SPECS[t], cfg.sync, cfg.consumer_id, self.metrics,
                                self._stop, self._rng, wall)
                      for src in self.sources for t in cfg.sync.tables]
        track_pool(self.metrics, "production", self.production.pool_stats)
        for src in self.sources:
            track_pool(self.metrics, src.id, src.pool_stats)
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._aux_tasks: list[asyncio.Task[Any]] = []
        self._servers: list[HttpServer] = []

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._start_http()
        for src in self.sources:
            self.metrics.dedup_gatherer_health.labels(gatherer=src.id).set(0)
        self.metrics.dedup_rds_connected.set(0)
        self._aux_tasks.append(asyncio.create_task(self._monitor_production(), name="production-monitor"))
        self._aux_tasks.append(asyncio.create_task(self._refresh_metrics(), name="metrics"))
        if self.cfg.sync.listen:
            for src in self.sources:
                self._aux_tasks.append(asyncio.create_task(
                    listen(src, self._waker(src), self._stop, self.cfg.sync.retry_max_s, self._rng),
                    name=f"listen-{src.id}"))
        for lp in self.loops:
            self._loop_tasks.append(asyncio.create_task(lp.run(), name=f"sync-{lp.source.id}-{lp.table}"))

    async def _start_http(self) -> None:
        """/health + /ready on ``cfg.health``, /metrics on ``cfg.metrics`` (one listener if equal)."""
        self._servers = await start_servers(self.cfg.health, self.cfg.metrics, health=self.health,
                                            ready=self.ready, registry=self.registry)

    def request_stop(self) -> None:
        """Ask every loop to finish its current page and exit (signal-handler safe)."""
        self._stop.set()
        for lp in self.loops:
            lp.wake.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self.request_stop()
        if self._loop_tasks:
            _, pending = await asyncio.wait(self._loop_tasks, timeout=STOP_TIMEOUT_S)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        for t in self._aux_tasks:
            t.cancel()
        await asyncio.gather(*self._aux_tasks, return_exceptions=True)
        for s in self._servers:
            await s.stop()
        for src in self.sources:
            await src.close()
        await self.production.close()
        log.info("deduplicator stopped")

    # -- state -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return build_health(version=self._version, uptime_s=time.monotonic() - self._started,
                            sources=self.sources, loops=self.loops, production=self.production,
                            lag_warning_s=self.cfg.sync.lag_warning_s)

    def ready(self) -> tuple[bool, str]:
        return readiness(self.sources, self.production)

    def _waker(self, src: Source) -> Callable[[str | None], None]:
        mine = {lp.table: lp for lp in self.loops if lp.source is src}

        def wake(table: str | None) -> None:
            if table is None or table not in mine:
                for lp in mine.values():
                    lp.wake.set()
            else:
                mine[table].wake.set()
        return wake

    # -- background tasks --------------------------------------------------------------------
    async def _monitor_production(self) -> None:
        """Keep production's state fresh while no page flows; top up partitions hourly.

        Only the ping decides reachability; a failing ``ensure_partitions`` (lock timeout, a
        DEFAULT partition in the way) is counted and logged but does not mark production down.
        """
        next_partitions = 0.0
        while not self._stop.is_set():
            try:
                await self.production.ping()
                self.production.mark_up()
            except StorageError as exc:
                self.production.mark_down(exc.reason)
                self.metrics.dedup_errors_total.labels(gatherer="production", type=error_type(exc)).inc()
                await self.production.discard_idle()
            if self.production.connected and time.monotonic() >= next_partitions:
                try:
                    created = await self.production.ensure_partitions()
                    next_partitions = time.monotonic() + PARTITIONS_EVERY_S
                    if created:
                        log.info("created %d production partitions", created)
                except StorageError as exc:
                    next_partitions = time.monotonic() + 60.0
                    self.metrics.dedup_errors_total.labels(gatherer="production", type=error_type(exc)).inc()
                    log.warning("ensure_partitions on production failed (retrying in 60 s): %s", exc)
            delay = PING_UP_S if self.production.connected else PING_DOWN_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _refresh_metrics(self) -> None:
        m = self.metrics
        last_t = time.monotonic()
        last_written = last_dup = 0.0
        next_rates = last_t + RATES_EVERY_S
        while True:
            for lp in self.loops:
                m.dedup_sync_lag_seconds.labels(gatherer=lp.source.id, table=lp.table).set(lp.lag_seconds())
            for src in self.sources:
                m.dedup_gatherer_health.labels(gatherer=src.id).set(1 if src.healthy else 0)
            m.dedup_rds_connected.set(1 if self.production.connected else 0)
            now = time.monotonic()
            if now >= next_rates:
                written = sum(lp.rows_merged for lp in self.loops)
                dup = sum(lp.rows_duplicate for lp in self.loops)
                dw, dd = written - last_written, dup - last_dup
                if last_written or last_dup:
                    m.dedup_records_per_second.set(max(0.0, dw) / (now - last_t))
                    m.dedup_duplicate_rate.set(dd / (dw + dd) if dw + dd > 0 else 0.0)
                last_t, last_written, last_dup, next_rates = now, written, dup, now + RATES_EVERY_S
            await asyncio.sleep(1.0)


async def reset_gatherer(cfg: DeduplicatorConfig, gatherer_id: str) -> str:
    """``--reset-cursor GATHERER``: rewind that gatherer's cursors (and, if reachable, its acks).

    Returns a one-line summary. Raises ``StorageError`` when production is unreachable.
    """
    conn = await connect(cfg.production, "kalshi-deduplicator-reset", autocommit=True)
    try:
        try:
            n = await reset_cursors(conn, gatherer_id)
        except psycopg.Error as exc:
            raise classify(exc, cfg.production.display_name()) from None
    finally:
        await conn.close()
    src = next(g for g in cfg.gatherers if g.id == gatherer_id)
    acks = "its sync_acks were not reset (gatherer unreachable)"
    try:
        g = await connect(src.database, "kalshi-deduplicator-reset", autocommit=True)
        try:
            for table in cfg.sync.tables:
                await write_ack(g, cfg.consumer_id, table, Cursor(), None)
            acks = "its sync_acks were rewound too"
        finally:
            await g.close()
    except (StorageError, psycopg.Error) as exc:  # best effort: the next merged page rewrites it anyway
        acks = f"its sync_acks were not reset ({exc})"
    return (f"reset {n} cursor(s) of {gatherer_id}: its rows will be re-read from the start and merged "
            f"idempotently; {acks}")

