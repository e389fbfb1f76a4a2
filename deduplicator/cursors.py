"""Production ``sync_cursors``: where each gatherer's rows of each table are merged up to.

A cursor is the pair ``(ingest_xid, ingest_seq)`` of the last merged row, in the gatherer's
*ingest order* (``ingest_xid`` is the inserting or updating transaction's ``xid8``, as BIGINT
``ingest_xid::text::bigint``; ``ingest_seq`` comes from a sequence). It is read and advanced only
inside the production transaction that merges the page it covers (``lock_cursor`` ...
``advance_cursor`` ... COMMIT), so the merged rows and the position move together or not at all:
a crash anywhere before COMMIT leaves both unchanged and the page is simply read again.

Why no late-committing row can ever fall behind the cursor
----------------------------------------------------------
A page is ``WHERE (ingest_xid, ingest_seq) > cursor AND ingest_xid < pg_snapshot_xmin(
pg_current_snapshot()) ORDER BY ingest_xid, ingest_seq LIMIT n`` in ONE statement on the gatherer
(pull.py), so ``xmin`` belongs to the very snapshot that decides which rows are visible.

1. Transaction ids are assigned in increasing order, and ``xid8`` never wraps (it carries the
   epoch), so comparisons are total and stable.
2. ``xmin`` of a snapshot is the smallest xid still in progress when the snapshot was taken (or
   the next xid to be assigned when none is). Hence every transaction with ``xid < xmin`` has
   finished, committed or aborted, and nothing it wrote can change or appear later.
   Every transaction that can still commit has ``xid >= xmin``: it was either running (then
   ``xmin <= xid``) or had no xid yet (then it gets one ``>= xmax >= xmin``).
3. All rows of one transaction carry the same ``ingest_xid`` and become visible atomically at its
   commit, so the set of rows with ``ingest_xid < xmin`` is complete and final in that snapshot;
   we read a prefix of it, in ``(ingest_xid, ingest_seq)`` order, and the cursor is the last row
   read.
4. Any row that becomes visible later was written by a transaction with ``xid >= xmin`` of every
   snapshot we ever read, so it is ``> cursor`` (the cursor's xid is below that xmin) and will be
   read by a later page. Nothing is skipped, whatever its timestamps or sequence value: a long or
   concurrent transaction only *delays* the rows behind it, it cannot be overtaken.
5. Updates in place (markets, events, series, coverage_events) re-stamp ``ingest_xid`` and
   ``ingest_seq`` in a BEFORE UPDATE trigger (``touch_ingest``), so a new version is a new row
   past the cursor by the same argument, and is merged newest-wins.

The price of this safety is latency, not loss: a gatherer transaction left open holds back every
later row of that gatherer, and the lag metric (which counts such held-back rows as pending) says
so. Re-reading is always harmless because every merge is idempotent (merge.py).

Identity (hardening rule 5): the cursor row stores the gatherer database's ``gatherer_meta.db_uuid``.
A page from a database with another uuid is refused (``CursorMismatch``) before anything is
merged; ``reset_cursors`` (``kalshi-deduplicator --reset-cursor GATHERER``) rewinds the cursors to
the start with the nil uuid, which the next page adopts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from deduplicator.errors import CursorMismatch
from deduplicator.tables import TableSpec

# The nil uuid marks a cursor that was reset and adopts the next gatherer database it meets.
NIL_UUID = "00000000-0000-0000-0000-000000000000"

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in one gatherer table's ingest order; ``Cursor(0, 0)`` is before every row."""

    xid: int = 0
    seq: int = 0


@dataclass(frozen=True)
class CursorRow:
    db_uuid: str
    cursor: Cursor
    rows_merged: int
    rows_duplicate: int
    merged_through: int | None  # µs, gatherer clock: newest merged row's received_at


_COLUMNS = "db_uuid::text, cursor_xid, cursor_seq, rows_merged, rows_duplicate, merged_through"


def _row(r: tuple[Any, ...]) -> CursorRow:
    return CursorRow(str(r[0]), Cursor(int(r[1]), int(r[2])), int(r[3]), int(r[4]),
                     None if r[5] is None else int(r[5]))


async def read_cursor(conn: Conn, gatherer_id: str, table: str) -> CursorRow | None:
    """The stored cursor (no lock), or None before the first merged page."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM sync_cursors WHERE gatherer_id = %s AND table_name = %s",
                             (gatherer_id, table))
    r = await cur.fetchone()
    return None if r is None else _row(r)


async def lock_cursor(conn: Conn, gatherer_id: str, table: str, db_uuid: str) -> CursorRow:
    """Lock (FOR UPDATE) and return the cursor inside the page transaction, creating it if new.

    The row lock serialises page transactions of one (gatherer, table), so even two deduplicator
    instances started by mistake cannot merge the same page twice.

    Raises:
        CursorMismatch: the cursor belongs to another database than ``db_uuid``.
    """
    q = f"SELECT {_COLUMNS} FROM sync_cursors WHERE gatherer_id = %s AND table_name = %s FOR UPDATE"
    r = await (await conn.execute(q, (gatherer_id, table))).fetchone()
    if r is None:
        await conn.execute(
            "INSERT INTO sync_cursors (gatherer_id, table_name, db_uuid, updated_at) "
            "VALUES (%s, %s, %s, now_us()) ON CONFLICT DO NOTHING", (gatherer_id, table, db_uuid))
        r = await (await conn.execute(q, (gatherer_id, table))).fetchone()
        assert r is not None
    row = _row(r)
    if row.db_uuid not in (db_uuid, NIL_UUID):
        raise CursorMismatch(gatherer_id, table, row.db_uuid, db_uuid)
    return row


async def advance_cursor(conn: Conn, spec: TableSpec, gatherer_id: str, db_uuid: str,
                         merged: int, duplicate: int) -> CursorRow:
    """Move the cursor to the last staged row (same transaction as the merge) and count the page."""
    q = sql.SQL("""
        UPDATE sync_cursors c
           SET cursor_xid = s.ingest_xid, cursor_seq = s.ingest_seq,
               rows_merged = c.rows_merged + %(merged)s, rows_duplicate = c.rows_duplicate + %(dup)s,
               merged_through = GREATEST(c.merged_through, s.through), db_uuid = %(uuid)s,
               updated_at = now_us()
          FROM (SELECT ingest_xid, ingest_seq, (SELECT max({time}) FROM {stage}) AS through
                  FROM {stage} ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1) s
         WHERE c.gatherer_id = %(gid)s AND c.table_name = %(table)s
     RETURNING c.db_uuid::text, c.cursor_xid, c.cursor_seq, c.rows_merged, c.rows_duplicate, c.merged_through
    """).format(time=sql.Identifier(spec.time_column), stage=sql.Identifier(spec.staging))
    r = await (await conn.execute(q, {"merged": merged, "dup": duplicate, "uuid": db_uuid,
                                      "gid": gatherer_id, "table": spec.name})).fetchone()
    assert r is not None, "advance_cursor called with an empty staging table"
    return _row(r)


async def reset_cursors(conn: Conn, gatherer_id: str) -> int:
    """Rewind every cursor of ``gatherer_id`` to the start and unbind it from its database.

    The gatherer's rows are then read again from the beginning; merging is idempotent, so this
    costs time, never duplicates. Returns the number of cursors reset.
    """
    cur = await conn.execute(
        "UPDATE sync_cursors SET db_uuid = %s, cursor_xid = 0, cursor_seq = 0, updated_at = now_us() "
        "WHERE gatherer_id = %s", (NIL_UUID, gatherer_id))
    return cur.rowcount
