"""Pure COPY formatting and the per-table SQL of the writers (no I/O).

Rows become one binary ``COPY ... FROM STDIN (FORMAT BINARY)`` payload (signature + rows +
trailer) in memory; a sink decides where that payload goes (PostgreSQL, memory, nowhere), so
benchmarks can time formatting apart from the database (style.md §2.2).

Each table is written through a TEMP staging table, then ``INSERT ... SELECT ... ON CONFLICT``
(data-model.md hardening 2: one duplicate or bad row must not abort a whole COPY into the real
table). Staging types are chosen for safety, not size:

- every integer is staged as ``int8``: psycopg's C binary dumpers for ``int2``/``int4`` silently
  keep the low bytes of an out-of-range Python int (measured: 2**20 as int2 -> 0), whereas the
  server's int8 -> int4/int2 assignment cast raises "out of range", which the writer isolates;
- UUID and JSONB columns are staged as ``text`` and cast in the INSERT (psycopg's binary UUID
  dumper needs ``uuid.UUID`` objects; the decoder validates the text form far more cheaply).

Row formatting uses psycopg's (C-accelerated) binary row encoder through a context-free
``Transformer``; tuning numbers are in bench/.

The fast path (``DirectCopy``, trades and orderbook_deltas: nearly all rows). The staging route
costs every row twice on the server (profiled: 12.7-15.2 us/row against 5.8-8.2 for a plain
COPY). A batch whose values all fit the real columns is first COPY'd straight into the real
table(s) in its own transaction; if the database refuses it (a duplicate, a CHECK, a bad value:
SQLSTATE classes 22/23) that transaction is rolled back and the batch takes the staging route,
which keeps every guarantee above. Without a conflict both routes store exactly the same rows in
the same order (so the same ``ingest_seq`` order), which is why the fast path is safe:
first-arrival choices only arise when there is a conflict, and then staging decides. The one
conflict every trades batch would otherwise carry, the same trade_id twice in one batch (each
trade socket delivers every trade), is settled before the COPY by ``TableSpec.batch_key``:
later repeats are dropped, which is what the staging merge's ``DISTINCT ON ... ORDER BY ord``
would keep, so only conflicts with rows already stored take the staging route. Narrow
integer columns (int2/int4) are range-checked in Python before the fast path is taken, since the
binary dumpers would otherwise wrap an out-of-range value silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from psycopg import postgres
from psycopg._copy_base import format_row_binary  # the C encoder behind Copy.write_row
from psycopg.abc import Transformer as AbcTransformer
from psycopg.adapt import Transformer
from psycopg.pq import Format

__all__ = [
    "SIGNATURE",
    "SPECS",
    "TRAILER",
    "CopyFormatter",
    "DirectCopy",
    "DirectFormatter",
    "DirectTarget",
    "TableSpec",
    "row_payload",
]

# PostgreSQL binary COPY framing: 11-byte signature, int32 flags, int32 header extension length.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class DirectTarget:
    """One real table the fast path COPYs into."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # wire types matching the table's columns (see _uuid16)
    project: Callable[[Row], Row] | None = None  # writer row -> this table's row

    @property
    def copy_sql(self) -> str:
        return f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"


