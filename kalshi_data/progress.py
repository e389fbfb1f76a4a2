"""Progress of long operator work: a rich bar (rows, rate, ETA) on a terminal, nothing elsewhere.

::

    with Progress("trades KXBTC", total=rows, unit="rows") as p:
        for batch in batches:
            ...
            p.advance(len(batch))

    with Progress("export", total=table_days, unit="days", rows=True) as p:   # work in units
        ... p.add_rows(n) ...                       # of unknown size: rows and rate beside
        p.advance(1)                                # the bar, ETA from the units

Under systemd, cron, a pipe or CI stderr is not a terminal and nothing is drawn (the commands
print their one-line summaries as before), so journals stay clean. ``enabled`` forces either
way (``--progress`` / ``--no-progress``); ``console`` lets tests draw into a buffer.
"""

from __future__ import annotations

import argparse
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


def add_flags(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar only when stderr is a terminal)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="draw a progress bar even when stderr is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never draw a progress bar")


class Progress:
    """One task's progress; a no-op unless drawing is enabled (see the module docstring)."""

    def __init__(self, description: str, total: int | None = None, *, unit: str = "rows",
                 rows: bool = False, enabled: bool | None = None, console: Console | None = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self.rows = 0
        self._count_rows = rows
        self._t0 = 0.0
        self._console = console
        self._enabled = enabled
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    @property
    def active(self) -> bool:
        return self._bar is not None

    def __enter__(self) -> Self:
        import time

        from rich.console import Console

        self._t0 = time.monotonic()
        console = self._console or Console(stderr=True)
        enabled = console.is_terminal if self._enabled is None else self._enabled
        if not enabled:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(self.unit), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=False, refresh_per_second=4)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, rate="")
        return self

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n, rate=self._rate())

    def add_rows(self, n: int) -> None:
        """Rows done inside the current unit (``rows=True``): shown with their rate."""
        self.rows += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, rate=self._rate())

    def _rate(self) -> str:
        import time

        elapsed = max(time.monotonic() - self._t0, 1e-6)
        if self._count_rows:
            return f"{self.rows:,} rows {self.rows / elapsed:,.0f} rows/s"
        return f"{self.done / elapsed:,.0f} {self.unit}/s"

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
