"""The small HTTP servers every process runs: /health + /ready, /metrics, and (gatherer) admin.

Served by aiohttp on the process's own event loop. /health answers 200 for healthy or degraded
and 503 for unhealthy; /ready answers 200 only once the process does its job
(observability.md). /metrics renders the process's own ``CollectorRegistry``.

::

    servers = await start_servers(cfg.health, cfg.metrics, health=app.health_doc,
                                  ready=app.ready, registry=registry)
    ...
    for s in servers:
        await s.stop()

``ready`` returns a bool or ``(ready, reason)``; the reason is shown in the /ready body. When
health and metrics share one address, one listener serves all three paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthFn = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
ReadyResult = bool | tuple[bool, str]
ReadyFn = Callable[[], ReadyResult | Awaitable[ReadyResult]]


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) else value


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class HttpServer:
    """An aiohttp application bound to one host:port; subclasses add routes."""

    def __init__(self, host: str, port: int, name: str = "http") -> None:
        self.host = host
        self.port = port
        self.name = name
        self.app = web.Application()
        self._runner: web.AppRunner | None = None

    @property
    def _app(self) -> web.Application:  # subclasses add their routes here
        return self.app

    async def start(self) -> None:
        """Bind and serve; raises OSError naming the address when the port is taken."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(exc.errno, f"{self.name}: cannot listen on {self.host}:{self.port}: "
                                     f"{exc.strerror}") from None
        # port 0 -> learn the real one (tests)
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


class HealthServer(HttpServer):
    """``GET /health`` (JSON; 503 when unhealthy) and ``GET /ready`` (200 or 503)."""

    def __init__(self, host: str, port: int, health_fn: HealthFn, ready_fn: ReadyFn) -> None:
        super().__init__(host, port, "health")
        self._health_fn = health_fn
        self._ready_fn = ready_fn
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/ready", self._ready)

    async def _health(self, request: web.Request) -> web.Response:
        doc = await _maybe_await(self._health_fn())
        return json_response(doc, 503 if doc.get("status") == "unhealthy" else 200)

    async def _ready(self, request: web.Request) -> web.Response:
        result = await _maybe_await(self._ready_fn())
        ready, reason = (result if isinstance(result, tuple) else (bool(result), ""))
        doc: dict[str, Any] = {"ready": bool(ready)}
        if reason:
            doc["reason"] = reason
        return json_response(doc, 200 if ready else 503)


def add_metrics_route(app: web.Application, registry: CollectorRegistry) -> None:
    """Serve ``GET /metrics`` from ``registry`` (and only it) on ``app``."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)


class MetricsServer(HttpServer):
    """``GET /metrics`` in the Prometheus text format, from one explicit registry."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        super().__init__(host, port, "metrics")
        add_metrics_route(self.app, registry)


class _Endpoint(Protocol):
    host: str
    port: int


async def start_servers(health_at: _Endpoint, metrics_at: _Endpoint, *, health: HealthFn, ready: ReadyFn,
                        registry: CollectorRegistry) -> list[HttpServer]:
    """Start /health + /ready and /metrics (one listener when both addresses are equal).

    On a port conflict everything already started is stopped and the ``OSError`` names the
    address, so a half-started process never keeps a listener open.
    """
    hs = HealthServer(health_at.host, health_at.port, health_fn=health, ready_fn=ready)
    servers: list[HttpServer] = [hs]
    if (metrics_at.host, metrics_at.port) == (health_at.host, health_at.port):
        add_metrics_route(hs.app, registry)
    else:
        servers.append(MetricsServer(metrics_at.host, metrics_at.port, registry))
    started: list[HttpServer] = []
    try:
        for srv in servers:
            await srv.start()
            started.append(srv)
    except BaseException:
        for srv in started:
            await srv.stop()
        raise
    return started
