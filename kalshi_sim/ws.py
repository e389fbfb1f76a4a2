"""WebSocket I/O shell: handshake auth, reader, writer, heartbeat, connection faults.

Protocol logic lives in session.py / hub.py; this module only moves frames. Queued data frames
are framed here and written in batches (one transport write per wake-up and chunk instead of one
``send_frame`` per frame); control frames (ping, pong, close) still go through aiohttp, whole, so
they interleave between batches, never inside a frame.

Heartbeat follows Kalshi: a Ping with payload ``heartbeat`` every ``ping_interval_s``; a client
that leaves a ping unanswered for ``pong_timeout_s`` is dropped (TCP abort). Client pings get an
empty Pong.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from .auth import H_KEY, AuthError, KeyRegistry
from .config import SimConfig
from .faults import Faults
from .hub import Hub
from .session import Session

CUT_FRAME = b"\x81\x7e\x01\x00" + b'{"type":"trade","sid":1,"seq":'  # promises 256 bytes, sends 34
WRITE_CHUNK = 1 << 18  # bytes per transport write before the writer honours backpressure
_HEAD2 = struct.Struct("!BB").pack
_HEAD4 = struct.Struct("!BBH").pack
_HEAD10 = struct.Struct("!BBQ").pack
_TEXT_HEADS: dict[int, bytes] = {}  # payload length -> text frame header (lengths < 64 KiB)


def frame_header(n: int, binary: bool) -> bytes:
    """RFC 6455 header of a final, unmasked (server), uncompressed frame of ``n`` bytes."""
    op = 0x82 if binary else 0x81
    if n < 126:
        return _HEAD2(op, n)
    if n < 65536:
        return _HEAD4(op, 126, n)
    return _HEAD10(op, 127, n)


def pack_frames(out: deque[bytes], budget: int) -> bytes:
    """Pop queued frames from ``out`` until about ``budget`` bytes and frame them into one
    buffer: the per-frame cost becomes a header lookup instead of a write call (and often a
    syscall) per frame."""
    parts: list[bytes] = []
    add = parts.append
    pop = out.popleft
    heads = _TEXT_HEADS
    size = 0
    while out and size < budget:
        data = pop()
        n = len(data)
        text = type(data) is bytes  # else a BinaryFrame
        head = heads.get(n) if text else None
        if head is None:
            head = frame_header(n, not text)
            if text and n < 65536:
                heads[n] = head
        add(head)
        add(data)
        size += n
    return b"".join(parts)


class _Conn:
    __slots__ = ("awaiting_pong_since", "http", "session", "tasks", "transport", "wake", "ws")

    def __init__(self, ws: web.WebSocketResponse, http: AbstractStreamWriter, session: Session,
                 transport: asyncio.Transport | None, wake: asyncio.Event) -> None:
        self.ws = ws
        self.http = http  # the upgraded connection's writer: its drain() is the backpressure
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
        self.counters = {"ws_auth_rejected": 0, "ws_pong_timeouts": 0, "ws_accepted": 0,
                         "ws_conn_limited": 0}
        self._opening: Counter[str | None] = Counter()
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
        cap = self.conf.ws_max_connections
        if cap and key_id is not None and \
                self.hub.connections_of(key_id) + self._opening.get(key_id, 0) >= cap:
            # Kalshi limits sockets per key without publishing the number; the refusal is an
            # HTTP 429 at the upgrade (kalshi-protocol.md §8).
            self.counters["ws_conn_limited"] += 1
            self.faults.count("ws_conn_limited")
            return web.Response(status=429, text="Too Many Requests\n")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)
        self._opening[key_id] += 1  # holds the slot while the upgrade completes
        try:
            http = await ws.prepare(request)
        finally:
            self._opening[key_id] -= 1
        self.counters["ws_accepted"] += 1
        wake = asyncio.Event()
        session = Session(self.hub, authed, wake.set, key_id=key_id)
        conn = _Conn(ws, http, session, request.transport, wake)
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
        """Drain the session's queue in chunks of whole frames; wait for the transport to drain
        between chunks, so a slow reader backs frames up in ``out`` (where error 25 sees them),
        not in the transport. Stops once a close frame went out or the socket is gone."""
        out = conn.session.out
        ws = conn.ws
        transport = conn.transport
        drain = conn.http.drain
        if transport is None:
            return
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while out:
                    if ws.closed or transport.is_closing():
                        return
                    transport.write(pack_frames(out, WRITE_CHUNK))
                    await drain()
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
