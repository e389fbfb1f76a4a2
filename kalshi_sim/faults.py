"""Fault injection: the operations tests and the control API use to misbehave on purpose.

:class:`Faults` holds the pending faults and a counter per kind; a fault is counted when it is
actually applied (a pending ``skip_seq`` is counted when a frame really skips), so
``counts()`` tells a test what a client should have observed. Connection-level faults act
through the :class:`FaultTarget` the server attaches (the WebSocket hub).

Every public method here is also exposed by the control API as ``POST /control/faults/<name>``
with the keyword arguments as a JSON object.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol


class FaultTarget(Protocol):
    def drop_all(self, mode: str, code: int, reason: str, key_id: str | None = None) -> int: ...
    def inject_all(self, data: bytes, binary: bool) -> int: ...
    def terminate_sids(self, code: int, sid: int | None, channel: str | None) -> int: ...
    def reset_seqs(self) -> int: ...


@dataclass
class Withhold:
    kind: str  # "trade" | "delta" | "drop_delta"
    remaining: int
    ticker: str | None
    rest_lag_s: float = 0.0  # trades: also off /markets/trades until this old (see withhold_next)


MALFORMED = b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":'
TRUNCATED = b'{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"00000000-0000-4000-8000-0000'
UNKNOWN_TYPE = b'{"type":"sim_unknown_type","sid":1,"msg":{"note":"ignore me"}}'
BINARY = b"\x00\x01\x02binary-frame\xff"

# Faults chaos mode may pick; each entry is (method name, kwargs).
CHAOS_MENU: tuple[tuple[str, dict[str, Any]], ...] = (
    ("skip_seq", {"n": 1}), ("duplicate_seq", {"n": 1}), ("reorder_seq", {"n": 1}),
    ("send_malformed", {}), ("send_truncated", {}), ("send_binary", {}),
    ("send_unknown_type", {}), ("rest_429", {"n": 3}), ("rest_5xx", {"n": 2}),
    ("drop_connections", {"mode": "reset"}), ("drop_connections", {"mode": "close"}),
    ("slow_consumer", {"code": 25}), ("slow_consumer", {"code": 10}),
    ("withhold_next", {"kind": "trade"}), ("withhold_next", {"kind": "delta"}),
    ("rest_reset", {"n": 1}), ("rest_truncate", {"n": 1}), ("reset_seq", {}),
)


def menu_label(name: str, kwargs: dict[str, Any]) -> str:
    """``name`` or ``name:variant`` (the kind/mode/code argument) of a CHAOS_MENU entry, as
    ``chaos(exclude=...)`` names them: ``withhold_next:delta``, ``drop_connections:reset``."""
    for k in ("kind", "mode", "code"):
        if k in kwargs:
            return f"{name}:{kwargs[k]}"
    return name


class Faults:
    """Pending faults + counters for one simulator."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self.target: FaultTarget | None = None
        self.pending: Counter[str] = Counter()  # skip_seq / duplicate_seq / reorder_seq / rest_*
        self.seq_channel: dict[str, str | None] = {}
        self.seq_key: dict[str, str | None] = {}  # seq fault -> only sockets of this API key
        self.rest_5xx_status = 500
        self.rest_5xx_path: str | None = None
        self.refused_markets: set[str] = set()
        self.rest_hang_s = 30.0
        self.refuse_until: float = 0.0  # monotonic seconds
        self.refuse_count = 0
        self.refuse_status = 503
        self.pings_stopped = False
        self.pongs_stopped = False
        self.in_maintenance = False
        self.skew_ms = 0
        self.key_skew_ms: dict[str, int] = {}  # per API key: that client's clock is off
        self.key_refuse_until: dict[str, float] = {}  # per API key: handshakes refused until
        self.withholds: list[Withhold] = []
        self.rest_lagged: dict[int, int] = {}  # trade number -> µs (exchange clock) it shows on REST
        self.muted: set[tuple[str, str | None]] = set()  # (channel, API key or None = every client)
        self.chaos_rng: random.Random | None = None
        self.chaos_per_s = 0.0
        self.chaos_menu: tuple[tuple[str, dict[str, Any]], ...] = CHAOS_MENU
        self.now: float = 0.0  # monotonic seconds, updated by the server

    # --- bookkeeping ----------------------------------------------------------------------
    def count(self, kind: str, n: int = 1) -> None:
        self._counts[kind] += n

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def seq_armed(self) -> bool:
        """Any seq fault pending (checked per frame, so kept to three dict lookups)."""
        p = self.pending
        return bool(p["skip_seq"] or p["duplicate_seq"] or p["reorder_seq"])

    def take(self, kind: str, channel: str | None = None, key_id: str | None = None) -> bool:
        """Consume one pending ``kind`` (if any applies to ``channel`` and to a socket of API
        key ``key_id``) and count it."""
        if self.pending[kind] <= 0:
            return False
        want = self.seq_channel.get(kind)
        if want is not None and channel is not None and want != channel:
            return False
        want_key = self.seq_key.get(kind)
        if want_key is not None and key_id != want_key:
            return False
        self.pending[kind] -= 1
        self._counts[kind] += 1
        return True

    # --- WebSocket connection faults -------------------------------------------------------
    def drop_connections(self, mode: str = "reset", code: int = 1001, reason: str = "",
                         key_id: str | None = None) -> int:
        """Drop every WS connection (or only those whose handshake was signed by API key
        ``key_id``: all sockets of one client): ``reset`` = TCP RST, no close frame; ``close`` =
        close frame with ``code``/``reason``; ``cut`` = half a frame then RST."""
        if mode not in ("reset", "close", "cut"):
            raise ValueError("mode must be reset, close or cut")
        if self.target is None:
            n = 0
        elif key_id is None:
            n = self.target.drop_all(mode, code, reason)
        else:
            n = self.target.drop_all(mode, code, reason, key_id=key_id)
        self.count(f"drop_{mode}", n)
        return n

    def refuse_connections(self, seconds: float | None = None, count: int | None = None,
                           status: int = 503, key_id: str | None = None) -> None:
        """Refuse new WS handshakes with ``status`` for ``seconds`` or the next ``count``;
        with ``key_id``, only handshakes signed by that API key (one client), for ``seconds``."""
        self.refuse_status = status
        if key_id is not None:
            if seconds is None:
                raise ValueError("refusing one key's handshakes needs seconds")
            self.key_refuse_until[key_id] = self.now + seconds
            return
        if seconds is not None:
            self.refuse_until = self.now + seconds
        if count is not None:
            self.refuse_count = count
        if seconds is None and count is None:
            self.refuse_count = 1

    def should_refuse(self, key_id: str | None = None) -> int | None:
        """The status to refuse a WS handshake with (``key_id``: the key named in its headers,
        if any), or None to accept it."""
        if self.in_maintenance:
            self.count("refuse")
            return 503
        if key_id is not None and self.now < self.key_refuse_until.get(key_id, 0.0):
            self.count("refuse_key")
            return self.refuse_status
        if self.refuse_count > 0:
            self.refuse_count -= 1
            self.count("refuse")
            return self.refuse_status
        if self.now < self.refuse_until:
            self.count("refuse")
            return self.refuse_status
        return None

    def slow_consumer(self, code: int = 25, sid: int | None = None,
                      channel: str | None = None) -> int:
        """Send terminal error ``code`` (10 or 25) on matching subscriptions and end them."""
        if code not in (10, 25):
            raise ValueError("code must be 10 or 25")
        n = self.target.terminate_sids(code, sid, channel) if self.target else 0
        self.count(f"error_{code}", n)
        return n

    def mute(self, channel: str, key_id: str | None = None, on: bool = True) -> None:
        """Stop (``on``) or resume sending ``channel``'s frames to every client, or only to the
        sockets of API key ``key_id``, while the sockets and subscriptions stay up: a stalled feed.
        Frames are not sent, not queued (for seq channels the sequence jumps when it resumes)."""
        if on:
            self.muted.add((channel, key_id))
        else:
            self.muted.discard((channel, key_id))
        self.count("mute" if on else "unmute")

    def is_muted(self, channel: str, key_id: str | None) -> bool:
        return (channel, None) in self.muted or (channel, key_id) in self.muted

    def stop_pings(self, on: bool = True) -> None:
        self.pings_stopped = on
        self.count("stop_pings" if on else "resume_pings")

    def stop_pongs(self, on: bool = True) -> None:
        """Stop answering client pings."""
        self.pongs_stopped = on
        self.count("stop_pongs" if on else "resume_pongs")

    # --- sequence faults (applied to the next seq-bearing frames; ``channel`` / ``key_id``
    # restrict them to one channel / to the sockets of one API key, i.e. one client) --------
    def skip_seq(self, n: int = 1, channel: str | None = None, key_id: str | None = None) -> None:
        self.pending["skip_seq"] += n
        self.seq_channel["skip_seq"] = channel
        self.seq_key["skip_seq"] = key_id

    def duplicate_seq(self, n: int = 1, channel: str | None = None, key_id: str | None = None) -> None:
        self.pending["duplicate_seq"] += n
        self.seq_channel["duplicate_seq"] = channel
        self.seq_key["duplicate_seq"] = key_id

    def reorder_seq(self, n: int = 1, channel: str | None = None, key_id: str | None = None) -> None:
        self.pending["reorder_seq"] += n
        self.seq_channel["reorder_seq"] = channel
        self.seq_key["reorder_seq"] = key_id

    def ignore_commands(self, n: int = 1, action: str = "get_snapshot",
                        key_id: str | None = None) -> None:
        """The next ``n`` WebSocket commands of ``action`` (``get_snapshot`` or ``subscribe``)
        get no answer at all, as an overloaded exchange may do (with ``key_id``: only that
        client's)."""
        if action not in ("get_snapshot", "subscribe"):
            raise ValueError("action must be get_snapshot or subscribe")
        self.pending[f"ignore_{action}"] += n
        self.seq_key[f"ignore_{action}"] = key_id

    def reset_seq(self) -> int:
        """Restart every subscription's seq at 1 without a resubscribe (a server-side reset)."""
        n = self.target.reset_seqs() if self.target else 0
        self.count("reset_seq", n)
        return n

    # --- data-shape faults (one extra frame to every connection) ---------------------------
    def _inject(self, kind: str, data: bytes, binary: bool = False) -> int:
        n = self.target.inject_all(data, binary) if self.target else 0
        self.count(kind, n)
        return n

    def send_malformed(self) -> int:
        return self._inject("malformed", MALFORMED)

    def send_truncated(self) -> int:
        return self._inject("truncated", TRUNCATED)

    def send_binary(self) -> int:
        return self._inject("binary", BINARY, binary=True)

    def send_unknown_type(self) -> int:
        return self._inject("unknown_type", UNKNOWN_TYPE)

    # --- REST faults -------------------------------------------------------------------------
    def rest_429(self, n: int = 10) -> None:
        """The next ``n`` REST requests get 429 (a storm), whatever their budget."""
        self.pending["rest_429"] += n

    def rest_5xx(self, n: int = 1, status: int = 500, path: str | None = None) -> None:
        """The next ``n`` REST requests (to ``path`` only, e.g. ``/historical/trades``, when
        given: a path relative to /trade-api/v2) get ``status``; ``n=0`` ends a storm still
        pending."""
        if n == 0:
            self.pending["rest_5xx"] = 0
            return
        self.pending["rest_5xx"] += n
        self.rest_5xx_status = status
        self.rest_5xx_path = path

    def refuse_markets(self, tickers: list[str] | None = None) -> None:
        """From now on refuse subscribe/add_markets naming any of ``tickers`` (error 11, as for
        a closed market); ``None`` or ``[]`` lifts the refusal."""
        self.refused_markets = set(tickers or ())

    def rest_reset(self, n: int = 1) -> None:
        """The next ``n`` REST requests get their TCP connection reset, no response."""
        self.pending["rest_reset"] += n

    def rest_truncate(self, n: int = 1) -> None:
        """The next ``n`` REST responses are cut off mid-body (Content-Length not met)."""
        self.pending["rest_truncate"] += n

    def rest_hang(self, n: int = 1, seconds: float = 30.0) -> None:
        """The next ``n`` REST requests hang ``seconds`` before answering (client timeouts);
        ``n=0`` ends the hangs still pending."""
        if n == 0:
            self.pending["rest_hang"] = 0
            return
        self.pending["rest_hang"] += n
        self.rest_hang_s = seconds

    # --- exchange-wide ---------------------------------------------------------------------
    def maintenance(self, on: bool = True) -> None:
        """Maintenance window: exchange/trading inactive, engine paused, sockets dropped and
        refused (503) until turned off."""
        self.in_maintenance = on
        self.count("maintenance_on" if on else "maintenance_off")
        if on and self.target is not None:
            self.target.drop_all("close", 1001, "maintenance")

    def clock_skew(self, ms: int = 0, key_id: str | None = None) -> None:
        """Shift the server clock used for auth freshness checks by ``ms``. With ``key_id`` only
        for that API key's requests and handshakes, whose REST answers also carry the shifted
        ``Date``: to that client it is exactly as if its own clock were ``ms`` behind."""
        if key_id is None:
            self.skew_ms = ms
        elif ms:
            self.key_skew_ms[key_id] = ms
        else:
            self.key_skew_ms.pop(key_id, None)
        self.count("clock_skew")

    def skew_for(self, key_id: str | None) -> int:
        """Total clock shift (ms) applied to requests signed by ``key_id``."""
        if key_id is None or not self.key_skew_ms:
            return self.skew_ms
        return self.skew_ms + self.key_skew_ms.get(key_id, 0)

    def drop_deltas(self, n: int = 1, ticker: str | None = None) -> None:
        """Lose the next ``n`` deltas (optionally of ``ticker``) on the wire for EVERY WebSocket
        subscriber: each still consumes its seq number but is never sent, so every client sees
        a real seq gap (data gone, not just a number skipped) and must resync that book. REST
        books and the truth log are unaffected; the truth marks them ``dropped``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self.withholds.append(Withhold("drop_delta", n, ticker))

    def withhold_next(self, kind: str = "trade", n: int = 1, ticker: str | None = None,
                      rest_lag_s: float = 0.0) -> None:
        """Keep the next ``n`` trades/deltas (optionally of ``ticker``) from every WS client;
        they still reach REST and the truth log (which marks them ``withheld``). A withheld
        delta does not consume a seq number, so only a book comparison can reveal it.

        ``rest_lag_s`` (trades only): the trades are also left out of ``/markets/trades`` until
        they are that many seconds old on the exchange clock, as from a lagging REST replica.
        A backfill sweep of the recent window misses them; a later query of the day (the
        reconciliation, or a backfill it asks for) finds them. ``/historical/trades`` is not
        affected."""
        if kind not in ("trade", "delta"):
            raise ValueError("kind must be trade or delta")
        if rest_lag_s < 0 or (rest_lag_s and kind != "trade"):
            raise ValueError("rest_lag_s must be >= 0 and applies to trades only")
        self.withholds.append(Withhold(kind, n, ticker, rest_lag_s))

    def check_withhold(self, kind: str, ticker: str) -> Withhold | None:
        """The withhold that keeps this trade/delta from the sockets (counted), or None."""
        for w in self.withholds:
            if w.kind == kind and w.remaining > 0 and (w.ticker is None or w.ticker == ticker):
                w.remaining -= 1
                if w.remaining == 0:
                    self.withholds.remove(w)
                self.count("drop_delta" if kind == "drop_delta" else f"withhold_{kind}")
                return w
        return None

    def lag_on_rest(self, n: int, ts_us: int, lag_s: float) -> None:
        """Trade number ``n`` (created at ``ts_us``) stays off ``/markets/trades`` for ``lag_s``."""
        self.rest_lagged[n] = ts_us + int(lag_s * 1_000_000)
        self.count("rest_lag_trade")

    def rest_hidden(self, n: int, now_us: int) -> bool:
        """Is trade number ``n`` still off ``/markets/trades`` at ``now_us``? (Counted.)"""
        until = self.rest_lagged.get(n)
        if until is None:
            return False
        if now_us >= until:
            del self.rest_lagged[n]
            return False
        self.count("rest_lag_hidden")
        return True

    def chaos(self, on: bool = True, seed: int = 0, per_s: float = 1.0,
              exclude: list[str] | None = None) -> list[str]:
        """Seeded random faults: on average ``per_s`` per virtual second from CHAOS_MENU, minus
        the entries named in ``exclude`` (``menu_label``: ``reset_seq``, ``withhold_next:delta``;
        a bare name excludes every variant). Returns the labels chaos may pick."""
        drop = set(exclude or ())
        menu = tuple((n, k) for n, k in CHAOS_MENU
                     if n not in drop and menu_label(n, k) not in drop)
        if on and not menu:
            raise ValueError("exclude leaves chaos nothing to inject")
        unknown = drop - {n for n, _ in CHAOS_MENU} - {menu_label(n, k) for n, k in CHAOS_MENU}
        if unknown:
            raise ValueError(f"unknown chaos entries: {sorted(unknown)}")
        self.chaos_menu = menu
        self.chaos_rng = random.Random(seed) if on else None
        self.chaos_per_s = per_s if on else 0.0
        return [menu_label(n, k) for n, k in menu]

    def chaos_tick(self, dt_s: float) -> None:
        rng = self.chaos_rng
        if rng is None or rng.random() >= self.chaos_per_s * dt_s:
            return
        name, kwargs = self.chaos_menu[rng.randrange(len(self.chaos_menu))]
        self.count("chaos")
        self.count(f"chaos:{menu_label(name, kwargs)}")
        getattr(self, name)(**kwargs)

    # Names the control API may call.
    API = (
        "drop_connections", "refuse_connections", "slow_consumer", "mute", "stop_pings", "stop_pongs",
        "skip_seq", "duplicate_seq", "reorder_seq", "send_malformed", "send_truncated",
        "send_binary", "send_unknown_type", "rest_429", "rest_5xx", "rest_hang", "rest_reset",
        "refuse_markets",
        "rest_truncate", "reset_seq", "maintenance",
        "clock_skew", "withhold_next", "drop_deltas", "ignore_commands", "chaos",
    )
