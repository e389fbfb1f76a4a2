"""The deduplicator's errors, under the project's ``KalshiDataError`` (shared/errors.py).

::

    KalshiDataError
     └── DeduplicatorError
          └── GathererRefused(gatherer_id, reason)     this gatherer is not merged until fixed
               ├── CursorMismatch(gatherer_id, table, expected, found)
               │        gatherer_meta.db_uuid differs from the one stored beside the cursor
               │        (rebuilt or restored database); cleared by ``--reset-cursor GATHERER``
               └── SchemaTooOld(gatherer_id, found, required)
                        the gatherer's schema_migrations is behind this code base

Database failures themselves arrive as ``shared.errors.StorageError`` (mapped in shared/db.py).
A refusal concerns one gatherer only: the sync loops of every other gatherer keep running.
"""

from __future__ import annotations

from shared.errors import KalshiDataError


class DeduplicatorError(KalshiDataError):
    """Base of the deduplicator's own errors."""


class GathererRefused(DeduplicatorError):
    """A gatherer database must not be merged until an operator acts."""

    def __init__(self, gatherer_id: str, reason: str) -> None:
        super().__init__(gatherer_id, reason)
        self.gatherer_id = gatherer_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.gatherer_id} refused: {self.reason}"


class CursorMismatch(GathererRefused):
    """The gatherer database is not the one the stored cursor belongs to (hardening rule 5)."""

    def __init__(self, gatherer_id: str, table: str, expected: str, found: str) -> None:
        super().__init__(gatherer_id,
                         f"database identity changed for {table} (cursor belongs to db_uuid {expected}, "
                         f"gatherer now has {found}); run kalshi-deduplicator --reset-cursor {gatherer_id}")
        self.table = table
        self.expected = expected
        self.found = found


class SchemaTooOld(GathererRefused):
    """The gatherer's schema version is older than the one this code reads."""

    def __init__(self, gatherer_id: str, found: int, required: int) -> None:
        super().__init__(gatherer_id, f"schema version {found} is older than required {required}; "
                         "run kalshi-data migrate on that gatherer")
        self.found = found
        self.required = required
