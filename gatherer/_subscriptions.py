"""The subscriptions of one WebSocket connection, and the commands that reconcile them (pure
logic: no socket, no clock; ``connection.py`` sends what this plans and feeds back the replies).

Kalshi's rules this module is shaped by (kalshi-protocol.md §4.3, §8; issue #14):

- one socket may carry many subscriptions (sids), each with its own market list;
- a subscription holds a limited number of markets (error 26, limit unpublished);
- a ``subscribe``/``add_markets`` naming a market the exchange will not serve (unknown, closed,
  multivariate) is refused whole (error 11), usually naming the markets in
  ``msg.market_tickers``, sometimes not.

So markets are spread over as many subscriptions as the learnt per-subscription limit needs;
a subscribe refused with 26 is split (the limit is bisected towards the real one, shared by the
whole pool through one ``LearnedLimit``); a refused command whose culprits are named gives them
up to quarantine and is sent again without them; an unnamed refusal is bisected (each half
becomes its own subscription) until the culprit stands alone. Nothing else waits for it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Markets per update_subscription command: keeps one command frame well under any size limit.
CMD_CHUNK = 1000
#: Error codes that mean "a market in this command is refused" (11 invalid parameter; 16 was
#: "market not found" before it was retired; kept for older servers).
REFUSAL_CODES = frozenset((11, 16))
MARKET_LIMIT = 26
RATE_LIMIT = 27


class LearnedLimit:
    """An integer limit the exchange enforces but does not publish, found from its answers.

    ``lo`` is the largest size that worked, ``hi`` the smallest that failed; ``value`` is what to
    use now: the configured start until something fails, then halfway into the unknown gap
    (never below what worked), so each failure halves the uncertainty.
    """

    def __init__(self, start: int) -> None:
        self.start = max(1, start)
        self.lo = 0
        self.hi: int | None = None

    @property
    def value(self) -> int:
        if self.hi is None:
            return self.start
        return max(1, self.lo, min(self.start, (self.lo + self.hi) // 2))

    def ok(self, n: int) -> None:
        if self.hi is None or n < self.hi:
            self.lo = max(self.lo, n)

    def failed(self, n: int) -> None:
        self.hi = n if self.hi is None else min(self.hi, n)
        if self.lo >= self.hi:
            self.lo = self.hi - 1


class LearnedRate:
    """Commands per second: starts at the configured rate, halves on error 27. The errors a
    burst earns arrive together: after a halving, errors within the next second (plus one
    command interval) answer commands sent before the change and do not halve it again."""

    def __init__(self, per_s: float, floor: float = 0.2) -> None:
        self.per_s = per_s
        self.floor = floor
        self._last: float | None = None

    def slow_down(self, now: float) -> float:
        if self._last is None or now - self._last > 1.0 + 1.0 / self.per_s:
            self.per_s = max(self.floor, self.per_s / 2)
            self._last = now
        return self.per_s


@dataclass(eq=False)
class Sub:
    """One subscription this connection wants. ``markets`` is what we want it to carry,
    ``sent`` what the exchange has been told (acknowledged or in flight)."""

    key: int
    channel: str
    firehose: bool
    markets: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    sid: int | None = None
    pending: int | None = None  # id of the subscribe command in flight
    subscribed_at: float = 0.0

    @property
    def ready(self) -> bool:
        """Subscribed, or nothing to subscribe (an orderbook sub without markets)."""
        return self.sid is not None or (not self.firehose and not self.markets)


@dataclass(frozen=True)
class Command:
    """A command to send: ``kind`` is subscribe | add | delete | unsubscribe | snapshot."""

    kind: str
    sub_key: int
    tickers: tuple[str, ...]
    params: dict[str, Any]


@dataclass
class Outcome:
    """What the connection must do after an error reply: quarantine markets (ticker, reason),
    slow its commands down (27), resend a command as is, or back off before the next sync."""

    quarantine: list[tuple[str, str]] = field(default_factory=list)
    slow_down: bool = False
    resend: Command | None = None
    back_off: bool = False


class SubscriptionSet:
    """All subscriptions of one connection for one channel (one for a firehose channel)."""

    def __init__(self, channel: str, firehose: bool, limit: LearnedLimit,
                 extra: dict[str, Any] | None = None) -> None:
        self.channel = channel
        self.firehose = firehose
        self.limit = limit
        self.extra = dict(extra or {})  # added to every subscribe (use_yes_price)
        self._keys = itertools.count(1)
        self.subs: list[Sub] = []
        if firehose:
            self._new()

    def _new(self, markets: Iterable[str] = ()) -> Sub:
        sub = Sub(next(self._keys), self.channel, self.firehose, set(markets))
        self.subs.append(sub)
        return sub

    # ---- queries --------------------------------------------------------------------------
    def get(self, key: int) -> Sub | None:
        return next((s for s in self.subs if s.key == key), None)

    def by_sid(self, sid: int | None) -> Sub | None:
        return None if sid is None else next((s for s in self.subs if s.sid == sid), None)

    def owner(self, ticker: str) -> Sub | None:
        return next((s for s in self.subs if ticker in s.markets), None)

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.subs)

    def subscribed_markets(self) -> int:
        return sum(len(s.sent) for s in self.subs if s.sid is not None)

    def sids(self) -> list[int]:
        return [s.sid for s in self.subs if s.sid is not None]

    # ---- desired state ----------------------------------------------------------------------
    def assign(self, desired: set[str]) -> None:
        """Make the subscriptions carry exactly ``desired`` (orderbook): leaving markets leave
        their subscription, new ones fill subscriptions with room (subscribed ones first), new
        subscriptions hold the rest. Each holds at most ``limit.value`` markets."""
        if self.firehose:
            return
        have: set[str] = set()
        for s in self.subs:
            s.markets &= desired
            have |= s.markets
        self._place(sorted(desired - have))
        # a subscription nobody needs any more and never subscribed: forget it
        self.subs = [s for s in self.subs if s.markets or s.sid is not None or s.pending]

    def _place(self, tickers: list[str]) -> None:
        cap = self.limit.value
        todo = iter(tickers)
        for s in sorted(self.subs, key=lambda s: (s.sid is None, s.key)):
            room = cap - len(s.markets)
            if room > 0:
                s.markets.update(itertools.islice(todo, room))
        rest = list(todo)
        for i in range(0, len(rest), cap):
            self._new(rest[i:i + cap])

    # ---- planning ---------------------------------------------------------------------------
    def plan(self, next_id: Callable[[], int]) -> list[tuple[int, Command]]:
        """The commands that bring the exchange in line with what we want, marking them sent.
        Within a subscription deletes go before adds (a moved market has one owner at a time)."""
        out: list[tuple[int, Command]] = []
        for s in self.subs:
            if s.sid is None:
                if s.pending is not None or (not s.firehose and not s.markets):
                    continue
                params: dict[str, Any] = {"channels": [s.channel]}
                want: list[str] = []
                if not s.firehose:
                    want = sorted(s.markets)
                    params["market_tickers"] = want
                    params.update(self.extra)
                i = next_id()
                s.pending = i
                s.sent = set(want)
                out.append((i, Command("subscribe", s.key, tuple(want), params)))
                continue
            if s.firehose:
                continue
            for kind, action, todo in (("delete", "delete_markets", sorted(s.sent - s.markets)),
                                       ("add", "add_markets", sorted(s.markets - s.sent))):
                for j in range(0, len(todo), CMD_CHUNK):
                    chunk = todo[j:j + CMD_CHUNK]
                    if kind == "delete":
                        s.sent.difference_update(chunk)
                    else:
                        s.sent.update(chunk)
                    out.append((next_id(), Command(kind, s.key, tuple(chunk), {
                        "sid": s.sid, "action": action, "market_tickers": chunk})))
        return out

    def unsubscribe(self, sub: Sub, next_id: Callable[[], int]) -> tuple[int, Command] | None:
        """Drop ``sub``'s sid (a resubscribe follows from the next ``plan``)."""
        old = sub.sid
        sub.sid = None
        sub.sent = set()
        sub.pending = None
        if old is None:
            return None
        return next_id(), Command("unsubscribe", sub.key, (), {"sids": [old]})

    # ---- replies ----------------------------------------------------------------------------
    def subscribed(self, cmd_id: int | None, sid: int, now: float) -> Sub | None:
        """A ``subscribed`` reply: the subscription whose subscribe it answers gets its sid.
        An old server's reply without id goes to the oldest subscribe in flight."""
        sub = next((s for s in self.subs if s.pending is not None and s.pending == cmd_id), None)
        if sub is None and cmd_id is None:
            sub = next((s for s in self.subs if s.pending is not None), None)
        if sub is None:
            return None
        sub.pending = None
        sub.sid = sid
        sub.subscribed_at = now
        if not sub.firehose:
            self.limit.ok(len(sub.sent))
        return sub

    def ended(self, sid: int) -> Sub | None:
        """The exchange ended ``sid`` (terminal error 10/25): subscribe again from scratch."""
        sub = self.by_sid(sid)
        if sub is not None:
            sub.sid = None
            sub.sent = set()
            sub.pending = None
        return sub

    def reset(self) -> None:
        """The socket closed: every sid is void."""
        for s in self.subs:
            s.sid = None
            s.sent = set()
            s.pending = None

    def failed(self, cmd: Command, code: int | None, named: Iterable[str] | None) -> Outcome:
        """An error frame answered ``cmd``: undo what it claimed and decide what comes next."""
        out = Outcome()
        sub = self.get(cmd.sub_key)
        if sub is None:
            return out
        chunk = set(cmd.tickers)
        self._undo(sub, cmd)
        if code == RATE_LIMIT:
            out.slow_down = True
            if cmd.kind in ("unsubscribe", "snapshot"):
                out.resend = cmd
            return out
        if cmd.kind not in ("subscribe", "add") or sub.firehose:
            out.back_off = True
            return out
        if code == MARKET_LIMIT:
            self.limit.failed(len(sub.sent) + len(chunk) if cmd.kind == "add" else len(chunk))
            self._split(sub, chunk if cmd.kind == "add" else None)
            return out
        refused = (set(named or ()) & chunk) or (set(named or ()) & sub.markets)
        if refused:
            sub.markets -= refused
            out.quarantine = [(t, "named") for t in sorted(refused)]
            return out
        if code in REFUSAL_CODES:
            if len(chunk) == 1:
                sub.markets -= chunk
                out.quarantine = [(next(iter(chunk)), "bisected")]
            else:
                self._bisect(sub, chunk)
            return out
        out.back_off = True  # not about markets (a timeout, a server hiccup): retry later
        return out

    def _undo(self, sub: Sub, cmd: Command) -> None:
        if cmd.kind == "subscribe":
            if sub.pending is not None:
                sub.pending = None
                sub.sent = set()
        elif cmd.kind == "add":
            sub.sent.difference_update(cmd.tickers)
        elif cmd.kind == "delete":
            sub.sent.update(t for t in cmd.tickers if sub.sid is not None)

    def _split(self, sub: Sub, moved: set[str] | None) -> None:
        """Error 26: ``sub`` keeps what fits the (now lower) limit; the rest moves to other
        subscriptions with room, or new ones."""
        cap = self.limit.value
        if moved is None:  # a refused subscribe: it keeps the first ``cap`` markets
            keep = sorted(sub.markets)[:cap]
            moved = sub.markets - set(keep)
        sub.markets -= moved
        self._place(sorted(moved))

    def _bisect(self, sub: Sub, chunk: set[str]) -> None:
        """An unnamed refusal of a command with several markets: each half of it becomes its own
        subscription, so the good half subscribes now and the bad one is split again."""
        sub.markets -= chunk
        ordered = sorted(chunk)
        half = math.ceil(len(ordered) / 2)
        for part in (ordered[:half], ordered[half:]):
            if part:
                self._new(part)
        if not sub.markets and sub.sid is None:
            self.subs.remove(sub)
