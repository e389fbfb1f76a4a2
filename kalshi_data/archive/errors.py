"""Errors of the Parquet archive. Each maps to one ``type`` label of ``export_errors_total``.

::

    KalshiDataError (shared/errors.py)
     ├── StorageError(database, reason)             type="database" (shared/db.py maps psycopg)
     └── ArchiveError
          ├── S3Error(bucket, key, reason)          type="s3"        bucket missing, no permission,
          │                                                          unreachable, no credentials
          ├── ManifestError(location, reason)       type="manifest"  missing/unreadable manifest, or
          │                                                          one that disagrees with the parts
          ├── ParquetError(location, reason)        type="parquet"   a part or a COPY stream that
          │                                                          cannot be converted
          ├── EmptyDay(table, day)                  type="database"  nothing to export for that day
          ├── SchemaMismatch(table, reason)         type="database"  production columns differ from
          │                                                          the archive schema
          └── NotCaughtUp(table, day, lagging)      type="sync"      deduplicator not yet past the
                                                                     day's end; retry later

Every message is one line naming what failed; none carries a credential or a DSN password.
"""

from __future__ import annotations

from shared.errors import KalshiDataError, StorageError


class ArchiveError(KalshiDataError):
    """Base of the archive's own errors; ``error_type`` is the metric label."""

    error_type = "other"


class S3Error(ArchiveError):
    """An S3 call failed; ``reason`` is already phrased for the operator."""

    error_type = "s3"

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        super().__init__(bucket, key, reason)
        self.bucket = bucket
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}: {self.reason}"


class _LocatedError(ArchiveError):
    """An error about one object or file, named by ``location``."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(location, reason)
        self.location = location
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class ManifestError(_LocatedError):
    """The manifest is missing, unreadable, of an unknown version, or disagrees with the parts."""

    error_type = "manifest"


class ParquetError(_LocatedError):
    """Rows could not be converted to or from Parquet."""

    error_type = "parquet"


class EmptyDay(ArchiveError):
    """Production holds no row of ``table`` for ``day``: almost always a gap worth a look."""

    error_type = "database"

    def __init__(self, table: str, day: str) -> None:
        super().__init__(table, day)
        self.table = table
        self.day = day

    def __str__(self) -> str:
        return (f"no {self.table} rows in production for {self.day}; nothing exported "
                f"(use --allow-empty to record an empty day)")


class SchemaMismatch(ArchiveError):
    """The production table's columns are not the ones archive schema SCHEMA_VERSION expects."""

    error_type = "database"

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(table, reason)
        self.table = table
        self.reason = reason

    def __str__(self) -> str:
        return f"table {self.table}: {self.reason}"


class NotCaughtUp(ArchiveError):
    """Some gatherer's rows are not merged past the day's end (plus margin): exporting now could
    archive an incomplete day. ``lagging`` names each cursor and how far it has got."""

    error_type = "sync"

    def __init__(self, table: str, day: str, lagging: tuple[str, ...]) -> None:
        super().__init__(table, day, lagging)
        self.table = table
        self.day = day
        self.lagging = lagging

    def __str__(self) -> str:
        return (f"deduplicator has not merged {self.table} past the end of {self.day} yet "
                f"({'; '.join(self.lagging)}); retry later or pass --no-wait-for-sync")


def error_type(exc: BaseException) -> str:
    """The ``type`` label of ``export_errors_total`` for ``exc``."""
    if isinstance(exc, ArchiveError):
        return exc.error_type
    if isinstance(exc, StorageError):
        return "database"
    return "other"
