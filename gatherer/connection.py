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
- replies (subscribed/ok/unsubscribed/error) returned by the router drive the subscription state;
  error 10/25 (terminal) -> resubscribe that subscription, counted in
  ``conn_manager_subscribe_errors_total{channel,error_code}``;
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect

from gatherer._backoff import Backoff
from gatherer._shard import ShardPlanner
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
#: Markets per update_subscription command: keeps one command frame well under any size limit.
CMD_CHUNK = 1000
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


@dataclass
class _Sub:
    """One subscription this connection wants: a channel and (orderbook) its markets."""

    channel: str
    firehose: bool
    sid: int | None = None
    pending_id: int | None = None  # subscribe command in flight
    pending_since: float = 0.0  # monotonic time it was sent
    sent: set[str] = field(default_factory=set)  # markets the exchange has been told about
    subscribed_at: float = 0.0


class WsConnection:
    """One socket with its subscription; reconnects forever until ``stop()``."""

    def __init__(self, conn_id: str, role: str, mgr: ConnectionManager, index: int) -> None:
        self.conn_id = conn_id
        self.role = role
        self.index = index
        self._mgr = mgr
        self._m = mgr.metrics
        self.sub = _Sub(CHANNEL[role], firehose=role != "orderbook")
        self.desired: set[str] = set()  # orderbook markets assigned by the planner
        self.ws: ClientConnection | None = None
        self.open = False
        self.healthy = False
        self.ever_connected = False
        self.down_since_us: int | None = None
        self.last_rx_mono = 0.0
        self.last_rx_us = 0  # receive time of the newest frame: where an outage begins
        self.last_error: str | None = None
        self._ids = itertools.count(1)
        self._cmds: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._sync_needed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_route = False
        self._n_msgs = 0
        self._n_bytes = 0
        self._ws_down_event: str | None = None
        cfg = mgr.cfg
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._connected_gauge = self._m.ws_client_connected.labels(conn_id=conn_id, role=role)
        self._msgs = self._m.ws_client_messages_received_total.labels(role=role)
        self._bytes = self._m.ws_client_bytes_received_total.labels(role=role)
        self._reconnects = self._m.conn_manager_reconnects_total.labels(role=role)
        self._last_ping = self._m.ws_client_last_ping_timestamp.labels(conn_id=conn_id)

    # ---- public ----------------------------------------------------------------------------
    def start(self, initial_delay: float) -> None:
        self._task = asyncio.create_task(self._run(initial_delay), name=f"ws-{self.conn_id}")

    async def stop(self) -> None:
        """Stop reading and close the socket (shutdown: nothing more enters the pipeline)."""
        self._stopping = True
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
        if not self.healthy:
            return 0
        return len(self.sub.sent) if self.role == "orderbook" else 0

    async def get_snapshot(self, sid: int, tickers: Sequence[str]) -> bool:
        """``update_subscription`` ``get_snapshot`` for markets of subscription ``sid``."""
        if self.ws is None or self.sub.sid != sid:
            return False
        for i in range(0, len(tickers), CMD_CHUNK):
            chunk = list(tickers[i:i + CMD_CHUNK])
            await self._send("update_subscription", {"sid": sid, "action": "get_snapshot",
                                                     "market_tickers": chunk}, ("snapshot", tuple(chunk)))
        return True

    async def resubscribe(self, why: str, *, sid_alive: bool = True) -> None:
        """Drop the current subscription and subscribe again (new sid, fresh snapshots).

        ``sid_alive=False`` after a terminal error (10/25): the exchange already ended that sid,
        so no ``unsubscribe`` is sent (it would only earn an error 7).
        """
        if self.ws is None:
            return
        if self.sub.pending_id is not None:
            return  # a fresh subscribe is already on its way
        old = self.sub.sid
        log.warning("resubscribing %s channel (%s)", self.sub.channel, why,
                    extra={"conn_id": self.conn_id, "sid": old})
        await self._outage_begins(why)
        self.sub.sid = None
        self.sub.sent = set()
        self.healthy = False
        self._connected_gauge.set(0)
        # The router releases the old sid's books itself, on the terminal error frame or on the
        # ``unsubscribed`` reply (data-model.md hardening 6: no deltas without a new snapshot).
        if old is not None and sid_alive:
            with contextlib.suppress(Exception):
                await self._send("unsubscribe", {"sids": [old]}, ("unsubscribe", ()))
        self._sync_needed.set()

    # ---- connection loop -------------------------------------------------------------------
    async def _run(self, initial_delay: float) -> None:
        await asyncio.sleep(initial_delay)
        while not self._stopping:
            await self._mgr.gate.wait()
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
        self.ws = ws
        self.sub = _Sub(CHANNEL[self.role], firehose=self.role != "orderbook")
        self._cmds.clear()
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
                   asyncio.create_task(self._sync_loop(), name=f"sync-{self.conn_id}")]
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
            self._m.ws_client_last_message_timestamp.labels(role=self.role).set(time.time())
            self._n_msgs = 0
            self._n_bytes = 0

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_needed.wait()
            self._sync_needed.clear()
            await self._sync()

    async def _sync(self) -> None:
        """Bring the exchange's view of this subscription in line with what we want."""
        sub = self.sub
        if self.ws is None or sub.pending_id is not None:
            return
        if sub.sid is None:
            params: dict[str, Any] = {"channels": [sub.channel]}
            if not sub.firehose:
                want = sorted(self.desired)
                if not want:
                    return  # an orderbook subscription needs markets (error 14 otherwise)
                params["market_tickers"] = want
                sub.sent = set(want)
            sub.pending_since = time.monotonic()
            sub.pending_id = await self._send("subscribe", params, ("subscribe", ()))
            return
        if sub.firehose:
            return
        remove = sorted(sub.sent - self.desired)
        add = sorted(self.desired - sub.sent)
        # Unsubscribe before subscribe, so a moved market has one owner at a time (hardening 6).
        for i in range(0, len(remove), CMD_CHUNK):
            chunk = remove[i:i + CMD_CHUNK]
            sub.sent.difference_update(chunk)
            await self._send("update_subscription", {"sid": sub.sid, "action": "delete_markets",
                                                     "market_tickers": chunk}, ("delete", tuple(chunk)))
        for i in range(0, len(add), CMD_CHUNK):
            chunk = add[i:i + CMD_CHUNK]
            sub.sent.update(chunk)
            await self._send("update_subscription", {"sid": sub.sid, "action": "add_markets",
                                                     "market_tickers": chunk}, ("add", tuple(chunk)))
        if not sub.sent and sub.sid is not None and not self.desired:
            pass  # an empty subscription is harmless; keep the sid for the next market
        self._mgr.update_gauges()

    async def _send(self, cmd: str, params: dict[str, Any], what: tuple[str, tuple[str, ...]]) -> int:
        ws = self.ws
        if ws is None:
            raise websockets.ConnectionClosedError(None, None)
        i = next(self._ids)
        self._cmds[i] = what
        if len(self._cmds) > 10_000:  # replies that never came: forget the oldest
            for k in list(self._cmds)[:5_000]:
                del self._cmds[k]
        await ws.send(orjson.dumps({"id": i, "cmd": cmd, "params": params}).decode())
        return i

    async def _on_replies(self, replies: Sequence[ControlEvent]) -> None:
        for ev in replies:
            if isinstance(ev, Subscribed):
                what = self._cmds.pop(ev.id, None) if ev.id is not None else None
                mine = (ev.id is not None and ev.id == self.sub.pending_id) or what is not None
                if mine or (ev.id is None and self.sub.pending_id is not None):
                    self.sub.pending_id = None
                    self.sub.sid = ev.sid
                    self.sub.subscribed_at = time.monotonic()
                    self._backoff.reset()
                    was = self.healthy
                    self.healthy = True
                    self._connected_gauge.set(1)
                    log.info("subscribed to %s channel", ev.channel or self.sub.channel,
                             extra={"conn_id": self.conn_id, "sid": ev.sid,
                                    "markets": len(self.sub.sent)})
                    if not was:
                        await self._mgr.on_subscribed(self)
                    self._sync_needed.set()
                    self._mgr.update_gauges()
            elif isinstance(ev, ErrorFrame):
                await self._on_error(ev)
            elif isinstance(ev, Unsubscribed | Ok) and ev.id is not None:
                self._cmds.pop(ev.id, None)

    async def _on_error(self, ev: ErrorFrame) -> None:
        code = ev.code
        what = self._cmds.pop(ev.id, None) if ev.id is not None else None
        self._m.conn_manager_subscribe_errors_total.labels(
            channel=self.sub.channel, error_code=str(code)).inc()
        self._mgr.rl.log(logging.WARNING, f"err:{self.conn_id}:{code}", "error frame %s (%s) on %s",
                         code, ev.msg, self.conn_id, conn_id=self.conn_id, sid=ev.sid,
                         command=what[0] if what else None)
        if code in TERMINAL and (ev.sid is None or ev.sid == self.sub.sid):
            # Slow consumer / channel error: the subscription is dead; start a new one.
            await self.resubscribe(f"terminal error {code}", sid_alive=False)
        elif what is not None and what[0] == "subscribe":
            self.sub.pending_id = None
            self.sub.sent = set()
            await asyncio.sleep(min(5.0, self._mgr.cfg.reconnect_min_s * 4))
            self._sync_needed.set()
        elif what is not None and what[0] in ("add", "delete") and self.sub.sid is not None:
            # The exchange's view of our market list is unknown now: start from a known state.
            await self.resubscribe(f"update failed with error {code}")
        # errors answering unsubscribe / get_snapshot of an old sid need nothing more

    def _set_open(self, is_open: bool) -> None:
        if self.open == is_open:
            return
        self.open = is_open
        if not is_open:
            self.healthy = False
            self._connected_gauge.set(0)
        self._mgr.update_gauges()

    async def _on_down(self) -> None:
        was_open = self.open
        self.flush_counters()
        self._set_open(False)
        self._mgr.router.detach(self.conn_id)
        self.sub = _Sub(CHANNEL[self.role], firehose=self.role != "orderbook")
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
        self.conns: list[WsConnection] = []
        counts = {"ticker": cfg.ticker, "trade": cfg.trade, "lifecycle": cfg.lifecycle,
                  "orderbook": cfg.orderbook}
        for role in ROLES:
            for k in range(counts[role]):
                self.conns.append(WsConnection(f"{role}-{k + 1}", role, self, len(self.conns)))
        self.orderbook = [c for c in self.conns if c.role == "orderbook"]
        self.planner = ShardPlanner(len(self.orderbook), cfg.markets_per_connection)
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
            c.start(c.index * self.cfg.stagger_s)
        self._tasks = [
            asyncio.create_task(self._changes_loop(), name="conn-changes"),
            asyncio.create_task(self._watchdog_loop(), name="conn-watchdog"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(c.stop() for c in self.conns), return_exceptions=True)
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
            i = self.planner.add(ch.ticker)
            if i is not None:
                touched.add(i)
            else:
                self._log_overflow()
        else:
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
                sub = c.sub
                if (c.ws is not None and sub.pending_id is not None
                        and now - sub.pending_since > self.cfg.subscribe_timeout_s):
                    # never answered: without this the socket would wait for it forever
                    self.metrics.ws_client_errors_total.labels(type="subscribe_timeout").inc()
                    sub.pending_id = None
                    c.abort(f"subscribe not answered within {self.cfg.subscribe_timeout_s:.0f} s")
            if now - last_rebalance > 30.0:
                last_rebalance = now
                self.rebalance()
            if self.registry.exchange_active is False:
                continue
            for role in ROLES:
                conns = [c for c in self.conns if c.role == role and c.healthy]
                if not conns:
                    continue
                if role == "orderbook" and not any(c.sub.sent for c in conns):
                    continue
                last = max(max(c.last_rx_mono for c in conns),
                           max(c.sub.subscribed_at for c in conns))
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
        m.conn_manager_subscriptions_total.set(sum(1 for c in self.conns if c.sub.sid is not None))
        m.conn_manager_markets_total.set(len(self.planner.owner))
        m.gatherer_markets_active.set(self.subscribed_markets())

    def subscribed_markets(self) -> int:
        return sum(c.subscribed_markets() for c in self.orderbook)

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

