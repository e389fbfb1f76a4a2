"""The gatherer's errors, under the project's ``KalshiDataError`` (shared/errors.py).

::

    KalshiDataError
     └── GathererError
          ├── AuthRejected(key_id, reason)       401/403 from Kalshi: the key id is named, never the key
          ├── KeyInvalid(key_id, reason)          the PEM could not be loaded: fatal at start (exit 2)
          ├── SubscribeFailed(sid, code)          an error frame answered a subscription command
          └── RestError(endpoint, status, code)   a REST call failed for good (after retries)

Raised by the I/O layer (rest.py, connection.py); app.py/__main__.py decide what is fatal.
"""

from __future__ import annotations

from shared.errors import KalshiDataError


class GathererError(KalshiDataError):
    """Base of the gatherer's own errors."""


class AuthRejected(GathererError):
    """Kalshi refused our signature (HTTP 401/403). Names the key id only."""

    def __init__(self, key_id: str, reason: str = "signature rejected") -> None:
        super().__init__(key_id, reason)
        self.key_id = key_id
        self.reason = reason

    def __str__(self) -> str:
        return f"Kalshi rejected API key id {self.key_id}: {self.reason}"


class KeyInvalid(GathererError):
    """The private key for ``key_id`` could not be loaded (bad PEM, wrong type, encrypted)."""

    def __init__(self, key_id: str, reason: str) -> None:
        super().__init__(key_id, reason)
        self.key_id = key_id
        self.reason = reason

    def __str__(self) -> str:
        return f"private key for API key id {self.key_id} is unusable: {self.reason}"


class SubscribeFailed(GathererError):
    """The exchange answered a subscribe/update with an error frame (Kalshi integer ``code``)."""

    def __init__(self, sid: int | None, code: int | None, msg: str = "") -> None:
        super().__init__(sid, code, msg)
        self.sid = sid
        self.code = code
        self.msg = msg

    def __str__(self) -> str:
        return f"subscription sid={self.sid} failed: error {self.code} {self.msg}".rstrip()


class RestError(GathererError):
    """A REST request failed permanently (4xx other than 401/429) or retries were exhausted."""

    def __init__(self, endpoint: str, status: int | None, code: str = "", message: str = "") -> None:
        super().__init__(endpoint, status, code, message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        detail = " ".join(x for x in (self.code, self.message) if x)
        return f"REST {self.endpoint}: HTTP {self.status}" + (f" ({detail})" if detail else "")
