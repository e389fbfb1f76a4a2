"""Export one table-day from production to S3 as sorted, zstd Parquet parts plus a manifest.

Flow (bounded memory throughout): one ``COPY (SELECT ... ORDER BY ticker, <time>, ...) TO
STDOUT (FORMAT csv)`` is parsed block by block by Arrow's CSV reader, batches are buffered up
to one row group, row groups go into a local Parquet part of at most ``max_rows_per_part``
rows, and each finished part is hashed, uploaded and deleted locally before the next begins.
Memory is one CSV block plus one row group; local disk is one part.

Completion is the manifest, written last (see ``manifest.py``). A re-run of an exported day is
a no-op while production still holds what the manifest recorded (its row count; for
``coverage_events`` also the newest ``updated_at``); when production differs (trades backfilled
into an archived day, a coverage window closed since) the day is exported again, replacing it
exactly as ``force`` does. ``verify_day`` only compares. ``force`` writes new parts under a new run id, then replaces the manifest (one atomic
PUT), then deletes every part the new manifest does not list, so a reader that follows the
manifest sees the old day or the new day, never a mix. Parts of a crashed run carry no manifest
and are removed by the next successful export of that day.
"""

from __future__ import annotations

import hashlib
import io
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from kalshi_data.archive._convert import csv_read_options, to_archive_batch
from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.errors import (
    EmptyDay,
    ManifestError,
    ParquetError,
    S3Error,
    SchemaMismatch,
)
from kalshi_data.archive.manifest import MANIFEST_NAME, Manifest, Part, columns_of
from kalshi_data.archive.s3 import S3Store
from kalshi_data.archive.schema import TableSpec, readable_spec
from shared.db import classify

log = logging.getLogger("kalshi_data.archive.export")

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

