"""The S3 Parquet archive of production (``kalshi-data export`` / ``kalshi-data import``).

Public surface: ``export_day`` / ``ExportOptions``, ``verify_day`` / ``DayCheck``, ``import_day``,
``load_manifest``,
``Manifest``, ``S3Location`` / ``S3Store``, ``TABLES`` and the error classes. Importing this
package has no side effects (no clients, connections or registries are created).
"""

from kalshi_data.archive.errors import (
                                        ArchiveError,
                                        EmptyDay,
                                        ManifestError,
                                        NotCaughtUp,
                                        ParquetError,
                                        S3Error,
                                        SchemaMismatch,
)
from kalshi_data.archive.export import DayCheck, ExportOptions, ExportResult, export_day, verify_day
from kalshi_data.archive.importer import ImportResult, import_day, load_manifest
from kalshi_data.archive.manifest import MANIFEST_NAME, Manifest, Part
from kalshi_data.archive.s3 import S3Location, S3Store
from kalshi_data.archive.schema import SCHEMA_VERSION, TABLES, TableSpec

__all__ = [
                                        "MANIFEST_NAME",
                                        "SCHEMA_VERSION",
                                        "TABLES",
                                        "ArchiveError",
                                        "DayCheck",
                                        "EmptyDay",
                                        "ExportOptions",
                                        "ExportResult",
                                        "ImportResult",
                                        "Manifest",
                                        "ManifestError",
                                        "NotCaughtUp",
                                        "ParquetError",
                                        "Part",
                                        "S3Error",
                                        "S3Location",
                                        "S3Store",
                                        "SchemaMismatch",
                                        "TableSpec",
                                        "export_day",
                                        "import_day",
                                        "load_manifest",
                                        "verify_day",
]
