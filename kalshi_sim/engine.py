"""Seeded, deterministic market engine (sans-I/O: no sockets, no wall clock).

The engine advances in fixed virtual-time steps of ``step_ms``; everything it generates in a step
depends only on the seed and on the steps before it, never on when the caller runs it. Callers
(the server's clock driver, or a test calling ``Simulator.advance``) decide how far to run.

Invariants the rest of the simulator relies on:

* A market's book changes only through emitted :class:`Delta` events, so replaying every delta
  of a market onto its derived initial book yields :meth:`Engine.book`.
* A :class:`Trade` consumes the best resting bid of the opposite outcome and is accompanied by
  the :class:`Delta` that removes that liquidity and a :class:`Ticker` carrying the new state.
* Books never cross: best YES bid + best NO bid < $1.

Units: prices are ints in 1e-4 dollars, counts ints in 1/100 contract, times in ms / us.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, NamedTuple

from .catalog import HOT_SHARE, ONE_DOLLAR, Catalog, MarketStatic, tick_at, uuid4_text

RECENT_SHARE = 0.15  # share of activity on the newest markets (fresh listings trade most)
RECENT_MARKETS = 50
PARETO_EXP = 1.0 / 1.3  # order sizes: Pareto with alpha 1.3
ADD_TICKS = (-4, -3, -2, -1, -1, 0, 0, 0, 1)  # new order vs own best bid, in ticks
# Hot-path events are built with tuple.__new__(Cls, fields): what a NamedTuple's generated
# __new__ does, minus one Python-level call per event.
_new = tuple.__new__


class Delta(NamedTuple):
    ts_us: int
    ticker: str
    idx: int
    side: str  # "yes" | "no"
    price: int
    delta: int


class Trade(NamedTuple):
    ts_us: int
    trade_id: str
    ticker: str
    idx: int
    yes_price: int
    qty: int  # 1/100 contract ("count" on the wire; a NamedTuple cannot shadow tuple.count)
    taker_side: str  # "yes" | "no"


class Ticker(NamedTuple):
    ts_us: int
    ticker: str
    idx: int
    price: int  # last trade YES price, 0 = never traded
    yes_bid: int
    yes_ask: int
    yes_bid_size: int
    yes_ask_size: int
    volume: int
    open_interest: int
    dollar_volume: int  # whole dollars
    dollar_open_interest: int
    last_trade_size: int


class Lifecycle(NamedTuple):
    ts_us: int
    ticker: str
    idx: int
    event_type: str
    fields: dict[str, Any]


class Book0(NamedTuple):
    """A market's book at the moment the engine first touched it (truth log only)."""

    ts_us: int
    ticker: str
    yes: dict[int, int]
    no: dict[int, int]


class EventLifecycle(NamedTuple):
    ts_us: int
    event_ticker: str
    event_index: int
    fields: dict[str, Any]


Event = Delta | Trade | Ticker | Lifecycle | EventLifecycle | Book0


class MarketState:
    """Mutable state of a market the engine has touched (lazily materialised)."""

    __slots__ = (
        "candles",
        "close_ms",
        "determined_ms",
        "dollar_volume_e6",
        "last_price",
        "last_size",
        "nb",
        "no",
        "oi",
        "prev_price",
        "result",
        "settled_ms",
        "st",
        "status",
        "updated_ms",
        "volume",
        "yb",
        "yes",
    )

    def __init__(self, st: MarketStatic, yes: dict[int, int], no: dict[int, int]) -> None:
        self.st = st
        self.yes = yes
        self.no = no
        # Best bid price per side (0 = empty), kept by the engine on every book change so the
        # hot path never scans a book: yb == max(yes) when yes is non-empty.
        self.yb = max(yes) if yes else 0
        self.nb = max(no) if no else 0
        self.status: str | None = None  # None = derived from open/close times
        self.updated_ms = st.created_ms
        self.close_ms = st.close_ms
        self.result = ""
        self.settled_ms: int | None = None
        self.determined_ms: int | None = None
        self.last_price = 0
        self.prev_price = 0
        self.volume = 0
        self.oi = 0
        self.dollar_volume_e6 = 0  # sum(count_centi * price_1e-4) => dollars * 1e6
        self.last_size = 0
        # minute end (s) -> [p_o, p_h, p_l, p_c, p_sum, p_n, vol, oi, yb_o, yb_h, yb_l, yb_c,
        #                    ya_o, ya_h, ya_l, ya_c]
        self.candles: dict[int, list[int | None]] = {}


