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
import uuid
from typing import Any, NamedTuple

from .catalog import HOT_SHARE, ONE_DOLLAR, Catalog, MarketStatic, tick_at

RECENT_SHARE = 0.15  # share of activity on the newest markets (fresh listings trade most)
RECENT_MARKETS = 50


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
        "no",
        "oi",
        "prev_price",
        "result",
        "settled_ms",
        "st",
        "status",
        "updated_ms",
        "volume",
        "yes",
    )

    def __init__(self, st: MarketStatic, yes: dict[int, int], no: dict[int, int]) -> None:
        self.st = st
        self.yes = yes
        self.no = no
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
        yb, ybs = best(s.yes)
        nb, nbs = best(s.no)
        return Ticker(
            ts_us, s.st.ticker, s.st.index, s.last_price, yb, ONE_DOLLAR - nb,
            ybs, nbs, s.volume, s.oi, s.dollar_volume_e6 // 1_000_000,
            s.oi * s.last_price // 1_000_000, s.last_size,
        )

    # --- running --------------------------------------------------------------------------
    def run_until(self, target_ms: int, max_steps: int | None = None) -> list[Event]:
        out: list[Event] = []
        n = 0
        while self.now_ms + self.step_ms <= target_ms:
            self.step(out)
            n += 1
            if max_steps is not None and n >= max_steps:
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
                self._churn(t0 * 1000 + rng.randrange(self.step_ms * 1000), out)
            lam = self.rate * self.step_ms / 1000.0
            budget = int(lam) + (1 if rng.random() < lam - int(lam) else 0)
            if budget:
                start = len(out)
                offs = sorted(rng.randrange(self.step_ms * 1000) for _ in range(budget))
                k = 0
                tries = 0
                while len(out) - start < budget and tries < budget * 3:
                    tries += 1
                    ts_us = t0 * 1000 + offs[min(k, budget - 1)]
                    k += 1
                    self._activity(ts_us, out)
        self.now_ms = t1
        self._out = None

    def _schedule(self, due_ms: int, action: str, i: int) -> None:
        self._sched_n += 1
        heapq.heappush(self._sched, (due_ms, self._sched_n, action, i))

    def _pick(self) -> MarketState | None:
        n = self.catalog.count
        n0 = self.catalog.n_initial
        rng = self.rng
        hot = min(n0, self.catalog.preset.hot)
        for _ in range(4):
            # Heavy tail: most activity on a fixed hot set of the starting population
            # (skewed inside it) and on the newest markets; the rest spread over every
            # market, so most markets stay dormant for long stretches.
            u = rng.random()
            if u >= HOT_SHARE:
                i = int(n * rng.random())
            elif u < RECENT_SHARE and n > n0:
                i = n - 1 - int(min(n - n0, RECENT_MARKETS) * rng.random())
            else:
                r = int(hot * rng.random() ** 2)
                i = (r * 2_654_435_761 + 12_345) % n0
            s = self.states.get(i)
            if s is not None:
                if self.status_of(s) == "active":
                    return s
                continue
            st = self.catalog.static(i)  # status of an untouched market needs no book
            if st.open_ms <= self.now_ms < st.close_ms:
                return self.state(i, st)
        return None

    # --- activity -------------------------------------------------------------------------
    def _activity(self, ts_us: int, out: list[Event]) -> None:
        s = self._pick()
        if s is None:
            return
        r = self.rng.random()
        before = (best(s.yes), best(s.no))
        if r < 0.2 and (s.yes or s.no):
            self._trade(s, ts_us, out)
            return
        if r < 0.5 and (s.yes or s.no):
            self._cancel(s, ts_us, out)
        else:
            self._add(s, ts_us, out)
        if (best(s.yes), best(s.no)) != before:
            out.append(self.ticker_of(s, ts_us))

    def _size(self, s: MarketState) -> int:
        rng = self.rng
        size = int(rng.paretovariate(1.3) * 5) * 100 + 100
        if s.st.fractional and rng.random() < 0.3:
            size += rng.randrange(1, 100)
        return min(size, 5_000_000)

    def _add(self, s: MarketState, ts_us: int, out: list[Event]) -> None:
        rng = self.rng
        side = "yes" if rng.random() < 0.5 else "no"
        own, other = (s.yes, s.no) if side == "yes" else (s.no, s.yes)
        limit = ONE_DOLLAR - best(other)[0]  # price must stay below this (no cross)
        structure = s.st.structure
        if own:
            b = max(own)
            p = b + tick_at(structure, b) * rng.choice((-4, -3, -2, -1, -1, 0, 0, 0, 1))
        else:
            p = min(limit, ONE_DOLLAR) - 100 * rng.randrange(1, 6)
        t = tick_at(structure, p)
        p -= p % t
        if p >= limit:
            p = limit - tick_at(structure, limit - 1)
            p -= p % tick_at(structure, p)
        if p < tick_at(structure, 1) or p >= ONE_DOLLAR:
            return
        size = self._size(s)
        own[p] = own.get(p, 0) + size
        out.append(Delta(ts_us, s.st.ticker, s.st.index, side, p, size))

    def _cancel(self, s: MarketState, ts_us: int, out: list[Event]) -> None:
        rng = self.rng
        side = "yes" if (s.yes and (not s.no or rng.random() < 0.5)) else "no"
        own = s.yes if side == "yes" else s.no
        p = rng.choice(list(own))
        size = own[p]
        dec = size if rng.random() < 0.4 else min(size, self._size(s))
        left = size - dec
        if left > 0:
            own[p] = left
        else:
            del own[p]
        out.append(Delta(ts_us, s.st.ticker, s.st.index, side, p, -dec))

    def _trade(self, s: MarketState, ts_us: int, out: list[Event]) -> None:
        rng = self.rng
        # Taker buys YES -> consumes the best NO bid; taker buys NO -> consumes best YES bid.
        taker = "yes" if (s.no and (not s.yes or rng.random() < 0.5)) else "no"
        book_side = "no" if taker == "yes" else "yes"
        book = s.no if taker == "yes" else s.yes
        p, size = best(book)
        count = min(size, self._size(s))
        if count == size:
            del book[p]
        else:
            book[p] = size - count
        yes_price = ONE_DOLLAR - p if taker == "yes" else p
        trade_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        s.prev_price = s.last_price
        s.last_price = yes_price
        s.volume += count
        s.oi = s.oi + count if rng.random() < 0.6 else max(0, s.oi - count)
        s.dollar_volume_e6 += count * yes_price
        s.last_size = count
        out.append(Delta(ts_us, s.st.ticker, s.st.index, book_side, p, -count))
        out.append(Trade(ts_us, trade_id, s.st.ticker, s.st.index, yes_price, count, taker))
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
