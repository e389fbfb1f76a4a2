"""Wires the simulator together and owns start/stop; the in-process handle tests use.

::

    sim = Simulator(SimConfig(preset="tiny", seed=7, clock_speed=0))
    await sim.start()                  # 127.0.0.1, free ports unless configured
    key_id, pem = sim.keygen()
    await sim.advance(5_000)           # manual clock: 5 virtual seconds of activity
    sim.truth.trades(); sim.true_book(ticker); sim.faults.skip_seq()
    await sim.stop()

:class:`SimThread` runs one in its own event-loop thread for synchronous callers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar

from aiohttp import web

from .auth import KeyRegistry, auth_headers, keygen
from .catalog import PRESETS, Catalog
from .config import SimConfig
from .control import ControlApi
from .encode import PROFILES, Encoder
from .engine import Engine, Event
from .faults import Faults
from .hub import Hub
from .ratelimit import RateLimiter
from .rest import RestApi
from .truth import Truth
from .ws import WsEndpoint

T = TypeVar("T")
TICK_S = 0.005  # real-time driver period; each tick runs the virtual steps now due
MAX_STEPS_PER_TICK = 50  # bound one tick (0.5 s virtual) so sockets stay served under heavy rates
# Also bound one tick's events (~15 ms of work): an engine behind schedule then hands the loop
# to the socket writers that often, so the kernel buffers never run dry while it generates.
MAX_EVENTS_PER_TICK = 2_000


class StartError(Exception):
    """The simulator could not start (e.g. port in use); message is one line for the CLI."""


class Simulator:
    """One simulated exchange: engine, truth, REST+WS server, control server."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        conf = dataclasses.replace(config or SimConfig(), **overrides)
        if conf.preset not in PRESETS:
            raise ValueError(f"unknown preset {conf.preset!r}; one of {sorted(PRESETS)}")
        if conf.profile not in PROFILES:
            raise ValueError(f"unknown profile {conf.profile!r}; one of {list(PROFILES)}")
        self.conf = conf
        preset = PRESETS[conf.preset]
        start_ms = conf.start_ms if conf.start_ms is not None else int(time.time()) * 1000
        self.catalog = Catalog(preset, conf.seed, start_ms, conf.profile, conf.mve_markets)
        self.engine = Engine(
            self.catalog, seed=conf.seed,
            rate=conf.rate if conf.rate is not None else preset.rate,
            churn_per_s=conf.churn_per_s if conf.churn_per_s is not None else preset.churn_per_s,
            step_ms=conf.step_ms)
        self.encoder = Encoder(conf.profile, self.catalog)
        self.truth = Truth(self._initial_book, path=conf.truth_path,
                           rest_trade_skew_us=conf.rest_trade_skew_us,
                           keep_tickers=conf.truth_tickers,
                           index_deltas=conf.rest_book_lag_ms > 0,
                           header={"seed": conf.seed, "preset": conf.preset,
                                   "profile": conf.profile, "start_ms": start_ms,
                                   "step_ms": conf.step_ms, "rate": self.engine.rate})
        self.faults = Faults()
        self.keys = KeyRegistry(conf.auth_skew_ms)
        if conf.key_dir:
            self.keys.load_dir(conf.key_dir)
        self.limiter = RateLimiter(
            conf.tier, read_bucket_s=conf.read_bucket_s, write_bucket_s=conf.write_bucket_s,
            default_cost=conf.default_cost, costs=dict(conf.endpoint_costs),
            batch_endpoints=conf.batch_endpoints, retry_after=conf.retry_after_header,
            go_style_body=conf.go_style_429)
        self.hub = Hub(conf, self.engine, self.encoder, self.truth, self.faults)
        self.ws = WsEndpoint(conf, self.hub, self.keys, self.faults, self.server_now_ms)
        self.rest = RestApi(conf, self.engine, self.encoder, self.truth, self.keys,
                            self.limiter, self.faults, self.server_now_ms)
        self.control = ControlApi(self)
        self.port = conf.port
        self.control_port = conf.control_port
        self._runners: list[web.AppRunner] = []
        self._driver: asyncio.Task[None] | None = None
        self._mono0 = 0.0
        self._virt0 = start_ms

    # --- clocks ---------------------------------------------------------------------------
    def server_now_ms(self, key_id: str | None = None) -> int:
        """Wall clock as the server sees it (auth freshness) for a request signed by ``key_id``,
        including injected skew (global and that key's)."""
        return int(time.time() * 1000) + self.faults.skew_for(key_id)

    @property
    def now_ms(self) -> int:
        """Current virtual exchange time."""
        return self.engine.now_ms

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self.rest.middleware],
                              client_max_size=1 << 20)
        app.router.add_get("/trade-api/ws/v2", self.ws.handle)
        self.rest.routes(app)
        ctl = web.Application()
        self.control.routes(ctl)
        try:
            self.port = await self._serve(app, self.conf.port)
            self.control_port = await self._serve(ctl, self.conf.control_port)
        except BaseException:
            await self._cleanup_runners()
            raise
        self._mono0 = time.monotonic()
        self._virt0 = self.engine.now_ms
        self.faults.now = self._mono0
        if self.conf.clock_speed > 0:
            self._driver = asyncio.create_task(self._drive())

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.conf.host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartError(f"port {port} already in use") from None
            raise StartError(f"cannot bind {self.conf.host}:{port}: {e.strerror}") from None
        # aiohttp has no public accessor for the bound port of a port-0 site.
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        await self.ws.close_all()
        await self._cleanup_runners()
        self.truth.close()

    async def _cleanup_runners(self) -> None:
        for r in self._runners:
            with contextlib.suppress(Exception):
                await r.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- driving the engine ---------------------------------------------------------------
    def _process(self, events: list[Event]) -> None:
        if events:
            self.truth.append(events)
            self.hub.publish(events)

    async def _drive(self) -> None:
        speed = self.conf.clock_speed
        last_flush = time.monotonic()
        behind = False
        while True:
            await asyncio.sleep(0 if behind else TICK_S)  # behind: only let sockets run
            now = time.monotonic()
            self.faults.now = now
            self.engine.paused = self.faults.in_maintenance
            target = self._virt0 + int((now - self._mono0) * 1000 * speed)
            before = self.engine.now_ms
            events = self.engine.run_until(target, MAX_STEPS_PER_TICK, MAX_EVENTS_PER_TICK)
            behind = self.engine.now_ms + self.engine.step_ms <= target
            self._process(events)
            self.faults.chaos_tick((self.engine.now_ms - before) / 1000.0)
            if now - last_flush > 1.0:
                self.truth.flush()
                last_flush = now

    async def advance(self, ms: int) -> int:
        """Manual clock (``clock_speed=0``): run ``ms`` of virtual time now; returns the number
        of engine events. Yields to the loop between chunks so sockets keep flowing."""
        if self.conf.clock_speed > 0:
            raise RuntimeError("advance() needs clock_speed=0 (manual clock)")
        target = self.engine.now_ms + ms
        n = 0
        while self.engine.now_ms + self.engine.step_ms <= target:
            self.faults.now = time.monotonic()
            self.engine.paused = self.faults.in_maintenance
            before = self.engine.now_ms
            events = self.engine.run_until(target, 50)
            n += len(events)
            self._process(events)
            self.faults.chaos_tick((self.engine.now_ms - before) / 1000.0)
            await asyncio.sleep(0)
        self.truth.flush()
        return n

    def set_rate(self, rate: float) -> None:
        """Engine messages per virtual second (the knob for throughput runs)."""
        self.engine.rate = rate

    # --- keys -----------------------------------------------------------------------------
    def register_key(self, key_id: str, public_pem: str | bytes, tier: str | None = None) -> None:
        self.keys.register(key_id, public_pem, tier)

    def keygen(self, pkcs1: bool = False, tier: str | None = None) -> tuple[str, str]:
        """New registered throwaway key pair: (key_id, private_pem)."""
        key_id, priv, pub = keygen(pkcs1=pkcs1)
        self.register_key(key_id, pub, tier)
        return key_id, priv

    @staticmethod
    def auth_headers(key_id: str, private_pem: str, method: str, path: str) -> dict[str, str]:
        """Signed Kalshi headers for a request to ``path`` (client-side helper for tests)."""
        return auth_headers(key_id, private_pem, method, path, int(time.time() * 1000))

    # --- reading --------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://{self.conf.host}:{self.port}/trade-api/v2"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.conf.host}:{self.port}/trade-api/ws/v2"

    @property
    def control_url(self) -> str:
        return f"http://{self.conf.host}:{self.control_port}/control"

    def true_book(self, ticker: str) -> dict[str, list[list[int]]] | None:
        """Current book of ``ticker``: ascending ``[[price_1e-4, size_centi], ...]`` per side."""
        i = self.catalog.parse_market(ticker)
        if i is None:
            return None
        yes, no = self.engine.book(i)
        return {"yes": [[p, c] for p, c in sorted(yes.items())],
                "no": [[p, c] for p, c in sorted(no.items())]}

    def market_tickers(self, status: str | None = "active", limit: int = 100) -> list[str]:
        """First ``limit`` tickers (in index order) whose engine status is ``status``."""
        out = []
        for i in range(self.catalog.count):
            if status is None or self.rest.status_of(i) == status:
                out.append(self.catalog.market_ticker(i))
                if len(out) >= limit:
                    break
        return out

    def fault_counts(self) -> dict[str, int]:
        return self.faults.counts()

    def stats(self) -> dict[str, Any]:
        return {**self.hub.stats(), **self.ws.counters, **self.rest.counters,
                "now_ms": self.engine.now_ms, "markets": self.catalog.count,
                "trades": len(self.truth.trades_), "deltas": len(self.truth.deltas_)}

    def info(self) -> dict[str, Any]:
        return {"rest_url": self.rest_url, "ws_url": self.ws_url,
                "control_url": self.control_url, "preset": self.conf.preset,
                "profile": self.conf.profile, "seed": self.conf.seed,
                "now_ms": self.engine.now_ms, "markets": self.catalog.count,
                "clock_speed": self.conf.clock_speed, "rate": self.engine.rate}

    def _initial_book(self, ticker: str) -> tuple[dict[int, int], dict[int, int]]:
        i = self.catalog.parse_market(ticker)
        if i is None:
            return {}, {}
        return self.catalog.initial_book(self.catalog.static(i))


class SimThread:
    """Runs a :class:`Simulator` on its own event loop in a daemon thread.

    ``call(fn, *args)`` runs ``fn`` on that loop (awaiting it if it is a coroutine function)
    and returns the result, so faults and reads stay on the loop that owns the state.
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or SimConfig(), **overrides)
        self.sim: Simulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> Simulator:
        self._thread = threading.Thread(target=self._run, name="kalshi-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StartError("simulator did not start in time")
        if self._error is not None:
            raise self._error
        assert self.sim is not None
        return self.sim

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.sim = Simulator(self.config)
            loop.run_until_complete(self.sim.start())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.sim.stop())
        loop.close()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._loop is not None

        async def run() -> T:
            r = fn(*args, **kwargs)
            if asyncio.iscoroutine(r):
                return await r  # type: ignore[no-any-return]
            return r

        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return fut.result(60)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None
