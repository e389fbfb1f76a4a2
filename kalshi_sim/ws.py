"""WebSocket I/O shell: handshake auth, reader, writer, heartbeat, connection faults.

Protocol logic lives in session.py / hub.py; this module only moves frames. Heartbeat follows
Kalshi: a Ping with payload ``heartbeat`` every ``ping_interval_s``; a client that leaves a ping
unanswered for ``pong_timeout_s`` is dropped (TCP abort). Client pings get an empty Pong.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from .auth import H_KEY, AuthError, KeyRegistry
from .config import SimConfig
from .faults import Faults
from .hub import Hub
from .session import Session

CUT_FRAME = b"\x81\x7e\x01\x00" + b'{"type":"trade","sid":1,"seq":'  # promises 256 bytes, sends 34


class _Conn:
    __slots__ = ("awaiting_pong_since", "session", "tasks", "transport", "wake", "ws")

    def __init__(self, ws: web.WebSocketResponse, session: Session,
                 transport: asyncio.Transport | None, wake: asyncio.Event) -> None:
        self.ws = ws
        self.session = session
        self.transport = transport
        self.wake = wake
        self.awaiting_pong_since: float | None = None
        self.tasks: list[asyncio.Task[None]] = []


def abort_with_rst(transport: asyncio.BaseTransport | None) -> None:
    """Close a TCP connection with RST (SO_LINGER 0): the client sees a reset, no close frame."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class WsEndpoint:
    """The ``/trade-api/ws/v2`` handler. ``now_ms`` is the server clock used for auth."""

    def __init__(self, conf: SimConfig, hub: Hub, keys: KeyRegistry, faults: Faults,
                 now_ms: Callable[[str | None], int]) -> None:
        self.conf = conf
        self.hub = hub
        self.keys = keys
        self.faults = faults
        self.now_ms = now_ms
        self.conns: dict[Session, _Conn] = {}
        self.counters = {"ws_auth_rejected": 0, "ws_pong_timeouts": 0, "ws_accepted": 0}
        hub.dropper = self.drop

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status = self.faults.should_refuse(request.headers.get(H_KEY))
        if status is not None:
            return web.Response(status=status, text="Service Unavailable\n"
                                if status == 503 else "Refused\n")
        authed = False
        key_id: str | None = None
        if self.conf.ws_require_auth or self.keys.has_headers(request.headers):
            try:
                key_id = self.keys.verify(request.headers, "GET", request.path,
                                          self.now_ms(request.headers.get(H_KEY))).key_id
                authed = True
            except AuthError:
                self.counters["ws_auth_rejected"] += 1
                st = self.conf.ws_auth_reject_status
                return web.Response(status=st, text="Forbidden\n" if st == 403 else
                                    "Unauthorized\n")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        self.counters["ws_accepted"] += 1
        wake = asyncio.Event()
        session = Session(self.hub, authed, wake.set, key_id=key_id)
        conn = _Conn(ws, session, request.transport, wake)
        self.conns[session] = conn
        self.hub.sessions.add(session)
        conn.tasks = [asyncio.create_task(self._writer(conn)),
                      asyncio.create_task(self._heartbeat(conn))]
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    session.handle(msg.data)
                elif msg.type == WSMsgType.PING:
                    if not self.faults.pongs_stopped:
                        await ws.pong(b"")
                elif msg.type == WSMsgType.PONG:
                    conn.awaiting_pong_since = None
                else:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._cleanup(conn)
        return ws

    def _cleanup(self, conn: _Conn) -> None:
        conn.session.close()
        self.hub.sessions.discard(conn.session)
        self.conns.pop(conn.session, None)
        for t in conn.tasks:
            if t is not asyncio.current_task():
                t.cancel()

    async def _writer(self, conn: _Conn) -> None:
        out = conn.session.out
        ws = conn.ws
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while out:
                    data, is_bin = out.popleft()
                    await ws.send_frame(data, binary if is_bin else text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    async def _heartbeat(self, conn: _Conn) -> None:
        interval = self.conf.ping_interval_s
        timeout = self.conf.pong_timeout_s
        tick = max(0.01, min(interval, timeout) / 4)
        next_ping = time.monotonic() + interval
        try:
            while True:
                await asyncio.sleep(tick)
                now = time.monotonic()
                since = conn.awaiting_pong_since
                if since is not None and now - since > timeout:
                    self.counters["ws_pong_timeouts"] += 1
                    abort_with_rst(conn.transport)
                    return
                if now >= next_ping:
                    next_ping = now + interval
                    if not self.faults.pings_stopped:
                        if conn.awaiting_pong_since is None:
                            conn.awaiting_pong_since = now
                        await conn.ws.ping(b"heartbeat")
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def drop(self, session: Session, mode: str, code: int, reason: str) -> None:
        conn = self.conns.get(session)
        if conn is None:
            return
        session.close()
        if mode == "close":
            asyncio.get_running_loop().create_task(
                conn.ws.close(code=code, message=reason.encode()))
        elif mode == "cut":
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(CUT_FRAME)
            abort_with_rst(conn.transport)
        else:
            abort_with_rst(conn.transport)

    async def close_all(self) -> None:
        for conn in list(self.conns.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"shutdown"), 1.0)
            abort_with_rst(conn.transport)