# Defaults, measured on the 10M-row trades bench (bench/archive_bench.py): 8 MiB CSV blocks
# (~80k trade rows) keep parsing fast without a large transient; a 1M-row / 128 MiB row group is
# big enough for good zstd ratios and column statistics and bounds what is held in memory.
DEFAULT_MAX_ROWS_PER_PART = 5_000_000
DEFAULT_ROW_GROUP_ROWS = 1_000_000
DEFAULT_ROW_GROUP_BYTES = 128 << 20
DEFAULT_CSV_BLOCK = 8 << 20
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class ExportOptions:
    max_rows_per_part: int = DEFAULT_MAX_ROWS_PER_PART
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
    csv_block_size: int = DEFAULT_CSV_BLOCK
    force: bool = False
    allow_empty: bool = False
    tmp_dir: Path | None = None
    # Test seam: called after the last part is uploaded and before the manifest is written.
    before_manifest: Callable[[], None] | None = field(default=None, compare=False)
    # Called with the number of rows of each batch read (progress bars).
    on_rows: Callable[[int], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExportResult:
    table: str
    day: str
    status: str  # "exported" | "unchanged" | "re-exported" (production differed from the manifest)
    rows: int
    parts: int
    bytes: int
    seconds: float
    url: str


def table_prefix(store: S3Store, spec: TableSpec) -> str:
    """``[prefix/]table=<name>/``: the Hive-style directory of one table (Athena, Glue, DuckDB,
    Spark and Arrow read ``table=``/``date=`` path segments as partition columns)."""
    return store.location.key(f"table={spec.name}") + "/"


def day_prefix(store: S3Store, spec: TableSpec, day: date) -> str:
    return store.location.key(f"table={spec.name}", f"date={day.isoformat()}") + "/"


def legacy_day_prefix(store: S3Store, spec: TableSpec, day: date) -> str:
    """Where archive versions before the Hive layout put a day: ``[prefix/]<name>/date=<day>/``
    (import still reads it; docs/runbook.md moves it)."""
    return store.location.key(spec.name, f"date={day.isoformat()}") + "/"


def export_day(conn: psycopg.Connection[Any], store: S3Store, spec: TableSpec, day: date,
               options: ExportOptions, database: str = "production") -> ExportResult:
    """Export ``spec`` for UTC ``day``; returns what was done.

    Raises ``S3Error``, ``StorageError``, ``ParquetError``, ``ManifestError``, ``EmptyDay`` or
    ``SchemaMismatch``. On any of them no manifest has been written by this call; parts it
    uploaded are deleted on a best-effort basis (a crash leaves them to the next run).
    """
    started = time.monotonic()
    prefix = day_prefix(store, spec, day)
    manifest_key = prefix + MANIFEST_NAME
    url = f"s3://{store.bucket}/{prefix}"

    raw = store.get_bytes(manifest_key)
    status = "exported"
    if raw is None and not options.force:
        legacy = legacy_day_prefix(store, spec, day)
        old = store.get_bytes(legacy + MANIFEST_NAME)
        if old is not None:  # archived before the Hive layout: the day is there, elsewhere
            prefix, manifest_key, raw = legacy, legacy + MANIFEST_NAME, old
            url = f"s3://{store.bucket}/{prefix}"
    if raw is not None and not options.force:
        where = f"s3://{store.bucket}/{manifest_key}"
        existing = Manifest.from_json(raw, where)
        if readable_spec(spec, [str(c.get("name")) for c in existing.columns],
                         existing.schema_version) is None:
            existing.check_table(spec, where)  # raises, naming the difference
        verify_parts_present(store, prefix, existing)
        now_rows, now_updated = ((existing.row_count, existing.updated_through) if spec.is_snapshot
                                 else day_state(conn, spec, day, database))
        if (now_rows, now_updated) == (existing.row_count, existing.updated_through):
            return ExportResult(spec.name, day.isoformat(),
                                "unchanged" if prefix == day_prefix(store, spec, day) else "legacy",
                                existing.row_count, len(existing.parts),
                                sum(p.bytes for p in existing.parts), time.monotonic() - started, url)
        # (a day still in the legacy layout is exported again where it is: one copy of a day)
        log.warning("%s %s: production holds %d rows (newest update %s), the archive %d (%s): "
                    "exporting the day again", spec.name, day, now_rows, now_updated,
                    existing.row_count, existing.updated_through)
        status = "re-exported"

    check_columns(conn, spec, database)
    updated_through = day_state(conn, spec, day, database)[1] if spec.name in UPDATED_IN_PLACE else None
    now = datetime.now(UTC)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    writer = _PartWriter(spec, store, prefix, run_id, options)
    manifest_sent = False
    try:
        with tempfile.TemporaryDirectory(prefix="kalshi-export-", dir=options.tmp_dir) as tmp:
            writer.tmp = Path(tmp)
            _stream(conn, spec, day, options, writer, database)
            writer.finish()
        if writer.total_rows == 0 and not options.allow_empty:
            raise EmptyDay(spec.name, day.isoformat())
        parts = tuple(writer.parts)
        manifest = Manifest(
            table=spec.name, day=day.isoformat(), kind="snapshot" if spec.is_snapshot else "day",
            time_column=spec.time_column,
            range_us=None if spec.is_snapshot else day_range_us(day), run_id=run_id,
            created_at=f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}", row_count=writer.total_rows,
            min_ts=min((p.min_ts for p in parts if p.min_ts is not None), default=None),
            max_ts=max((p.max_ts for p in parts if p.max_ts is not None), default=None),
            sort_key=spec.sort_key, columns=columns_of(spec), parts=parts,
            updated_through=updated_through)
        if options.before_manifest is not None:
            options.before_manifest()
        manifest_sent = True
        # Without --force the PUT is conditional: if another run finished this day meanwhile,
        # keep its manifest and drop our parts rather than overwrite a complete day.
        if not store.put_bytes(manifest_key, manifest.to_json(), "application/json",
                               if_absent=not options.force and raw is None):
            raise ManifestError(f"s3://{store.bucket}/{manifest_key}",
                                "another export completed this day meanwhile; kept its manifest")
    except BaseException:
        # A manifest PUT that failed on the way back (timeout) may still have landed: never
        # delete parts that a stored manifest points at.
        if not (manifest_sent and _manifest_is(store, manifest_key, run_id)):
            _delete_quietly(store, [prefix + p.file for p in writer.parts])
        raise
    # The day is complete from here on; what follows only tidies up (readers follow the
    # manifest, so a failure here is logged, not an export failure).
    try:
        stale = [k for k in store.list_keys(prefix)
                 if k.endswith(".parquet") and k[len(prefix):] not in {p.file for p in parts}]
        if stale:
            store.delete_keys(stale)
            log.info("removed %d part(s) not in the manifest under %s", len(stale), url)
    except S3Error as exc:
        log.warning("exported %s, but could not remove old parts: %s", url, exc)
    return ExportResult(spec.name, day.isoformat(), status, writer.total_rows, len(parts),
                        sum(p.bytes for p in parts), time.monotonic() - started, url)


