"""Wire encoding of engine state and events, per schema profile.

The simulator has its own encoder (never shared/kalshi/) so a decoder bug cannot hide behind an
encoder sharing the same mistake. Shapes follow kalshi-protocol.md §3/§4:

* ``fp2026``: ``*_dollars`` strings (4 dp), ``*_fp`` counts (2 dp), ``ts_ms``, ``orderbook_fp``.
* ``legacy2025``: integer cents and integer counts (+ ``*_dollars`` twins on REST markets),
  WS orderbook ``yes``/``no`` arrays of ``[cents, qty]``, delta ``price``/``delta`` ints and an
  RFC 3339 ``ts`` with nanoseconds.

WS message bodies are encoded once per event and framed per subscriber with a bytes template,
so fan-out costs one ``%`` format per frame. The fp2026 data bodies (delta, trade, ticker: the
live firehose) are themselves bytes templates over cached byte strings, byte-identical to
``orjson.dumps`` of the same dict: every value is a number or a string that needs no JSON
escaping (tickers, UUIDs, decimal strings, ISO times).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .catalog import MVE_COLLECTION, ONE_DOLLAR, Catalog, MarketStatic, price_ranges
from .engine import Delta, EventLifecycle, Lifecycle, MarketState, Ticker, Trade

FP2026 = "fp2026"
LEGACY2025 = "legacy2025"
PROFILES = (FP2026, LEGACY2025)


def dollars(p: int) -> str:
    return f"{p // 10_000}.{p % 10_000:04d}"


def fp(c: int) -> str:
    if c < 0:
        c = -c
        return f"-{c // 100}.{c % 100:02d}"
    return f"{c // 100}.{c % 100:02d}"


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def iso_us(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + \
        f".{us % 1_000_000:06d}Z"


def iso_s(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def seq_template(type_: str) -> bytes:
    """``%``-template of a data frame with seq: (sid, seq, body)."""
    return b'{"type":"%s","sid":%%d,"seq":%%d,"msg":%%s}' % type_.encode()


def noseq_template(type_: str) -> bytes:
    return b'{"type":"%s","sid":%%d,"msg":%%s}' % type_.encode()


def frame(type_: str, sid: int, seq: int | None, body: bytes, id_: int | None = None) -> bytes:
    """A data frame around a pre-encoded ``msg`` body (slow path; hub.py caches templates)."""
    head = b'{"id":%d,' % id_ if id_ else b"{"
    if seq is None:
        return head + b'"type":"%s","sid":%d,"msg":%s}' % (type_.encode(), sid, body)
    return head + b'"type":"%s","sid":%d,"seq":%d,"msg":%s}' % (type_.encode(), sid, seq, body)


# fp2026 WS bodies; key order is that of the dicts they replaced (see the module docstring).
DELTA_FP2026 = (b'{"market_ticker":"%s","market_id":"%s","price_dollars":"%s","delta_fp":"%s",'
                b'"side":"%s","ts":"%s.%06dZ","ts_ms":%d}')
TRADE_FP2026 = (b'{"trade_id":"%s","market_ticker":"%s","yes_price_dollars":"%s",'
                b'"no_price_dollars":"%s","count_fp":"%s","taker_side":"%s",'
                b'"taker_outcome_side":"%s","taker_book_side":"%s","is_block_trade":false,'
                b'"ts":%d,"ts_ms":%d}')
TICKER_FP2026 = (b'{"market_id":"%s","market_ticker":"%s","price_dollars":"%s",'
                 b'"yes_bid_dollars":"%s","yes_ask_dollars":"%s","volume_fp":"%s",'
                 b'"open_interest_fp":"%s","dollar_volume":%d,"dollar_open_interest":%d,'
                 b'"yes_bid_size_fp":"%s","yes_ask_size_fp":"%s","last_trade_size_fp":"%s",'
                 b'"ts":%d,"ts_ms":%d,"time":"%sZ"}')
SIDE_B = {"yes": b"yes", "no": b"no"}


class _Memo(dict[int, bytes]):
    """int -> its text as bytes, computed on first lookup (plain ``[]`` on a hit, the cheapest
    lookup there is); bounded: cleared once it holds 100,000 entries."""

    def __init__(self, fn: Callable[[int], bytes]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, k: int) -> bytes:
        if len(self) > 100_000:
            self.clear()
        v = self[k] = self.fn(k)
        return v


REST_STATUS = {
    # engine status -> Market.status
    "initialized": "initialized", "active": "active", "inactive": "inactive",
    "closed": "closed", "determined": "determined", "finalized": "finalized",
}
# /markets?status= filter value -> accepted Market.status values
STATUS_FILTER = {
    "unopened": {"initialized"},
    "open": {"active"},
    "paused": {"inactive"},
    "closed": {"closed", "determined", "disputed", "amended"},
    "settled": {"finalized"},
}


class Encoder:
    """Builds REST objects and WS message bodies for one profile."""

    def __init__(self, profile: str, catalog: Catalog) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}")
        self.profile = profile
        self.legacy = profile == LEGACY2025
        self.catalog = catalog
        self._clock = 0  # legacy ticker "Clock": global monotonic counter
        # Formatting numbers is the hot cost of encoding: every price on the grid is
        # precomputed, counts are memoised (bounded).
        self._dollars = [dollars(p) for p in range(ONE_DOLLAR + 1)]
        self._fp: dict[int, str] = {}
        self._sec = -1  # one-entry cache: strftime of the current second is the hot cost
        self._sec_text = ""
        self._days: dict[int, str] = {}  # day number -> "YYYY-MM-DDT" (REST times)
        # Byte twins of the caches above, for the fp2026 body templates.
        self._dollars_b = _Memo(lambda p: dollars(p).encode())
        self._dollars_b.update((p, d.encode()) for p, d in enumerate(self._dollars))
        self._fp_b = _Memo(lambda c: fp(c).encode())
        self._ids: dict[str, tuple[bytes, bytes]] = {}  # ticker -> (ticker, market_id) bytes
        self._sec_b = -1
        self._sec_bytes = b""

    def _d(self, p: int) -> str:
        return self._dollars[p] if 0 <= p <= ONE_DOLLAR else dollars(p)

    def _c(self, c: int) -> str:
        v = self._fp.get(c)
        if v is None:
            if len(self._fp) > 100_000:
                self._fp.clear()
            v = self._fp[c] = fp(c)
        return v

    def _iso_us(self, us: int) -> str:
        sec = us // 1_000_000
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._sec_text}.{us % 1_000_000:06d}Z"

    def _ids_b(self, ticker: str, market_id: str) -> tuple[bytes, bytes]:
        """(ticker, market_id) as bytes, memoised (bounded) per market."""
        v = self._ids.get(ticker)
        if v is None:
            if len(self._ids) > 100_000:
                self._ids.clear()
            v = self._ids[ticker] = (ticker.encode(), market_id.encode())
        return v

    def _sec_iso_b(self, sec: int) -> bytes:
        """``YYYY-MM-DDTHH:MM:SS`` of a Unix second, as bytes (one-entry cache)."""
        if sec != self._sec_b:
            self._sec_b = sec
            self._sec_bytes = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return self._sec_bytes

    # --- WebSocket bodies -----------------------------------------------------------------
    def delta_body(self, d: Delta, market_id: str, no_ts: bool = False) -> bytes:
        """``no_ts``: leave out ``ts`` and ``ts_ms`` (both optional in the AsyncAPI schema)."""
        if self.legacy:
            m: dict[str, Any] = {
                "market_ticker": d.ticker, "market_id": market_id, "price": d.price // 100,
                "delta": d.delta // 100, "side": d.side,
            }
            if not no_ts:
                m["ts"] = self._iso_us(d.ts_us)[:-1] + "000Z"
            return orjson.dumps(m)
        if no_ts:
            return orjson.dumps({
                "market_ticker": d.ticker, "market_id": market_id,
                "price_dollars": self._d(d.price), "delta_fp": self._c(d.delta), "side": d.side,
            })
        ticker, mid = self._ids_b(d.ticker, market_id)
        us = d.ts_us
        return DELTA_FP2026 % (ticker, mid, self._dollars_b[d.price], self._fp_b[d.delta],
                               SIDE_B[d.side], self._sec_iso_b(us // 1_000_000), us % 1_000_000,
                               us // 1000)

    def snapshot_body(self, ticker: str, market_id: str, yes: dict[int, int],
                      no: dict[int, int]) -> bytes:
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": market_id}
        if self.legacy:
            if yes:
                msg["yes"] = [[p // 100, c // 100] for p, c in sorted(yes.items())]
                msg["yes_dollars"] = [[f"{p / 10_000:.2f}", c // 100] for p, c in sorted(yes.items())]
            if no:
                msg["no"] = [[p // 100, c // 100] for p, c in sorted(no.items())]
                msg["no_dollars"] = [[f"{p / 10_000:.2f}", c // 100] for p, c in sorted(no.items())]
        else:
            if yes:
                msg["yes_dollars_fp"] = [[self._d(p), self._c(c)] for p, c in sorted(yes.items())]
            if no:
                msg["no_dollars_fp"] = [[self._d(p), self._c(c)] for p, c in sorted(no.items())]
        return orjson.dumps(msg)

    def trade_body(self, t: Trade) -> bytes:
        if self.legacy:
            return orjson.dumps({
                "trade_id": t.trade_id, "market_ticker": t.ticker, "yes_price": t.yes_price // 100,
                "no_price": (ONE_DOLLAR - t.yes_price) // 100, "count": t.qty // 100,
                "taker_side": t.taker_side, "ts": t.ts_us // 1_000_000,
            })
        side = SIDE_B[t.taker_side]
        d = self._dollars_b
        return TRADE_FP2026 % (
            t.trade_id.encode(), t.ticker.encode(), d[t.yes_price], d[ONE_DOLLAR - t.yes_price],
            self._fp_b[t.qty], side, side, b"bid" if t.taker_side == "yes" else b"ask",
            t.ts_us // 1_000_000, t.ts_us // 1000)

    def ticker_body(self, k: Ticker, market_id: str) -> bytes:
        ts_ms = k.ts_us // 1000
        if self.legacy:
            self._clock += 1
            return orjson.dumps({
                "market_ticker": k.ticker, "market_id": market_id, "price": k.price // 100,
                "yes_bid": k.yes_bid // 100, "yes_ask": k.yes_ask // 100,
                "price_dollars": self._d(k.price), "yes_bid_dollars": self._d(k.yes_bid),
                "yes_ask_dollars": self._d(k.yes_ask), "volume": k.volume // 100,
                "open_interest": k.open_interest // 100, "dollar_volume": k.dollar_volume,
                "dollar_open_interest": k.dollar_open_interest, "ts": ts_ms // 1000,
                "Clock": self._clock,
            })
        ticker, mid = self._ids_b(k.ticker, market_id)
        d = self._dollars_b
        c = self._fp_b
        return TICKER_FP2026 % (
            mid, ticker, d[k.price], d[k.yes_bid], d[k.yes_ask], c[k.volume],
            c[k.open_interest], k.dollar_volume, k.dollar_open_interest, c[k.yes_bid_size],
            c[k.yes_ask_size], c[k.last_trade_size], ts_ms // 1000, ts_ms,
            self._sec_iso_b(ts_ms // 1000))

    def lifecycle_body(self, e: Lifecycle, st: MarketStatic) -> bytes:
        msg: dict[str, Any] = {"market_ticker": e.ticker, "event_type": e.event_type}
        msg.update(e.fields)
        if e.event_type == "created":
            msg["exchange_index"] = st.index % 8
            msg["additional_metadata"] = {
                "name": st.ticker, "title": f"Simulated market {st.index}",
                "yes_sub_title": f"Above {st.floor_strike}",
                "no_sub_title": f"Above {st.floor_strike}", "rules_primary": "Simulated.",
                "rules_secondary": "", "can_close_early": True, "event_ticker": st.event_ticker,
                "expected_expiration_ts": st.close_ms // 1000 + 3600, "strike_type": "greater",
                "floor_strike": st.floor_strike,
            }
            msg["price_level_structure"] = st.structure
            msg["price_ranges"] = [{"start": a, "end": b, "step": c}
                                   for a, b, c in price_ranges(st.structure)]
        msg["ts_ms"] = e.ts_us // 1000
        return orjson.dumps(msg)

    def event_lifecycle_body(self, e: EventLifecycle) -> bytes:
        msg: dict[str, Any] = {"event_ticker": e.event_ticker}
        msg.update(e.fields)
        msg["ts_ms"] = e.ts_us // 1000
        return orjson.dumps(msg)

    # --- REST objects -------------------------------------------------------------------
    def _iso_s(self, ms: int) -> str:
        """``iso_s(ms)``, with the date part cached per day: a REST market carries six times
        and the xl registry load lists a million markets (strftime was ~15% of a page)."""
        d, r = divmod(ms // 1000, 86_400)
        day = self._days.get(d)
        if day is None:
            if len(self._days) > 10_000:
                self._days.clear()
            day = self._days[d] = time.strftime("%Y-%m-%dT", time.gmtime(d * 86_400))
        h, r = divmod(r, 3600)
        mi, sec = divmod(r, 60)
        return f"{day}{h:02d}:{mi:02d}:{sec:02d}Z"

    def _iso_ms(self, ms: int) -> str:
        """``iso_ms(ms)`` through the same day cache."""
        return f"{self._iso_s(ms)[:-1]}.{ms % 1000:03d}Z"

    def market(self, s: MarketState, status: str) -> dict[str, Any]:
        st = s.st
        # best bids: kept by the engine for live markets, computed at creation for views
        yb = s.yb
        nb = s.nb
        ybs = s.yes[yb] if yb else 0
        nbs = s.no[nb] if nb else 0
        ya = ONE_DOLLAR - nb
        na = ONE_DOLLAR - yb
        ranges = [{"start": a, "end": b, "step": c} for a, b, c in price_ranges(st.structure)]
        iso_s = self._iso_s
        close = st.close_ms
        m: dict[str, Any] = {
            "ticker": st.ticker, "event_ticker": st.event_ticker, "market_type": "binary",
            "title": f"Simulated market {st.index}", "subtitle": "",
            "yes_sub_title": f"Above {st.floor_strike}", "no_sub_title": f"Above {st.floor_strike}",
            "created_time": iso_s(st.created_ms), "updated_time": self._iso_ms(s.updated_ms),
            "open_time": iso_s(st.open_ms), "close_time": iso_s(s.close_ms),
            "latest_expiration_time": iso_s(close + 7 * 86_400_000),
            "expected_expiration_time": iso_s(close + 3_600_000),
            "expiration_time": iso_s(close + 7 * 86_400_000),
            "settlement_timer_seconds": 1800, "status": REST_STATUS[status],
            "result": s.result, "can_close_early": True,
            "fractional_trading_enabled": st.fractional, "expiration_value": "",
            "settlement_ts": self._iso_ms(s.settled_ms) if s.settled_ms is not None else None,
            "strike_type": "greater", "floor_strike": st.floor_strike, "cap_strike": None,
            "rules_primary": "Simulated.", "rules_secondary": "",
            "price_level_structure": st.structure, "price_ranges": ranges,
            "response_price_units": "usd_cent", "tick_size": 1,
        }
        if s.result:
            m["settlement_value_dollars"] = "1.0000" if s.result == "yes" else "0.0000"
        # Every field Kalshi's Market schema requires, in both profiles (its OpenAPI 3.13.0);
        # legacy2025 adds the older integer twins beside them, as servers did through 2025.
        d, c = self._d, self._c
        m.update({
            "yes_bid_dollars": d(yb), "yes_ask_dollars": d(ya),
            "no_bid_dollars": d(nb), "no_ask_dollars": d(na),
            "yes_bid_size_fp": c(ybs), "yes_ask_size_fp": c(nbs),
            "last_price_dollars": d(s.last_price),
            "previous_yes_bid_dollars": d(yb), "previous_yes_ask_dollars": d(ya),
            "previous_price_dollars": d(s.prev_price),
            "volume_fp": c(s.volume), "volume_24h_fp": c(s.volume),
            "open_interest_fp": c(s.oi), "notional_value_dollars": "1.0000",
            "liquidity_dollars": "0.0000",
        })
        if self.legacy:
            m.update({
                "yes_bid": yb // 100, "yes_ask": ya // 100, "no_bid": nb // 100,
                "no_ask": na // 100, "last_price": s.last_price // 100,
                "previous_yes_bid": yb // 100, "previous_yes_ask": ya // 100,
                "previous_price": s.prev_price // 100, "volume": s.volume // 100,
                "volume_24h": s.volume // 100, "open_interest": s.oi // 100,
                "notional_value": 100, "liquidity": 0, "risk_limit_cents": 0,
                "category": "Simulated",
            })
        else:
            m["is_provisional"] = False
        return m

    def mve_market(self, j: int, status: str) -> dict[str, Any]:
        """A multivariate (combo) market: the ordinary Market object plus its collection and
        the legs it combines (``mve_collection_ticker``, ``mve_selected_legs``)."""
        cat = self.catalog
        st = cat.mve_static(j)
        m = self.market(MarketState(st, {}, {}), status)
        m["mve_collection_ticker"] = MVE_COLLECTION
        m["mve_selected_legs"] = [
            {"event_ticker": cat.event_ticker(i // cat.mpe), "market_ticker": cat.market_ticker(i),
             "side": "yes"} for i in cat.mve_legs(j)]
        return m

    def event(self, e: int, now_ms: int) -> dict[str, Any]:
        cat = self.catalog
        first = cat.static(e * cat.mpe)
        return {
            "event_ticker": cat.event_ticker(e), "series_ticker": first.series_ticker,
            "title": f"Simulated event {e}", "sub_title": "", "collateral_return_type": "MECNET",
            "mutually_exclusive": False, "category": "Simulated",
            "strike_date": iso_s(first.close_ms), "strike_period": None,
            "available_on_brokers": False, "product_metadata": None,
            "last_updated_ts": iso_s(first.created_ms),
        }

    def series(self, s: int) -> dict[str, Any]:
        t = self.catalog.series_ticker(s)
        return {
            "ticker": t, "frequency": "daily", "title": f"Simulated series {s}",
            "category": ("Economics", "Crypto", "Sports")[s % 3], "tags": ["simulated"],
            "settlement_sources": [{"name": "Simulator", "url": "http://127.0.0.1/"}],
            "contract_url": "http://127.0.0.1/contract", "contract_terms_url": "",
            "product_metadata": None, "fee_type": "quadratic", "fee_multiplier": 1.0,
            "additional_prohibitions": [], "last_updated_ts": iso_s(self.catalog.start_ms),
        }

    def orderbook(self, yes: dict[int, int], no: dict[int, int], depth: int) -> dict[str, Any]:
        ys = sorted(yes.items())
        ns = sorted(no.items())
        if depth > 0:  # keep the N best levels (best = highest price = last)
            ys, ns = ys[-depth:], ns[-depth:]
        out: dict[str, Any] = {"orderbook_fp": {
            "yes_dollars": [[dollars(p), fp(c)] for p, c in ys],
            "no_dollars": [[dollars(p), fp(c)] for p, c in ns],
        }}
        if self.legacy:  # the 2025 envelope beside the one the schema requires
            out["orderbook"] = {
                "yes": [[p // 100, c // 100] for p, c in ys] or None,
                "no": [[p // 100, c // 100] for p, c in ns] or None,
                "yes_dollars": [[f"{p / 10_000:.2f}", c // 100] for p, c in ys] or None,
                "no_dollars": [[f"{p / 10_000:.2f}", c // 100] for p, c in ns] or None,
            }
        return out

    def trade(self, t: Trade, skew_us: int) -> dict[str, Any]:
        base: dict[str, Any] = {
            "trade_id": t.trade_id, "ticker": t.ticker, "taker_side": t.taker_side,
            "created_time": iso_us(t.ts_us + skew_us), "count_fp": fp(t.qty),
            "yes_price_dollars": dollars(t.yes_price),
            "no_price_dollars": dollars(ONE_DOLLAR - t.yes_price)}
        if self.legacy:  # integer twins; the outcome/book sides came in May 2026
            base.update({"count": t.qty // 100, "yes_price": t.yes_price // 100,
                         "no_price": (ONE_DOLLAR - t.yes_price) // 100})
        else:
            base.update({"taker_outcome_side": t.taker_side,
                         "taker_book_side": "bid" if t.taker_side == "yes" else "ask"})
        return base

    def candle(self, end_s: int, c: list[int | None] | None,
               prev: list[int | None] | None) -> dict[str, Any]:
        """One MarketCandlestick. ``c`` None = the synthetic candle ``include_latest_before_start``
        prepends: price OHLC null, ``previous`` = the last real close, and the quotes projected
        forward from that candle (its closing bid/ask). ``prev`` is the previous real bucket.

        Both profiles carry the fixed-point fields Kalshi's schema requires; legacy2025 adds the
        older integer twins (cents, whole contracts) beside them, as servers did in 2025."""
        pc = None if prev is None else prev[3]
        if c is None:
            yb = None if prev is None else prev[11]
            ya = None if prev is None else prev[15]
            quotes = ((yb, yb, yb, yb), (ya, ya, ya, ya))
            price: tuple[int | None, ...] = (None,) * 7
            vol, oi = 0, 0 if prev is None else (prev[7] or 0)
        else:
            quotes = ((c[8], c[9], c[10], c[11]), (c[12], c[13], c[14], c[15]))
            mean = (c[4] or 0) // (c[5] or 1)
            price = (c[0], c[1], c[2], c[3], mean, c[2], c[1])
            vol, oi = c[6] or 0, c[7] or 0
        out: dict[str, Any] = {"end_period_ts": end_s}
        for name, (o, h, lo, cl) in zip(("yes_bid", "yes_ask"), quotes, strict=True):
            out[name] = self._ohlc(("open", "high", "low", "close"), (o, h, lo, cl))
        out["price"] = self._ohlc(("open", "high", "low", "close", "mean", "min", "max",
                                   "previous"), (*price, pc))
        out["volume_fp"] = fp(vol)
        out["open_interest_fp"] = fp(oi)
        if self.legacy:
            out["volume"] = vol // 100
            out["open_interest"] = oi // 100
        return out

    def _ohlc(self, names: tuple[str, ...], values: tuple[int | None, ...]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, v in zip(names, values, strict=True):
            d[f"{k}_dollars"] = None if v is None else dollars(v)
            if self.legacy:
                d[k] = None if v is None else v // 100
        return d
