"""PostgreSQL access shared by every process: connection parameters, pools, error mapping.

This is the only module that matches on psycopg's exception classes. Callers get
``RetryableStorage`` (connection lost, server restarting, timeout: keep the work, retry) or
``PermanentStorage`` (constraint, bad data, bad SQL: retrying cannot help), and
``error_type()`` gives the ``type`` label of ``writer_errors_total`` / ``dedup_errors_total``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import AsyncConnectionPool

from shared.config import DatabaseConfig
from shared.errors import PermanentStorage, RetryableStorage, StorageError

# TCP keepalives: a dead RDS failover or a cut network is noticed in ~1 minute, not 2 hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def connect_kwargs(cfg: DatabaseConfig, application_name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect``; the only place a DB password is revealed."""
    kw: dict[str, Any] = {}
    if cfg.dsn is None:
        kw.update(host=cfg.host, port=cfg.port, dbname=cfg.dbname, user=cfg.user)
    if cfg.password is not None:
        kw["password"] = cfg.password.reveal()
    kw.update(KEEPALIVES)
    kw["connect_timeout"] = max(1, int(round(cfg.connect_timeout_s)))
    kw["application_name"] = application_name or cfg.application_name
    kw["sslmode"] = cfg.sslmode
    if cfg.statement_timeout_ms:
        kw["options"] = f"-c statement_timeout={cfg.statement_timeout_ms}"
    return kw


async def connect(cfg: DatabaseConfig, application_name: str | None = None,
                  autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    """One async connection; errors come back mapped (``StorageError``)."""
    try:
        return await psycopg.AsyncConnection.connect(cfg.dsn or "", autocommit=autocommit,
                                                     **connect_kwargs(cfg, application_name))
    except psycopg.Error as exc:
        raise classify(exc, cfg.display_name()) from None


def make_pool(cfg: DatabaseConfig, name: str, application_name: str | None = None,
              min_size: int | None = None, max_size: int | None = None) -> AsyncConnectionPool:
    """An unopened async pool (``await pool.open()``); reconnects by itself after an outage."""
    return AsyncConnectionPool(
        conninfo=cfg.dsn or "",
        kwargs=connect_kwargs(cfg, application_name),
        min_size=cfg.pool_min if min_size is None else min_size,
        max_size=cfg.pool_max if max_size is None else max_size,
        name=name,
        open=False,
        timeout=cfg.connect_timeout_s * 2,
        reconnect_timeout=0,  # keep trying forever; the caller reports the outage
    )


def error_type(exc: BaseException) -> str:
    """``connection`` | ``constraint`` | ``timeout`` | ``other`` for metric labels."""
    if isinstance(exc, RetryableStorage | PermanentStorage):
        exc = exc.__cause__ or exc
    if isinstance(exc, pgerrors.QueryCanceled | TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timeout"
    if isinstance(exc, pgerrors.IntegrityError | pgerrors.DataError):
        return "constraint"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        return "connection"
    if isinstance(exc, StorageError):
        return "connection" if isinstance(exc, RetryableStorage) else "other"
    return "other"


def is_retryable(exc: BaseException) -> bool:
    """True for errors where the same work may succeed later (connection, shutdown, timeout)."""
    if isinstance(exc, RetryableStorage):
        return True
    if isinstance(exc, PermanentStorage):
        return False
    if isinstance(exc, pgerrors.SerializationFailure | pgerrors.DeadlockDetected | pgerrors.LockNotAvailable):
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError | TimeoutError) and \
        not isinstance(exc, pgerrors.InsufficientPrivilege | pgerrors.InvalidAuthorizationSpecification)


def is_row_error(exc: BaseException) -> bool:
    """True when the rows themselves are at fault (SQLSTATE classes 22 data, 23 integrity).

    Only such errors may send rows to ``rejected_rows``. Anything else that is not retryable
    (a missing table, a revoked grant, bad SQL) is a deployment problem: the rows are fine, so
    writers keep them and retry slowly while /health reports the error, instead of discarding
    a whole batch as "bad rows".
    """
    if isinstance(exc, RetryableStorage | PermanentStorage):
        exc = exc.__cause__ or exc
    return isinstance(exc, pgerrors.DataError | pgerrors.IntegrityError)


def classify(exc: BaseException, database: str) -> StorageError:
    """Map a psycopg error onto the project's tree; the text never includes a password."""
    reason = _reason(exc)
    cls = RetryableStorage if is_retryable(exc) else PermanentStorage
    err = cls(database, reason)
    err.__cause__ = exc
    return err


def _reason(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libpq's connection errors repeat the host/port; that is fine, it never includes the password.
    return text.strip()