#: Tables whose rows change in place (coverage windows closed later), keyed by that column.
UPDATED_IN_PLACE = {"coverage_events": "updated_at"}


def day_state(conn: psycopg.Connection[Any], spec: TableSpec, day: date,
              database: str = "production") -> tuple[int, int | None]:
    """(rows production holds for ``day``, newest in-place update among them or None): what a
    manifest records, to tell later whether the archived day is still what production holds.
    Snapshot (reference) tables: the whole table's count."""
    upd = UPDATED_IN_PLACE.get(spec.name)
    query = sql.SQL("SELECT count(*), {} FROM {}").format(
        sql.SQL("max({})").format(sql.Identifier(upd)) if upd else sql.SQL("NULL::bigint"),
        sql.Identifier(spec.name))
    if spec.time_column is not None:
        lo, hi = day_range_us(day)
        query = sql.SQL("{} WHERE {} >= {} AND {} < {}").format(
            query, sql.Identifier(spec.time_column), sql.Literal(lo), sql.Identifier(spec.time_column),
            sql.Literal(hi))
    try:
        row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise classify(exc, database) from None
    assert row is not None
    return int(row[0]), None if row[1] is None else int(row[1])


@dataclass(frozen=True)
class DayCheck:
    """``verify_day``'s answer: ``status`` is ok | differs | missing | snapshot."""

    table: str
    day: str
    status: str
    production_rows: int
    archived_rows: int | None
    production_updated: int | None = None
    archived_updated: int | None = None


def verify_day(conn: psycopg.Connection[Any], store: S3Store, spec: TableSpec, day: date,
               database: str = "production") -> DayCheck:
    """Compare what production holds for ``day`` with the day's manifest; writes nothing.

    Raises ``S3Error``, ``StorageError``, ``ManifestError``."""
    prefix = day_prefix(store, spec, day)
    raw = store.get_bytes(prefix + MANIFEST_NAME)
    if raw is None:  # archived before the Hive layout: compare the day where it is
        legacy = legacy_day_prefix(store, spec, day)
        raw = store.get_bytes(legacy + MANIFEST_NAME)
        if raw is not None:
            prefix = legacy
    rows, updated = day_state(conn, spec, day, database)
    if raw is None:
        return DayCheck(spec.name, day.isoformat(), "missing", rows, None, updated)
    where = f"s3://{store.bucket}/{prefix}{MANIFEST_NAME}"
    m = Manifest.from_json(raw, where)
    if readable_spec(spec, [str(c.get("name")) for c in m.columns], m.schema_version) is None:
        m.check_table(spec, where)  # raises, naming the difference
    if spec.is_snapshot:
        status = "snapshot"  # a dated copy of a reference table: today's state may differ
    elif (rows, updated) == (m.row_count, m.updated_through):
        status = "ok"
    else:
        status = "differs"
    return DayCheck(spec.name, day.isoformat(), status, rows, m.row_count, updated, m.updated_through)


def verify_parts_present(store: S3Store, prefix: str, manifest: Manifest) -> None:
    """Every listed part exists with the listed size (cheap HEADs; checksums are import's job)."""
    for p in manifest.parts:
        head = store.head(prefix + p.file)
        where = f"s3://{store.bucket}/{prefix}{MANIFEST_NAME}"
        if head is None:
            raise ManifestError(where, f"lists {p.file}, which does not exist (re-export with --force)")
        if int(head.get("ContentLength", -1)) != p.bytes:
            raise ManifestError(where, f"lists {p.file} with {p.bytes} bytes, the object has "
                                f"{head.get('ContentLength')} (re-export with --force)")


