"""Catch SIGTERM/SIGINT from the first line of ``main()``.

A service is often told to stop while it is still importing or connecting (``systemctl
restart`` twice in a row, a supervisor shutting the fleet down during start-up). Without a
handler the default action kills the process mid-start with -15, skipping the clean stop. The
guard records the request until the event loop installs its own handlers, which then honour it
at once.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlyStop:
    """Remembers a stop signal that arrived before the asyncio handlers existed."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> "EarlyStop":
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
