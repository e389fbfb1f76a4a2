"""Is production complete for a day? Judged from the deduplicator's ``sync_cursors``.

``merged_through`` is the gatherer-clock ``received_at`` (µs) of the newest row merged for that
``(gatherer_id, table_name)``. Once every gatherer's cursor is past the day's end plus a margin
(late REST backfills, clock skew between exchange and gatherer), no row of that day can still be
on its way. For the continuously busy tables the table's own cursors decide. Sparse tables
(``coverage_events``, the reference tables) can legitimately see no row for hours, so their
cursor would never move past midnight; for them each gatherer's most advanced cursor (any table)
shows that the deduplicator is draining that gatherer past the day's end.
"""

from __future__ import annotations

from typing import Any

import psycopg

from kalshi_data.archive.errors import NotCaughtUp
from kalshi_data.archive.schema import DENSE_TABLES


def check_caught_up(conn: psycopg.Connection[Any], table: str, day: str, day_end_us: int,
                    margin_us: int) -> None:
    """Raise ``NotCaughtUp`` unless every relevant cursor is at or past ``day_end_us + margin_us``."""
    rows = conn.execute(
        "SELECT gatherer_id, table_name, merged_through FROM sync_cursors "
        "ORDER BY gatherer_id, table_name").fetchall()
    needed = day_end_us + margin_us
    reached: dict[str, int | None] = {}
    for gatherer_id, table_name, merged_through in rows:
        if table in DENSE_TABLES:
            if table_name == table:
                reached[gatherer_id] = merged_through
        else:
            prev = reached.get(gatherer_id)
            if merged_through is not None and (prev is None or merged_through > prev):
                reached[gatherer_id] = merged_through
            else:
                reached.setdefault(gatherer_id, prev)
    if not reached:
        raise NotCaughtUp(table, day, ("no sync_cursors row: the deduplicator has merged nothing",))
    lagging = tuple(
        f"{g}: {'nothing merged' if r is None else f'{(needed - r) / 1e6:.0f} s short'}"
        for g, r in sorted(reached.items()) if r is None or r < needed)
    if lagging:
        raise NotCaughtUp(table, day, lagging)
