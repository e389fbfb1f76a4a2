"""The Kalshi protocol as a sans-I/O layer: bytes and JSON objects in, typed rows and events out.

Public names (import from here or from the module):

- ``decode``: ``Decoder`` (one per WebSocket connection), ``ValueCache``, ``REJECT_REASONS``
- ``objects``: REST object converters (``trade_from_rest``, ``snapshot_from_rest``, ...)
- ``models``: rows (``TradeRow``, ``DeltaRow``, ``SnapshotRow``, ``TickerRow``, ``MarketRow``,
  ``EventRow``, ``SeriesRow``, ``CoverageRow``) and events (``Subscribed``, ``Unsubscribed``,
  ``Ok``,
  ``ErrorFrame``, ``SeqGap``, ``Duplicate``, ``Lifecycle``, ``MissingTimestamp``, ``Rejected``),
  ``Profile``
- ``book``: ``Book``, ``BookDiff``
- ``auth``: ``load_private_key``, ``sign_headers``, ``KeyLoadError``
- ``units``: exact conversions and ``UnitError``
"""

from .auth import KeyLoadError, load_private_key, sign_headers
from .book import Book, BookDiff
from .decode import REJECT_REASONS, Decoder, ValueCache
from .models import (
    CoverageRow,
    DeltaRow,
    Duplicate,
    ErrorFrame,
    EventRow,
    Lifecycle,
    MarketRow,
    MicroTs,
    MissingTimestamp,
    Ok,
    Profile,
    Rejected,
    SeqGap,
    SeriesRow,
    Sid,
    SnapshotRow,
    Subscribed,
    Ticker,
    TickerRow,
    TradeRow,
    Unsubscribed,
)
from .objects import (
    event_from_rest,
    market_from_rest,
    series_from_rest,
    snapshot_from_rest,
    trade_from_rest,
)

__all__ = [
    "REJECT_REASONS",
    "Book",
    "BookDiff",
    "CoverageRow",
    "Decoder",
    "DeltaRow",
    "Duplicate",
    "ErrorFrame",
    "EventRow",
    "KeyLoadError",
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
    "ValueCache",
    "event_from_rest",
    "load_private_key",
    "market_from_rest",
    "series_from_rest",
    "sign_headers",
    "snapshot_from_rest",
    "trade_from_rest",
]
