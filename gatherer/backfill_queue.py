"""The durable trade-backfill queue: table ``backfill_queue`` of the gatherer database.

One row per window of trades to fetch over REST (migrations/gatherer/006_recovery.sql): a
window is written here before any fetch starts, so neither a failed fetch nor a restart can
forget it; ``done`` only after its trades are committed. Pure SQL over the gatherer's aux pool;
the policy (backoff, merging, the sweep) is in backfill.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gatherer.coverage import CoverageRef


@dataclass(frozen=True)
class Window:
    """One queued window (µs, our receive clock); ``ticker`` None = every market."""

    id: int
    ticker: str | None
    start_us: int
    end_us: int
    reason: str
    attempts: int
    next_attempt_us: int
    created_us: int
    coverage_event: str | None
    linked: tuple[CoverageRef, ...] = ()

    @property
    def scope(self) -> str:
        return "global" if self.ticker is None else "market"


_COLS = ("id, ticker, window_from, window_to, reason, attempts, next_attempt, created_at, "
         "coverage_event::text, linked")


def _window(r: tuple[Any, ...]) -> Window:
    linked = r[9] if isinstance(r[9], list) else orjson.loads(r[9] or "[]")
    return Window(int(r[0]), r[1], int(r[2]), int(r[3]), str(r[4]), int(r[5]), int(r[6]), int(r[7]),
                  r[8], tuple(CoverageRef.from_json(x) for x in linked))


class BackfillQueue:
    """``backfill_queue`` reads and writes. Every method raises psycopg errors as they come;
    the caller decides what a database outage means."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def add(self, ticker: str | None, start_us: int, end_us: int, reason: str, now_us: int,
                  coverage_event: str, linked: tuple[CoverageRef, ...] = ()) -> Window:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO backfill_queue (scope, ticker, window_from, window_to, reason, "
                " next_attempt, coverage_event, linked, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING " + _COLS,
                ("global" if ticker is None else "market", ticker, start_us, max(start_us, end_us),
                 reason, now_us, coverage_event, Jsonb([x.to_json() for x in linked]), now_us, now_us))
            row = await cur.fetchone()
        assert row is not None
        return _window(row)

    async def due(self, now_us: int, limit: int = 100) -> list[Window]:
        """Pending windows whose next attempt is due, oldest attempt time first."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLS} FROM backfill_queue WHERE state = 'pending' AND next_attempt <= %s "
                "ORDER BY next_attempt, id LIMIT %s", (now_us, limit))
            return [_window(r) for r in await cur.fetchall()]

    async def pending(self) -> list[Window]:
        """Every pending window (start-up: what a previous run left)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLS} FROM backfill_queue WHERE state = 'pending' ORDER BY id")
            return [_window(r) for r in await cur.fetchall()]

    async def stats(self) -> tuple[int, int | None, int | None]:
        """(pending windows, created_at of the oldest, the soonest next attempt)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), min(created_at), min(next_attempt) FROM backfill_queue "
                "WHERE state = 'pending'")
            r = await cur.fetchone()
        assert r is not None
        return int(r[0]), (None if r[1] is None else int(r[1])), (None if r[2] is None else int(r[2]))

    async def done(self, ids: list[int], trades: int, now_us: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE backfill_queue SET state = 'done', trades = %s, done_at = %s, updated_at = %s, "
                "last_error = NULL, attempts = attempts + 1 WHERE id = ANY(%s)",
                (trades, now_us, now_us, ids))

    async def failed(self, ids: list[int], next_attempt_us: int, error: str, now_us: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE backfill_queue SET attempts = attempts + 1, next_attempt = %s, last_error = %s, "
                "updated_at = %s WHERE id = ANY(%s)", (next_attempt_us, error[:500], now_us, ids))

    async def last_sweep_end(self) -> int | None:
        """Where the newest recorded sweep window ends: the next sweep starts there."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT max(window_to) FROM backfill_queue WHERE reason = 'sweep'")
            r = await cur.fetchone()
        return None if r is None or r[0] is None else int(r[0])
