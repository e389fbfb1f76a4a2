"""The project's error tree. Few classes, real fields; text is built in ``__str__``.

::

    KalshiDataError
     ├── ConfigError(path, reason)             fatal at startup: exit 2, one line
     ├── SecretError(name, reason)             a secret could not be resolved (never its value)
     ├── ProtocolViolation(sid, seq, reason)   counted, never fatal
     ├── MigrationError(file, reason)          a migration cannot be applied / was changed
     └── StorageError(database, reason)
          ├── RetryableStorage                 connection lost, timeout: keep the batch, retry
          └── PermanentStorage                 constraint, bad SQL: a bug or bad row, never retried

Only ``shared/db.py`` maps psycopg's exceptions onto ``StorageError``; nothing else matches on
error text. Package-specific errors (``gatherer/errors.py``, ``deduplicator/errors.py``) derive
from ``KalshiDataError``.
"""

from __future__ import annotations


class KalshiDataError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(KalshiDataError):
    """A config file is invalid. ``path`` is the dotted key path (``database.port``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"config error: {self.path}: {self.reason}" if self.path else f"config error: {self.reason}"


class SecretError(KalshiDataError):
    """A secret could not be read. Names the source (file path, env var, secret name), never the value."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"secret {self.name}: {self.reason}"


class ProtocolViolation(KalshiDataError):
    """The exchange sent something the protocol does not allow; counted, never fatal."""

    def __init__(self, sid: int | None, seq: int | None, reason: str) -> None:
        super().__init__(sid, seq, reason)
        self.sid = sid
        self.seq = seq
        self.reason = reason

    def __str__(self) -> str:
        return f"protocol violation (sid={self.sid}, seq={self.seq}): {self.reason}"


class MigrationError(KalshiDataError):
    """A migration file cannot be applied, or an applied file has changed since."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, reason)
        self.file = file
        self.reason = reason

    def __str__(self) -> str:
        return f"migration {self.file}: {self.reason}"


class StorageError(KalshiDataError):
    """A database operation failed. ``database`` is a display name, never a DSN with a password."""

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(database, reason)
        self.database = database
        self.reason = reason

    def __str__(self) -> str:
        return f"database {self.database}: {self.reason}"


class RetryableStorage(StorageError):
    """Connection lost, server shutting down, timeout: the same work may succeed later."""


class PermanentStorage(StorageError):
    """Constraint violation, bad SQL or data: retrying the same rows cannot help."""
