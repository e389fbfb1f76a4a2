"""The manifest: the one object that says a table-day is archived, and exactly which parts hold it.

It also records what production held for that day when it was exported (``row_count``, and for
``coverage_events``, whose rows are updated in place, ``updated_through``): a later export run
compares them with production and exports the day again when they differ (trades backfilled
into an archived day), and ``kalshi-data export --verify`` reports the comparison.

Written last, after every part is uploaded, so a crash or failed upload never leaves a day that
looks complete. Readers (``import``, analysts) trust only the parts a manifest lists: a
``date=`` directory may briefly hold extra parts (from a crashed run, or the previous export
while ``--force`` replaces it), which the next successful export deletes.

Layout (JSON, ``_manifest.json`` beside the parts; the leading underscore keeps Arrow, DuckDB
and Spark dataset discovery from mistaking it for data)::

    {"format": "kalshi-data-archive", "schema_version": 1,
     "table": "trades", "day": "2026-11-24", "kind": "day" | "snapshot",
     "time_column": "exchange_ts", "range_us": [lo, hi],      # [lo, hi) µs; null for snapshots
     "run_id": "20261125T013012Z-3f2a9c", "created_at": "2026-11-25T01:31:40Z",
     "row_count": 10000000, "min_ts": ..., "max_ts": ...,      # over the time column; null if none
     "updated_through": ...,       # coverage_events only: newest updated_at (rows change in place)
     "sort_key": ["ticker", "exchange_ts", "trade_id"],
     "columns": [{"name": "trade_id", "pg_type": "uuid", "arrow_type": "extension<arrow.uuid>",
                  "nullable": false}, ...],
     "parts": [{"file": "part-<run_id>-0000.parquet", "rows": 5000000, "bytes": 61234567,
                "sha256": "…", "min_ts": ..., "max_ts": ...}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kalshi_data.archive.errors import ManifestError
from kalshi_data.archive.schema import SCHEMA_VERSION, TableSpec

FORMAT = "kalshi-data-archive"
MANIFEST_NAME = "_manifest.json"


@dataclass(frozen=True)
class Part:
    """One Parquet file of a table-day; ``file`` is relative to the day's directory."""

    file: str
    rows: int
    bytes: int
    sha256: str
    min_ts: int | None
    max_ts: int | None


@dataclass(frozen=True)
class Manifest:
    table: str
    day: str
    kind: str
    time_column: str | None
    range_us: tuple[int, int] | None
    run_id: str
    created_at: str
    row_count: int
    min_ts: int | None
    max_ts: int | None
    sort_key: tuple[str, ...]
    columns: tuple[dict[str, Any], ...]
    parts: tuple[Part, ...]
    schema_version: int = SCHEMA_VERSION
    updated_through: int | None = None

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT, "schema_version": self.schema_version, "table": self.table,
            "day": self.day, "kind": self.kind, "time_column": self.time_column,
            "range_us": list(self.range_us) if self.range_us else None, "run_id": self.run_id,
            "created_at": self.created_at, "row_count": self.row_count, "min_ts": self.min_ts,
            "max_ts": self.max_ts, "sort_key": list(self.sort_key), "columns": list(self.columns),
            "parts": [vars(p) for p in self.parts], "updated_through": self.updated_through,
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, location: str) -> Manifest:
        """Parse and check internal consistency; raises ``ManifestError`` naming ``location``."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ManifestError(location, "not a kalshi-data archive manifest")
            version = int(doc["schema_version"])
            if version > SCHEMA_VERSION:
                raise ManifestError(location, f"schema version {version} is newer than this "
                                    f"kalshi-data understands ({SCHEMA_VERSION}); upgrade first")
            parts = tuple(Part(file=str(p["file"]), rows=int(p["rows"]), bytes=int(p["bytes"]),
                               sha256=str(p["sha256"]), min_ts=_opt_int(p.get("min_ts")),
                               max_ts=_opt_int(p.get("max_ts"))) for p in doc["parts"])
            rng = doc.get("range_us")
            m = cls(table=str(doc["table"]), day=str(doc["day"]), kind=str(doc["kind"]),
                    time_column=doc.get("time_column"),
                    range_us=(int(rng[0]), int(rng[1])) if rng else None,
                    run_id=str(doc["run_id"]), created_at=str(doc["created_at"]),
                    row_count=int(doc["row_count"]), min_ts=_opt_int(doc.get("min_ts")),
                    max_ts=_opt_int(doc.get("max_ts")), sort_key=tuple(doc["sort_key"]),
                    columns=tuple(doc["columns"]), parts=parts, schema_version=version,
                    updated_through=_opt_int(doc.get("updated_through")))
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ManifestError(location, f"malformed manifest ({type(exc).__name__}: {exc})") from None
        if sum(p.rows for p in m.parts) != m.row_count:
            raise ManifestError(location, f"row_count {m.row_count} is not the sum of its parts' "
                                f"rows ({sum(p.rows for p in m.parts)})")
        if len({p.file for p in m.parts}) != len(m.parts) or any("/" in p.file for p in m.parts):
            raise ManifestError(location, "part list has duplicate or nested file names")
        return m

    def check_table(self, spec: TableSpec, location: str) -> None:
        """Refuse a manifest whose column list is not the one this code reads for ``spec``."""
        expected = [c["name"] for c in columns_of(spec)]
        got = [c.get("name") for c in self.columns]
        if self.table != spec.name or got != expected:
            raise ManifestError(location, f"describes table {self.table} with columns {got}, "
                                f"expected {spec.name} with {expected}")


def columns_of(spec: TableSpec) -> tuple[dict[str, Any], ...]:
    return tuple({"name": c.name, "pg_type": c.pg_type, "arrow_type": str(c.arrow_type),
                  "nullable": c.nullable} for c in spec.columns)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)
