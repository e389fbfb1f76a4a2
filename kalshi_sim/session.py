"""One WebSocket connection's protocol state: subscriptions, commands, outbound frames.

Sans-I/O: :meth:`Session.handle` takes a received text frame and appends reply frames to
``out``; the I/O layer (ws.py) drains ``out`` onto the socket. Data frames are pushed by the
:class:`~kalshi_sim.hub.Hub`. Command semantics follow kalshi-protocol.md §4.2/4.3:

* ``sid`` is per connection, from 1; ``seq`` is per sid across all its markets and counts
  snapshots too (orderbook_delta, trade, market_lifecycle_v2 carry seq; ticker does not).
* ``get_snapshot`` sends one snapshot per listed market carrying the command ``id`` and
  consuming seq numbers, and no ``ok`` (UNCONFIRMED upstream; documented choice).
* ``add_markets`` sends the new markets' snapshots in-stream, then ``ok`` with the full list.
* ``ok``/``unsubscribed`` carry the sid's last seq, or the next one (knob ``ws_ok_seq``: the
  meaning is undocumented upstream, clients must survive both).
* Kalshi's unpublished limits (knobs, on by default): markets per subscription (error 26),
  commands per second per connection (27; counted on the real clock); a subscribe/add_markets
  naming an unknown, closed or multivariate market is refused whole with error 11, naming them
  in ``msg.market_tickers`` unless ``ws_reject_names_tickers`` is off; ``use_yes_price``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .hub import Hub

SEQ_CHANNELS = {"orderbook_delta", "trade", "market_lifecycle_v2"}
PUBLIC_CHANNELS = {"ticker", "trade", "market_lifecycle_v2"}
PRIVATE_CHANNELS = {"orderbook_delta", "fill", "market_positions", "user_orders"}
KNOWN_CHANNELS = PUBLIC_CHANNELS | PRIVATE_CHANNELS
MARKET_FILTER_CHANNELS = {"orderbook_delta", "ticker", "trade", "fill", "market_positions",
                          "user_orders"}

ERR_TEXT = {
    1: "Unable to process message", 2: "Params required", 3: "Channels required",
    4: "Subscription IDs are required", 5: "Unknown command", 7: "Unknown subscription ID",
    8: "Unknown channel name", 9: "Authentication required", 10: "Channel error",
    11: "Invalid parameter", 12: "Exactly one subscription ID is required",
    13: "Unsupported action", 14: "Market Ticker required", 15: "Action required",
    25: "Subscription buffer overflow", 26: "Subscription market limit exceeded",
    27: "Too many requests",
}


CLOSED_STATUSES = frozenset(("closed", "determined", "disputed", "amended", "finalized"))


class BinaryFrame(bytes):
    """A queued frame that goes out with the binary opcode (fault injection only); every other
    queued frame is plain ``bytes`` and goes out as text, so queueing a frame allocates
    nothing beyond its payload."""


class Sub:
    """One subscription (sid) on one connection."""

    __slots__ = ("alive", "channel", "has_seq", "seq", "session", "sid", "tickers", "yes_scale")

    def __init__(self, session: Session, sid: int, channel: str, tickers: list[str] | None,
                 yes_scale: bool = False):
        self.session = session
        self.sid = sid
        self.channel = channel
        self.tickers = tickers  # None = all markets (firehose)
        self.seq = 0
        self.alive = True
        self.has_seq = channel in SEQ_CHANNELS
        self.yes_scale = yes_scale  # use_yes_price: NO side reported on the YES price scale


class CommandError(Exception):
    def __init__(self, code: int, extra: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra or {}


def error_frame(id_: int | None, code: int, sid: int | None = None,
                extra: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"code": code, "msg": ERR_TEXT.get(code, "Error")}
    if extra:
        msg.update(extra)
    d: dict[str, Any] = {}
    if id_:
        d["id"] = id_
    d["type"] = "error"
    if sid is not None:
        d["sid"] = sid
    d["msg"] = msg
    return orjson.dumps(d)


class Session:
    """Protocol state of one connection. ``authed`` = handshake carried a valid signature."""

    def __init__(self, hub: Hub, authed: bool, notify: Callable[[], None], key_id: str | None = None) -> None:
        self.hub = hub
        self.authed = authed
        self.key_id = key_id  # the API key that signed the handshake (None: unauthenticated)
        self.subs: dict[int, Sub] = {}
        self.next_sid = 1
        self.out: deque[bytes] = deque()  # text frames; BinaryFrame for binary ones
        self.held: bytes | None = None  # reorder fault: frame delayed behind the next one
        self.notify = notify
        self.closed = False
        self.cmd_times: deque[float] = deque()

    def push(self, data: bytes, binary: bool = False) -> None:
        self.out.append(BinaryFrame(data) if binary else data)
        if self.held is not None and not binary:
            self.out.append(self.held)
            self.held = None
        self.notify()

    # --- commands -----------------------------------------------------------------------
    def handle(self, raw: str | bytes) -> None:
        id_: int | None = None
        try:
            try:
                cmd = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise CommandError(1) from None
            if not isinstance(cmd, dict):
                raise CommandError(1)
            rid = cmd.get("id")
            if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or rid < 0):
                raise CommandError(1)
            id_ = rid
            limit = self.hub.conf.ws_cmd_rate
            if limit:
                now = time.monotonic()  # a real-time limit, whatever the virtual clock does
                self.cmd_times.append(now)
                while self.cmd_times and self.cmd_times[0] < now - 1.0:
                    self.cmd_times.popleft()
                if len(self.cmd_times) > limit:
                    raise CommandError(27)
            name = cmd.get("cmd")
            params = cmd.get("params")
            if name == "list_subscriptions":
                self._list(id_)
                return
            if name not in ("subscribe", "unsubscribe", "update_subscription"):
                raise CommandError(5)
            if not isinstance(params, dict):
                raise CommandError(2)
            f = self.hub.faults
            if name == "subscribe":
                if f.pending["ignore_subscribe"] and f.take("ignore_subscribe", None, self.key_id):
                    return  # injected: this command is never answered
                self._subscribe(id_, params)
            elif name == "unsubscribe":
                self._unsubscribe(id_, params)
            else:
                self._update(id_, params)
        except CommandError as e:
            self.push(error_frame(id_, e.code, e.extra.pop("sid", None), e.extra))

    def _markets(self, params: dict[str, Any], adding: bool = True) -> list[str] | None:
        """The command's market list. ``adding`` (subscribe, add_markets) also refuses closed
        and multivariate markets; delete_markets/get_snapshot only unknown ones."""
        one = params.get("market_ticker")
        many = params.get("market_tickers")
        if one is not None and many is not None:
            raise CommandError(11)
        if one is not None:
            if not isinstance(one, str) or not one:
                raise CommandError(11)
            many = [one]
        if many is None:
            return None
        if not isinstance(many, list) or not many or not all(
                isinstance(t, str) and t for t in many):
            raise CommandError(11)
        out = list(dict.fromkeys(many))  # dedupe, keep order
        refused = [t for t in out if self._refused(t, adding)]
        if refused:
            # The whole command is refused; Kalshi names the offending markets (unless the
            # knob says it does not, which clients must survive by bisecting).
            self.hub.faults.count("ws_tickers_refused", len(refused))
            conf = self.hub.conf
            raise CommandError(11, {"market_tickers": refused} if conf.ws_reject_names_tickers
                               else None)
        return out

    def _refused(self, ticker: str, adding: bool) -> bool:
        """Unknown tickers always; closed and multivariate ones (when adding) per the knobs."""
        hub, conf = self.hub, self.hub.conf
        if adding and ticker in hub.faults.refused_markets:
            return True
        if hub.is_mve(ticker):
            return adding and conf.ws_reject_mve
        i = hub.market_index(ticker)
        if i is None:
            return True
        return adding and conf.ws_reject_closed and hub.market_status(i) in CLOSED_STATUSES

    def _subscribe(self, id_: int | None, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if channels is None or channels == []:
            raise CommandError(3)
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise CommandError(11)
        for c in channels:
            if c not in KNOWN_CHANNELS:
                raise CommandError(8)
            if c in PRIVATE_CHANNELS and not self.authed:
                raise CommandError(9)
        tickers = self._markets(params)
        for key in ("send_initial_snapshot", "skip_ticker_ack", "use_yes_price"):
            if key in params and not isinstance(params[key], bool):
                raise CommandError(11)
        yes_scale = self._yes_scale(params)
        if "orderbook_delta" in channels and not tickers:
            raise CommandError(14)
        cap = self.hub.conf.ws_max_markets
        if cap and tickers and len(tickers) > cap:
            raise CommandError(26)
        for c in channels:
            sid = self.next_sid
            self.next_sid += 1
            t = tickers if c in MARKET_FILTER_CHANNELS else None
            sub = Sub(self, sid, c, list(t) if t else None, yes_scale and c == "orderbook_delta")
            self.subs[sid] = sub
            d: dict[str, Any] = {}
            if id_:
                d["id"] = id_
            d.update({"type": "subscribed", "msg": {"channel": c, "sid": sid}})
            self.push(orjson.dumps(d))
            self.hub.add_sub(sub)
            if c == "orderbook_delta" and t:
                for tk in t:
                    self.hub.send_snapshot(sub, tk, None)
            elif c == "ticker" and params.get("send_initial_snapshot") and t:
                for tk in t:
                    self.hub.send_ticker(sub, tk)

    def _yes_scale(self, params: dict[str, Any]) -> bool:
        """``use_yes_price`` as the server applies it (knob: accepted / ignored / rejected)."""
        conf = self.hub.conf
        if "use_yes_price" not in params or conf.ws_use_yes_price_param == "ignored":
            return conf.ws_use_yes_price_default
        if conf.ws_use_yes_price_param == "rejected":
            raise CommandError(11)
        return bool(params["use_yes_price"])

    def _reported_seq(self, sub: Sub) -> int:
        """The seq an ``ok``/``unsubscribed`` carries: the last one sent, or the next one."""
        return sub.seq + 1 if self.hub.conf.ws_ok_seq == "next" else sub.seq

    def _unsubscribe(self, id_: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids")
        if sids is None or sids == []:
            raise CommandError(4)
        if not isinstance(sids, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in sids):
            raise CommandError(11)
        for sid in sids:
            sub = self.subs.pop(sid, None)
            if sub is None:
                self.push(error_frame(id_, 7, sid))
                continue
            sub.alive = False
            self.hub.remove_sub(sub)
            d: dict[str, Any] = {}
            if id_:
                d["id"] = id_
            d.update({"sid": sid, "seq": self._reported_seq(sub), "type": "unsubscribed"})
            self.push(orjson.dumps(d))

    def _update(self, id_: int | None, params: dict[str, Any]) -> None:
        sid = params.get("sid")
        sids = params.get("sids")
        if sid is None and sids is None:
            raise CommandError(4)
        if sid is not None and sids is not None:
            raise CommandError(12)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(12)
            sid = sids[0]
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise CommandError(11)
        action = params.get("action")
        if action is None:
            raise CommandError(15)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(13)
        sub = self.subs.get(sid)
        if sub is None:
            raise CommandError(7, {"sid": sid})
        if sub.channel not in MARKET_FILTER_CHANNELS:
            raise CommandError(13, {"sid": sid})
        if action == "get_snapshot" and sub.channel != "orderbook_delta":
            raise CommandError(13, {"sid": sid})
        tickers = self._markets(params, adding=action == "add_markets")
        if not tickers:
            raise CommandError(14, {"sid": sid})
        if action == "get_snapshot":
            f = self.hub.faults
            if f.pending["ignore_get_snapshot"] and f.take("ignore_get_snapshot", None, self.key_id):
                return  # injected: this command is never answered
            for tk in tickers:
                if sub.tickers is None or tk in sub.tickers:
                    self.hub.send_snapshot(sub, tk, id_)
                else:
                    raise CommandError(11, {"sid": sid, "market_ticker": tk})
            return
        if sub.tickers is None:
            raise CommandError(11, {"sid": sid})  # firehose subscription has no market list
        if action == "add_markets":
            new = [t for t in tickers if t not in sub.tickers]
            cap = self.hub.conf.ws_max_markets
            if cap and len(sub.tickers) + len(new) > cap:
                raise CommandError(26, {"sid": sid})
            self.hub.remove_sub(sub)
            sub.tickers.extend(new)
            self.hub.add_sub(sub)
            if sub.channel == "orderbook_delta":
                for tk in new:
                    self.hub.send_snapshot(sub, tk, None)
            elif sub.channel == "ticker" and params.get("send_initial_snapshot"):
                for tk in new:
                    self.hub.send_ticker(sub, tk)
        else:
            self.hub.remove_sub(sub)
            sub.tickers = [t for t in sub.tickers if t not in set(tickers)]
            self.hub.add_sub(sub)
        d: dict[str, Any] = {}
        if id_:
            d["id"] = id_
        d.update({"sid": sid, "seq": self._reported_seq(sub), "type": "ok"})
        if params.get("skip_ticker_ack"):
            d["msg"] = {}
        else:
            d["msg"] = {"market_tickers": list(sub.tickers),
                        "market_ids": [self.hub.market_id(t) for t in sub.tickers]}
        self.push(orjson.dumps(d))

    def _list(self, id_: int | None) -> None:
        d: dict[str, Any] = {}
        if id_:
            d["id"] = id_
        d["type"] = "ok"
        d["msg"] = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
        self.push(orjson.dumps(d))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sub in list(self.subs.values()):
            sub.alive = False
            self.hub.remove_sub(sub)
        self.subs.clear()