def check_columns(conn: psycopg.Connection[Any], spec: TableSpec, database: str) -> None:
    """Refuse to export a table whose columns differ from the archive schema (names and types)."""
    try:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (spec.name,)).fetchall()
    except psycopg.Error as exc:
        raise classify(exc, database) from None
    if not rows:
        raise SchemaMismatch(spec.name, "does not exist in the database")
    have = {name: _PG_NAMES.get(dtype, dtype) for name, dtype in rows}
    want = {c.name: c.pg_type for c in spec.columns}
    if have != want:
        extra = sorted(set(have) - set(want))
        missing = sorted(set(want) - set(have))
        changed = sorted(n for n in set(have) & set(want) if have[n] != want[n])
        raise SchemaMismatch(spec.name, "columns differ from archive schema "
                             f"(extra {extra}, missing {missing}, retyped {changed}); "
                             "update kalshi_data/archive/schema.py and SCHEMA_VERSION")


_PG_NAMES = {"character varying": "text", "bigint": "bigint", "integer": "integer",
             "smallint": "smallint", "boolean": "boolean", "uuid": "uuid", "jsonb": "jsonb",
             "text": "text"}


def copy_out_sql(spec: TableSpec, day: date, byte_order_sort: bool) -> sql.Composed:
    """The COPY statement streaming one table-day in archive order.

    ``byte_order_sort`` adds ``COLLATE "C"`` to text sort columns so the order is the byte order
    Parquet statistics and readers use; on a C-collated database it is omitted so PostgreSQL can
    walk the primary-key index instead of sorting.
    """
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    order_items = []
    for name in spec.sort_key:
        ident: sql.Composable = sql.Identifier(name)
        if byte_order_sort and spec.column(name).pg_type == "text":
            ident = sql.SQL('{} COLLATE "C"').format(ident)
        if spec.column(name).nullable:
            ident = sql.SQL("{} NULLS LAST").format(ident)
        order_items.append(ident)
    query = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(spec.name))
    if spec.time_column is not None:
        lo, hi = day_range_us(day)
        query = sql.SQL("{} WHERE {} >= {} AND {} < {}").format(
            query, sql.Identifier(spec.time_column), sql.Literal(lo),
            sql.Identifier(spec.time_column), sql.Literal(hi))
    query = sql.SQL("{} ORDER BY {}").format(query, sql.SQL(", ").join(order_items))
    quoted = sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns if c.is_text_like)
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, FORCE_QUOTE ({}))").format(query, quoted)


def _byte_order_sort(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()").fetchone()
    return not (row and str(row[0]) in ("C", "POSIX", "C.UTF-8", "C.utf8"))


def _stream(conn: psycopg.Connection[Any], spec: TableSpec, day: date, options: ExportOptions,
            writer: _PartWriter, database: str) -> None:
    try:
        stmt = copy_out_sql(spec, day, _byte_order_sort(conn))
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            stream = io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20)
            read, parse, convert = csv_read_options(spec, options.csv_block_size)
            try:
                reader = pacsv.open_csv(stream, read_options=read, parse_options=parse,
                                        convert_options=convert)
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    return
                raise
            for batch in reader:
                writer.add(to_archive_batch(batch, spec))
                if options.on_rows is not None:
                    options.on_rows(batch.num_rows)
    except psycopg.Error as exc:
        raise classify(exc, database) from None
    except (pa.ArrowException, ValueError) as exc:
        if isinstance(exc.__cause__, psycopg.Error):  # raised inside the CSV reader's read()
            raise classify(exc.__cause__, database) from None
        raise ParquetError(f"{spec.name} {day}", f"cannot convert the COPY stream: {exc}") from None