def _set_best(s: MarketState, yes_side: bool) -> None:
    """Recompute one side's cached best bid after its top level was removed."""
    if yes_side:
        s.yb = max(s.yes) if s.yes else 0
    else:
        s.nb = max(s.no) if s.no else 0


def best(book: dict[int, int]) -> tuple[int, int]:
    """(price, size) of the best bid, (0, 0) when the side is empty."""
    if not book:
        return 0, 0
    p = max(book)
    return p, book[p]


class Engine:
    """Generates the exchange's event stream; see the module docstring for invariants."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        seed: int,
        rate: float,
        churn_per_s: float,
        step_ms: int = 10,
    ) -> None:
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.rate = rate
        self.churn_per_s = churn_per_s
        self.step_ms = step_ms
        self.now_ms = catalog.start_ms
        self.states: dict[int, MarketState] = {}
        self._sched: list[tuple[int, int, str, int]] = []
        self._sched_n = 0
        self.paused = False  # maintenance: no trading activity, time still advances
        self._out: list[Event] | None = None  # the step's output, for Book0 on first touch
        self._hot = min(catalog.n_initial, catalog.preset.hot)
        # (open, close) ms of untouched markets a pick found outside their trading window:
        # picks keep landing on them, and deriving a market's statics is costly.
        self._dormant: dict[int, tuple[int, int]] = {}

    # --- state access ---------------------------------------------------------------------
    def state(self, i: int, st: MarketStatic | None = None) -> MarketState:
        """The live state of market ``i``, materialising it (and emitting its Book0) once."""
        s = self.states.get(i)
        if s is None:
            st = st or self.catalog.static(i)
            yes, no = self.catalog.initial_book(st)
            s = MarketState(st, yes, no)
            self.states[i] = s
            if self._out is not None:
                self._out.append(Book0(self.now_ms * 1000, st.ticker, dict(yes), dict(no)))
        return s

    def view(self, i: int) -> MarketState:
        """State for reading: the live one if touched, else a throwaway derived copy.

        Reading never materialises, so REST scans over an xl catalog do not grow memory.
        """
        s = self.states.get(i)
        if s is not None:
            return s
        st = self.catalog.static(i)
        yes, no = self.catalog.initial_book(st)
        return MarketState(st, yes, no)

    def status_of(self, s: MarketState, now_ms: int | None = None) -> str:
        if s.status is not None:
            return s.status
        now = self.now_ms if now_ms is None else now_ms
        if now < s.st.open_ms:
            return "initialized"
        if now >= s.close_ms:
            return "closed"
        return "active"

    def book(self, i: int) -> tuple[dict[int, int], dict[int, int]]:
        s = self.view(i)
        return dict(s.yes), dict(s.no)

    def ticker_of(self, s: MarketState, ts_us: int) -> Ticker:
        yb = s.yb
        nb = s.nb
        ybs = s.yes[yb] if yb else 0
        nbs = s.no[nb] if nb else 0
        return _new(Ticker, (
            ts_us, s.st.ticker, s.st.index, s.last_price, yb, ONE_DOLLAR - nb,
            ybs, nbs, s.volume, s.oi, s.dollar_volume_e6 // 1_000_000,
            s.oi * s.last_price // 1_000_000, s.last_size,
        ))

    # --- running --------------------------------------------------------------------------
    def run_until(self, target_ms: int, max_steps: int | None = None,
                  max_events: int | None = None) -> list[Event]:
        """Whole steps up to ``target_ms``, stopping early after ``max_steps`` steps or once
        ``max_events`` events were produced (bounds on one call's work, not on the stream)."""
        out: list[Event] = []
        n = 0
        while self.now_ms + self.step_ms <= target_ms:
            self.step(out)
            n += 1
            if max_steps is not None and n >= max_steps:
                break
            if max_events is not None and len(out) >= max_events:
                break
        return out

    def step(self, out: list[Event]) -> None:
        """Advance one step of virtual time, appending what happened to ``out``."""
        rng = self.rng
        self._out = out
        t0 = self.now_ms
        t1 = t0 + self.step_ms
        while self._sched and self._sched[0][0] < t1:
            due, _, action, i = heapq.heappop(self._sched)
            self._scheduled(action, i, max(due, t0) * 1000, out)
        if not self.paused:
            if rng.random() < self.churn_per_s * self.step_ms / 1000.0:
                self._churn(t0 * 1000 + int(rng.random() * self.step_ms * 1000), out)
            lam = self.rate * self.step_ms / 1000.0
            budget = int(lam) + (1 if rng.random() < lam - int(lam) else 0)
            if budget:
                self._activities(t0 * 1000, budget, out)
        self.now_ms = t1
        self._out = None

    def _activities(self, base_us: int, budget: int, out: list[Event]) -> None:
        """About ``budget`` events at sorted random offsets in the step (a pick may find no
        active market, so up to 3x as many tries)."""
        rnd = self.rng.random
        span = self.step_ms * 1000
        offs = sorted([int(rnd() * span) for _ in range(budget)])
        last = offs[-1]
        goal = len(out) + budget
        activity = self._activity
        for k in range(budget * 3):
            if len(out) >= goal:
                break
            activity(base_us + (offs[k] if k < budget else last), out)

    def _schedule(self, due_ms: int, action: str, i: int) -> None:
        self._sched_n += 1
        heapq.heappush(self._sched, (due_ms, self._sched_n, action, i))

    def _pick(self) -> MarketState | None:
        cat = self.catalog
        n = cat.count
        n0 = cat.n_initial
        hot = self._hot
        rnd = self.rng.random
        now = self.now_ms
        states = self.states
        dormant = self._dormant
        for _ in range(4):
            # Heavy tail: most activity on a fixed hot set of the starting population
            # (skewed inside it) and on the newest markets; the rest spread over every
            # market, so most markets stay dormant for long stretches.
            u = rnd()
            if u >= HOT_SHARE:
                i = int(n * rnd())
            elif u < RECENT_SHARE and n > n0:
                i = n - 1 - int(min(n - n0, RECENT_MARKETS) * rnd())
            else:
                r = int(hot * rnd() ** 2)
                i = (r * 2_654_435_761 + 12_345) % n0
            s = states.get(i)
            if s is not None:
                # status_of(s) == "active", inlined: this runs once per engine event
                if s.status is None and s.st.open_ms <= now < s.close_ms:
                    return s
                continue
            span = dormant.get(i)
            if span is None:
                span = cat.window(i)  # status of an untouched market needs its times only
            if span[0] <= now < span[1]:
                dormant.pop(i, None)
                return self.state(i)
            dormant[i] = span
        return None

    # --- activity -------------------------------------------------------------------------
    def _activity(self, ts_us: int, out: list[Event]) -> None:
        s = self._pick()
        if s is None:
            return
        r = self.rng.random()
        if r < 0.2 and (s.yes or s.no):
            self._trade(s, ts_us, out)
            return
        if r < 0.5 and (s.yes or s.no):
            moved = self._cancel(s, ts_us, out)
        else:
            moved = self._add(s, ts_us, out)
        if moved:  # a side's best bid changed (price or size): so did the ticker
            out.append(self.ticker_of(s, ts_us))

    def _size(self, s: MarketState) -> int:
        """Heavy-tailed order size: Pareto(1.3), inlined from ``random.paretovariate``."""
        rnd = self.rng.random
        size = int(1.0 / (1.0 - rnd()) ** PARETO_EXP * 5) * 100 + 100
        if s.st.fractional and rnd() < 0.3:
            size += 1 + int(rnd() * 99)
        return size if size < 5_000_000 else 5_000_000  # noqa: FURB136 - no call per order

    def _add(self, s: MarketState, ts_us: int, out: list[Event]) -> bool:
        """Rest a new order; True when it moved a side's best bid (price or size)."""
        rng = self.rng
        yes_side = rng.random() < 0.5
        own, b, other_b = (s.yes, s.yb, s.nb) if yes_side else (s.no, s.nb, s.yb)
        limit = ONE_DOLLAR - other_b  # price must stay below this (no cross)
        structure = s.st.structure
        if own:
            p = b + tick_at(structure, b) * ADD_TICKS[int(rng.random() * len(ADD_TICKS))]
        else:
            p = limit - 100 * (1 + int(rng.random() * 5))
        t = tick_at(structure, p)
        p -= p % t
        if p >= limit:
            p = limit - tick_at(structure, limit - 1)
            p -= p % tick_at(structure, p)
        if p < tick_at(structure, 1) or p >= ONE_DOLLAR:
            return False
        size = self._size(s)
        own[p] = own.get(p, 0) + size
        out.append(_new(Delta, (ts_us, s.st.ticker, s.st.index, "yes" if yes_side else "no", p,
                                size)))
        if p < b:
            return False
        if yes_side:
            s.yb = p
        else:
            s.nb = p
        return True

    def _cancel(self, s: MarketState, ts_us: int, out: list[Event]) -> bool:
        """Reduce or remove a resting level; True when it moved a side's best bid."""
        rng = self.rng
        yes_side = bool(s.yes and (not s.no or rng.random() < 0.5))
        own = s.yes if yes_side else s.no
        p = list(own)[int(rng.random() * len(own))]
        size = own[p]
        dec = size if rng.random() < 0.4 else min(size, self._size(s))
        left = size - dec
        if left > 0:
            own[p] = left
        else:
            del own[p]
        out.append(_new(Delta, (ts_us, s.st.ticker, s.st.index, "yes" if yes_side else "no", p,
                                -dec)))
        if p != (s.yb if yes_side else s.nb):
            return False
        if left <= 0:
            _set_best(s, yes_side)
        return True

    def _trade(self, s: MarketState, ts_us: int, out: list[Event]) -> None:
        rng = self.rng
        # Taker buys YES -> consumes the best NO bid; taker buys NO -> consumes best YES bid.
        taker = "yes" if (s.no and (not s.yes or rng.random() < 0.5)) else "no"
        yes_book = taker == "no"
        book, p = (s.yes, s.yb) if yes_book else (s.no, s.nb)
        size = book[p]
        count = min(size, self._size(s))
        if count == size:
            del book[p]
            _set_best(s, yes_book)
        else:
            book[p] = size - count
        yes_price = ONE_DOLLAR - p if taker == "yes" else p
        trade_id = uuid4_text(rng.getrandbits(128))
        s.prev_price = s.last_price
        s.last_price = yes_price
        s.volume += count
        s.oi = s.oi + count if rng.random() < 0.6 else max(0, s.oi - count)
        s.dollar_volume_e6 += count * yes_price
        s.last_size = count
        st = s.st
        out.append(_new(Delta, (ts_us, st.ticker, st.index, "yes" if yes_book else "no", p,
                                -count)))
        out.append(_new(Trade, (ts_us, trade_id, st.ticker, st.index, yes_price, count, taker)))
        tk = self.ticker_of(s, ts_us)
        out.append(tk)
        self._candle(s, tk, count)

    def _candle(self, s: MarketState, tk: Ticker, count: int) -> None:
        end = (tk.ts_us // 60_000_000 + 1) * 60
        c = s.candles.get(end)
        p = tk.price
        if c is None:
            s.candles[end] = [p, p, p, p, p * count, count, count, tk.open_interest,
                              tk.yes_bid, tk.yes_bid, tk.yes_bid, tk.yes_bid,
                              tk.yes_ask, tk.yes_ask, tk.yes_ask, tk.yes_ask]
            return
        c[1] = max(c[1], p)  # type: ignore[type-var]
        c[2] = min(c[2], p)  # type: ignore[type-var]
        c[3] = p
        c[4] = (c[4] or 0) + p * count
        c[5] = (c[5] or 0) + count
        c[6] = (c[6] or 0) + count
        c[7] = tk.open_interest
        c[9] = max(c[9], tk.yes_bid)  # type: ignore[type-var]
        c[10] = min(c[10], tk.yes_bid)  # type: ignore[type-var]
        c[11] = tk.yes_bid
        c[13] = max(c[13], tk.yes_ask)  # type: ignore[type-var]
        c[14] = min(c[14], tk.yes_ask)  # type: ignore[type-var]
        c[15] = tk.yes_ask

    # --- lifecycle ------------------------------------------------------------------------
    def _churn(self, ts_us: int, out: list[Event]) -> None:
        r = self.rng.random()
        if r < 0.45:
            self._create(ts_us, out)
            return
        s = self._pick()
        if s is None:
            return
        if r < 0.8:
            self._close(s, ts_us, out)
        else:
            s.status = "inactive"
            s.updated_ms = ts_us // 1000
            out.append(Lifecycle(ts_us, s.st.ticker, s.st.index, "deactivated",
                                 {"is_deactivated": True}))
            self._schedule(ts_us // 1000 + 3_000, "activate", s.st.index)

    def _create(self, ts_us: int, out: list[Event]) -> None:
        cat = self.catalog
        ts_ms = ts_us // 1000
        i = cat.add_market(ts_ms, 2_000, self.rng.randrange(60_000, 600_000))
        st = cat.static(i)
        e = i // cat.mpe
        if i % cat.mpe == 0:
            out.append(EventLifecycle(ts_us, st.event_ticker, e, {
                "series_ticker": st.series_ticker, "title": f"Simulated event {e}",
                "subtitle": "", "collateral_return_type": "MECNET",
                "exchange_index": e % 8, "strike_date": st.close_ms // 1000,
            }))
        s = MarketState(st, {}, {})
        self.states[i] = s
        self._schedule(st.close_ms, "close", i)
        out.append(Lifecycle(ts_us, st.ticker, i, "created", {
            "open_ts": st.open_ms // 1000, "close_ts": st.close_ms // 1000,
        }))

    def _close(self, s: MarketState, ts_us: int, out: list[Event]) -> None:
        if s.status in ("closed", "determined", "finalized"):
            return
        ts_ms = ts_us // 1000
        s.status = "closed"
        s.close_ms = ts_ms
        s.updated_ms = ts_ms
        out.append(Lifecycle(ts_us, s.st.ticker, s.st.index, "close_date_updated",
                             {"close_ts": ts_ms // 1000}))
        # Closing cancels resting orders: the book empties through ordinary deltas.
        for side, book in (("yes", s.yes), ("no", s.no)):
            for p in sorted(book):
                out.append(Delta(ts_us, s.st.ticker, s.st.index, side, p, -book[p]))
            book.clear()
        s.yb = s.nb = 0
        out.append(self.ticker_of(s, ts_us))
        self._schedule(ts_ms + 1_500, "determine", s.st.index)

    def _scheduled(self, action: str, i: int, ts_us: int, out: list[Event]) -> None:
        s = self.state(i)
        ts_ms = ts_us // 1000
        if action == "close":
            self._close(s, ts_us, out)
        elif action == "activate" and s.status == "inactive":
            s.status = None
            s.updated_ms = ts_ms
            out.append(Lifecycle(ts_us, s.st.ticker, i, "activated", {"is_deactivated": False}))
        elif action == "determine":
            s.status = "determined"
            s.result = "yes" if self.rng.random() < 0.5 else "no"
            s.determined_ms = ts_ms
            s.updated_ms = ts_ms
            out.append(Lifecycle(ts_us, s.st.ticker, i, "determined", {
                "result": s.result, "determination_ts": ts_ms // 1000,
                "settlement_value": "1.0000" if s.result == "yes" else "0.0000",
            }))
            self._schedule(ts_ms + 1_500, "settle", i)
        elif action == "settle":
            s.status = "finalized"
            s.settled_ms = ts_ms
            s.updated_ms = ts_ms
            out.append(Lifecycle(ts_us, s.st.ticker, i, "settled", {"settled_ts": ts_ms // 1000}))
