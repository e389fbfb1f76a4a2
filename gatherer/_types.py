"""Small structural interfaces between the gatherer's I/O modules and the data path.

They let poller/backfill/coverage/markets depend on "something with ``put(rows)``" rather than on
``gatherer.writer.Writer`` itself, so each can be built and tested with the real writer or a real
list, and the data path can evolve its constructor freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from shared.kalshi.book import Book

NowUs = Callable[[], int]


class RowSink(Protocol):
    """A writer (``gatherer.writer.Writer``): ``await put_many(rows)`` accepts rows or waits
    (backpressure); never drops an accepted row."""

    async def put_many(self, rows: Sequence[Any]) -> None: ...


class CommitSink(RowSink, Protocol):
    """A writer that also tells when rows are committed: ``settled(mark)`` returns once every
    row accepted before ``mark`` was read is in the database (``gatherer.writer.Writer``)."""

    @property
    def mark(self) -> int: ...

    async def settled(self, mark: int) -> None: ...


class BookSource(Protocol):
    """Where the poller finds the WS-reconstructed book of a market (the router)."""

    def book(self, ticker: str) -> Book | None: ...
