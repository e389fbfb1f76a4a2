"""What the deduplicator copies, per table: columns with their exact types, identity key, merge rule.

The same column list drives three things that must agree byte for byte: the gatherer-side
``COPY (SELECT col::type ...) TO STDOUT (FORMAT BINARY)``, the production staging table, and the
``INSERT ... SELECT``. Binary COPY carries no type information (PostgreSQL trusts the receiver
to expect the sender's types), so every column is cast to the type written here on the gatherer
side and declared with it in staging; ``tests/deduplicator/test_tables.py`` checks these types
against both migrated schemas.

Merge rules (data-model.md, hardening 1, 4, 7):

- ``trades``: identity is ``trade_id`` alone, guarded by the unpartitioned ``trade_ids`` table;
  the first-seen row (in the delivering gatherer's ingest order) wins.
- ``event``: append-only observations, ``ON CONFLICT (identity key) DO NOTHING``.
- ``deltas``: like ``event``, except that a known ``ts_rank`` replaces a NULL one (a gatherer that
  saw the whole millisecond knows the exchange's order where another did not).
- ``coverage``: ``(gatherer_id, event_id)``, updated in place on the gatherer; the version with the
  newer ``updated_at`` wins.
- ``reference``: latest state; ``(exchange_updated_ts, received_at)`` newer wins (NULL as -1),
  never regressing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

MergeKind = Literal["trades", "event", "deltas", "coverage", "reference"]


@dataclass(frozen=True)
class TableSpec:
    """One synced table. ``columns`` are the gatherer columns copied (no ingest_* columns)."""

    name: str
    kind: MergeKind
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    # Gatherer receive time of a row (µs, gatherer clock): lag and sync_acks.merged_through.
    time_column: str = "received_at"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def staging(self) -> str:
        return f"_stage_{self.name}"

    @property
    def adds_gatherer_id(self) -> bool:
        """Whether production's ``gatherer_id`` is the delivering gatherer (not a copied column)."""
        return "gatherer_id" not in self.column_names


_TEXT, _BIG, _INT, _SMALL, _BOOL, _UUID, _JSON = "text", "bigint", "integer", "smallint", "boolean", "uuid", "jsonb"

TRADES = TableSpec("trades", "trades", (
    ("trade_id", _UUID), ("ticker", _TEXT), ("exchange_ts", _BIG), ("yes_price", _INT), ("no_price", _INT),
    ("count", _BIG), ("taker_side", _TEXT), ("taker_outcome_side", _TEXT), ("taker_book_side", _TEXT),
    ("is_block_trade", _BOOL), ("source", _TEXT), ("received_at", _BIG)),
    key=("ticker", "exchange_ts", "trade_id"))

ORDERBOOK_DELTAS = TableSpec("orderbook_deltas", "deltas", (
    ("ticker", _TEXT), ("exchange_ts", _BIG), ("side", _TEXT), ("price", _INT), ("delta", _BIG),
    ("occurrence", _SMALL), ("seq", _BIG), ("received_at", _BIG), ("ts_rank", _SMALL)),
    key=("ticker", "exchange_ts", "side", "price", "delta", "occurrence"))

ORDERBOOK_SNAPSHOTS = TableSpec("orderbook_snapshots", "event", (
    ("ticker", _TEXT), ("snapshot_ts", _BIG), ("source", _TEXT), ("yes_levels", _JSON), ("no_levels", _JSON),
    ("seq", _BIG), ("last_delta_ts", _BIG), ("last_delta_occurrence", _SMALL), ("received_at", _BIG),
    ("cut_kind", _TEXT), ("cut_ts", _BIG), ("cut_side", _TEXT), ("cut_price", _INT), ("cut_delta", _BIG),
    ("cut_occurrence", _SMALL)),
    key=("ticker", "snapshot_ts", "source", "gatherer_id"))

TICKERS = TableSpec("tickers", "event", (
    ("ticker", _TEXT), ("exchange_ts", _BIG), ("yes_bid", _INT), ("yes_ask", _INT), ("price", _INT),
    ("volume", _BIG), ("open_interest", _BIG), ("dollar_volume", _BIG), ("dollar_open_interest", _BIG),
    ("content_hash", _BIG), ("received_at", _BIG)),
    key=("ticker", "exchange_ts", "content_hash"))

COVERAGE_EVENTS = TableSpec("coverage_events", "coverage", (
    ("gatherer_id", _TEXT), ("event_id", _UUID), ("scope", _TEXT), ("ticker", _TEXT), ("kind", _TEXT),
    ("window_start", _BIG), ("window_end", _BIG), ("recovered", _BOOL), ("detail", _JSON),
    ("created_at", _BIG), ("updated_at", _BIG)),
    key=("gatherer_id", "event_id"), time_column="updated_at")

MARKETS = TableSpec("markets", "reference", (
    ("ticker", _TEXT), ("event_ticker", _TEXT), ("series_ticker", _TEXT), ("market_type", _TEXT),
    ("title", _TEXT), ("subtitle", _TEXT), ("status", _TEXT), ("open_time", _BIG), ("close_time", _BIG),
    ("expiration_time", _BIG), ("result", _TEXT), ("exchange_updated_ts", _BIG), ("raw", _JSON),
    ("received_at", _BIG), ("updated_at", _BIG)),
    key=("ticker",))

EVENTS = TableSpec("events", "reference", (
    ("event_ticker", _TEXT), ("series_ticker", _TEXT), ("title", _TEXT), ("sub_title", _TEXT),
    ("category", _TEXT), ("mutually_exclusive", _BOOL), ("status", _TEXT), ("exchange_updated_ts", _BIG),
    ("raw", _JSON), ("received_at", _BIG), ("updated_at", _BIG)),
    key=("event_ticker",))

SERIES = TableSpec("series", "reference", (
    ("series_ticker", _TEXT), ("title", _TEXT), ("category", _TEXT), ("frequency", _TEXT),
    ("exchange_updated_ts", _BIG), ("raw", _JSON), ("received_at", _BIG), ("updated_at", _BIG)),
    key=("series_ticker",))

SPECS: MappingProxyType[str, TableSpec] = MappingProxyType({s.name: s for s in (
    TRADES, ORDERBOOK_DELTAS, ORDERBOOK_SNAPSHOTS, TICKERS, COVERAGE_EVENTS, MARKETS, EVENTS, SERIES)})
