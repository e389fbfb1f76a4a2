"""Load an archived table-day back into a database, checked part by part against its manifest.

Each part is downloaded, its size and sha256 compared with the manifest, its row count with the
Parquet footer, then streamed (one Arrow batch at a time) through COPY into a temporary staging
table and merged with ``INSERT ... ON CONFLICT DO NOTHING``, so importing into a database that
already holds some or all of the rows is safe and idempotent. The whole day is one transaction:
a part that fails a check rolls everything back, so a half-imported day is never left behind.

After each part, every staged row must be present in the target by its identity key; only
trades superseded by the ``trade_ids`` guard (the same trade_id already stored with another
first-seen exchange_ts, data-model.md hardening 1) are allowed to be absent, and are counted.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from kalshi_data.archive._convert import to_copy_csv
from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.errors import ManifestError, ParquetError
from kalshi_data.archive.export import check_columns, day_prefix, legacy_day_prefix
from kalshi_data.archive.manifest import MANIFEST_NAME, Manifest, Part
from kalshi_data.archive.s3 import S3Store
from kalshi_data.archive.schema import SCHEMA_VERSION, TableSpec, readable_spec
from shared.db import classify

log = logging.getLogger("kalshi_data.archive.import")

# Rows per COPY chunk: ~64k trade rows is a few MB of CSV, large enough to amortise the
# per-call cost, small enough to keep the importer's memory flat.
IMPORT_BATCH_ROWS = 65_536
_STAGE = "_archive_stage"


@dataclass(frozen=True)
class ImportResult:
    table: str
    day: str
    rows: int          # rows in the manifest (all verified and staged)
    inserted: int      # new in the target
    present: int       # already there (identical identity key)
    superseded: int    # trades whose trade_id the target already holds under another exchange_ts
    parts: int
    seconds: float


def load_manifest(store: S3Store, spec: TableSpec, day: date) -> tuple[str, Manifest]:
    """The day's manifest, checked for this table/day/schema; raises ``ManifestError``.

    Read from the Hive layout (``table=<t>/date=<d>/``), else from the layout before it
    (``<t>/date=<d>/``); returns the directory it was found in."""
    prefix = day_prefix(store, spec, day)
    where = f"s3://{store.bucket}/{prefix}{MANIFEST_NAME}"
    raw = store.get_bytes(prefix + MANIFEST_NAME)
    if raw is None:
        legacy = legacy_day_prefix(store, spec, day)
        raw = store.get_bytes(legacy + MANIFEST_NAME)
        if raw is None:
            raise ManifestError(where, "no manifest: this table-day is not archived "
                                "(or its export never completed)")
        prefix, where = legacy, f"s3://{store.bucket}/{legacy}{MANIFEST_NAME}"
    m = Manifest.from_json(raw, where)
    if m.day != day.isoformat():
        raise ManifestError(where, f"is for day {m.day}, not {day.isoformat()}")
    if readable_spec(spec, [str(c.get("name")) for c in m.columns], m.schema_version) is None:
        m.check_table(spec, where)  # raises, naming the difference
        raise ManifestError(where, f"schema version {m.schema_version} is not importable by this "
                            f"kalshi-data (expects {SCHEMA_VERSION})")
    return prefix, m


def import_day(conn: psycopg.Connection[Any], store: S3Store, spec: TableSpec, day: date,
               tmp_dir: Path | None = None, database: str = "target",
               create_partition: bool = True,
               on_rows: Callable[[int], None] | None = None) -> ImportResult:
    """Import one archived day of ``spec`` into the database behind ``conn`` (autocommit).

    Raises ``ManifestError`` (missing manifest, or parts that disagree with it), ``S3Error``,
    ``ParquetError``, ``SchemaMismatch`` or ``StorageError``; in every case nothing is committed.
    """
    started = time.monotonic()
    prefix, manifest = load_manifest(store, spec, day)
    check_columns(conn, spec, database)
    # an older archive version lacks columns added since: they import as NULL
    spec = readable_spec(spec, [str(c.get("name")) for c in manifest.columns],
                         manifest.schema_version) or spec
    if create_partition and spec.time_column is not None:
        _ensure_partition(conn, spec, day)
    inserted = present = superseded = 0
    try:
        with tempfile.TemporaryDirectory(prefix="kalshi-import-", dir=tmp_dir) as tmp, \
                conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                sql.Identifier(_STAGE), sql.Identifier(spec.name)))
            for part in manifest.parts:
                local = Path(tmp) / part.file
                _fetch_verified(store, prefix, part, local)
                ins, pre, sup = _load_part(cur, spec, part, local, prefix, store.bucket, on_rows)
                inserted, present, superseded = inserted + ins, present + pre, superseded + sup
                local.unlink()
    except psycopg.Error as exc:
        raise classify(exc, database) from None
    return ImportResult(spec.name, day.isoformat(), manifest.row_count, inserted, present,
                        superseded, len(manifest.parts), time.monotonic() - started)


def _fetch_verified(store: S3Store, prefix: str, part: Part, local: Path) -> None:
    where = f"s3://{store.bucket}/{prefix}{part.file}"
    if store.head(prefix + part.file) is None:
        raise ManifestError(f"s3://{store.bucket}/{prefix}{MANIFEST_NAME}",
                            f"lists {part.file}, which does not exist")
    store.download_file(prefix + part.file, local)
    size = local.stat().st_size
    if size != part.bytes:
        raise ManifestError(where, f"is {size} bytes, the manifest says {part.bytes}")
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != part.sha256:
        raise ManifestError(where, f"sha256 {digest.hexdigest()[:12]}… differs from the "
                            f"manifest's {part.sha256[:12]}…")


def _load_part(cur: psycopg.Cursor[Any], spec: TableSpec, part: Part, local: Path, prefix: str,
               bucket: str, on_rows: Callable[[int], None] | None = None) -> tuple[int, int, int]:
    where = f"s3://{bucket}/{prefix}{part.file}"
    try:
        pf = pq.ParquetFile(local)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetError(where, f"not a readable Parquet file ({exc})") from None
    if pf.metadata.num_rows != part.rows:
        raise ManifestError(where, f"holds {pf.metadata.num_rows} rows, the manifest says {part.rows}")
    if not pf.schema_arrow.equals(spec.arrow_schema):
        raise ParquetError(where, f"schema differs from archive schema v{SCHEMA_VERSION}")
    stage = sql.Identifier(_STAGE)
    table = sql.Identifier(spec.name)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    staged = 0
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(stage, cols)) as copy:
        for batch in pf.iter_batches(batch_size=IMPORT_BATCH_ROWS):
            copy.write(to_copy_csv(batch, spec))
            staged += batch.num_rows
            if on_rows is not None:
                on_rows(batch.num_rows)
    if staged != part.rows:
        raise ManifestError(where, f"staged {staged} rows, the manifest says {part.rows}")
    cur.execute(sql.SQL("ANALYZE {}").format(stage))  # temp tables get no autovacuum statistics
    guarded = spec.name == "trades" and _has_trade_ids(cur)
    if guarded:
        cur.execute(sql.SQL("INSERT INTO trade_ids (trade_id, exchange_ts, ticker) "
                            "SELECT trade_id, exchange_ts, ticker FROM {} ON CONFLICT DO NOTHING")
                    .format(stage))
        cur.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {sc} FROM {s} s JOIN trade_ids g "
                            "ON g.trade_id = s.trade_id AND g.exchange_ts = s.exchange_ts "
                            "AND g.ticker = s.ticker ON CONFLICT DO NOTHING").format(
            t=table, c=cols, s=stage,
            sc=sql.SQL(", ").join(sql.Identifier("s", c) for c in spec.column_names)))
    else:
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            table, cols, cols, stage))
    inserted = max(cur.rowcount, 0)
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(k)) for k in spec.identity)  # PK: NOT NULL
    missing_q = sql.SQL("SELECT count(*) FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE {m})").format(
        s=stage, t=table, m=match)
    if guarded:
        missing_q = sql.SQL("{} AND EXISTS (SELECT 1 FROM trade_ids g WHERE g.trade_id = s.trade_id "
                            "AND g.exchange_ts = s.exchange_ts AND g.ticker = s.ticker)").format(missing_q)
    row = cur.execute(missing_q).fetchone()
    missing = int(row[0]) if row else 0
    if missing:
        raise ManifestError(where, f"{missing} of its {part.rows} rows are not in the target after "
                            "the merge; nothing was committed")
    superseded = 0
    if guarded:
        row = cur.execute(sql.SQL("SELECT count(*) FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM trade_ids g "
                                  "WHERE g.trade_id = s.trade_id AND g.exchange_ts = s.exchange_ts "
                                  "AND g.ticker = s.ticker)").format(s=stage)).fetchone()
        superseded = int(row[0]) if row else 0
    return inserted, part.rows - inserted - superseded, superseded


def _has_trade_ids(cur: psycopg.Cursor[Any]) -> bool:
    row = cur.execute("SELECT to_regclass('trade_ids') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _ensure_partition(conn: psycopg.Connection[Any], spec: TableSpec, day: date) -> None:
    """Give an old day its own partition before loading it, in its own short transaction.

    Without it the rows would land in the DEFAULT partition (which alerts, and then blocks
    creating that day's partition). Needs the table owner's rights; without them, or when the
    DEFAULT partition already holds rows of that day, the import goes on into DEFAULT and says so.
    """
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (spec.name,)).fetchone()
    if not row or row[0] != "p":
        return
    lo, hi = day_range_us(day)
    name = f"{spec.name}_p{day:%Y%m%d}"  # the naming of ensure_partitions() (002_partitions.sql)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    if exists and exists[0]:
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})")
                         .format(sql.Identifier(name), sql.Identifier(spec.name), sql.Literal(lo),
                                 sql.Literal(hi)))
    except psycopg.Error as exc:
        log.warning("could not create partition %s (%s); rows for %s go to the DEFAULT partition",
                    name, type(exc).__name__, day)
