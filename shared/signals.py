"""Catch SIGTERM/SIGINT from the first line of ``main()``.

A service is often told to stop while it is still importing or connecting (``systemctl
restart`` twice in a row, a supervisor shutting the fleet down during start-up). Without a
handler the default action kills the process mid-start with -15, skipping the clean stop. The
guard records the request until the event loop installs its own handlers, which then honour it
at once. A path that never reaches an event loop (a one-shot command) calls ``restore`` so
Ctrl-C and SIGTERM act as usual again.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlyStop:
    """Remembers a stop signal that arrived before the asyncio handlers existed."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> EarlyStop:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        return self

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