class _CopyStream(io.RawIOBase):
    """A psycopg COPY TO STDOUT as a readable binary stream for Arrow.

    libpq hands over one row per ``read()``; rows are gathered until the caller's buffer is
    full, so Arrow sees large reads.
    """

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        want = len(b)
        if not self._pending and not self._eof:
            chunks: list[Any] = []
            size = 0
            read = self._copy.read
            while size < want:
                data = read()
                if not data:
                    self._eof = True
                    break
                chunks.append(data)
                size += len(data)
            self._pending = memoryview(b"".join(chunks))
        n = min(want, len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _PartWriter:
    """Cuts the sorted batch stream into row groups and parts; uploads each finished part."""

    def __init__(self, spec: TableSpec, store: S3Store, prefix: str, run_id: str,
                 options: ExportOptions) -> None:
        self.spec = spec
        self.store = store
        self.prefix = prefix
        self.run_id = run_id
        self.options = options
        self.tmp = Path(".")
        self.parts: list[Part] = []
        self.total_rows = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._part_rows = 0
        self._min: int | None = None
        self._max: int | None = None
        self._time_idx = spec.column_names.index(spec.time_column) if spec.time_column else None
        self._sorting = [pq.SortingColumn(spec.column_names.index(c)) for c in spec.sort_key]

    def add(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            room = min(self.options.max_rows_per_part - self._part_rows - self._buffer_rows,
                       self.options.row_group_rows - self._buffer_rows)
            head, batch = batch.slice(0, room), batch.slice(room)
            self._buffer.append(head)
            self._buffer_rows += head.num_rows
            self._buffer_bytes += head.nbytes
            if self._time_idx is not None and head.num_rows:
                mm = pc.min_max(head.column(self._time_idx)).as_py()
                self._min = mm["min"] if self._min is None else min(self._min, mm["min"])
                self._max = mm["max"] if self._max is None else max(self._max, mm["max"])
            if (self._buffer_rows >= self.options.row_group_rows
                    or self._buffer_bytes >= self.options.row_group_bytes):
                self._flush_row_group()
            if self._part_rows + self._buffer_rows >= self.options.max_rows_per_part:
                self._close_part()

    def finish(self) -> None:
        if self._buffer_rows or self._writer is not None:
            self._close_part()

    def _flush_row_group(self) -> None:
        if not self._buffer_rows:
            return
        if self._writer is None:
            self._path = self.tmp / f"part-{len(self.parts):04d}.parquet"
            self._writer = pq.ParquetWriter(
                str(self._path), self.spec.arrow_schema, compression="zstd",
                compression_level=ZSTD_LEVEL, sorting_columns=self._sorting, write_statistics=True)
        table = pa.Table.from_batches(self._buffer, schema=self.spec.arrow_schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._part_rows += self._buffer_rows
        self._buffer, self._buffer_rows, self._buffer_bytes = [], 0, 0

    def _close_part(self) -> None:
        self._flush_row_group()
        assert self._writer is not None and self._path is not None
        self._writer.close()
        self._writer = None
        digest = hashlib.sha256()
        with open(self._path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        size = self._path.stat().st_size
        name = f"part-{self.run_id}-{len(self.parts):04d}.parquet"
        self.store.upload_file(self._path, self.prefix + name,
                               {"sha256": digest.hexdigest(), "rows": str(self._part_rows),
                                "run-id": self.run_id}, PARQUET_CONTENT_TYPE)
        self.parts.append(Part(name, self._part_rows, size, digest.hexdigest(), self._min, self._max))
        self.total_rows += self._part_rows
        self._path.unlink()
        self._path, self._part_rows, self._min, self._max = None, 0, None, None


def _manifest_is(store: S3Store, key: str, run_id: str) -> bool:
    try:
        raw = store.get_bytes(key)
    except S3Error:
        return True  # cannot tell: keeping orphan parts is harmless, deleting live ones is not
    return raw is not None and f'"run_id": "{run_id}"' in raw.decode(errors="replace")


def _delete_quietly(store: S3Store, keys: list[str]) -> None:
    if not keys:
        return
    try:
        store.delete_keys(keys)
    except Exception:  # noqa: BLE001 - the original error matters more; the next run tidies up
        log.warning("could not delete %d uploaded part(s) after a failed export", len(keys))
