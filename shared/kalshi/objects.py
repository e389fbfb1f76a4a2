"""REST objects -> rows (sans-I/O): trades, orderbooks, markets, events, series.

Every function takes the decoded JSON object and the time it was received, and returns a row or
a ``Rejected`` (same reason vocabulary as the WS decoder, ``decode.REJECT_REASONS``); none raises.
Fields are read by key presence: fp2026 names first, legacy integer names as fallback.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import _fields as f
from .decode import BAD_TYPE, MISSING_FIELD
from .models import EventRow, MarketRow, Rejected, SeriesRow, SnapshotRow, TradeRow
from .units import UnitError, rfc3339_to_us, to_ms_precision

__all__ = [
    "event_from_rest",
    "market_from_rest",
    "series_from_rest",
    "snapshot_from_rest",
    "trade_from_rest",
]


def _rejected(exc: Exception, obj: Any, rx: int, frame_type: str, ticker_key: str) -> Rejected:
    if isinstance(exc, UnitError):
        reason, detail = exc.reason, exc.detail
    elif isinstance(exc, KeyError):
        reason, detail = MISSING_FIELD, str(exc.args[0])[:40] if exc.args else ""
    else:
        reason, detail = BAD_TYPE, type(exc).__name__
    try:
        raw: bytes | str = orjson.dumps(obj)
    except TypeError:
        raw = repr(obj)[:2000]
    ticker = obj.get(ticker_key) if type(obj) is dict else None
    return Rejected(
        reason,
        raw,
        detail,
        ticker=ticker if type(ticker) is str else None,
        frame_type=frame_type,
        received_at=rx,
    )


def _opt_time(obj: dict[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if v is None or v == "":
        return None
    return rfc3339_to_us(v)


def _raw(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def trade_from_rest(obj: Any, received_at_us: int) -> TradeRow | Rejected:
    """One element of ``GET /markets/trades`` ``trades``. exchange_ts = ``created_time``
    truncated to milliseconds (the precision WS ``ts_ms`` carries), source ``'rest'``."""
    try:
        ticker = f.req_str(obj["ticker"], "ticker")
        tid, yes, no, count, ts_side, out_side, book_side, block = f.trade_fields(obj)
        ts = to_ms_precision(rfc3339_to_us(obj["created_time"]))
    except (KeyError, TypeError, AttributeError, UnitError) as exc:
        return _rejected(exc, obj, received_at_us, "rest_trade", "ticker")
    return TradeRow(
        tid, ticker, ts, yes, no, count, ts_side, out_side, book_side, block, "rest", received_at_us
    )


def snapshot_from_rest(
    body: Any, ticker: str, received_at_us: int, snapshot_ts: int | None = None
) -> SnapshotRow | Rejected:
    """A REST orderbook -> ``SnapshotRow(source='rest')``.

    ``body`` may be the whole response (``{"orderbook_fp": {...}}`` or legacy
    ``{"orderbook": {...}}``), one element of ``/markets/orderbooks``
    (``{"ticker", "orderbook_fp"}``),
    or the inner book object. REST books carry no time, so snapshot_ts defaults to received_at.
    Their place in the WS delta stream is unknown: last_delta_* stay None.
    """
    try:
        if type(body) is not dict:
            raise TypeError("body")
        ob = body
        for key in ("orderbook_fp", "orderbook"):
            if key in body:
                ob = body[key]
                break
        if ob is None:  # legacy servers sent null for an empty book
            ob = {}
        if type(ob) is not dict:
            raise UnitError(BAD_TYPE, "orderbook")
        yes, no = f.book_sides(ob, "yes_dollars", "no_dollars")
    except (KeyError, TypeError, AttributeError, UnitError) as exc:
        return _rejected(exc, body, received_at_us, "rest_orderbook", "ticker")
    ts = received_at_us if snapshot_ts is None else snapshot_ts
    return SnapshotRow(ticker, ts, "rest", yes, no, None, None, None, received_at_us)


def market_from_rest(
    obj: Any, received_at_us: int, series_ticker: str | None = None
) -> MarketRow | Rejected:
    """A ``Market`` object. The Market schema has no series ticker: pass it when known (from the
    event); an explicit ``series_ticker`` key in the object wins. exchange_updated_ts comes from
    ``updated_time``; expiration_time from ``expiration_time`` else ``latest_expiration_time``."""
    try:
        ticker = f.req_str(obj["ticker"], "ticker")
        exp = _opt_time(obj, "expiration_time")
        if exp is None:
            exp = _opt_time(obj, "latest_expiration_time")
        row = MarketRow(
            ticker,
            f.opt_str(obj.get("event_ticker"), "event_ticker"),
            f.opt_str(obj.get("series_ticker", series_ticker), "series_ticker"),
            f.opt_str(obj.get("market_type"), "market_type"),
            f.opt_str(obj.get("title"), "title"),
            f.opt_str(obj.get("subtitle", obj.get("yes_sub_title")), "subtitle"),
            f.opt_str(obj.get("status"), "status"),
            _opt_time(obj, "open_time"),
            _opt_time(obj, "close_time"),
            exp,
            f.opt_str(obj.get("result"), "result"),
            _opt_time(obj, "updated_time"),
            _raw(obj),
            received_at_us,
            received_at_us,
        )
    except (KeyError, TypeError, AttributeError, UnitError) as exc:
        return _rejected(exc, obj, received_at_us, "rest_market", "ticker")
    return row


def event_from_rest(obj: Any, received_at_us: int) -> EventRow | Rejected:
    """An ``EventData`` object (nested ``markets`` are kept in raw; convert them separately)."""
    try:
        row = EventRow(
            f.req_str(obj["event_ticker"], "event_ticker"),
            f.opt_str(obj.get("series_ticker"), "series_ticker"),
            f.opt_str(obj.get("title"), "title"),
            f.opt_str(obj.get("sub_title"), "sub_title"),
            f.opt_str(obj.get("category"), "category"),
            f.opt_bool(obj.get("mutually_exclusive"), "mutually_exclusive"),
            f.opt_str(obj.get("status"), "status"),
            _opt_time(obj, "last_updated_ts"),
            _raw(obj),
            received_at_us,
            received_at_us,
        )
    except (KeyError, TypeError, AttributeError, UnitError) as exc:
        return _rejected(exc, obj, received_at_us, "rest_event", "event_ticker")
    return row


def series_from_rest(obj: Any, received_at_us: int) -> SeriesRow | Rejected:
    """A ``Series`` object (its key is ``ticker``)."""
    try:
        row = SeriesRow(
            f.req_str(obj["ticker"], "ticker"),
            f.opt_str(obj.get("title"), "title"),
            f.opt_str(obj.get("category"), "category"),
            f.opt_str(obj.get("frequency"), "frequency"),
            _opt_time(obj, "last_updated_ts"),
            _raw(obj),
            received_at_us,
            received_at_us,
        )
    except (KeyError, TypeError, AttributeError, UnitError) as exc:
        return _rejected(exc, obj, received_at_us, "rest_series", "ticker")
    return row
