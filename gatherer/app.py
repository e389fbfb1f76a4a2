"""The gatherer process: builds every part from ``GathererConfig`` and owns start/stop order.

Start order (each step needs the previous ones)::

    health + metrics servers      /health says "unhealthy" while the rest comes up
    REST client, auth probe       a rejected key is fatal at start (AuthRejected -> exit 2)
    local database                waits (one log line per attempt, backoff) until reachable
    writers, partitions           ensure_partitions() before the first insert
    coverage: process_down        from the newest stored row's received_at to now
    market registry full sync     "loaded N markets from REST API"
    backfill queue resumed        windows a previous run left pending carry on
    router, resync machine, connection manager    sockets open, staggered
    backfill (start-up window), sweep, drain, poller, retention, admin API

Stop order (SIGTERM/SIGINT): admin API, connection manager (stop reading sockets: nothing new
enters the pipeline), background loops, writers flushed within ``writer.flush_deadline_s``,
REST client, pools, servers. ``stop()`` returns how many accepted rows could not be flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from gatherer._backoff import Backoff
from gatherer._exclock import ExchangeClock, TradeTap
from gatherer.admin import AdminServer
from gatherer.backfill import Backfill
from gatherer.backfill_queue import BackfillQueue
from gatherer.config import GathererConfig
from gatherer.connection import ConnectionManager
from gatherer.coverage import CoverageLedger
from gatherer.errors import KeyInvalid, RestError
from gatherer.health import DbProbe, GathererHealth
from gatherer.markets import MarketRegistry
from gatherer.poller import SnapshotPoller
from gatherer.rawlog import RawLog
from gatherer.rest import RestClient
from gatherer.retention import TABLES as RETENTION_TABLES
from gatherer.resync import ResyncMachine
from gatherer.retention import Retention
from gatherer.router import _ROUTED_TYPES as ROUTED_TYPES
from gatherer.router import BackfillRequest, ResyncRequest, Router
from gatherer.spool import Spool, SpoolBudget, SpoolError
from gatherer.writer import SPECS, PgSink, Writer, WriterClosed, make_writers
from shared import db, heap
from shared.errors import ConfigError, StorageError
from shared.http import HttpServer, start_servers
from shared.kalshi.auth import KeyLoadError, load_private_key
from shared.kalshi.decode import REJECT_REASONS
from shared.kalshi.models import Lifecycle, Profile, Rejected, SeqGap
from shared.kalshi.objects import snapshot_from_rest
from shared.metrics import GathererMetrics, add_process_collectors
from shared.pool_metrics import psycopg_pool_stats, track_pool

log = logging.getLogger("gatherer.app")

NOTIFY_CHANNEL = "kalshi_ingest"


def _now_us() -> int:
    return time.time_ns() // 1000


def version() -> str:
    try:
        return importlib.metadata.version("kalshi-data")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.0.0"


def load_key(cfg: GathererConfig) -> rsa.RSAPrivateKey:
    """The RSA key for ``kalshi.api_key_id``; raises ``KeyInvalid`` naming the key id only."""
    k = cfg.kalshi
    if k.private_key is None:  # validated by the config schema; kept for type narrowing
        raise KeyInvalid(k.api_key_id, "no private key configured")
    try:
        return load_private_key(k.private_key.reveal().encode(), k.api_key_id)
    except KeyLoadError as exc:
        raise KeyInvalid(k.api_key_id, exc.reason) from None


class GathererApp:
    """One gatherer. Tests build it on their own loop with their own ``CollectorRegistry``."""

    def __init__(self, cfg: GathererConfig, registry: CollectorRegistry | None = None, *,
                 process_metrics: bool = False) -> None:
        # kalshi.api_key_secret: the key id is inside the secret (SecretError names it if not)
        cfg = dataclasses.replace(cfg, kalshi=cfg.kalshi.with_api_key())
        self.cfg = cfg
        self.prom = registry if registry is not None else CollectorRegistry()
        # the heap policy is process-wide: only a gatherer that owns its process freezes
        self.gc_metrics = add_process_collectors(self.prom) if process_metrics else None
        self.metrics = GathererMetrics(self.prom)
        # every known series at 0 from the first scrape
        self.metrics.init_labels(writers=tuple(SPECS), routed_types=ROUTED_TYPES, parse_reasons=REJECT_REASONS,
                                 retention_tables=RETENTION_TABLES)
        self.metrics.gatherer_info.labels(gatherer_id=cfg.gatherer_id, version=version()).set(1)
        self.key = load_key(cfg)
        self.health = GathererHealth(cfg, version())
        self.exclock = ExchangeClock()
        self.servers: list[HttpServer] = []
        self.admin: AdminServer | None = None
        self.pool: AsyncConnectionPool | None = None
        self.writers: dict[str, Writer] = {}
        self.rest: RestClient | None = None
        self.registry: MarketRegistry | None = None
        self.router: Router | None = None
        self.conns: ConnectionManager | None = None
        self.coverage: CoverageLedger | None = None
        self.backfill: Backfill | None = None
        self.resync: ResyncMachine | None = None
        self.poller: SnapshotPoller | None = None
        self.retention: Retention | None = None
        self.rawlog: RawLog | None = None
        self.db_probe: DbProbe | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.started = False

    # ---- start ----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        m = self.metrics
        self.servers = await start_servers(cfg.health, cfg.metrics, health=self.health.doc,  # type: ignore[arg-type]
                                           ready=self.health.ready, registry=self.prom)

        freeze = self.gc_metrics is not None and cfg.gc.freeze
        if freeze:
            self._spawn(heap.freeze_periodically(cfg.gc.freeze_interval_s, self.gc_metrics),
                        "gc-freeze")

        # Key problems are fatal and need no database: find them before waiting for one.
        self.rest = RestClient(cfg.kalshi, self.key, cfg.rate_limit, m, auth_retry_s=cfg.kalshi.auth_retry_s)
        self.health.rest = self.rest
        # AuthRejected here is fatal (wrong key id or key); the answer carries the key's REST
        # budget, which the client adopts (rate_limit.discover).
        await self.rest.discover_limits()
        log.info("gatherer %s starting (version %s, exchange %s, key id %s)", cfg.gatherer_id,
                 version(), cfg.kalshi.rest_base, cfg.kalshi.api_key_id)

        await self._wait_for_database()
        self.pool = db.make_pool(cfg.database, "gatherer-aux", application_name="kalshi-gatherer-aux",
                                 min_size=1, max_size=3)
        await self.pool.open()
        pool = self.pool
        track_pool(m, "local", lambda: psycopg_pool_stats(pool))
        self.db_probe = DbProbe(self.pool, cfg.health.db_probe_interval_s)
        await self.db_probe.check()
        self.health.db = self.db_probe
        self._spawn(self.db_probe.run(), "db-probe")

        self.retention = Retention(cfg.retention, self.pool, m, cfg.database.display_name())
        await self.retention.safe_once()
        self._spawn(self.retention.run(), "retention")

        dbcfg = cfg.database
        notify = NOTIFY_CHANNEL if cfg.writer.notify else None
        self.writers = make_writers(
            lambda: PgSink(lambda: db.connect(dbcfg, "kalshi-gatherer-writer"), notify), m,
            batch_size=cfg.writer.batch_size, flush_interval_s=cfg.writer.flush_interval_ms / 1000,
            queue_max_rows=max(cfg.writer.queue_max_rows, cfg.writer.batch_size),
            retry_max_s=cfg.writer.retry_max_s, spool_factory=self._spool_factory())
        for name, w in self.writers.items():
            try:
                left = await w.open_spool()
            except SpoolError as exc:
                raise ConfigError("spool.directory", str(exc)) from None
            if left:
                log.warning("writer %s: replaying %d rows spooled by the previous run", name, left)
            w.start()
        self.health.writers = self.writers  # type: ignore[assignment]

        self.coverage = CoverageLedger(cfg.gatherer_id, self.writers["coverage_events"], _now_us,
                                       exchange_offset_us=lambda: self.exclock.offset_us)
        last_seen_us, last_trade_us = await self._last_stored()
        if last_seen_us is not None:
            await self.coverage.record(
                "process_down", "process", last_seen_us, _now_us(), recovered=False,
                detail={"how": "restart; fresh snapshots; trades: the backfill queue and the first "
                               "sweep cover the downtime",
                        "lost": "orderbook deltas and ticker updates of the window"})
        backfill_q: asyncio.Queue[BackfillRequest] = asyncio.Queue(10_000)
        self.backfill = Backfill(cfg.backfill, self.rest, self.writers["trades"], self.coverage, m,
                                 requests=backfill_q, queue=BackfillQueue(self.pool),
                                 exclock=self.exclock, now_us=_now_us)
        await self.backfill.resume()

        self.registry = MarketRegistry(
            cfg.registry, self.rest, m, markets_sink=self.writers["markets"],
            events_sink=self.writers["events"], series_sink=self.writers["series"], now_us=_now_us)
        self.health.registry = self.registry
        await self._initial_sync()
        if freeze:  # the catalogue just loaded is the bulk of what lives for the whole run
            heap.freeze(self.gc_metrics)

        resync_q: asyncio.Queue[ResyncRequest] = asyncio.Queue(10_000)
        lifecycle_q: asyncio.Queue[Lifecycle | SeqGap] = asyncio.Queue(100_000)
        profile = None if cfg.kalshi.profile == "auto" else Profile(cfg.kalshi.profile)
        router_writers = dict(self.writers)
        router_writers["trades"] = TradeTap(self.writers["trades"], self.exclock)  # type: ignore[assignment]
        self.router = Router(router_writers, m, resync_q=resync_q, backfill_q=backfill_q,
                             lifecycle_q=lifecycle_q, profile_hint=profile)
        self._spawn(self._router_holds(), "router-holds")
        self._spawn(self.registry.run_lifecycle(lifecycle_q), "registry-lifecycle")
        self._spawn(self.registry.run_timers(), "registry-timers")
        self._spawn(self.registry.run_dirty_fetch(), "registry-dirty")
        self._spawn(self.registry.run_reconcile(), "registry-reconcile")
        self._spawn(self.registry.run_exchange_status(), "exchange-status")

        if cfg.raw_log.enabled:
            self.rawlog = RawLog(cfg.raw_log, cfg.gatherer_id, m)
            self._spawn(self.rawlog.run(), "rawlog")

        self.conns = ConnectionManager(
            cfg.connections, cfg.kalshi, self.key, self.router, self.registry, m, self.coverage,
            backfill_q=backfill_q,
            rawlog=self.rawlog.write if self.rawlog is not None else None,
            on_lifecycle_reconnect=self.registry.request_reconcile)
        self.health.conns = self.conns
        self.registry.on_lifecycle = self.conns.on_lifecycle  # a refused market's second chance
        self.resync = ResyncMachine(cfg.resync, self.conns, self.router, self.rest,
                                    self.writers["orderbook_snapshots"], self.coverage, m,
                                    requests=resync_q, now_us=_now_us)
        self.router.on_snapshot = self.resync.on_snapshot
        self.router.on_snapshot_arrived = self.resync.on_snapshot_arrived
        self._spawn(self.resync.run(), "resync")
        await self.conns.start()

        if cfg.backfill.enabled:
            self._spawn(self._startup_backfill(last_trade_us), "backfill-startup")
            self._spawn(self.backfill.run_sweep(), "backfill-sweep")
        self._spawn(self.backfill.run_requests(), "backfill-requests")
        self._spawn(self.backfill.run_drain(), "backfill-drain")

        self.poller = SnapshotPoller(cfg.poller, self.rest, self.registry, self.router,
                                     self.writers["orderbook_snapshots"], m, now_us=_now_us)
        self.health.poller = self.poller
        if cfg.poller.enabled:
            self._spawn(self._delayed(self.poller.run(), min(5.0, cfg.poller.interval_s)), "poller")

        if cfg.admin.token is not None:
            self.admin = AdminServer(cfg.admin.host, cfg.admin.port, cfg.admin.token,
                                     poll_market=self.admin_poll_market, resync=self.admin_resync,
                                     backfill_trades=self.admin_backfill_trades)
            await self.admin.start()
            log.info("admin API on %s", self.admin.url)
        else:
            log.info("admin API disabled (no admin token configured)")
        self.started = True
        log.info("gatherer %s running: %d connections, %d open markets", cfg.gatherer_id,
                 len(self.conns.conns), self.registry.active_count)

    def _spool_factory(self) -> Callable[[str], Spool] | None:
        """Each writer's on-disk spool under ``spool.directory/<gatherer_id>/``, all sharing one
        disk bound; None when the spool is disabled (a full queue then blocks the sockets)."""
        sc = self.cfg.spool
        self.metrics.writer_spool_max_bytes.set(sc.max_bytes if sc.enabled else 0)
        if not sc.enabled:
            return None
        budget = SpoolBudget(sc.max_bytes)
        base = Path(sc.directory) / self.cfg.gatherer_id
        return lambda table: Spool(base, table, budget, self.metrics, chunk_rows=sc.chunk_rows)

    async def _router_holds(self) -> None:
        """Snapshots held for their place in the stream are written within the router's bound
        even when no frame arrives (gatherer/router.py)."""
        assert self.router is not None
        while True:
            await asyncio.sleep(1.0)
            self.router.expire_holds(_now_us())
            await self.router.drain()

    async def _delayed(self, coro: Coroutine[Any, Any, Any], delay: float) -> Any:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            coro.close()
            raise
        return await coro

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s died: %s: %s", task.get_name(), type(exc).__name__, exc,
                      exc_info=exc)

    async def _wait_for_database(self) -> None:
        """Block until the local database answers; one log line per attempt, never a traceback."""
        backoff = Backoff(0.5, 30.0)
        name = self.cfg.database.display_name()
        while True:
            try:
                conn = await db.connect(self.cfg.database, "kalshi-gatherer-start", autocommit=True)
            except StorageError as exc:
                d = backoff.next()
                log.error("local database %s unreachable (%s); retrying in %.1f s", name, exc.reason, d)
                await asyncio.sleep(d)
                continue
            await conn.close()
            log.info("connected to local database %s", name)
            return

    async def _last_stored(self) -> tuple[int | None, int | None]:
        """(newest received_at of anything we stored, newest trade exchange_ts)."""
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT greatest((SELECT max(received_at) FROM trades),"
                " (SELECT max(updated_at) FROM coverage_events WHERE gatherer_id = %s)),"
                " (SELECT max(exchange_ts) FROM trades)", (self.cfg.gatherer_id,))
            row = await cur.fetchone()
        if row is None:
            return None, None
        return row[0], row[1]

    async def _startup_backfill(self, last_trade_us: int | None) -> None:
        """Trades since the last stored one, once a trade socket is live (so REST and WS overlap).

        Windows a previous run queued and never finished are still in backfill_queue and resume
        by themselves, and the first sweep starts where that run's last sweep ended; this window
        (from one sweep interval before the newest stored trade, at most
        ``backfill.max_window_s`` back) makes the trades complete sooner after a restart.
        """
        assert self.backfill is not None and self.conns is not None
        cfg = self.cfg.backfill
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.conns.trade_live.wait(), 30.0)
        now = _now_us()
        if last_trade_us is None:
            start = now - int(cfg.max_window_s * 1e6)
        else:
            start = last_trade_us - int((cfg.sweep_interval_s + cfg.overlap_s) * 1e6)
        await self.backfill.run(start, "startup", end_us=now)

    async def _initial_sync(self) -> None:
        assert self.registry is not None
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                await self.registry.full_sync()
                return
            except RestError as exc:
                d = backoff.next()
                log.error("initial market sync failed (%s); retrying in %.1f s", exc, d)
                await asyncio.sleep(d)

    # ---- admin actions ---------------------------------------------------------------------
    async def admin_poll_market(self, ticker: str) -> tuple[int, dict[str, Any]]:
        assert self.rest is not None and self.poller is not None and self.backfill is not None
        try:
            body = await self.rest.orderbook(ticker)
        except RestError as exc:
            return (404 if exc.status == 404 else 502), {"error": str(exc)}
        snap = snapshot_from_rest(body, ticker, _now_us())
        if isinstance(snap, Rejected):
            return 502, {"error": f"orderbook rejected: {snap.reason}"}
        self.metrics.poller_snapshots_fetched_total.inc()
        mismatch = await self.poller.process(snap)
        trades = await self.backfill.run(_now_us() - int(self.cfg.backfill.max_window_s * 1e6), "admin",
                                         tickers=[ticker])
        return 200, {"ticker": ticker, "snapshot_levels": len(snap.yes_levels) + len(snap.no_levels),
                     "book_mismatch": mismatch, "trades_backfilled": trades}

    async def admin_backfill_trades(self, ticker: str, min_ts: int, max_ts: int) -> tuple[int, dict[str, Any]]:
        assert self.backfill is not None
        n, ok = await self.backfill.run_exchange_window(ticker, min_ts, max_ts, "reconcile")
        if not ok:
            return 502, {"error": f"trade backfill of {ticker} failed; see the gatherer log"}
        return 200, {"ticker": ticker, "min_ts": min_ts, "max_ts": max_ts, "trades_backfilled": n}

    async def admin_resync(self, ticker: str) -> tuple[int, dict[str, Any]]:
        assert self.router is not None and self.conns is not None and self.registry is not None
        if ticker not in self.registry:
            return 404, {"error": "unknown market", "ticker": ticker}
        if await self.router.request_resync(ticker, "admin"):
            return 200, {"ticker": ticker, "resync": "get_snapshot requested"}
        conn = self.conns.find(ticker)
        if conn is None:
            return 409, {"error": "market is not subscribed", "ticker": ticker}
        await conn.resubscribe("admin resync")
        return 200, {"ticker": ticker, "resync": f"resubscribed {conn.conn_id}"}

    # ---- stop -----------------------------------------------------------------------------
    async def stop(self) -> int:
        """Stop reading, flush writers within the deadline; returns rows left unflushed."""
        if self._stopping:
            return 0
        self._stopping = True
        quiet = not self.writers  # failed before any data could flow: nothing to report
        if not quiet:
            log.info("gatherer %s stopping: closing sockets and flushing writers", self.cfg.gatherer_id)
        if self.admin is not None:
            await self.admin.stop()
        if self.conns is not None:
            await self.conns.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.router is not None:
            self.router.flush_metrics()
            self.router.release_all()
            with contextlib.suppress(WriterClosed, TimeoutError):
                await asyncio.wait_for(self.router.drain(), self.cfg.writer.flush_deadline_s)
            if self.router.undrained_snapshots:
                log.error("%d orderbook snapshots could not be handed to the writer before stopping",
                          self.router.undrained_snapshots)
        left = 0
        if self.writers:
            results = await asyncio.gather(
                *(w.close(self.cfg.writer.flush_deadline_s) for w in self.writers.values()),
                return_exceptions=True)
            for name, r in zip(self.writers, results, strict=True):
                if isinstance(r, BaseException):
                    log.error("writer %s failed to close: %s", name, r)
                else:
                    left += r
        if self.rawlog is not None:
            with contextlib.suppress(Exception):
                await self.rawlog.close()
        if self.rest is not None:
            await self.rest.aclose()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
        for srv in self.servers:
            await srv.stop()
        if left:
            log.error("gatherer stopped with %d accepted rows not flushed", left)
        elif not quiet:
            log.info("gatherer %s stopped; every accepted row is in the database", self.cfg.gatherer_id)
        return left
