"""Append-only ground truth: everything the engine emitted, with exchange timestamps.

Held in memory (for the in-process handle, the control API and REST ``/markets/trades``) and
optionally mirrored to a JSONL file so another process (``kalshi-data verify --truth``) can diff
a database against it.

JSONL file format: one JSON object per line, key ``k`` names the record kind. Units follow
``data-model.md``: prices int 1e-4 dollars, counts int 1/100 contract; ``ts_us`` is the exchange
time in microseconds, ``ts_ms`` = ``ts_us // 1000`` is what WebSocket ``ts_ms`` carries.

* ``{"k":"header","version":1,"seed":7,"preset":"tiny","profile":"fp2026","start_ms":...}``
  (first line).
* ``{"k":"book0","ticker":T,"yes":[[price,size],...],"no":[...]}`` -- a market's book when the
  engine first touched it, before any of its deltas (written once per market).
* ``{"k":"delta","n":N,"ts_us","ts_ms","ticker","side","price","delta"}`` -- ``n`` counts deltas
  from 0; replaying a market's deltas onto its ``book0`` gives its current book.
* ``{"k":"trade","n":N,"ts_us","ts_ms","rest_ts_us","trade_id","ticker","yes_price","no_price",
  "count","taker_side","taker_outcome_side","taker_book_side","is_block_trade"}`` -- ``rest_ts_us`` is what REST ``created_time`` shows (differs from
  ``ts_us`` only with the ``rest_trade_skew_us`` knob).
* ``{"k":"ticker","n":N,"ts_us","ts_ms","ticker","price","yes_bid","yes_ask","yes_bid_size",
  "yes_ask_size","volume","open_interest","dollar_volume","dollar_open_interest"}``
* ``{"k":"lifecycle","n":N,"ts_us","ts_ms","ticker","event_type", ...event fields}``
* ``{"k":"event_lifecycle","n":N,"ts_us","ts_ms","event_ticker", ...event fields}``
* ``{"k":"withheld","what":"trade"|"delta","n":N[,"trade_id"]}`` -- a record kept from every
  WebSocket client by fault injection (it still exists in REST and above).
* ``{"k":"dropped","what":"delta","n":N}`` -- a delta lost on the wire for every WebSocket
  client (``drop_deltas``): unlike a withheld one it used its seq number, so clients see a gap.

``n`` is per kind (trade n, delta n, ...), the order of lines is emission order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import IO, Any, Generic, TypeVar

import orjson

from .engine import Book0, Delta, Event, EventLifecycle, Lifecycle, Ticker, Trade

BookFn = Callable[[str], tuple[dict[int, int], dict[int, int]]]


def trade_record(n: int, t: Trade, skew_us: int) -> dict[str, Any]:
    return {
        "k": "trade", "n": n, "ts_us": t.ts_us, "ts_ms": t.ts_us // 1000,
        "rest_ts_us": t.ts_us + skew_us, "trade_id": t.trade_id, "ticker": t.ticker,
        "yes_price": t.yes_price, "no_price": 10_000 - t.yes_price, "count": t.qty,
        "taker_side": t.taker_side, "taker_outcome_side": t.taker_side,
        "taker_book_side": "bid" if t.taker_side == "yes" else "ask", "is_block_trade": False,
    }


def delta_record(n: int, d: Delta) -> dict[str, Any]:
    return {
        "k": "delta", "n": n, "ts_us": d.ts_us, "ts_ms": d.ts_us // 1000, "ticker": d.ticker,
        "side": d.side, "price": d.price, "delta": d.delta,
    }


def ticker_record(n: int, t: Ticker) -> dict[str, Any]:
    return {
        "k": "ticker", "n": n, "ts_us": t.ts_us, "ts_ms": t.ts_us // 1000, "ticker": t.ticker,
        "price": t.price, "yes_bid": t.yes_bid, "yes_ask": t.yes_ask,
        "yes_bid_size": t.yes_bid_size, "yes_ask_size": t.yes_ask_size, "volume": t.volume,
        "open_interest": t.open_interest, "dollar_volume": t.dollar_volume,
        "dollar_open_interest": t.dollar_open_interest,
    }


def lifecycle_record(n: int, e: Lifecycle | EventLifecycle) -> dict[str, Any]:
    if isinstance(e, Lifecycle):
        rec = {"k": "lifecycle", "n": n, "ts_us": e.ts_us, "ts_ms": e.ts_us // 1000,
               "ticker": e.ticker, "event_type": e.event_type}
    else:
        rec = {"k": "event_lifecycle", "n": n, "ts_us": e.ts_us, "ts_ms": e.ts_us // 1000,
               "event_ticker": e.event_ticker}
    rec.update(e.fields)
    return rec


E = TypeVar("E", Delta, Trade, Ticker)
_new = tuple.__new__


class EventLog(Generic[E]):
    """An append-only list of one kind of engine event, stored as plain tuples.

    CPython's cyclic GC stops tracking an exact tuple of atomic values at its first collection,
    but never a NamedTuple instance (a tuple subclass): with millions of events in the log,
    every full collection walked them all (~40% of the simulator's CPU in the live-send bench,
    which grows with the run). Indexing builds the event back (readers are off the hot path).
    """

    __slots__ = ("_cls", "_rows")

    def __init__(self, cls: type[E]) -> None:
        self._cls = cls
        self._rows: list[tuple[Any, ...]] = []

    def append(self, ev: E) -> None:
        self._rows.append(tuple(ev))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> E:
        return _new(self._cls, self._rows[i])  # type: ignore[no-any-return]


class Truth:
    """The append-only record. ``initial_book`` gives a market's book before any delta."""

    def __init__(
        self,
        initial_book: BookFn,
        *,
        header: dict[str, Any],
        path: str | None = None,
        rest_trade_skew_us: int = 0,
        keep_tickers: bool = True,
        index_deltas: bool = False,
    ) -> None:
        self._initial_book = initial_book
        self.rest_trade_skew_us = rest_trade_skew_us
        self.keep_tickers = keep_tickers
        self.trades_: EventLog[Trade] = EventLog(Trade)
        self._trade_ts: list[int] = []  # ts_us, ascending (emission order is time order)
        self._by_ticker: dict[str, list[int]] = {}
        self.deltas_: EventLog[Delta] = EventLog(Delta)
        # ticker -> delta numbers; only kept when REST must serve lagged books.
        self._deltas_by_ticker: dict[str, list[int]] | None = {} if index_deltas else None
        self.tickers_: EventLog[Ticker] = EventLog(Ticker)
        self.lifecycle_: list[Lifecycle | EventLifecycle] = []
        self.withheld: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._book0: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self._file: IO[bytes] | None = None
        if path:
            self._file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
            self._file.write(orjson.dumps({"k": "header", "version": 1, **header}) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def append(self, events: list[Event]) -> None:
        f = self._file
        for ev in events:
            if type(ev) is Delta:
                if ev.ticker not in self._seen:
                    self._first_touch(ev.ticker, f)
                n = len(self.deltas_)
                self.deltas_.append(ev)
                if self._deltas_by_ticker is not None:
                    self._deltas_by_ticker.setdefault(ev.ticker, []).append(n)
                if f is not None:
                    f.write(orjson.dumps(delta_record(n, ev)) + b"\n")
            elif type(ev) is Trade:
                n = len(self.trades_)
                self.trades_.append(ev)
                self._trade_ts.append(ev.ts_us)
                self._by_ticker.setdefault(ev.ticker, []).append(n)
                if f is not None:
                    f.write(orjson.dumps(trade_record(n, ev, self.rest_trade_skew_us)) + b"\n")
            elif type(ev) is Book0:
                if ev.ticker not in self._seen:
                    self._seen.add(ev.ticker)
                    self._book0[ev.ticker] = (ev.yes, ev.no)
                    if f is not None:
                        f.write(orjson.dumps({"k": "book0", "ticker": ev.ticker,
                                              "yes": sorted(ev.yes.items()),
                                              "no": sorted(ev.no.items())}) + b"\n")
            elif type(ev) is Ticker:
                if self.keep_tickers:
                    n = len(self.tickers_)
                    self.tickers_.append(ev)
                    if f is not None:
                        f.write(orjson.dumps(ticker_record(n, ev)) + b"\n")
            else:
                n = len(self.lifecycle_)
                self.lifecycle_.append(ev)  # type: ignore[arg-type]
                if isinstance(ev, Lifecycle) and ev.ticker not in self._seen:
                    self._first_touch(ev.ticker, f)
                if f is not None:
                    f.write(orjson.dumps(lifecycle_record(n, ev)) + b"\n")  # type: ignore[arg-type]

    def _first_touch(self, ticker: str, f: IO[bytes] | None) -> None:
        self._seen.add(ticker)
        yes, no = self._initial_book(ticker)
        self._book0[ticker] = (yes, no)
        if f is not None:
            f.write(orjson.dumps({"k": "book0", "ticker": ticker,
                                  "yes": sorted(yes.items()), "no": sorted(no.items())}) + b"\n")

    def mark_withheld(self, what: str, n: int, trade_id: str | None = None) -> None:
        rec: dict[str, Any] = {"k": "withheld", "what": what, "n": n}
        if trade_id is not None:
            rec["trade_id"] = trade_id
        self.withheld.append(rec)
        if self._file is not None:
            self._file.write(orjson.dumps(rec) + b"\n")

    def mark_dropped(self, what: str, n: int) -> None:
        """A record lost on the wire for every WebSocket client (``Faults.drop_deltas``): its seq
        number was used, so clients see a gap; it exists in REST books and above."""
        rec: dict[str, Any] = {"k": "dropped", "what": what, "n": n}
        self.withheld.append(rec)
        if self._file is not None:
            self._file.write(orjson.dumps(rec) + b"\n")

    # --- reading ------------------------------------------------------------------------
    def trades(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        end = len(self.trades_) if limit is None else min(len(self.trades_), since + limit)
        return [trade_record(n, self.trades_[n], self.rest_trade_skew_us)
                for n in range(since, end)]

    def deltas(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        end = len(self.deltas_) if limit is None else min(len(self.deltas_), since + limit)
        return [delta_record(n, self.deltas_[n]) for n in range(since, end)]

    def tickers(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        end = len(self.tickers_) if limit is None else min(len(self.tickers_), since + limit)
        return [ticker_record(n, self.tickers_[n]) for n in range(since, end)]

    def lifecycle(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        end = len(self.lifecycle_) if limit is None else min(len(self.lifecycle_), since + limit)
        return [lifecycle_record(n, self.lifecycle_[n]) for n in range(since, end)]

    def book_at(self, ticker: str, yes: dict[int, int], no: dict[int, int],
                as_of_us: int) -> tuple[dict[int, int], dict[int, int]]:
        """Undo ``ticker``'s deltas newer than ``as_of_us`` on copies of its current book
        (needs ``index_deltas``): the book a lagging REST replica would still serve."""
        y, n = dict(yes), dict(no)
        idx = (self._deltas_by_ticker or {}).get(ticker, [])
        for k in reversed(idx):
            d = self.deltas_[k]
            if d.ts_us <= as_of_us:
                break
            side = y if d.side == "yes" else n
            v = side.get(d.price, 0) - d.delta
            if v:
                side[d.price] = v
            else:
                side.pop(d.price, None)
        return y, n

    def book0(self, ticker: str) -> tuple[dict[int, int], dict[int, int]]:
        """Book of ``ticker`` before its first logged delta."""
        if ticker in self._book0:
            y, n = self._book0[ticker]
            return dict(y), dict(n)
        return self._initial_book(ticker)

    def trade_indexes(self, ticker: str | None, min_us: int | None, max_us: int | None,
                      before: int | None) -> Sequence[int]:
        """Trade numbers matching a REST query, newest first, below ``before`` (cursor)."""
        if ticker is not None:
            idx = self._by_ticker.get(ticker, [])
            ts = [self._trade_ts[i] for i in idx] if (min_us or max_us) else None
            lo, hi = 0, len(idx)
            if ts is not None:
                if min_us is not None:
                    lo = bisect.bisect_left(ts, min_us)
                if max_us is not None:
                    hi = bisect.bisect_right(ts, max_us)
            if before is not None:
                hi = min(hi, bisect.bisect_left(idx, before))
            return idx[lo:hi][::-1]
        lo, hi = 0, len(self._trade_ts)
        if min_us is not None:
            lo = bisect.bisect_left(self._trade_ts, min_us)
        if max_us is not None:
            hi = bisect.bisect_right(self._trade_ts, max_us)
        if before is not None:
            hi = min(hi, before)
        return range(hi - 1, lo - 1, -1) if hi > lo else range(0)
