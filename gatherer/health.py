"""The gatherer's /health document and /ready decision (observability.md).

``/health``::

    {"status", "gatherer_id", "version", "uptime_s",
     "components": {"websocket": {"status", "connections", "healthy", "subscribed_markets"},
                    "database":  {"status", "writable", "queue_rows", "queue_max_rows",
                                  "spool_rows"},
                    "registry":  {"status", "markets", "active_markets", "last_sync_age_s"},
                    "poller":    {"status", "last_cycle_s", "last_cycle_age_s"},
                    "exchange":  {"status", "exchange_active", "trading_active"}}}

Overall status: ``unhealthy`` when the process cannot do its job (database not writable, or zero
healthy sockets); ``degraded`` when it does part of it (some sockets down, Kalshi rejecting our
key, registry or poller stale); else ``healthy``. The exchange being closed is reported but is
not our fault, so it does not degrade us. Nothing here can carry a secret: values are counts,
flags and ages, and errors are never copied in.

``/ready``: registry loaded, >= 1 socket subscribed, database writable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from gatherer.config import GathererConfig
from gatherer.connection import ConnectionManager
from gatherer.markets import MarketRegistry
from gatherer.poller import SnapshotPoller
from gatherer.rest import RestClient

log = logging.getLogger("gatherer.health")

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class _Queued(Protocol):
    queued_rows: int
    spooled_rows: int
    failing: bool


class DbProbe:
    """Checks every few seconds that the local database accepts writes (not a standby)."""

    def __init__(self, pool: AsyncConnectionPool, interval_s: float, timeout_s: float = 3.0) -> None:
        self._pool = pool
        self._interval = interval_s
        self._timeout = timeout_s
        self.writable: bool | None = None
        self.checked_at: float | None = None

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._pool.connection(timeout=self._timeout) as conn:
                    cur = await conn.execute("SELECT NOT pg_is_in_recovery()")
                    row = await cur.fetchone()
                    ok = bool(row and row[0])
        except Exception:
            ok = False
        if ok != self.writable:
            (log.info if ok else log.error)("local database %s", "writable" if ok else "NOT writable")
        self.writable = ok
        self.checked_at = time.monotonic()
        return ok

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


class GathererHealth:
    """Reads the live components; holds no state of its own beyond the start time."""

    def __init__(self, cfg: GathererConfig, version: str) -> None:
        self.cfg = cfg
        self.version = version
        self.started = time.monotonic()
        self.conns: ConnectionManager | None = None
        self.registry: MarketRegistry | None = None
        self.poller: SnapshotPoller | None = None
        self.rest: RestClient | None = None
        self.db: DbProbe | None = None
        self.writers: Mapping[str, _Queued] = {}

    def _db_writable(self) -> bool:
        if self.db is None or not self.db.writable:
            return False
        return not any(w.failing for w in self.writers.values())

    def doc(self) -> dict[str, Any]:
        now = time.monotonic()
        cfg = self.cfg
        # websocket
        total = (cfg.connections.ticker + cfg.connections.trade + cfg.connections.lifecycle
                 + cfg.connections.orderbook)
        if self.conns is not None:  # minus sockets never opened by choice (max_per_key)
            total = self.conns.planned_count()
        healthy = self.conns.healthy_count() if self.conns else 0
        ws_status = "unhealthy" if healthy == 0 and total > 0 else ("healthy" if healthy >= total else "degraded")
        if self.conns is not None and self.conns.auth_failing and ws_status == "healthy":
            ws_status = "degraded"
        websocket = {"status": ws_status, "connections": total, "healthy": healthy,
                     "subscribed_markets": self.conns.subscribed_markets() if self.conns else 0}
        # database
        writable = self._db_writable()
        queue_rows = sum(w.queued_rows for w in self.writers.values())
        database = {"status": "healthy" if writable else "unhealthy", "writable": writable,
                    "queue_rows": queue_rows, "queue_max_rows": cfg.writer.queue_max_rows,
                    "spool_rows": sum(w.spooled_rows for w in self.writers.values())}
        # registry
        reg = self.registry
        age = None
        if reg is not None and reg.last_sync_us is not None:
            age = round(max(0.0, time.time() - reg.last_sync_us / 1e6), 1)
        reg_status = "degraded"
        if reg is not None and reg.loaded:
            reg_status = "healthy"
            if age is not None and age > 3 * cfg.registry.reconcile_interval_s + 60:
                reg_status = "degraded"
        if self.rest is not None and self.rest.auth_failing:
            reg_status = "degraded"
        registry = {"status": reg_status, "markets": len(reg) if reg else 0,
                    "active_markets": reg.active_count if reg else 0, "last_sync_age_s": age}
        # poller
        p = self.poller
        if not cfg.poller.enabled:
            poller: dict[str, Any] = {"status": "healthy", "last_cycle_s": None, "last_cycle_age_s": None}
        else:
            p_age = None if p is None or p.last_cycle_end is None else round(now - p.last_cycle_end, 1)
            p_status = "healthy"
            limit = cfg.poller.interval_s * cfg.health.poller_stale_factor + 60
            if p_age is None:
                p_status = "degraded" if now - self.started > limit else "healthy"
            elif p_age > limit:
                p_status = "degraded"
            poller = {"status": p_status,
                      "last_cycle_s": None if p is None or p.last_cycle_s is None else round(p.last_cycle_s, 1),
                      "last_cycle_age_s": p_age}
        # exchange
        ex_active = reg.exchange_active if reg else None
        tr_active = reg.trading_active if reg else None
        exchange = {"status": "healthy" if ex_active else "degraded",
                    "exchange_active": ex_active, "trading_active": tr_active}
        components: dict[str, dict[str, Any]] = {"websocket": websocket, "database": database, "registry": registry,
                      "poller": poller, "exchange": exchange}
        worst = max((_RANK[str(c["status"])] for k, c in components.items() if k != "exchange"), default=0)
        status = next(s for s, r in _RANK.items() if r == worst)
        return {"status": status, "gatherer_id": cfg.gatherer_id, "version": self.version,
                "uptime_s": int(now - self.started), "components": components}

    def ready(self) -> tuple[bool, str]:
        if self.registry is None or not self.registry.loaded:
            return False, "market registry not loaded"
        if self.conns is None or self.conns.healthy_count() < 1:
            return False, "no WebSocket subscribed"
        if not self._db_writable():
            return False, "local database not writable"
        return True, "ok"
