"""The archive as SQL tables where it lies (local directory or S3), for DuckDB.

::

    con = duckdb.connect()
    tables = attach_archive(con, "s3://bucket/prefix", endpoint_url=None)   # or a local path
    con.sql("SELECT ticker, count(*) FROM trades WHERE date = '2026-11-24' GROUP BY 1")

One view per archived table, named like the production table, over exactly the Parquet parts
the table-days' manifests list (never a part a crashed or replaced export left behind), with
the Hive partition column ``date`` (text, ``YYYY-MM-DD``) for pruning. Days archived before a
column was added read it as NULL. Nothing is downloaded up front: DuckDB scans the files through
Arrow's dataset reader (S3 included, through Arrow's own S3 client with the standard AWS
credential chain), reading only the columns and row groups a query needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from kalshi_data.archive.errors import ArchiveError, ManifestError
from kalshi_data.archive.manifest import MANIFEST_NAME, Manifest
from kalshi_data.archive.schema import TABLES, TableSpec


@dataclass(frozen=True)
class ArchivedTable:
    name: str
    days: int
    parts: int
    rows: int  # sum of the manifests' row counts


class _Root:
    """A place holding ``table=<t>/date=<d>/`` directories: a local path or ``s3://bucket/prefix``."""

    def __init__(self, root: str, endpoint_url: str | None, region: str | None) -> None:
        u = urlparse(root)
        if u.scheme == "s3":
            kw: dict[str, Any] = {}
            if endpoint_url:
                e = urlparse(endpoint_url)
                kw.update(endpoint_override=e.netloc or e.path, scheme=e.scheme or "https")
            if region:
                kw["region"] = region
            self.fs: pafs.FileSystem = pafs.S3FileSystem(**kw)
            self.base = (u.netloc + "/" + u.path.strip("/")).rstrip("/")
            self.display = root.rstrip("/")
        elif u.scheme in ("", "file"):
            path = Path(u.path if u.scheme == "file" else root).expanduser().resolve()
            if not path.is_dir():
                raise ArchiveError(f"archive {root}: not a directory")
            self.fs = pafs.LocalFileSystem()
            self.base = str(path)
            self.display = str(path)
        else:
            raise ArchiveError(f"archive {root}: expected a local directory or s3://bucket/prefix")

    def dirs(self, path: str) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except OSError as exc:
            raise ArchiveError(f"archive {self.display}: cannot list {path}: {_first(exc)}") from None
        return sorted(i.path for i in infos if i.type == pafs.FileType.Directory)

    def read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveError(f"archive {self.display}: cannot read {path}: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def table_dataset(root: _Root, spec: TableSpec) -> tuple[ds.Dataset | None, ArchivedTable]:
    """The dataset of every manifest-listed part of ``spec`` under ``root`` (None: no day)."""
    table_dir = f"{root.base}/table={spec.name}"
    files: list[str] = []
    days = rows = 0
    for day_dir in root.dirs(table_dir):
        raw = root.read(f"{day_dir}/{MANIFEST_NAME}")
        if raw is None:
            continue  # an export that never completed: not archived
        m = Manifest.from_json(raw, f"{day_dir}/{MANIFEST_NAME}")
        if m.table != spec.name:
            raise ManifestError(f"{day_dir}/{MANIFEST_NAME}", f"describes table {m.table}")
        days += 1
        rows += m.row_count
        files.extend(f"{day_dir}/{p.file}" for p in m.parts)
    info = ArchivedTable(spec.name, days, len(files), rows)
    if not files:
        return None, info
    schema = spec.arrow_schema.append(pa.field("date", pa.string()))
    part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    return ds.dataset(files, schema=schema, format="parquet", filesystem=root.fs, partitioning=part,
                      partition_base_dir=table_dir), info


# Arrow extension types DuckDB may not map: UUIDs as their text form, JSON as text.
def _select(spec: TableSpec) -> str:
    cols = []
    for c in spec.columns:
        if c.pg_type == "uuid":
            cols.append(f'CAST("{c.name}" AS UUID) AS "{c.name}"')
        elif c.pg_type == "jsonb":
            cols.append(f'CAST("{c.name}" AS VARCHAR) AS "{c.name}"')
        else:
            cols.append(f'"{c.name}"')
    return ", ".join([*cols, '"date"'])


def attach_archive(con: Any, root: str, *, endpoint_url: str | None = None, region: str | None = None,
                   tables: list[str] | None = None) -> list[ArchivedTable]:
    """Create a view per archived table on the DuckDB connection ``con``; returns what was found.

    Raises ``ArchiveError`` (unreachable, unreadable, malformed manifest)."""
    r = _Root(root, endpoint_url, region)
    found = []
    for name in tables or list(TABLES):
        spec = TABLES[name]
        dataset, info = table_dataset(r, spec)
        if dataset is None:
            continue
        con.register(f"_arrow_{name}", dataset)
        try:
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT {_select(spec)} FROM "_arrow_{name}"')
        except Exception:  # noqa: BLE001 - an engine that maps the extension types itself
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM "_arrow_{name}"')
        found.append(info)
    return found


def manifest_summary(info: list[ArchivedTable]) -> str:
    return json.dumps({t.name: {"days": t.days, "parts": t.parts, "rows": t.rows} for t in info})
