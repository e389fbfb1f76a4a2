"""Connection manager: the pool of Kalshi WebSocket connections and their subscriptions.

Roles (``connections.*``): ``ticker`` and ``trade`` subscribe the all-markets firehose (each
connection of a role is a redundant copy; the writers' SQL dedupes), ``lifecycle`` subscribes
``market_lifecycle_v2``, ``orderbook`` connections each own a shard of the open markets
(``_shard.ShardPlanner``, at most ``markets_per_connection``), kept current with
``update_subscription`` ``add_markets``/``delete_markets`` as the registry reports markets
opening and closing.

Per connection (``WsConnection``):
- a signed handshake (RSA-PSS over ``<ts>GET/trade-api/ws/v2``, fresh per attempt);
- every frame is stamped ``received_at_us`` on receipt and awaited through ``router.route``; when
  the writers apply backpressure that await stops this socket's reads, which is the point;
- its subscriptions are planned by ``_subscriptions.SubscriptionSet``: an orderbook socket
  carries as many subscriptions as Kalshi's markets-per-subscription limit needs (learnt from
  error 26), commands leave through a paced sender (rate learnt from error 27), and markets the
  exchange refuses are quarantined (``_quarantine``) without holding up the rest;
- replies (subscribed/ok/unsubscribed/error) returned by the router drive the subscription state;
  error 10/25 (terminal) -> resubscribe that subscription, counted in
  ``conn_manager_subscribe_errors_total{channel,error_code}``;
- an orderbook socket refused with handshake 429 (Kalshi's per-key socket limit) several times
  in a row is parked: its shard's markets move to the other sockets;
- liveness is ping/pong (our own keepalive, so ``ws_client_last_ping_timestamp`` is real), never
  data silence; a dead socket is closed and reconnected with exponential backoff + full jitter,
  and every connect passes a shared gate (``stagger_s`` apart) so the pool never reconnects in one
  burst;
- an outage, from the last frame received to the new subscription, is a ``ws_down`` coverage
  event, and so is a resubscribe on a live socket (terminal error, silent role, a resync): data
  sent meanwhile never reached us either. After it, per role (``on_subscribed``): a trade
  connection queues a REST backfill of the window, which closes the event once the trades are
  committed; a lifecycle connection asks the registry to reconcile and closes it when that
  reconcile has run; orderbook and ticker connections close it unrecovered (fresh snapshots come
  with the subscription, but the deltas and ticker updates of the window are gone).

The manager resubscribes a role that has been silent for ``silent_role_s`` while the exchange is
active; the resync machine (gatherer/resync.py) drives ``get_snapshot``/``resubscribe`` for dirty
books through ``by_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect

from gatherer._backoff import Backoff
from gatherer._quarantine import Quarantine
from gatherer._shard import ShardPlanner
from gatherer._subscriptions import (
    CMD_CHUNK,
    Command,
    LearnedLimit,
    LearnedRate,
    Sub,
    SubscriptionSet,
)
from gatherer.config import ConnectionsConfig, KalshiConfig
from gatherer.coverage import CoverageLedger
from gatherer.errors import AuthRejected
from gatherer.markets import MarketChange, MarketRegistry
from gatherer.router import BackfillRequest, Router
from shared.kalshi.auth import sign_headers
from shared.kalshi.models import ControlEvent, ErrorFrame, Ok, Subscribed, Unsubscribed
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.connection")

ROLES = ("ticker", "trade", "lifecycle", "orderbook")
CHANNEL = {"ticker": "ticker", "trade": "trade", "lifecycle": "market_lifecycle_v2",
           "orderbook": "orderbook_delta"}
TERMINAL = frozenset((10, 25))
#: Rebalance moves per round; each costs a snapshot (hardening 6: unsubscribe, then subscribe).
REBALANCE_MOVES = 200

RawLogFn = Callable[[int, str, "bytes | str"], None]


def _now_us() -> int:
    return time.time_ns() // 1000


class ConnectGate:
    """Spaces connection attempts of the whole pool ``stagger_s`` apart."""

    def __init__(self, stagger_s: float) -> None:
        self._stagger = stagger_s
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if now < self._next:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._stagger


class WsConnection:
    """One socket with its subscriptions; reconnects forever until ``stop()`` (or until the
    manager parks it: Kalshi refuses more sockets on this key)."""

    def __init__(self, conn_id: str, role: str, mgr: ConnectionManager, index: int) -> None:
        self.conn_id = conn_id
        self.role = role
        self.index = index
        self._mgr = mgr
        self._m = mgr.metrics
        self.subs = mgr.subscription_set(role)
        self.desired: set[str] = set()  # orderbook markets assigned by the planner
        self.ws: ClientConnection | None = None
        self.open = False
        self.healthy = False
        self.parked = False
        self.ever_connected = False
        self.down_since_us: int | None = None
        self.last_rx_mono = 0.0
        self.last_rx_us = 0  # receive time of the newest frame: where an outage begins
        self.last_error: str | None = None
        self._ids = itertools.count(1)
        self._cmds: dict[int, Command] = {}
        self._outbox: asyncio.Queue[tuple[int, Command]] = asyncio.Queue()
        self._next_send = 0.0
        self._subscribe_sent: dict[int, float] = {}  # subscribe command id -> monotonic send time
        self._sync_needed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._later: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._in_route = False
        self._n_msgs = 0
        self._n_data = 0  # frames that were not only command replies (ws_client_last_message_timestamp)
        self._n_bytes = 0
        self._handshake_429s = 0
        self._ws_down_event: str | None = None
        cfg = mgr.cfg
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._connected_gauge = self._m.ws_client_connected.labels(conn_id=conn_id, role=role)
        self._msgs = self._m.ws_client_messages_received_total.labels(role=role)
        self._bytes = self._m.ws_client_bytes_received_total.labels(role=role)
        self._reconnects = self._m.conn_manager_reconnects_total.labels(role=role)
        self._last_ping = self._m.ws_client_last_ping_timestamp.labels(conn_id=conn_id)

    @property
    def sub(self) -> Sub:
        """The first subscription (a firehose role has exactly one)."""
        return self.subs.subs[0] if self.subs.subs else Sub(0, self.subs.channel, self.subs.firehose)

    # ---- public ----------------------------------------------------------------------------
    def start(self, initial_delay: float) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(initial_delay), name=f"ws-{self.conn_id}")

    async def stop(self) -> None:
        """Stop reading and close the socket (shutdown: nothing more enters the pipeline)."""
        self._stopping = True
        for t in list(self._later):
            t.cancel()
        task = self._task
        if task is not None:
            # Bounded: shutdown has a flush deadline to keep, whatever this socket is doing.
            for attempt in range(3):
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=2.0)
                if done:
                    break
                where = "".join(f"{f.f_code.co_name}:{f.f_lineno} " for f in task.get_stack(limit=8))
                log.error("WebSocket %s did not stop after cancel (attempt %d; at %s); aborting its "
                          "socket", self.conn_id, attempt + 1, where.strip(), extra={"conn_id": self.conn_id})
                ws = self.ws
                if ws is not None:
                    with contextlib.suppress(Exception):
                        ws.transport.abort()
            if task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.exception()
        self._set_open(False)

    def request_sync(self) -> None:
        """The desired market set changed: send the difference when possible."""
        self._sync_needed.set()

    def abort(self, why: str) -> None:
        """Drop the socket now (it reconnects with backoff): the exchange stopped answering."""
        ws = self.ws
        if ws is not None:
            log.warning("WebSocket %s: %s; reconnecting", self.conn_id, why,
                        extra={"conn_id": self.conn_id})
            with contextlib.suppress(Exception):
                ws.transport.abort()

    def subscribed_markets(self) -> int:
        if not self.open or self.role != "orderbook":
            return 0
        return self.subs.subscribed_markets()

    async def get_snapshot(self, sid: int, tickers: Sequence[str]) -> bool:
        """``update_subscription`` ``get_snapshot`` for markets of subscription ``sid``."""
        if self.ws is None or self.subs.by_sid(sid) is None:
            return False
        sub = self.subs.by_sid(sid)
        assert sub is not None
        for i in range(0, len(tickers), CMD_CHUNK):
            chunk = list(tickers[i:i + CMD_CHUNK])
            self._enqueue(next(self._ids), Command("snapshot", sub.key, tuple(chunk), {
                "sid": sid, "action": "get_snapshot", "market_tickers": chunk}))
        return True

    async def resubscribe(self, why: str, *, sid_alive: bool = True, sid: int | None = None) -> None:
        """Drop subscription ``sid`` (every one when None) and subscribe again: new sid, fresh
        snapshots. ``sid_alive=False`` after a terminal error (10/25): the exchange already
        ended that sid, so no ``unsubscribe`` is sent (it would only earn an error 7)."""
        if self.ws is None:
            return
        dropped = False
        for sub in list(self.subs.subs):
            if (sid is not None and sub.sid != sid) or sub.pending is not None:
                continue  # a fresh subscribe is already on its way
            if sub.sid is None and sid is None:
                continue
            log.warning("resubscribing %s channel (%s)", sub.channel, why,
                        extra={"conn_id": self.conn_id, "sid": sub.sid})
            # The router releases the old sid's books itself, on the terminal error frame or on
            # the ``unsubscribed`` reply (data-model.md hardening 6: no deltas without a snapshot).
            if sid_alive:
                cmd = self.subs.unsubscribe(sub, lambda: next(self._ids))
                if cmd is not None:
                    self._enqueue(*cmd)
            elif sub.sid is not None:
                self.subs.ended(sub.sid)
            dropped = True
        if dropped:
            # data sent until the new subscription never reaches us: an outage of this socket,
            # closed by on_subscribed (and only by the evidence) once it is healthy again
            await self._outage_begins(why)
        self._refresh_health()
        self._sync_needed.set()

    async def resubscribe_markets(self, why: str, tickers: Sequence[str]) -> None:
        """Resubscribe the subscriptions that carry ``tickers`` (fresh snapshots of all their
        markets); a subscription still being subscribed is left alone (its answer brings them)."""
        sids = {s.sid for t in tickers if (s := self.subs.owner(t)) is not None and s.sid is not None}
        for sid in sorted(sids):
            await self.resubscribe(why, sid=sid)

    def subscribe_overdue(self, now: float, timeout_s: float) -> bool:
        """True (once) when a subscribe sent on this socket has had no answer for ``timeout_s``:
        without a timeout the subscription would wait for it forever."""
        for sub in self.subs.subs:
            sent = self._subscribe_sent.get(sub.pending) if sub.pending is not None else None
            if sent is not None and now - sent > timeout_s:
                self._subscribe_sent.clear()
                return True
        return False

    # ---- connection loop -------------------------------------------------------------------
    async def _run(self, initial_delay: float) -> None:
        await asyncio.sleep(initial_delay)
        while not self._stopping:
            await self._mgr.gate.wait()
            rejected = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AuthRejected as exc:
                self.last_error = str(exc)
                self._m.ws_client_errors_total.labels(type="auth").inc()
                self._mgr.rl.log(logging.ERROR, "ws_auth", "%s at the WebSocket handshake; "
                                 "retrying slowly", exc, conn_id=self.conn_id, key_id=exc.key_id)
                self._mgr.auth_failing = True
            except (websockets.ConnectionClosed, OSError, TimeoutError,
                    websockets.InvalidHandshake, websockets.InvalidURI) as exc:
                kind = _error_kind(exc)
                rejected = kind == "handshake_429"
                self.last_error = f"{kind}: {exc}"[:200]
                self._m.ws_client_errors_total.labels(type=kind).inc()
                self._mgr.rl.log(logging.WARNING, f"ws_err:{self.conn_id}:{kind}",
                                 "WebSocket %s lost (%s); reconnecting with backoff", self.conn_id,
                                 self.last_error, conn_id=self.conn_id, role=self.role)
            except Exception as exc:  # a bug must not kill the connection loop forever
                self.last_error = f"internal: {type(exc).__name__}: {exc}"[:200]
                self._m.ws_client_errors_total.labels(type="internal").inc()
                log.exception("WebSocket %s: unexpected error; reconnecting", self.conn_id,
                              extra={"conn_id": self.conn_id})
            finally:
                await self._on_down()
            if self._stopping:
                break
            self._handshake_429s = self._handshake_429s + 1 if rejected else 0
            # Kalshi refuses sockets beyond its per-key limit with a handshake 429: after a few
            # in a row this orderbook socket gives its markets to the others and waits.
            if rejected and self._handshake_429s >= self._mgr.cfg.park_after_429s \
                    and self._mgr.park(self):
                return
            delay = self._backoff.next()
            if self._mgr.auth_failing:  # a rejected key: do not hammer the exchange with it
                delay = max(delay, 2 * self._mgr.cfg.reconnect_max_s)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        mgr = self._mgr
        headers = sign_headers(mgr.kalshi.api_key_id, mgr.key, "GET", mgr.ws_path, time.time_ns() // 1_000_000)
        cfg = mgr.cfg
        try:
            ws = await connect(
                mgr.kalshi.ws_base, additional_headers=headers,
                compression="deflate" if cfg.compression else None,
                ping_interval=None, ping_timeout=None,  # our own keepalive: see _keepalive
                max_size=cfg.max_message_bytes, max_queue=64, open_timeout=10, close_timeout=2,
                proxy=None, user_agent_header="kalshi-data-gatherer",
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRejected(mgr.kalshi.api_key_id, f"HTTP {status} at WebSocket upgrade") from None
            raise
        mgr.auth_failing = False
        self._handshake_429s = 0
        self.ws = ws
        self.subs.reset()
        self._cmds.clear()
        self._subscribe_sent.clear()
        self._outbox = asyncio.Queue()
        mgr.router.attach(self.conn_id, self.role)
        reconnect = self.ever_connected
        self._set_open(True)
        if reconnect:
            self._reconnects.inc()
        self.ever_connected = True
        self.last_rx_mono = time.monotonic()
        log.info("connected to Kalshi WebSocket", extra={"conn_id": self.conn_id, "role": self.role,
                                                          "reconnect": reconnect})
        self._sync_needed.set()
        helpers = [asyncio.create_task(self._keepalive(ws), name=f"ka-{self.conn_id}"),
                   asyncio.create_task(self._sync_loop(), name=f"sync-{self.conn_id}"),
                   asyncio.create_task(self._sender(ws), name=f"send-{self.conn_id}")]
        try:
            await self._read(ws)
        finally:
            for t in helpers:
                t.cancel()
            for t in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.ws = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
            # Do not wait on the close handshake forever when the peer vanished.
            with contextlib.suppress(Exception):
                ws.transport.abort()

    async def _read(self, ws: ClientConnection) -> None:
        route = self._mgr.router.route
        rawlog = self._mgr.rawlog
        conn_id = self.conn_id
        async for raw in ws:
            rx = time.time_ns() // 1000
            self.last_rx_us = rx
            self.last_rx_mono = time.monotonic()
            self._n_msgs += 1
            self._n_bytes += len(raw)
            if rawlog is not None:
                rawlog(rx, conn_id, raw)
            self._in_route = True
            try:
                replies = await route(conn_id, raw, rx)
            finally:
                self._in_route = False
            if replies:
                await self._on_replies(replies)
            else:
                self._n_data += 1
        # iteration ends on a clean close: raise so the caller logs and reconnects
        raise websockets.ConnectionClosedOK(ws.protocol.close_rcvd, ws.protocol.close_sent)

    async def _keepalive(self, ws: ClientConnection) -> None:
        cfg = self._mgr.cfg
        while True:
            await asyncio.sleep(cfg.ping_interval_s)
            self.flush_counters()
            try:
                # Kalshi answers a client ping with an EMPTY pong (kalshi-protocol.md §4.1);
                # websockets matches pongs by payload, so ping with an empty payload too.
                waiter = await ws.ping(b"")
            except websockets.ConnectionClosed:
                return
            deadline = time.monotonic() + cfg.ping_timeout_s
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), max(0.01, deadline - time.monotonic()))
                    self._last_ping.set(time.time())
                    break
                except TimeoutError:
                    # While we are the bottleneck (writers applying backpressure) the socket is
                    # deliberately not read, so a missing pong proves nothing: keep waiting.
                    if self._in_route:
                        deadline = time.monotonic() + cfg.ping_timeout_s
                        continue
                    self._m.ws_client_errors_total.labels(type="ping_timeout").inc()
                    log.warning("no pong within %.1f s; declaring WebSocket %s dead",
                                cfg.ping_timeout_s, self.conn_id, extra={"conn_id": self.conn_id})
                    ws.transport.abort()
                    return
                except websockets.ConnectionClosed:
                    return

    def flush_counters(self) -> None:
        if self._n_msgs:
            self._msgs.inc(self._n_msgs)
            self._bytes.inc(self._n_bytes)
            # Only the feed itself: the "subscribed"/"ok" replies to the silent-role resubscribe
            # must not make a stalled channel look alive (DataStale reads this gauge).
            if self._n_data:
                self._m.ws_client_last_message_timestamp.labels(role=self.role).set(time.time())
            self._n_msgs = 0
            self._n_bytes = 0
            self._n_data = 0


    async def _sync_loop(self) -> None:
        while True:
            await self._sync_needed.wait()
            self._sync_needed.clear()
            self._sync()

    def _sync(self) -> None:
        """Bring the exchange's view of our subscriptions in line with what we want: plan the
        commands (``_subscriptions``) and queue them for the paced sender."""
        if self.ws is None:
            return
        if self.role == "orderbook":
            self.subs.assign(self.desired)
        for i, cmd in self.subs.plan(lambda: next(self._ids)):
            self._enqueue(i, cmd)
        if self._refresh_health():  # e.g. an orderbook socket with no markets to subscribe
            self._spawn(self._mgr.on_subscribed(self), "on-subscribed")
        self._mgr.update_gauges()

    def _enqueue(self, i: int, cmd: Command) -> None:
        self._cmds[i] = cmd
        if len(self._cmds) > 10_000:  # replies that never came: forget the oldest
            for k in list(self._cmds)[:5_000]:
                del self._cmds[k]
        self._outbox.put_nowait((i, cmd))

    async def _sender(self, ws: ClientConnection) -> None:
        """Sends queued commands in order, paced under the command rate (Kalshi's error 27 says
        it is limited; the rate is learnt pool-wide, ``ConnectionManager.cmd_rate``)."""
        while True:
            i, cmd = await self._outbox.get()
            now = time.monotonic()
            if self._next_send > now:
                await asyncio.sleep(self._next_send - now)
                now = time.monotonic()
            self._next_send = max(now, self._next_send) + 1.0 / self._mgr.cmd_rate.per_s
            if cmd.kind == "subscribe":
                self._subscribe_sent[i] = now
            await ws.send(orjson.dumps({"id": i, "cmd": _CMD_NAMES[cmd.kind],
                                        "params": cmd.params}).decode())

    async def _on_replies(self, replies: Sequence[ControlEvent]) -> None:
        for ev in replies:
            if isinstance(ev, Subscribed):
                if ev.id is not None:
                    self._cmds.pop(ev.id, None)
                    self._subscribe_sent.pop(ev.id, None)
                if ev.sid is None:
                    continue
                sub = self.subs.subscribed(ev.id, ev.sid, time.monotonic())
                if sub is None:
                    continue
                self._backoff.reset()
                log.info("subscribed to %s channel", ev.channel or sub.channel,
                         extra={"conn_id": self.conn_id, "sid": ev.sid, "markets": len(sub.sent)})
                self._sync_needed.set()
                await self._refresh_health_async()
            elif isinstance(ev, ErrorFrame):
                await self._on_error(ev)
            elif isinstance(ev, Unsubscribed | Ok):
                cmd = self._cmds.pop(ev.id, None) if ev.id is not None else None
                if isinstance(ev, Ok) and cmd is not None and cmd.kind == "add":
                    sub = self.subs.get(cmd.sub_key)
                    if sub is not None:
                        self.subs.limit.ok(len(sub.sent))

    async def _on_error(self, ev: ErrorFrame) -> None:
        code = ev.code
        cmd = self._cmds.pop(ev.id, None) if ev.id is not None else None
        if ev.id is not None:
            self._subscribe_sent.pop(ev.id, None)
        self._m.conn_manager_subscribe_errors_total.labels(
            channel=self.subs.channel, error_code=str(code)).inc()
        self._mgr.rl.log(logging.WARNING, f"err:{self.conn_id}:{code}", "error frame %s (%s) on %s",
                         code, ev.msg, self.conn_id, conn_id=self.conn_id, sid=ev.sid,
                         command=cmd.kind if cmd else None)
        if code in TERMINAL and ev.sid is not None and self.subs.by_sid(ev.sid) is not None:
            # Slow consumer / channel error: the subscription is dead; start a new one.
            log.warning("resubscribing %s channel (terminal error %s)", self.subs.channel, code,
                        extra={"conn_id": self.conn_id, "sid": ev.sid})
            self.subs.ended(ev.sid)
            await self._outage_begins(f"terminal error {code}")  # what it sent since is lost
            self._refresh_health()
            self._sync_needed.set()
            return
        if cmd is None:
            return  # errors answering an old sid's command need nothing more
        out = self.subs.failed(cmd, code, ev.market_tickers)
        if out.quarantine:
            self.desired.difference_update(t for t, _ in out.quarantine)
            self._mgr.quarantine(self, out.quarantine)
        delay = 0.0
        if out.slow_down:
            rate = self._mgr.slow_commands()
            delay = 1.0 / rate
        if out.resend is not None:
            self._enqueue(next(self._ids), out.resend)
        if out.back_off:
            delay = max(delay, min(5.0, self._mgr.cfg.reconnect_min_s * 4))
        if delay:
            self._sync_later(delay)
        else:
            self._sync_needed.set()
        self._refresh_health()

    def _sync_later(self, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self._sync_needed.set()

        self._spawn(later(), "sync-later")

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        t = asyncio.create_task(coro, name=f"{what}-{self.conn_id}")
        self._later.add(t)
        t.add_done_callback(self._later.discard)

    def _set_open(self, is_open: bool) -> None:
        if self.open == is_open:
            return
        self.open = is_open
        if not is_open:
            self.healthy = False
            self._connected_gauge.set(0)
        self._mgr.update_gauges()

    def _refresh_health(self) -> bool:
        """healthy = open and every subscription we want is subscribed; returns True when it
        just became healthy."""
        now = self.open and self.ws is not None and self.subs.ready
        became = now and not self.healthy
        if now != self.healthy:
            self.healthy = now
            self._connected_gauge.set(1 if now else 0)
            self._mgr.update_gauges()
        return became

    async def _refresh_health_async(self) -> None:
        if self._refresh_health():
            await self._mgr.on_subscribed(self)

    async def _on_down(self) -> None:
        was_open = self.open
        self.flush_counters()
        self._set_open(False)
        self._mgr.router.detach(self.conn_id)
        self.subs.reset()
        self._cmds.clear()
        self._subscribe_sent.clear()
        if was_open and not self._stopping:
            await self._outage_begins("socket lost")
        self._mgr.update_gauges()

    async def _outage_begins(self, cause: str) -> None:
        """Open this connection's ``ws_down`` event, from the last frame received, unless one is
        open already (a resubscribe that fails into a reconnect is one outage)."""
        if self._ws_down_event is not None:
            return
        self.down_since_us = self.last_rx_us or _now_us()
        self._ws_down_event = await self._mgr.coverage.open(
            "ws_down", "connection", self.down_since_us,
            detail={"conn_id": self.conn_id, "role": self.role, "cause": cause})


_CMD_NAMES = {"subscribe": "subscribe", "unsubscribe": "unsubscribe", "add": "update_subscription",
              "delete": "update_subscription", "snapshot": "update_subscription"}


class ConnectionManager:
    """Owns every ``WsConnection``; see the module docstring."""

    def __init__(
        self,
        cfg: ConnectionsConfig,
        kalshi: KalshiConfig,
        key: rsa.RSAPrivateKey,
        router: Router,
        registry: MarketRegistry,
        metrics: GathererMetrics,
        coverage: CoverageLedger,
        *,
        backfill_q: asyncio.Queue[BackfillRequest],
        rawlog: RawLogFn | None = None,
        on_lifecycle_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.kalshi = kalshi
        self.key = key
        self.router = router
        self.registry = registry
        self.metrics = metrics
        self.coverage = coverage
        self.rawlog = rawlog
        self._backfill_q = backfill_q
        self._on_lifecycle_reconnect = on_lifecycle_reconnect
        self.ws_path = urlsplit(kalshi.ws_base).path or "/trade-api/ws/v2"
        self.gate = ConnectGate(cfg.stagger_s)
        self.rl = RateLimitedLog(log, 30.0)
        self.auth_failing = False
        # Kalshi's unpublished WebSocket limits, learnt pool-wide from its answers (one key)
        self.sub_limit = LearnedLimit(min(cfg.markets_per_subscription, cfg.markets_per_connection))
        self.cmd_rate = LearnedRate(cfg.commands_per_s)
        self.quarantined = Quarantine(cfg.quarantine_retry_s, time.monotonic)
        self._capped: set[WsConnection] = set()  # never started: over connections.max_per_key
        self.conns: list[WsConnection] = []
        counts = {"ticker": cfg.ticker, "trade": cfg.trade, "lifecycle": cfg.lifecycle,
                  "orderbook": cfg.orderbook}
        for role in ROLES:
            for k in range(counts[role]):
                self.conns.append(WsConnection(f"{role}-{k + 1}", role, self, len(self.conns)))
        self.orderbook = [c for c in self.conns if c.role == "orderbook"]
        self.planner = ShardPlanner(len(self.orderbook), cfg.markets_per_connection)
        # Never open more sockets than the key may: the last orderbook sockets stay closed.
        over = len(self.conns) - cfg.max_per_key
        for c in reversed(self.orderbook):
            if over <= 0 or len(self._capped) + 1 >= len(self.orderbook):
                break
            self._capped.add(c)
            c.parked = True
            self.planner.retire(self.orderbook.index(c))
            over -= 1
        if self._capped:
            log.warning("connections.max_per_key %d: %d orderbook sockets not opened; their share "
                        "of markets goes to the other %d", cfg.max_per_key, len(self._capped),
                        len(self.orderbook) - len(self._capped))
        self._unpark: dict[WsConnection, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._role_quiet_since: dict[str, float] = {}
        #: set once a trade subscription is live: a REST backfill ending after this point
        #: overlaps the WebSocket stream, so no trade can fall between the two.
        self.trade_live = asyncio.Event()
        if cfg.trade == 0:
            self.trade_live.set()
        metrics.conn_manager_connections_total.set(len(self.conns))

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Assign the registry's open markets, then open every socket, staggered."""
        self._assign(self.registry.take_open_set())
        for c in self.conns:
            if c not in self._capped:
                c.start(c.index * self.cfg.stagger_s)
        self._tasks = [
            asyncio.create_task(self._changes_loop(), name="conn-changes"),
            asyncio.create_task(self._watchdog_loop(), name="conn-watchdog"),
        ]

    async def stop(self) -> None:
        for h in self._unpark.values():
            h.cancel()
        self._unpark.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(c.stop() for c in self.conns), return_exceptions=True)
        self.update_gauges()

    def subscription_set(self, role: str) -> SubscriptionSet:
        """The subscriptions of one socket of ``role``, sharing the pool's learnt limit."""
        extra: dict[str, Any] = {}
        if role == "orderbook" and self.cfg.use_yes_price is not None:
            # sent explicitly while Kalshi accepts it: its default is to flip to true (NO side
            # on the YES scale) before the parameter disappears (kalshi-protocol.md §4.2)
            extra["use_yes_price"] = self.cfg.use_yes_price
        return SubscriptionSet(CHANNEL[role], role != "orderbook", self.sub_limit, extra)

    # ---- Kalshi's limits -------------------------------------------------------------------
    def slow_commands(self) -> float:
        """Error 27: every socket of this key sends commands at half the rate from now on."""
        rate = self.cmd_rate.slow_down(time.monotonic())
        self.rl.log(logging.WARNING, "cmd_rate", "Kalshi says too many commands (error 27); "
                    "pacing commands at %.2f/s per socket", rate)
        self.update_gauges()
        return rate

    def park(self, conn: WsConnection) -> bool:
        """Handshake 429s: Kalshi will not take another socket on this key. An orderbook socket
        gives its markets to the others (which may hold more, in more subscriptions) and tries
        again after ``park_retry_s``. Firehose sockets, and the last orderbook one, never park."""
        if conn.role != "orderbook" or conn.parked:
            return False
        i = self.orderbook.index(conn)
        changed = self.planner.retire(i)
        if not changed:
            return False
        conn.parked = True
        for j in changed:
            self.orderbook[j].desired = set(self.planner.shards[j])
            self.orderbook[j].request_sync()
        open_now = sum(1 for c in self.conns if c.open)
        log.warning("Kalshi refused socket %s with HTTP 429 %d times in a row (%d sockets open on "
                    "this key): parked, its markets moved to the other orderbook sockets; retry in "
                    "%.0f s", conn.conn_id, self.cfg.park_after_429s, open_now,
                    self.cfg.park_retry_s, extra={"conn_id": conn.conn_id})
        loop = asyncio.get_running_loop()
        self._unpark[conn] = loop.call_later(self.cfg.park_retry_s, self._unpark_conn, conn)
        self.update_gauges()
        return True

    def _unpark_conn(self, conn: WsConnection) -> None:
        self._unpark.pop(conn, None)
        conn.parked = False
        self.planner.restore(self.orderbook.index(conn))  # the periodic rebalance fills it
        conn.start(0.0)
        self.update_gauges()

    def quarantine(self, conn: WsConnection, refused: Sequence[tuple[str, str]]) -> None:
        """Markets the exchange refused: out of the shards until their lifecycle changes (or
        ``quarantine_retry_s``); the rest of their group subscribes without them."""
        touched: set[int] = set()
        for ticker, reason in refused:
            if self.quarantined.add(ticker, reason):
                self.metrics.conn_manager_quarantine_total.labels(reason=reason).inc()
                self.rl.log(logging.WARNING, f"quarantine:{ticker}", "Kalshi refuses to subscribe "
                            "%s (%s); quarantined until its lifecycle changes or %.0f s pass "
                            "(its REST snapshots continue)", ticker, reason,
                            self.cfg.quarantine_retry_s, conn_id=conn.conn_id, ticker=ticker)
            i = self.planner.remove(ticker)
            if i is not None:
                touched.add(i)
        for i in touched:
            self.orderbook[i].desired = set(self.planner.shards[i])
        self.update_gauges()

    def on_lifecycle(self, ticker: str) -> None:
        """A lifecycle frame for ``ticker``: a quarantined market gets another chance."""
        if self.quarantined.release(ticker):
            self._readmit(ticker)

    def _readmit(self, ticker: str) -> None:
        if self.registry.is_open(ticker):
            self.apply_change(MarketChange(ticker, True))
        self.update_gauges()

    # ---- shard assignment ------------------------------------------------------------------
    def _assign(self, tickers: list[str]) -> None:
        changed = self.planner.add_many(tickers)
        for i in changed:
            self.orderbook[i].desired = set(self.planner.shards[i])
            self.orderbook[i].request_sync()
        self._log_overflow()
        self.update_gauges()

    def _log_overflow(self) -> None:
        if self.planner.overflow:
            self.rl.log(logging.ERROR, "overflow", "%d open markets have no orderbook connection "
                        "(capacity %d x %d); raise connections.orderbook or markets_per_connection",
                        len(self.planner.overflow), len(self.orderbook), self.cfg.markets_per_connection)

    def apply_change(self, ch: MarketChange) -> None:
        touched: set[int] = set()
        if ch.opened:
            if ch.ticker in self.quarantined:
                return
            i = self.planner.add(ch.ticker)
            if i is not None:
                touched.add(i)
            else:
                self._log_overflow()
        else:
            self.quarantined.release(ch.ticker)  # closed: nothing left to retry
            i = self.planner.remove(ch.ticker)
            if i is not None:
                touched.add(i)
            for _, j in self.planner.drain_overflow():
                touched.add(j)
        for i in touched:
            conn = self.orderbook[i]
            conn.desired = set(self.planner.shards[i])
            conn.request_sync()

    def rebalance(self) -> int:
        moves = self.planner.rebalance(REBALANCE_MOVES)
        touched = {f for _, f, _ in moves} | {t for _, _, t in moves}
        # the losing shards first: their delete_markets goes out before the gainers' add_markets
        for i in sorted(touched, key=lambda i: len(self.planner.shards[i])):
            conn = self.orderbook[i]
            conn.desired = set(self.planner.shards[i])
            conn.request_sync()
        if moves:
            log.info("rebalanced %d markets across orderbook connections", len(moves))
        return len(moves)

    # ---- background loops ------------------------------------------------------------------
    async def _changes_loop(self) -> None:
        q = self.registry.changes
        while True:
            ch = await q.get()
            self.apply_change(ch)
            while not q.empty():  # apply a burst at once, then sync once per connection
                self.apply_change(q.get_nowait())
            self.update_gauges()

    async def _watchdog_loop(self) -> None:
        """Silent roles, periodic rebalance, gauges, metric counters."""
        last_rebalance = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for c in self.conns:
                c.flush_counters()
                if c.ws is not None and c.subscribe_overdue(now, self.cfg.subscribe_timeout_s):
                    # never answered: without this the socket would wait for it forever
                    self.metrics.ws_client_errors_total.labels(type="subscribe_timeout").inc()
                    c.abort(f"subscribe not answered within {self.cfg.subscribe_timeout_s:.0f} s")
            if now - last_rebalance > 30.0:
                last_rebalance = now
                self.rebalance()
            for ticker in self.quarantined.due():  # a refusal that may have been transient
                self._readmit(ticker)
            if self.registry.exchange_active is False:
                continue
            for role in ROLES:
                conns = [c for c in self.conns if c.role == role and c.healthy]
                if not conns:
                    continue
                if role == "orderbook" and not any(c.subscribed_markets() for c in conns):
                    continue
                last = max(max(c.last_rx_mono for c in conns),
                           max(s.subscribed_at for c in conns for s in c.subs.subs))
                if now - last > self.cfg.silent_role_s:
                    self.metrics.ws_client_errors_total.labels(type="silent").inc()
                    self.rl.log(logging.WARNING, f"silent:{role}", "no %s message for %.0f s while "
                                "the exchange is active; resubscribing", role, now - last, role=role)
                    for c in conns:
                        await c.resubscribe("silent role")
                        c.last_rx_mono = now

    async def on_subscribed(self, conn: WsConnection) -> None:
        """A (re)connected socket is subscribed again: end its outage window and recover what
        can be recovered; the event is closed recovered only by the evidence (module docstring)."""
        if conn.role == "trade":
            self.trade_live.set()
        down = conn.down_since_us
        if down is None:
            return
        conn.down_since_us = None
        now = _now_us()
        eid, conn._ws_down_event = conn._ws_down_event, None
        ref = self.coverage.ref(eid) if eid is not None else None
        if ref is not None:
            ref = dataclasses.replace(ref, window_end=now)
        if conn.role == "trade":
            # the backfill closes the event once the window's trades are committed
            await self._backfill_q.put(BackfillRequest(None, down, now, "reconnect", conn.conn_id,
                                                       link=ref))
            return
        if eid is None:
            return
        if conn.role == "lifecycle" and self._on_lifecycle_reconnect is not None:
            self._on_lifecycle_reconnect()
            task = asyncio.create_task(self._close_after_reconcile(eid, now, self.registry.reconciles_started),
                                       name=f"ws-down-{conn.conn_id}")
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(task)
            return
        lost = "orderbook deltas" if conn.role == "orderbook" else f"{conn.role} updates"
        await self.coverage.close(eid, window_end=now, recovered=False,
                                  detail={"how": "resubscribed; fresh snapshots",
                                          "lost": f"{lost} of the window (no source serves them again)"})

    async def _close_after_reconcile(self, event_id: str, end_us: int, since: int) -> None:
        """A lifecycle outage is recovered once a registry reconcile started after it has run."""
        await self.registry.wait_reconciled(since)
        await self.coverage.close(event_id, window_end=end_us, recovered=True,
                                  detail={"how": "resubscribed; registry reconciled over REST"})

    # ---- status ----------------------------------------------------------------------------
    def update_gauges(self) -> None:
        m = self.metrics
        m.gatherer_websocket_connections.set(sum(1 for c in self.conns if c.open))
        for role in ROLES:
            m.conn_manager_connections_healthy.labels(role=role).set(
                sum(1 for c in self.conns if c.role == role and c.healthy))
        m.conn_manager_subscriptions_total.set(sum(len(c.subs.sids()) for c in self.conns))
        m.conn_manager_markets_total.set(len(self.planner.owner))
        m.gatherer_markets_active.set(self.subscribed_markets())
        m.conn_manager_markets_per_subscription.set(self.sub_limit.value)
        m.conn_manager_commands_per_second.set(self.cmd_rate.per_s)
        m.conn_manager_parked_connections.set(sum(1 for c in self.orderbook if c.parked))
        m.conn_manager_quarantined_markets.set(len(self.quarantined))

    def subscribed_markets(self) -> int:
        return sum(c.subscribed_markets() for c in self.orderbook)

    def planned_count(self) -> int:
        """Sockets we mean to run: all configured but those over ``connections.max_per_key``
        (a socket parked after handshake 429s still counts: it is missing)."""
        return len(self.conns) - len(self._capped)

    def healthy_count(self) -> int:
        return sum(1 for c in self.conns if c.healthy)

    def by_id(self, conn_id: str) -> WsConnection | None:
        return next((c for c in self.conns if c.conn_id == conn_id), None)

    def find(self, ticker: str) -> WsConnection | None:
        i = self.planner.owner.get(ticker)
        return None if i is None else self.orderbook[i]


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, websockets.ConnectionClosedOK):
        return "closed"
    if isinstance(exc, websockets.ConnectionClosed):
        return "reset" if exc.rcvd is None else "closed_error"
    if isinstance(exc, websockets.InvalidStatus):
        return f"handshake_{exc.response.status_code}"
    if isinstance(exc, websockets.InvalidHandshake):
        return "handshake"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "network"

