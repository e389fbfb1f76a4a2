"""What the archive stores per table: columns with PostgreSQL and Arrow types, day column, sort key.

One ``TableSpec`` drives the export query, the Parquet schema, the manifest's column list and the
import's staging, so all four agree. Units follow data-model.md and are kept as the exact integers
the database holds (no floats, no rescaling): ``*_ts``/``*_at``/``*_time``/``window_*`` are int64
microseconds since the Unix epoch, prices int32 dollars x 10,000, sizes int64 contracts x 100.
UUID columns become the Parquet ``UUID`` logical type and JSONB columns the ``JSON`` logical type
(the text PostgreSQL prints for the jsonb value, which re-parses to the same jsonb).

Event tables are archived per UTC day of their time column (``exchange_ts``; ``snapshot_ts`` for
``orderbook_snapshots``; ``window_start`` for ``coverage_events``). The reference tables
(``markets``, ``events``, ``series``) have no event time: ``date=D`` holds the whole table as it
stood when that day's export ran (a dated snapshot), sorted by its key.

``SCHEMA_VERSION`` goes into every manifest; bump it when a column list below changes, so an
import never reads a part with the wrong layout. Version 2 appended ``orderbook_deltas.ts_rank``
and ``orderbook_snapshots.cut_*`` (issue 19); a version-1 day still imports, with those NULL
(``readable_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = 2

PgType = Literal["text", "bigint", "integer", "smallint", "boolean", "uuid", "jsonb"]

_ARROW: MappingProxyType[str, pa.DataType] = MappingProxyType({
    "text": pa.string(), "bigint": pa.int64(), "integer": pa.int32(), "smallint": pa.int16(),
    "boolean": pa.bool_(), "uuid": pa.uuid(), "jsonb": pa.json_(),
})


@dataclass(frozen=True)
class Column:
    """One archived column; ``nullable`` mirrors the production schema's NOT NULL."""

    name: str
    pg_type: PgType
    nullable: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.pg_type]

    @property
    def is_text_like(self) -> bool:
        """Carried as text through COPY CSV (quoted, so an empty string is not NULL)."""
        return self.pg_type in ("text", "uuid", "jsonb")


@dataclass(frozen=True)
class TableSpec:
    """How one production table is archived.

    ``time_column`` is None for reference tables (dated full snapshots). ``sort_key`` is the
    complete identity order, ticker first, so parts and row groups are sorted by
    ``ticker, <time>`` and the order is total (deterministic output for the same data).
    """

    name: str
    columns: tuple[Column, ...]
    time_column: str | None
    sort_key: tuple[str, ...]
    # The production primary key (identity across gatherers); defaults to ``sort_key``.
    key: tuple[str, ...] = ()

    @property
    def identity(self) -> tuple[str, ...]:
        return self.key or self.sort_key

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])

    @property
    def is_snapshot(self) -> bool:
        return self.time_column is None

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _c(name: str, pg_type: PgType, nullable: bool = False) -> Column:
    return Column(name, pg_type, nullable)


TRADES = TableSpec("trades", (
    _c("trade_id", "uuid"), _c("ticker", "text"), _c("exchange_ts", "bigint"),
    _c("yes_price", "integer"), _c("no_price", "integer"), _c("count", "bigint"),
    _c("taker_side", "text", True), _c("taker_outcome_side", "text", True),
    _c("taker_book_side", "text", True), _c("is_block_trade", "boolean", True),
    _c("source", "text"), _c("received_at", "bigint"), _c("gatherer_id", "text"),
    _c("merged_at", "bigint")),
    time_column="exchange_ts", sort_key=("ticker", "exchange_ts", "trade_id"))

ORDERBOOK_DELTAS = TableSpec("orderbook_deltas", (
    _c("ticker", "text"), _c("exchange_ts", "bigint"), _c("side", "text"), _c("price", "integer"),
    _c("delta", "bigint"), _c("occurrence", "smallint"), _c("seq", "bigint", True),
    _c("received_at", "bigint"), _c("gatherer_id", "text"), _c("merged_at", "bigint"),
    _c("ts_rank", "smallint", True)),
    time_column="exchange_ts",
    sort_key=("ticker", "exchange_ts", "side", "price", "delta", "occurrence"))

ORDERBOOK_SNAPSHOTS = TableSpec("orderbook_snapshots", (
    _c("ticker", "text"), _c("snapshot_ts", "bigint"), _c("source", "text"),
    _c("yes_levels", "jsonb"), _c("no_levels", "jsonb"), _c("seq", "bigint", True),
    _c("last_delta_ts", "bigint", True), _c("last_delta_occurrence", "smallint", True),
    _c("received_at", "bigint"), _c("gatherer_id", "text"), _c("merged_at", "bigint"),
    _c("cut_kind", "text", True), _c("cut_ts", "bigint", True), _c("cut_side", "text", True),
    _c("cut_price", "integer", True), _c("cut_delta", "bigint", True),
    _c("cut_occurrence", "smallint", True)),
    time_column="snapshot_ts", sort_key=("ticker", "snapshot_ts", "source", "gatherer_id"))

