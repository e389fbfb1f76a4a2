"""The fleet's one error class.

::

    KalshiDataError
     └── FleetError(what, reason)   the fleet cannot be planned, started or stopped

``what`` names the piece (``simulator``, ``gatherer-2``, ``port 8080``, ``PostgreSQL``) so the CLI
prints ONE line an operator can act on: ``kalshi-data demo: gatherer-2: exited with code 1 ...``.
"""

from __future__ import annotations

from shared.errors import KalshiDataError


class FleetError(KalshiDataError):
    """Planning or starting the fleet failed; everything already started has been stopped."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"
