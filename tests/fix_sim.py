"""Pytest fixtures for the exchange simulator (plugin: ``tests.fix_sim``).

* ``sim`` -- a started tiny ``fp2026`` simulator on free 127.0.0.1 ports, manual virtual
  clock (``await sim.advance(ms)``), fixed seed and start time, with a registered key pair in
  ``sim_key``. Kalshi's limits model is on, as everywhere (Basic tier token buckets, WebSocket
  subscription/command/connection limits, refused tickers, combo markets, historical cutoff);
  a test that needs more than a Basic key's budget says so and raises ``tier``/``anon_tier``.
* ``sim_key`` -- ``SimKey(key_id, private_pem)`` registered on ``sim`` (one RSA pair per
  session, ``sim_keypair``).
* ``rest`` -- an ``httpx.AsyncClient`` on ``sim.rest_url`` (anonymous).
* ``ws_connect`` -- ``await ws_connect()`` opens an authenticated :class:`WsClient`.
* ``make_sim`` -- factory for custom configurations (stopped automatically).

Helpers (importable): :func:`signed`, :class:`WsClient` with ``cmd`` / ``recv`` / ``drain``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from kalshi_sim import SimConfig, Simulator, auth_headers, keygen

START_MS = 1_780_000_000_000  # fixed virtual start: identical truth across runs
BASE_CONFIG = SimConfig(preset="tiny", profile="fp2026", seed=7, clock_speed=0.0,
                        start_ms=START_MS)


@dataclass(frozen=True)
class SimKey:
    key_id: str
    private_pem: str


def signed(key: SimKey, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
    """Kalshi auth headers for ``method path`` (path from the host root, query ignored)."""
    import time

    ts = int(time.time() * 1000) if now_ms is None else now_ms
    return auth_headers(key.key_id, key.private_pem, method, path, ts)


class WsClient:
    """Thin JSON client over a websockets connection, with a deterministic drain.

    ``drain()`` sends ``list_subscriptions`` with a fresh id and collects every frame up to its
    reply: the server answers commands in order after the data it already queued, so this
    returns everything emitted before the call, without sleeping.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._id = 1000

    async def send(self, obj: Any) -> None:
        await self.conn.send(obj if isinstance(obj, str | bytes) else orjson.dumps(obj).decode())

    async def cmd(self, cmd: str, params: dict[str, Any] | None = None,
                  id_: int | None = None) -> int:
        self._id += 1
        i = self._id if id_ is None else id_
        d: dict[str, Any] = {"id": i, "cmd": cmd}
        if params is not None:
            d["params"] = params
        await self.send(d)
        return i

    async def recv_raw(self, timeout: float = 5.0) -> str | bytes:
        return await asyncio.wait_for(self.conn.recv(), timeout)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await self.recv_raw(timeout))  # type: ignore[no-any-return]

    async def until(self, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 5.0) -> list[dict[str, Any]]:
        """Frames up to and including the first that satisfies ``pred``."""
        out = []
        while True:
            m = await self.recv(timeout)
            out.append(m)
            if pred(m):
                return out

    async def drain(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        i = await self.cmd("list_subscriptions")
        frames = await self.until(lambda m: m.get("id") == i and m.get("type") == "ok", timeout)
        return frames[:-1]

    async def close(self) -> None:
        await self.conn.close()


async def open_ws(sim: Simulator, key: SimKey | None, **kw: Any) -> WsClient:
    headers = signed(key, "GET", "/trade-api/ws/v2") if key else {}
    conn = await connect(sim.ws_url, additional_headers=headers, max_size=None,
                         open_timeout=5, **kw)
    return WsClient(conn)


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    started: list[Simulator] = []

    async def make(**overrides: Any) -> Simulator:
        s = Simulator(BASE_CONFIG, **overrides)
        await s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        await s.stop()


@pytest.fixture
async def sim(request: pytest.FixtureRequest,
              make_sim: Callable[..., Awaitable[Simulator]]) -> Simulator:
    """``@pytest.mark.sim(**overrides)`` on a test changes this simulator's configuration
    (e.g. a higher ``anon_tier`` for a test that needs more requests than a Basic budget)."""
    marker = request.node.get_closest_marker("sim")
    return await make_sim(**(marker.kwargs if marker else {}))


@pytest.fixture(scope="session")
def sim_keypair() -> tuple[str, str, str]:
    """One RSA key pair for the whole session (generation costs ~0.1 s of CPU)."""
    return keygen()


@pytest.fixture
def sim_key(sim: Simulator, sim_keypair: tuple[str, str, str]) -> SimKey:
    key_id, private_pem, public_pem = sim_keypair
    sim.register_key(key_id, public_pem)
    return SimKey(key_id, private_pem)


@pytest.fixture
async def rest(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as c:
        yield c


@pytest.fixture
async def ws_connect(sim: Simulator,
                     sim_key: SimKey) -> AsyncIterator[Callable[..., Awaitable[WsClient]]]:
    opened: list[WsClient] = []

    async def _open(**kw: Any) -> WsClient:
        c = await open_ws(sim, sim_key, **kw)
        opened.append(c)
        return c

    yield _open
    for c in opened:
        try:
            await asyncio.wait_for(c.close(), 2)
        except (TimeoutError, websockets.ConnectionClosed, OSError):
            pass
