"""Sans-I/O decoder for one Kalshi WebSocket connection: frames in, typed events out.

    dec = Decoder()                                   # one per WebSocket connection
    for ev in dec.feed(raw, received_at_us=now_us):   # never raises
        ...                                           # rows, control replies, SeqGap, Rejected

No sockets, no clock, no logging: the receive time is an argument and every decision is an
event the caller acts on (style.md §2.1).

Both wire shapes decode, by key presence (kalshi-protocol.md §0): ``fp2026`` (``*_dollars``,
``*_fp``, ``ts_ms``) and ``legacy2025`` (integer cents/counts, ``ts`` seconds or RFC 3339).

Sequence policy (kalshi-protocol.md §4.7: ``seq`` is per sid, not per market; snapshots consume
seq numbers; a new sid starts at 1):

- ``seq == last + 1``: normal.
- ``seq > last + 1``: emit ``SeqGap(sid, expected=last+1, got=seq)`` **first**, then decode and
  emit the frame as usual. The decoder does not decide what is trustworthy: the router treats
  every book of that sid as dirty (not applied, resync requested) until a new snapshot arrives,
  and still stores the delta rows, which are real exchange events.
- ``seq <= last``: emit ``Duplicate(sid, seq)`` and drop the frame (replay). Except ``seq == 1``
  after a higher one: the server restarted the sid's numbering without a resubscribe, so the
  frame is new data and what happened in between is unknown: ``SeqGap(sid, last+1, 1)``, then
  the frame, and counting goes on from 1 (dropping every frame as a duplicate until the count
  caught up again would lose them all silently).
- First frame on a sid never announced by ``subscribed``: accepted as the baseline.
- ``ok``/``unsubscribed`` carry a seq whose meaning Kalshi does not document: the last seq sent
  on the sid, or the one the next frame will carry. They never advance ``last``: under either
  reading the next data frame is then judged correctly (advancing on "next" would drop that
  frame as a duplicate with no gap signal). A real loss before an ``ok`` shows up on the next
  data frame; on ``unsubscribed`` (the sid ends) a seq beyond ``last + 1`` is reported as a gap.
- A delta without ``ts``/``ts_ms`` (both optional) takes its receive time, cut to whole ms like
  every exchange time, as exchange time and is preceded by ``MissingTimestamp``; it is not
  rejected.
- A data frame that fails validation still consumes its seq (it did arrive), and comes out as
  ``Rejected`` carrying sid/ticker so the router can mark that book dirty.

Rejected reasons are the fixed set ``REJECT_REASONS`` (they become the ``reason`` label of
``router_parse_errors_total``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from . import _fields as f
from .models import (
    DecodedEvent,
    DeltaRow,
    Duplicate,
    ErrorFrame,
    Lifecycle,
    MissingTimestamp,
    Ok,
    Profile,
    Rejected,
    SeqGap,
    SnapshotRow,
    Subscribed,
    TickerRow,
    TradeRow,
    Unsubscribed,
    ticker_content_hash,
)
from .units import (
    UnitError,
    cents,
    count_fp,
    dollars,
    legacy_ts_to_us,
    rfc3339_to_us,
    to_ms_precision,
    ts_ms_to_us,
    whole_int,
)

__all__ = ["DATA_TYPES", "REJECT_REASONS", "Decoder", "ValueCache"]

BAD_JSON = "bad_json"  # not JSON, not UTF-8, or not a JSON object
BAD_ENVELOPE = "bad_envelope"  # type/sid/seq/id missing or of the wrong type
UNKNOWN_TYPE = "unknown_type"  # a `type` we do not handle
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"  # a field of the wrong JSON type
BAD_VALUE = "bad_value"  # unparseable or out-of-range value, bad enum, bad UUID
TOO_PRECISE = "too_precise"  # more decimals than our scale holds
INTERNAL_ERROR = "internal_error"  # a bug in this module; the frame is kept as Rejected

REJECT_REASONS: frozenset[str] = frozenset(
    (
        BAD_JSON,
        BAD_ENVELOPE,
        UNKNOWN_TYPE,
        MISSING_FIELD,
        BAD_TYPE,
        BAD_VALUE,
        TOO_PRECISE,
        INTERNAL_ERROR,
    )
)

#: Frame types that carry market data (and a seq on a sid).
DATA_TYPES = frozenset(
    (
        "orderbook_snapshot",
        "orderbook_delta",
        "trade",
        "ticker",
        "market_lifecycle_v2",
        "event_lifecycle",
        "event_fee_update",
    )
)
_LIFECYCLE_KEY = {
    "market_lifecycle_v2": "market_ticker",
    "event_lifecycle": "event_ticker",
    "event_fee_update": "event_ticker",
}

_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (~3x cheaper)
_loads = orjson.loads  # one global lookup per frame instead of a global and an attribute
_Handler = Callable[[dict[str, Any], "bytes | str", int], list[DecodedEvent]]
_FP_MARKERS = ("price_dollars", "yes_dollars_fp", "no_dollars_fp", "yes_price_dollars", "ts_ms")


def _int_or_none(v: Any) -> int | None:
    return v if type(v) is int else None


class ValueCache:
    """Memo of already-converted price and size strings, shared by the decoders of one process.

    Prices repeat constantly (at most 10,001 distinct valid ``"D.DDDD"`` values) and sizes
    mostly do; a dict hit costs ~40 ns against ~0.5-1 µs for a parse, which is the difference
    between meeting and missing the decode target. Only ``str`` keys are stored (so ``True``,
    ``1`` and ``1.0`` can never alias a cached string), only values that converted cleanly, and
    each map stops growing at its cap (memory stays bounded; misses just parse).
    """

    __slots__ = ("counts", "max_counts", "max_prices", "prices")

    def __init__(self, max_prices: int = 20_000, max_counts: int = 200_000) -> None:
        self.prices: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.max_prices = max_prices
        self.max_counts = max_counts


class Decoder:
    """Per-connection decoder. Not thread-safe; one per WebSocket connection.

    ``profile_hint`` is informational (decoding always goes by key presence); ``profile`` reports
    the shape seen in the first data frame. ``cache`` may be shared by every decoder of a process.
    """

    __slots__ = (
        "_cache",
        "_channels",
        "_handlers",
        "_last_at",
        "_last_seq",
        "_second",
        "frame_sid",
        "profile",
        "profile_hint",
    )

    def __init__(
        self, profile_hint: Profile | None = None, cache: ValueCache | None = None
    ) -> None:
        self.profile_hint = profile_hint
        self._cache = cache if cache is not None else ValueCache()
        self.profile: Profile | None = None
        #: sid of the data frame last fed (None if it had none): snapshot rows carry no sid.
        self.frame_sid: int | None = None
        self._last_seq: dict[int, int] = {}
        self._last_at: dict[int, int] = {}
        self._channels: dict[int, str] = {}
        #: (head "YYYY-MM-DDTHH:MM:SS", its µs) of the last legacy delta time fully parsed
        self._second: tuple[str, int] = ("", 0)
        self._handlers: dict[str, _Handler] = {
            "orderbook_delta": self._delta,
            "orderbook_snapshot": self._snapshot,
            "trade": self._trade,
            "ticker": self._ticker,
            "market_lifecycle_v2": self._lifecycle,
            "event_lifecycle": self._lifecycle,
            "event_fee_update": self._lifecycle,
            "subscribed": self._subscribed,
            "unsubscribed": self._unsubscribed,
            "ok": self._ok,
            "error": self._error,
        }

    # -- public -------------------------------------------------------------------------------

    def feed(self, raw: bytes | str, received_at_us: int) -> list[DecodedEvent]:
        """Decode one text frame received at ``received_at_us`` (µs since epoch).

        Returns the events in order (usually one row). Never raises: anything unusable comes
        back as ``Rejected``.
        """
        try:
            obj = _loads(raw)
        except (orjson.JSONDecodeError, TypeError):
            return [Rejected(BAD_JSON, raw, "not JSON", received_at=received_at_us)]
        if type(obj) is not dict:
            return [Rejected(BAD_JSON, raw, "not an object", received_at=received_at_us)]
        handler = self._handlers.get(obj.get("type"))  # type: ignore[arg-type]
        if handler is None:
            t = obj.get("type")
            if type(t) is not str:
                return [Rejected(BAD_ENVELOPE, raw, "type", received_at=received_at_us)]
            return [
                Rejected(
                    UNKNOWN_TYPE,
                    raw,
                    t[:40],
                    sid=_int_or_none(obj.get("sid")),
                    frame_type=t[:40],
                    received_at=received_at_us,
                )
            ]
        try:
            return handler(obj, raw, received_at_us)
        except Exception as exc:  # a bug here must not take the connection down
            return [Rejected(INTERNAL_ERROR, raw, type(exc).__name__, received_at=received_at_us)]

    def channel(self, sid: int) -> str | None:
        """The channel a sid was subscribed to (from ``subscribed``), if known."""
        return self._channels.get(sid)

    def last_seq(self, sid: int) -> int | None:
        """Last seq accepted on ``sid`` (0 right after ``subscribed``), or None if unknown."""
        return self._last_seq.get(sid)

    def forget(self, sid: int) -> None:
        """Drop a sid's state (the I/O layer knows it is gone, e.g. after a terminal error)."""
        self._last_seq.pop(sid, None)
        self._last_at.pop(sid, None)
        self._channels.pop(sid, None)

    # -- sequence -----------------------------------------------------------------------------

    def _sequence(
        self, sid: int, seq: int, frame_type: str, rx: int, out: list[DecodedEvent]
    ) -> bool:
        """Apply the seq rule; append SeqGap/Duplicate to ``out``; False = drop the frame."""
        last = self._last_seq.get(sid)
        if last is not None:
            if seq <= last and not (seq == 1 and last > 1):
                out.append(Duplicate(sid, seq))
                return False
            if seq != last + 1:
                out.append(self._gap(sid, last + 1, seq, frame_type, rx))
        self._last_seq[sid] = seq
        self._last_at[sid] = rx
        return True

    def _envelope(
        self, obj: dict[str, Any], raw: bytes | str, rx: int, frame_type: str, seq_required: bool
    ) -> tuple[list[DecodedEvent], int | None, int | None, bool]:
        """(events so far, sid, seq, keep). keep=False means the frame is done (dup or bad)."""
        out: list[DecodedEvent] = []
        sid = obj.get("sid")
        seq = obj.get("seq")
        self.frame_sid = sid if type(sid) is int else None
        if (
            type(sid) is not int
            or (seq is not None and type(seq) is not int)
            or (seq is None and seq_required)
        ):
            out.append(
                Rejected(BAD_ENVELOPE, raw, "sid/seq", frame_type=frame_type, received_at=rx)
            )
            return out, None, None, False
        if seq is not None and not self._sequence(sid, seq, frame_type, rx, out):
            return out, sid, seq, False
        return out, sid, seq, True

    def _reject(
        self,
        out: list[DecodedEvent],
        exc: Exception,
        raw: bytes | str,
        sid: int | None,
        msg: Any,
        frame_type: str,
        rx: int,
        ticker_key: str = "market_ticker",
    ) -> list[DecodedEvent]:
        if isinstance(exc, UnitError):
            reason, detail = exc.reason, exc.detail
        elif isinstance(exc, KeyError):
            reason, detail = MISSING_FIELD, str(exc.args[0])[:40] if exc.args else ""
        else:  # TypeError / AttributeError: msg was not an object, or a field had a bad shape
            reason, detail = BAD_TYPE, type(exc).__name__
        ticker = msg.get(ticker_key) if type(msg) is dict else None
        out.append(
            Rejected(
                reason,
                raw,
                detail,
                sid=sid,
                ticker=ticker if type(ticker) is str else None,
                frame_type=frame_type,
                received_at=rx,
            )
        )
        return out

    def _note_profile(self, msg: dict[str, Any]) -> None:
        self.profile = Profile.FP2026 if any(k in msg for k in _FP_MARKERS) else Profile.LEGACY2025

    # -- data frames --------------------------------------------------------------------------

    def _delta(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        # The hottest path (most frames are deltas): envelope and seq rule inlined.
        sid = obj.get("sid")
        seq = obj.get("seq")
        if type(sid) is not int or type(seq) is not int:
            self.frame_sid = None
            return [
                Rejected(BAD_ENVELOPE, raw, "sid/seq", frame_type="orderbook_delta", received_at=rx)
            ]
        self.frame_sid = sid
        last = self._last_seq.get(sid)
        out: list[DecodedEvent] | None = None
        if last is not None:
            if seq <= last and not (seq == 1 and last > 1):  # 1 after more: a restarted count
                return [Duplicate(sid, seq)]
            if seq != last + 1:
                out = [
                    SeqGap(
                        sid,
                        last + 1,
                        seq,
                        "orderbook_delta",
                        rx,
                        self._last_at.get(sid),
                        self._channels.get(sid),
                    )
                ]
        self._last_seq[sid] = seq
        self._last_at[sid] = rx
        msg = obj.get("msg")
        try:
            ticker = msg["market_ticker"]  # type: ignore[index]
            if type(ticker) is not str or not ticker:
                raise UnitError(BAD_TYPE, "market_ticker")
            cache = self._cache
            v = msg.get("price_dollars")  # type: ignore[union-attr]
            if v is None:  # legacy2025: integer cents, inlined (the legacy hot path)
                v = msg["price"]  # type: ignore[index]
                price = v * 100 if type(v) is int else cents(v)
            else:
                price = cache.prices.get(v)  # type: ignore[assignment]
                if price is None:
                    price = dollars(v)
                    if type(v) is str and len(cache.prices) < cache.max_prices:
                        cache.prices[v] = price
            if not 0 <= price <= 10_000:
                raise UnitError(BAD_VALUE, "price")
            v = msg.get("delta_fp")  # type: ignore[union-attr]
            if v is None:  # legacy2025: integer contracts
                v = msg["delta"]  # type: ignore[index]
                delta = v * 100 if type(v) is int else count_fp(v)
            else:
                delta = cache.counts.get(v)  # type: ignore[assignment]
                if delta is None:
                    delta = count_fp(v)
                    if type(v) is str and len(cache.counts) < cache.max_counts:
                        cache.counts[v] = delta
            side = msg["side"]  # type: ignore[index]
            if side != "yes" and side != "no":
                side = f.side_of(side)
            v = msg.get("ts_ms")  # type: ignore[union-attr]
            if type(v) is int:
                ts = v * 1000
            elif v is not None:
                ts = ts_ms_to_us(v)
            else:
                v = msg.get("ts")  # type: ignore[union-attr]
                # legacy2025 RFC 3339 ("2026-05-28T20:26:40.000005000Z"). The fast path of
                # units.rfc3339_to_us, inlined with a per-connection cache: a delta in the same
                # whole second as this connection's previous one (nearly all of them) costs a
                # slice compare and its fraction. The first of each second goes to the full
                # parser, which validates everything and gives the second's base; seconds and
                # other shapes take the general legacy rule.
                head, base = self._second
                if v is None:  # both are optional: keep the delta, stamped when it arrived
                    ts = rx
                    if out is None:
                        out = []
                    out.append(MissingTimestamp(sid, ticker, rx))
                elif (
                    type(v) is str
                    and v[:19] == head
                    and v[-1:] == "Z"
                    and v[19:20] == "."
                    and (frac := v[20:-1]).isdigit()
                    and frac.isascii()
                ):
                    # ns are below our unit: truncated
                    ts = base + (int(frac[:6]) if len(frac) >= 6 else int(frac.ljust(6, "0")))
                elif type(v) is str and v[-1:] == "Z":
                    ts = rfc3339_to_us(v)
                    self._second = (v[:19], ts - ts % 1_000_000)  # "Z": no offset to undo
                else:
                    ts = legacy_ts_to_us(v)
                # cut to whole ms like ts_ms (data-model.md: one precision for every exchange
                # time, so both payload versions give one delta the same key; a receive-time
                # stand-in keeps the column's precision too)
                ts -= ts % 1000
        except (KeyError, TypeError, AttributeError, UnitError) as exc:
            return self._reject(out or [], exc, raw, sid, msg, "orderbook_delta", rx)
        if self.profile is None:
            self._note_profile(msg)  # type: ignore[arg-type]
        row = _new(DeltaRow, (ticker, ts, side, price, delta, 0, seq, sid, rx, None))
        if out is None:
            return [row]
        out.append(row)
        return out

    def _snapshot(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        out, sid, seq, keep = self._envelope(obj, raw, rx, "orderbook_snapshot", True)
        if not keep:
            return out
        msg = obj.get("msg")
        try:
            ticker = f.req_str(msg["market_ticker"], "market_ticker")  # type: ignore[index]
            yes, no = f.book_sides(msg, "yes_dollars_fp", "no_dollars_fp")  # type: ignore[arg-type]
            # A WS snapshot has no exchange time: it is the book as of this seq, received now.
            v = msg.get("ts_ms")  # type: ignore[union-attr]
            ts = ts_ms_to_us(v) if v is not None else rx
        except (KeyError, TypeError, AttributeError, UnitError) as exc:
            return self._reject(out, exc, raw, sid, msg, "orderbook_snapshot", rx)
        if self.profile is None:
            self._note_profile(msg)  # type: ignore[arg-type]
        # A top-level id means this answers our get_snapshot command: a resync.
        source = "resync" if obj.get("id") is not None else "ws"
        out.append(SnapshotRow(ticker, ts, source, yes, no, seq, None, None, rx))
        return out

    def _trade(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        # The next seq of a known sid (nearly every trade) skips the general envelope.
        sid = obj.get("sid")
        seq = obj.get("seq")
        if type(sid) is int and type(seq) is int and self._last_seq.get(sid) == seq - 1:
            self.frame_sid = sid
            self._last_seq[sid] = seq
            self._last_at[sid] = rx
            out: list[DecodedEvent] = []
        else:
            out, sid, seq, keep = self._envelope(obj, raw, rx, "trade", False)
            if not keep:
                return out
        msg = obj.get("msg")
        try:
            ticker = f.req_str(msg["market_ticker"], "market_ticker")  # type: ignore[index]
            # fp2026 fast path: prices and count from the value cache (3 conversions -> 3 dict
            # hits, ~1/3 of a trade's decode cost; bench/decode.py). Cached values were
            # converted cleanly but are range-checked here like price_of/trade_fields do.
            cache = self._cache
            yv = msg.get("yes_price_dollars")  # type: ignore[union-attr]
            nv = msg.get("no_price_dollars")  # type: ignore[union-attr]
            cv = msg.get("count_fp")  # type: ignore[union-attr]
            prices = cache.prices
            yes = prices.get(yv) if type(yv) is str else None  # type: ignore[assignment]
            no = prices.get(nv) if type(nv) is str else None  # type: ignore[assignment]
            count = cache.counts.get(cv) if type(cv) is str else None  # type: ignore[assignment]
            if (
                yes is not None
                and no is not None
                and count is not None
                and 0 <= yes <= f.PRICE_MAX
                and 0 <= no <= f.PRICE_MAX
                and count > 0
            ):
                tid = f.uuid_str(msg["trade_id"])  # type: ignore[index]
                ts_side = f.opt_side(msg.get("taker_side"), "taker_side")  # type: ignore[union-attr]
                out_side = f.opt_str(msg.get("taker_outcome_side"), "taker_outcome_side")  # type: ignore[union-attr]
                book_side = f.opt_str(msg.get("taker_book_side"), "taker_book_side")  # type: ignore[union-attr]
                block = f.opt_bool(msg.get("is_block_trade"), "is_block_trade")  # type: ignore[union-attr]
            elif (
                yv is None
                and nv is None
                and cv is None
                and type(yi := msg.get("yes_price")) is int  # type: ignore[union-attr]
                and type(ni := msg.get("no_price")) is int  # type: ignore[union-attr]
                and type(ci := msg.get("count")) is int  # type: ignore[union-attr]
                and 0 <= yi <= 100
                and 0 <= ni <= 100
                and ci > 0
            ):
                # legacy2025 fast path: integer cents and contracts, converted inline as in
                # the delta path (trade_fields took ~2.5x a delta's whole decode). Any other
                # shape or value (strings, bools, out of range) takes trade_fields, which
                # converts or rejects it with the precise reason.
                yes, no, count = yi * 100, ni * 100, ci * 100
                tid = f.uuid_str(msg["trade_id"])  # type: ignore[index]
                ts_side = f.opt_side(msg.get("taker_side"), "taker_side")  # type: ignore[union-attr]
                out_side = f.opt_str(msg.get("taker_outcome_side"), "taker_outcome_side")  # type: ignore[union-attr]
                book_side = f.opt_str(msg.get("taker_book_side"), "taker_book_side")  # type: ignore[union-attr]
                block = f.opt_bool(msg.get("is_block_trade"), "is_block_trade")  # type: ignore[union-attr]
            else:
                tid, yes, no, count, ts_side, out_side, book_side, block = f.trade_fields(msg)  # type: ignore[arg-type]
                if type(yv) is str and len(prices) < cache.max_prices:
                    prices[yv] = yes
                if type(nv) is str and len(prices) < cache.max_prices:
                    prices[nv] = no
                if type(cv) is str and len(cache.counts) < cache.max_counts:
                    cache.counts[cv] = count
            v = msg.get("ts_ms")  # type: ignore[union-attr]
            if v is None:
                v = msg["ts"]  # type: ignore[index]
                # legacy int seconds are whole ms already; strings go the general way
                ts = v * 1_000_000 if type(v) is int else to_ms_precision(legacy_ts_to_us(v))
            else:
                ts = v * 1000 if type(v) is int else ts_ms_to_us(v)
        except (KeyError, TypeError, AttributeError, UnitError) as exc:
            return self._reject(out, exc, raw, sid, msg, "trade", rx)
        if self.profile is None:
            self._note_profile(msg)  # type: ignore[arg-type]
        out.append(
            _new(
                TradeRow,
                (tid, ticker, ts, yes, no, count, ts_side, out_side, book_side, block, "ws", rx),
            )
        )
        return out

    def _ticker(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        # The ticker channel has no seq (loss is undetectable; REST reconciliation covers it).
        out, sid, _seq, keep = self._envelope(obj, raw, rx, "ticker", False)
        if not keep:
            return out
        msg = obj.get("msg")
        try:
            ticker = f.req_str(msg["market_ticker"], "market_ticker")  # type: ignore[index]
            v = msg.get("ts_ms")  # type: ignore[union-attr]
            if v is not None:
                ts = ts_ms_to_us(v)
            elif "ts" in msg:  # type: ignore[operator]
                ts = to_ms_precision(legacy_ts_to_us(msg["ts"]))  # type: ignore[index]
            else:
                ts = to_ms_precision(rfc3339_to_us(msg["time"]))  # type: ignore[index]
            yes_bid = f.opt_price(msg, "yes_bid_dollars", "yes_bid")  # type: ignore[arg-type]
            yes_ask = f.opt_price(msg, "yes_ask_dollars", "yes_ask")  # type: ignore[arg-type]
            price = f.opt_price(msg, "price_dollars", "price")  # type: ignore[arg-type]
            volume = f.opt_count(msg, "volume_fp", "volume")  # type: ignore[arg-type]
            oi = f.opt_count(msg, "open_interest_fp", "open_interest")  # type: ignore[arg-type]
            v = msg.get("dollar_volume")  # type: ignore[union-attr]
            dvol = None if v is None else whole_int(v)
            v = msg.get("dollar_open_interest")  # type: ignore[union-attr]
            doi = None if v is None else whole_int(v)
        except (KeyError, TypeError, AttributeError, UnitError) as exc:
            return self._reject(out, exc, raw, sid, msg, "ticker", rx)
        h = ticker_content_hash(ticker, ts, yes_bid, yes_ask, price, volume, oi, dvol, doi)
        out.append(TickerRow(ticker, ts, yes_bid, yes_ask, price, volume, oi, dvol, doi, h, rx))
        return out

    def _lifecycle(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        kind: str = obj["type"]
        out, sid, seq, keep = self._envelope(obj, raw, rx, kind, False)
        if not keep:
            return out
        msg = obj.get("msg")
        key = _LIFECYCLE_KEY[kind]
        try:
            ticker = f.req_str(msg[key], key)  # type: ignore[index]
            et = f.opt_str(msg.get("event_type"), "event_type")  # type: ignore[union-attr]
            if kind == "market_lifecycle_v2" and et is None:
                raise KeyError("event_type")
        except (KeyError, TypeError, AttributeError, UnitError) as exc:
            return self._reject(out, exc, raw, sid, msg, kind, rx, key)
        out.append(Lifecycle(kind, ticker, et, msg, sid, seq, rx))  # type: ignore[arg-type]
        return out

    # -- command replies ----------------------------------------------------------------------

    def _subscribed(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        msg = obj.get("msg")
        cid = _int_or_none(obj.get("id"))
        if msg is None:  # old servers: {"type":"subscribed","id":1}
            return [Subscribed(cid, None, None)]
        if type(msg) is not dict:
            return [Rejected(BAD_ENVELOPE, raw, "msg", frame_type="subscribed", received_at=rx)]
        sid = msg.get("sid", obj.get("sid"))
        channel = msg.get("channel")
        if type(sid) is not int or (channel is not None and type(channel) is not str):
            return [
                Rejected(BAD_ENVELOPE, raw, "sid/channel", frame_type="subscribed", received_at=rx)
            ]
        # A fresh subscription counts from 1: expecting 1 lets us see a lost first frame.
        self._last_seq[sid] = 0
        self._last_at[sid] = rx
        if channel is not None:
            self._channels[sid] = channel
        return [Subscribed(cid, channel, sid)]

    def _gap(self, sid: int, expected: int, seq: int, frame_type: str, rx: int) -> SeqGap:
        return SeqGap(sid, expected, seq, frame_type, rx, self._last_at.get(sid), self._channels.get(sid))

    def _ended_seq(self, sid: int, seq: int, rx: int) -> list[DecodedEvent]:
        """``unsubscribed``'s seq: frames beyond ``last + 1`` were certainly lost (under both
        readings of that seq); the sid ends here, so this is the last chance to say so."""
        last = self._last_seq.get(sid)
        if last is not None and seq > last + 1:
            return [self._gap(sid, last + 1, seq, "unsubscribed", rx)]
        return []

    def _unsubscribed(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        sid = obj.get("sid")
        seq = obj.get("seq")
        if (sid is not None and type(sid) is not int) or (seq is not None and type(seq) is not int):
            return [
                Rejected(BAD_ENVELOPE, raw, "sid/seq", frame_type="unsubscribed", received_at=rx)
            ]
        out: list[DecodedEvent] = []
        if sid is not None:
            if seq is not None:
                out = self._ended_seq(sid, seq, rx)
            self.forget(sid)
        out.append(Unsubscribed(_int_or_none(obj.get("id")), sid, seq))
        return out

    def _ok(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        cid = _int_or_none(obj.get("id"))
        msg = obj.get("msg")
        if type(msg) is list:  # list_subscriptions
            subs: list[tuple[str, int]] = []
            for item in msg:
                if type(item) is dict and type(item.get("sid")) is int:
                    subs.append((str(item.get("channel", "")), item["sid"]))
            return [Ok(cid, subscriptions=tuple(subs))]
        sid = obj.get("sid")
        seq = obj.get("seq")
        if (sid is not None and type(sid) is not int) or (seq is not None and type(seq) is not int):
            return [Rejected(BAD_ENVELOPE, raw, "sid/seq", frame_type="ok", received_at=rx)]
        tickers = msg.get("market_tickers") if type(msg) is dict else None
        if tickers is None:
            tickers = obj.get("market_tickers")  # older ticker-channel acks put it top-level
        mt = tuple(t for t in tickers if type(t) is str) if type(tickers) is list else None
        # The seq is reported, never applied: see "Sequence policy" in the module docstring.
        return [Ok(cid, sid, seq, mt)]

    def _error(self, obj: dict[str, Any], raw: bytes | str, rx: int) -> list[DecodedEvent]:
        msg = obj.get("msg")
        if type(msg) is not dict:
            # Tolerate the flat/odd shapes: keep what can be read.
            msg = {"msg": msg} if type(msg) is str else {}
        code = msg.get("code", obj.get("code"))
        text = msg.get("msg", msg.get("message", ""))
        tickers = msg.get("market_tickers")
        if tickers is None and type(msg.get("market_ticker")) is str:
            tickers = [msg["market_ticker"]]
        mt = tuple(t for t in tickers if type(t) is str) if type(tickers) is list else None
        return [
            ErrorFrame(
                _int_or_none(obj.get("id")),
                _int_or_none(code),
                text if type(text) is str else str(text),
                _int_or_none(obj.get("sid")),
                mt,
            )
        ]