@dataclass(frozen=True, slots=True)
class DirectCopy:
    """The fast path of a table: its targets, in COPY order, and the range check of its narrow
    integer columns (True = every value of every row fits)."""

    targets: tuple[DirectTarget, ...]
    fits: Callable[[Sequence[Row]], bool]
    prepare: Callable[[Row], Row] | None = None  # once per row, before every target's project


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Everything the writer needs to know about one target table."""

    name: str  # target table; also the writer's metric label
    columns: tuple[str, ...]  # row field order == staging column order
    staging_types: tuple[str, ...]  # PostgreSQL types of the staging columns (binary COPY)
    merge_sql: str  # staging -> target; its rowcount is the number of rows stored
    prepare: Callable[[Row], Row] | None = None  # row -> COPY tuple (e.g. levels -> JSON)
    direct: DirectCopy | None = None  # the fast path, when this table has one
    # In-batch identity: a row whose key repeats an earlier row's in the same batch is dropped
    # before writing (the first arrival wins, as in the staging merge), so a batch carrying one
    # trade from two trade sockets still takes the fast path.
    batch_key: Callable[[Row], Any] | None = None

    @property
    def staging(self) -> str:
        return f"stg_{self.name}"

    @property
    def staging_ddl(self) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in zip(self.columns, self.staging_types, strict=True))
        # ord keeps arrival order for "first seen wins" choices inside one batch.
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} (ord bigserial, {cols}) "
            f"ON COMMIT DELETE ROWS"
        )

    @property
    def copy_sql(self) -> str:
        return f"COPY {self.staging} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"


class CopyFormatter:
    """Formats rows for one TableSpec into a binary COPY payload. Pure: no connection needed."""

    __slots__ = ("_tx", "spec")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._tx = Transformer()
        oids = [postgres.types.get_oid(t) for t in spec.staging_types]
        self._tx.set_dumper_types(oids, Format.BINARY)

    def format(self, rows: Sequence[Row]) -> tuple[bytearray, list[tuple[int, Exception]]]:
        """(payload, [(index, error)]) — rows that cannot be encoded (wrong type, int8 overflow)
        are left out and reported by index; the payload holds all the others, in order."""
        buf = bytearray(SIGNATURE)
        bad: list[tuple[int, Exception]] = []
        tx = self._tx
        prepare = self.spec.prepare
        if prepare is None:
            try:  # fast path: one call per row, no per-row try
                for row in rows:
                    format_row_binary(row, tx, buf)
                buf += TRAILER
                return buf, bad
            except Exception:
                buf = bytearray(SIGNATURE)
        for i, row in enumerate(rows):
            n = len(buf)
            try:
                format_row_binary(prepare(row) if prepare is not None else row, tx, buf)
            except Exception as exc:  # a bad value must cost one row, not the batch
                del buf[n:]
                bad.append((i, exc))
        buf += TRAILER
        return buf, bad


class DirectFormatter:
    """Formats a batch for a table's fast path: one payload per target, or None when the batch
    must take the staging route (a narrow integer out of range, a value that cannot be encoded)."""

    __slots__ = ("_targets", "direct")

    def __init__(self, direct: DirectCopy) -> None:
        self.direct = direct
        self._targets: list[tuple[AbcTransformer, Callable[[Row], Row] | None]] = []
        for t in direct.targets:
            tx = Transformer()
            tx.set_dumper_types([postgres.types.get_oid(n) for n in t.types], Format.BINARY)
            self._targets.append((tx, t.project))

    def format(self, rows: Sequence[Row]) -> list[bytearray] | None:
        try:
            if not self.direct.fits(rows):
                return None
            prepare = self.direct.prepare
            if prepare is not None:
                rows = [prepare(r) for r in rows]
            out = []
            for tx, project in self._targets:
                buf = bytearray(SIGNATURE)
                if project is None:
                    for row in rows:
                        format_row_binary(row, tx, buf)
                else:
                    for row in rows:
                        format_row_binary(project(row), tx, buf)
                buf += TRAILER
                out.append(buf)
            return out
        except Exception:  # noqa: BLE001 - any doubt about a value: staging sorts it out row by row
            return None


def row_payload(row: Row) -> str:
    """The JSON text stored in ``rejected_rows.payload`` for a row."""
    asdict = getattr(row, "_asdict", None)
    obj: Any = asdict() if asdict is not None else list(row)
    return orjson.dumps(obj, default=repr).decode()


def _levels_json(row: Row) -> Row:
    r = list(row)
    r[3] = orjson.dumps(r[3]).decode()
    r[4] = orjson.dumps(r[4]).decode()
    return r


def _cols(*names: str) -> tuple[str, ...]:
    return names


_TRADE_COLS = _cols(
    "trade_id",
    "ticker",
    "exchange_ts",
    "yes_price",
    "no_price",
    "count",
    "taker_side",
    "taker_outcome_side",
    "taker_book_side",
    "is_block_trade",
    "source",
    "received_at",
)
_DELTA_COLS = _cols(
    "ticker", "exchange_ts", "side", "price", "delta", "occurrence", "seq", "sid", "received_at",
    "ts_rank",
)
_SNAP_COLS = _cols(
    "ticker",
    "snapshot_ts",
    "source",
    "yes_levels",
    "no_levels",
    "seq",
    "last_delta_ts",
    "last_delta_occurrence",
    "received_at",
    "cut_kind",
    "cut_ts",
    "cut_side",
    "cut_price",
    "cut_delta",
    "cut_occurrence",
)
_TICKER_COLS = _cols(
    "ticker",
    "exchange_ts",
    "yes_bid",
    "yes_ask",
    "price",
    "volume",
    "open_interest",
    "dollar_volume",
    "dollar_open_interest",
    "content_hash",
    "received_at",
)
_MARKET_COLS = _cols(
    "ticker",
    "event_ticker",
    "series_ticker",
    "market_type",
    "title",
    "subtitle",
    "status",
    "open_time",
    "close_time",
    "expiration_time",
    "result",
    "exchange_updated_ts",
    "raw",
    "received_at",
    "updated_at",
)
_EVENT_COLS = _cols(
    "event_ticker",
    "series_ticker",
    "title",
    "sub_title",
    "category",
    "mutually_exclusive",
    "status",
    "exchange_updated_ts",
    "raw",
    "received_at",
    "updated_at",
)
_SERIES_COLS = _cols(
    "series_ticker",
    "title",
    "category",
    "frequency",
    "exchange_updated_ts",
    "raw",
    "received_at",
    "updated_at",
)
_COVERAGE_COLS = _cols(
    "event_id",
    "gatherer_id",
    "scope",
    "ticker",
    "kind",
    "window_start",
    "window_end",
    "recovered",
    "detail",
    "created_at",
    "updated_at",
)


def _plain_insert(table: str, cols: tuple[str, ...], casts: dict[str, str] | None = None) -> str:
    casts = casts or {}
    sel = ", ".join(f"{c}::{casts[c]}" if c in casts else c for c in cols)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {sel} FROM stg_{table} ORDER BY ord "
        f"ON CONFLICT DO NOTHING"
    )


def _newest_wins(table: str, key: str, cols: tuple[str, ...]) -> str:
    """Reference upsert: newest exchange update time wins, then newest received_at; never older
    over newer. DISTINCT ON first: ON CONFLICT DO UPDATE cannot touch one row twice."""
    sel = ", ".join(f"{c}::jsonb" if c == "raw" else c for c in cols)
    upd = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != key)
    return (
        f"INSERT INTO {table} AS t ({', '.join(cols)}) "
        f"SELECT DISTINCT ON ({key}) {sel} FROM stg_{table} "
        f"ORDER BY {key}, exchange_updated_ts DESC NULLS LAST, received_at DESC, ord DESC "
        f"ON CONFLICT ({key}) DO UPDATE SET {upd} "
        f"WHERE (COALESCE(EXCLUDED.exchange_updated_ts, -1), EXCLUDED.received_at) "
        f"> (COALESCE(t.exchange_updated_ts, -1), t.received_at)"
    )


_T = "text"
_I = "int8"
_B = "bool"
_I4 = 2**31
_I2 = 2**15


def _deltas_fit(rows: Sequence[Row]) -> bool:
    # price int4, occurrence and ts_rank int2 (ts_rank may be None); a non-integer raises
    # TypeError -> staging route
    return all(
        -_I4 <= r[3] < _I4 and -_I2 <= r[5] < _I2 and (r[9] is None or -_I2 <= r[9] < _I2)
        for r in rows
    )


def _trades_fit(rows: Sequence[Row]) -> bool:
    # yes_price, no_price int4
    return all(-_I4 <= r[3] < _I4 and -_I4 <= r[4] < _I4 for r in rows)


def _uuid16(text: str) -> bytes:
    # A binary COPY row carries no type oids: a uuid column reads exactly 16 raw bytes, which is
    # what a bytea value is on the wire, so the C bytes dumper serves (the stock uuid dumper
    # wants uuid.UUID objects: ~2 us each to build). The length must be checked here: the
    # server reports a short uuid in binary COPY as a protocol violation (08P01, a "connection"
    # error that would be retried forever), not as bad data. ValueError -> staging route.
    b = bytes.fromhex(text.replace("-", ""))
    if len(b) != 16:
        raise ValueError("trade_id is not 16 bytes")
    return b


def _trade_wire(r: Row) -> Row:
    return (_uuid16(r[0]), *r[1:])


def _trade_id_row(r: Row) -> Row:
    return (r[0], r[2], r[1])


_DELTAS_DIRECT = DirectCopy(
    (
        DirectTarget(
            "orderbook_deltas",
            _DELTA_COLS,
            ("text", "int8", "text", "int4", "int8", "int2", "int8", "int8", "int8", "int2"),
        ),
    ),
    _deltas_fit,
)
# trade_ids first: its primary key is what refuses a trade seen before (hardening 1)
_TRADES_DIRECT = DirectCopy(
    (
        DirectTarget(
            "trade_ids", ("trade_id", "exchange_ts", "ticker"), ("bytea", "int8", "text"),
            _trade_id_row,
        ),
        DirectTarget(
            "trades",
            _TRADE_COLS,
            ("bytea", "text", "int8", "int4", "int4", "int8", "text", "text", "text", "bool",
             "text", "int8"),
        ),
    ),
    _trades_fit,
    _trade_wire,  # the trade id converted once for both tables
)

# Hardening 1: trade identity is trade_id alone. The guard table decides; only trade_ids new
# there reach trades, in the same statement (so the same transaction). Inside one batch the
# first-arrived copy of a trade wins (ORDER BY ord).
_TRADES_MERGE = (
    "WITH s AS ("
    " SELECT DISTINCT ON (trade_id::uuid) trade_id::uuid AS tid, * FROM stg_trades"
    " ORDER BY trade_id::uuid, ord),"
    " ids AS ("
    " INSERT INTO trade_ids (trade_id, exchange_ts, ticker)"
    " SELECT tid, exchange_ts, ticker FROM s ORDER BY ord"
    " ON CONFLICT DO NOTHING RETURNING trade_id) "
    f"INSERT INTO trades ({', '.join(_TRADE_COLS)}) "
    "SELECT s.tid, s.ticker, s.exchange_ts, s.yes_price, s.no_price, s.count, s.taker_side,"
    " s.taker_outcome_side, s.taker_book_side, s.is_block_trade, s.source, s.received_at"
    " FROM s JOIN ids ON ids.trade_id = s.tid ORDER BY s.ord "
    "ON CONFLICT DO NOTHING"
)

_COVERAGE_MERGE = (
    f"INSERT INTO coverage_events AS t ({', '.join(_COVERAGE_COLS)}) "
    "SELECT DISTINCT ON (event_id::uuid) event_id::uuid, gatherer_id, scope, ticker, kind,"
    " window_start, window_end, recovered, detail::jsonb, created_at, updated_at"
    " FROM stg_coverage_events ORDER BY event_id::uuid, updated_at DESC, ord DESC "
    "ON CONFLICT (event_id) DO UPDATE SET ticker = EXCLUDED.ticker,"
    " window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,"
    " recovered = EXCLUDED.recovered, detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at "
    "WHERE EXCLUDED.updated_at >= t.updated_at"
)

SPECS: dict[str, TableSpec] = {
    "trades": TableSpec(
        "trades", _TRADE_COLS, (_T, _T, _I, _I, _I, _I, _T, _T, _T, _B, _T, _I), _TRADES_MERGE,
        direct=_TRADES_DIRECT, batch_key=itemgetter(0),  # trade_id (hardening 1)
    ),
    "orderbook_deltas": TableSpec(
        "orderbook_deltas",
        _DELTA_COLS,
        (_T, _I, _T, _I, _I, _I, _I, _I, _I, _I),
        _plain_insert("orderbook_deltas", _DELTA_COLS),
        direct=_DELTAS_DIRECT,
    ),
    "orderbook_snapshots": TableSpec(
        "orderbook_snapshots",
        _SNAP_COLS,
        (_T, _I, _T, _T, _T, _I, _I, _I, _I, _T, _I, _T, _I, _I, _I),
        _plain_insert(
            "orderbook_snapshots", _SNAP_COLS, {"yes_levels": "jsonb", "no_levels": "jsonb"}
        ),
        _levels_json,
    ),
    "tickers": TableSpec(
        "tickers",
        _TICKER_COLS,
        (_T, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I),
        _plain_insert("tickers", _TICKER_COLS),
    ),
    "markets": TableSpec(
        "markets",
        _MARKET_COLS,
        (_T, _T, _T, _T, _T, _T, _T, _I, _I, _I, _T, _I, _T, _I, _I),
        _newest_wins("markets", "ticker", _MARKET_COLS),
    ),
    "events": TableSpec(
        "events",
        _EVENT_COLS,
        (_T, _T, _T, _T, _T, _B, _T, _I, _T, _I, _I),
        _newest_wins("events", "event_ticker", _EVENT_COLS),
    ),
    "series": TableSpec(
        "series",
        _SERIES_COLS,
        (_T, _T, _T, _T, _I, _T, _I, _I),
        _newest_wins("series", "series_ticker", _SERIES_COLS),
    ),
    "coverage_events": TableSpec(
        "coverage_events",
        _COVERAGE_COLS,
        (_T, _T, _T, _T, _T, _I, _I, _B, _T, _I, _I),
        _COVERAGE_MERGE,
    ),
}
