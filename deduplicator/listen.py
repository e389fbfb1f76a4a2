"""Optional LISTEN/NOTIFY wake-up: the gatherer's writer sends ``NOTIFY kalshi_ingest, '<table>'``
after each commit; the matching sync loop wakes at once instead of at its next poll.

Only a latency optimisation: polling (``sync.poll_interval_ms``) stays the source of truth, so a
lost notification, a dropped LISTEN connection or a gatherer that never notifies costs at most one
poll interval. After every (re)connect all loops of the gatherer are woken once, for anything
notified while we were not listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import psycopg

from deduplicator._backoff import Backoff
from deduplicator.sources import Source
from shared.db import connect
from shared.errors import StorageError

CHANNEL = "kalshi_ingest"

log = logging.getLogger("deduplicator.listen")


async def listen(source: Source, wake: Callable[[str | None], None], stop: asyncio.Event,
                 retry_max_s: float, rng: random.Random) -> None:
    """Run until cancelled or ``stop``; ``wake(table)`` per notification (``None``: every table)."""
    backoff = Backoff(0.5, retry_max_s, rng)
    while not stop.is_set():
        try:
            conn = await connect(source.cfg.database, f"{source.cfg.database.application_name}-listen",
                                 autocommit=True)
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                backoff.reset()
                wake(None)
                async for note in conn.notifies():
                    wake(note.payload or None)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        except asyncio.CancelledError:
            raise
        except (StorageError, psycopg.Error, OSError) as exc:  # the sync loops report outages; retry
            log.debug("%s: LISTEN connection failed: %s", source.id, exc, extra={"gatherer_id": source.id})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff.next())