TICKERS = TableSpec("tickers", (
    _c("ticker", "text"), _c("exchange_ts", "bigint"), _c("yes_bid", "integer", True),
    _c("yes_ask", "integer", True), _c("price", "integer", True), _c("volume", "bigint", True),
    _c("open_interest", "bigint", True), _c("dollar_volume", "bigint", True),
    _c("dollar_open_interest", "bigint", True), _c("content_hash", "bigint"),
    _c("received_at", "bigint"), _c("gatherer_id", "text"), _c("merged_at", "bigint")),
    time_column="exchange_ts", sort_key=("ticker", "exchange_ts", "content_hash"))

COVERAGE_EVENTS = TableSpec("coverage_events", (
    _c("gatherer_id", "text"), _c("event_id", "uuid"), _c("scope", "text"), _c("ticker", "text", True),
    _c("kind", "text"), _c("window_start", "bigint"), _c("window_end", "bigint", True),
    _c("recovered", "boolean"), _c("detail", "jsonb"), _c("created_at", "bigint"),
    _c("updated_at", "bigint"), _c("merged_at", "bigint")),
    time_column="window_start", sort_key=("ticker", "window_start", "gatherer_id", "event_id"),
    key=("gatherer_id", "event_id"))

SERIES = TableSpec("series", (
    _c("series_ticker", "text"), _c("title", "text", True), _c("category", "text", True),
    _c("frequency", "text", True), _c("exchange_updated_ts", "bigint", True), _c("raw", "jsonb"),
    _c("received_at", "bigint"), _c("updated_at", "bigint"), _c("gatherer_id", "text"),
    _c("merged_at", "bigint")),
    time_column=None, sort_key=("series_ticker",))

EVENTS = TableSpec("events", (
    _c("event_ticker", "text"), _c("series_ticker", "text", True), _c("title", "text", True),
    _c("sub_title", "text", True), _c("category", "text", True),
    _c("mutually_exclusive", "boolean", True), _c("status", "text", True),
    _c("exchange_updated_ts", "bigint", True), _c("raw", "jsonb"), _c("received_at", "bigint"),
    _c("updated_at", "bigint"), _c("gatherer_id", "text"), _c("merged_at", "bigint")),
    time_column=None, sort_key=("event_ticker",))

MARKETS = TableSpec("markets", (
    _c("ticker", "text"), _c("event_ticker", "text", True), _c("series_ticker", "text", True),
    _c("market_type", "text", True), _c("title", "text", True), _c("subtitle", "text", True),
    _c("status", "text", True), _c("open_time", "bigint", True), _c("close_time", "bigint", True),
    _c("expiration_time", "bigint", True), _c("result", "text", True),
    _c("exchange_updated_ts", "bigint", True), _c("raw", "jsonb"), _c("received_at", "bigint"),
    _c("updated_at", "bigint"), _c("gatherer_id", "text"), _c("merged_at", "bigint")),
    time_column=None, sort_key=("ticker",))

TABLES: MappingProxyType[str, TableSpec] = MappingProxyType({s.name: s for s in (
    TRADES, ORDERBOOK_DELTAS, ORDERBOOK_SNAPSHOTS, TICKERS, COVERAGE_EVENTS, MARKETS, EVENTS, SERIES)})

# Tables whose rows arrive continuously: their own sync cursors show whether a day is complete.
# The others (coverage_events, reference tables) can be quiet for hours, so readiness is judged
# on each gatherer's busiest cursor instead (see ``sync.check_caught_up``).
DENSE_TABLES = frozenset({"trades", "orderbook_deltas", "orderbook_snapshots", "tickers"})


def readable_spec(spec: TableSpec, columns: list[str], schema_version: int) -> TableSpec | None:
    """The spec to read a day archived with ``columns`` under ``schema_version``: ``spec`` itself
    when they match, else, for an older version whose columns are a prefix of today's with only
    nullable columns appended since, ``spec`` cut to those columns (the rest import as NULL).
    None when the day cannot be read."""
    names = list(spec.column_names)
    if columns == names:
        return spec
    k = len(columns)
    if (schema_version < SCHEMA_VERSION and names[:k] == columns
            and all(c.nullable for c in spec.columns[k:])):
        return replace(spec, columns=spec.columns[:k])
    return None
