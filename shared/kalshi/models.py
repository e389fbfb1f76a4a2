"""Typed rows and decoder events of the Kalshi sans-I/O layer.

Rows are ``NamedTuple``s whose fields are exactly the gatherer table's columns minus
``ingest_xid``/``ingest_seq`` (the database fills those), in table order. A NamedTuple is a
tuple, so the writer hands it to binary COPY with no conversion, and building one is the cheapest
typed record CPython offers (measured against slots dataclasses in bench/).

Units: prices int dollars x 10,000; sizes int contracts x 100; times int µs since epoch.

Decoder events that are not rows are frozen slots dataclasses (they are rare, and tuple equality
between unrelated NamedTuples would be a trap there).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NewType

__all__ = [
    "ControlEvent",
    "CoverageRow",
    "DecodedEvent",
    "DeltaRow",
    "Duplicate",
    "ErrorFrame",
    "EventRow",
    "Level",
    "Lifecycle",
    "MarketRow",
    "MicroTs",
    "MissingTimestamp",
    "Ok",
    "Profile",
    "Rejected",
    "SeqGap",
    "SeriesRow",
    "Sid",
    "SnapshotRow",
    "Subscribed",
    "Ticker",
    "TickerRow",
    "TradeRow",
    "Unsubscribed",
    "ticker_content_hash",
]

Ticker = NewType("Ticker", str)
Sid = NewType("Sid", int)
MicroTs = NewType("MicroTs", int)

#: (price dollars x 10,000, size contracts x 100)
Level = tuple[int, int]


class Profile(enum.Enum):
    """Wire shape of a server: ``fp2026`` (``*_dollars``/``*_fp``/``ts_ms``) or ``legacy2025``
    (integer cents and counts, ``ts`` seconds or RFC 3339). Decoding goes by key presence; the
    profile is a hint and what the decoder reports having seen."""

    FP2026 = "fp2026"
    LEGACY2025 = "legacy2025"


# ---------------------------------------------------------------------------------------------
# Rows (one per gatherer table)


class TradeRow(NamedTuple):
    """``trades``. exchange_ts is normalised to millisecond precision (in µs)."""

    trade_id: str
    ticker: str
    exchange_ts: int
    yes_price: int
    no_price: int
    count: int  # type: ignore[assignment]  # the column is "count"; shadows tuple.count
    taker_side: str | None
    taker_outcome_side: str | None
    taker_book_side: str | None
    is_block_trade: bool | None
    source: str  # 'ws' | 'rest'
    received_at: int


class DeltaRow(NamedTuple):
    """``orderbook_deltas``. exchange_ts at millisecond precision (in µs), whichever payload
    version carried it. The decoder leaves occurrence 0 and ts_rank None; the router sets
    both (``ts_rank``: position among the market's deltas of the same exchange_ts, in the
    exchange's order; None when this gatherer did not see the whole millisecond)."""

    ticker: str
    exchange_ts: int
    side: str  # 'yes' | 'no'
    price: int
    delta: int
    occurrence: int
    seq: int | None
    sid: int | None
    received_at: int
    ts_rank: int | None = None


class SnapshotRow(NamedTuple):
    """``orderbook_snapshots``. Levels ascending by price, as (price, size) pairs."""

    ticker: str
    snapshot_ts: int
    source: str  # 'ws' | 'rest' | 'resync'
    yes_levels: tuple[Level, ...]
    no_levels: tuple[Level, ...]
    seq: int | None
    last_delta_ts: int | None
    last_delta_occurrence: int | None
    received_at: int
    # The snapshot's place in the delta stream (data-model.md hardening 6; set by the router):
    # 'last' = the cut_* delta is the last it includes, 'next' = the first it does not, 'quiet'
    # = nothing followed for a while, None = unknown (REST snapshots: always None).
    cut_kind: str | None = None
    cut_ts: int | None = None
    cut_side: str | None = None
    cut_price: int | None = None
    cut_delta: int | None = None
    cut_occurrence: int | None = None


class TickerRow(NamedTuple):
    """``tickers``. exchange_ts at millisecond precision (in µs); dollar_volume /
    dollar_open_interest are whole dollars (hardening 7)."""

    ticker: str
    exchange_ts: int
    yes_bid: int | None
    yes_ask: int | None
    price: int | None
    volume: int | None
    open_interest: int | None
    dollar_volume: int | None
    dollar_open_interest: int | None
    content_hash: int
    received_at: int


def ticker_content_hash(
    ticker: str,
    exchange_ts: int,
    yes_bid: int | None,
    yes_ask: int | None,
    price: int | None,
    volume: int | None,
    open_interest: int | None,
    dollar_volume: int | None,
    dollar_open_interest: int | None,
) -> int:
    """Signed 64-bit BLAKE2b of the row's values: the same on every gatherer and process
    (Python's ``hash()`` is salted per process, so it cannot be used)."""
    key = "|".join(
        "" if v is None else str(v)
        for v in (
            ticker,
            exchange_ts,
            yes_bid,
            yes_ask,
            price,
            volume,
            open_interest,
            dollar_volume,
            dollar_open_interest,
        )
    )
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class MarketRow(NamedTuple):
    """``markets`` (reference, newest-wins on (exchange_updated_ts, received_at)). raw is JSON."""

    ticker: str
    event_ticker: str | None
    series_ticker: str | None
    market_type: str | None
    title: str | None
    subtitle: str | None
    status: str | None
    open_time: int | None
    close_time: int | None
    expiration_time: int | None
    result: str | None
    exchange_updated_ts: int | None
    raw: str
    received_at: int
    updated_at: int


class EventRow(NamedTuple):
    """``events`` (reference)."""

    event_ticker: str
    series_ticker: str | None
    title: str | None
    sub_title: str | None
    category: str | None
    mutually_exclusive: bool | None
    status: str | None
    exchange_updated_ts: int | None
    raw: str
    received_at: int
    updated_at: int


class SeriesRow(NamedTuple):
    """``series`` (reference)."""

    series_ticker: str
    title: str | None
    category: str | None
    frequency: str | None
    exchange_updated_ts: int | None
    raw: str
    received_at: int
    updated_at: int


class CoverageRow(NamedTuple):
    """``coverage_events`` (upserted by event_id, a UUID string). detail is a JSON object text."""

    event_id: str
    gatherer_id: str
    scope: str  # 'market' | 'connection' | 'process'
    ticker: str | None
    # 'seq_gap' | 'ws_down' | 'process_down' | 'resync' | 'trade_backfill' | 'book_mismatch'
    kind: str
    window_start: int
    window_end: int | None
    recovered: bool
    detail: str
    created_at: int
    updated_at: int


# ---------------------------------------------------------------------------------------------
# Decoder events that are not rows


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Reply to ``subscribe``: one per channel. sid/channel are None on old servers that answered
    ``{"type":"subscribed","id":1}`` without ``msg``."""

    id: int | None
    channel: str | None
    sid: int | None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """Reply to ``unsubscribe``, per sid; seq is the last seq of that sid."""

    id: int | None
    sid: int | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class Ok:
    """``ok``: after update_subscription (sid, seq, the full market list after the update) or
    list_subscriptions (``subscriptions`` = ((channel, sid), ...))."""

    id: int | None
    sid: int | None = None
    seq: int | None = None
    market_tickers: tuple[str, ...] | None = None
    subscriptions: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """``error``. code is Kalshi's integer code (10 and 25 are terminal: resubscribe)."""

    id: int | None
    code: int | None
    msg: str
    sid: int | None = None
    market_tickers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SeqGap:
    """``seq`` jumped on a sid: messages ``expected .. got-1`` were lost. Emitted before the frame
    that revealed the gap (which is still decoded). frame_type/channel say which channel lost
    data; last_received_at is when the previous frame on that sid arrived (start of the hole)."""

    sid: int
    expected: int
    got: int
    frame_type: str = ""
    received_at: int = 0
    last_received_at: int | None = None
    channel: str | None = None  # the sid's channel, when its `subscribed` reply was seen


@dataclass(frozen=True, slots=True)
class Duplicate:
    """``seq`` at or below the last one seen on the sid: replay; the frame was dropped."""

    sid: int
    seq: int


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A ``market_lifecycle_v2`` / ``event_lifecycle`` / ``event_fee_update`` frame for the market
    registry. ticker is the market ticker (or event ticker for event frames); msg is the decoded
    JSON object, unmodified."""

    kind: str
    ticker: str
    event_type: str | None
    msg: dict[str, Any]
    sid: int | None
    seq: int | None
    received_at: int


@dataclass(frozen=True, slots=True)
class MissingTimestamp:
    """An orderbook delta carried neither ``ts`` nor ``ts_ms`` (both optional in Kalshi's
    AsyncAPI). Emitted just before its ``DeltaRow``, whose exchange_ts is then the receive
    time: the delta is kept (no resync), and the substitution is counted."""

    sid: int
    ticker: str
    received_at: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that could not be used. reason is one of ``decode.REJECT_REASONS`` (a metric
    label); detail is a short human hint for the log line; raw is the frame as received.
    sid/ticker/frame_type are filled when they could be read, so the router can mark a book
    dirty when an orderbook frame is lost this way."""

    reason: str
    raw: bytes | str
    detail: str = ""
    sid: int | None = None
    ticker: str | None = None
    frame_type: str | None = None
    received_at: int = field(default=0)


ControlEvent = Subscribed | Unsubscribed | Ok | ErrorFrame
DecodedEvent = (
    TradeRow
    | DeltaRow
    | SnapshotRow
    | TickerRow
    | Subscribed
    | Unsubscribed
    | Ok
    | ErrorFrame
    | SeqGap
    | Duplicate
    | Lifecycle
    | MissingTimestamp
    | Rejected
)
