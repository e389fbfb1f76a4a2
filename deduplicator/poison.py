"""Poison rows: a page production refuses is bisected down to the rows at fault.

Without this, one row production will never take (a CHECK it fails, a value out of range: the
gatherer's schema let it in, production's does not) fails the page's INSERT every time, and the
cursor of that (gatherer, table) never moves again: every later row of that table stalls behind
it. So when the page's INSERT fails with a row error (SQLSTATE class 22 data or 23 integrity,
``shared.db.is_row_error``), inside the same page transaction:

1. the staged page is read back (as text, in ingest order);
2. halves are merged under savepoints, recursively: a half that merges stays merged, a half that
   fails is split again, down to single rows;
3. each single row that still fails goes to production's ``rejected_rows`` with the gatherer,
   the table, the database's reason and the row as JSON (column -> text);
4. the staging table is refilled with the whole page, so the cursor advances past all of it in
   the same transaction (``advance_cursor``), rejected rows included.

Counted in ``dedup_rejected_rows_total{gatherer,table}``, logged, and alerted
(``DeduplicatorRowsRejected``); the runbook says how to inspect and replay them. Any other error
(connection, missing table, grant) is not a row's fault: it still fails the page, nothing is
set aside, and the loop retries.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg import sql

from deduplicator.tables import TableSpec
from shared.db import is_row_error

Conn = psycopg.AsyncConnection[Any]
Row = tuple[Any, ...]


def reason_of(exc: BaseException) -> str:
    """``SQLSTATE: message`` of a refused statement (no DSN, no value beyond what PostgreSQL says)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{state or type(exc).__name__}: {text}"[:500]


def _columns(spec: TableSpec) -> list[str]:
    return [*spec.column_names, "ingest_xid", "ingest_seq"]


async def _stage(conn: Conn, spec: TableSpec, rows: list[Row]) -> None:
    """Replace the staging table's content with ``rows`` (text values)."""
    stage = sql.Identifier(spec.staging)
    await conn.execute(sql.SQL("DELETE FROM {}").format(stage))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in _columns(spec))
    async with conn.cursor() as cur, cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as cp:
        for r in rows:
            await cp.write_row(r)


async def isolate(conn: Conn, spec: TableSpec, merge: sql.Composed, gatherer_id: str
                  ) -> tuple[int, int]:
    """Merge what production takes of the staged page and set the rest aside (module docstring).

    Call inside the page transaction, after the whole page's INSERT failed with a row error and
    was rolled back to its savepoint. Returns ``(rows merged, rows rejected)``; the staging table
    holds the whole page again on return.
    """
    stage = sql.Identifier(spec.staging)
    cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in _columns(spec))
    page: list[Row] = await (await conn.execute(sql.SQL(
        "SELECT {} FROM {} ORDER BY ingest_xid::bigint, ingest_seq::bigint").format(cols, stage))).fetchall()
    merged = 0
    refused: list[tuple[Row, str]] = []

    async def attempt(part: list[Row]) -> None:
        nonlocal merged
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this part
                await _stage(conn, spec, part)
                res = await conn.execute(merge, {"gid": gatherer_id})
                n = max(res.rowcount, 0)
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            if len(part) == 1:
                refused.append((part[0], reason_of(exc)))
                return
            mid = len(part) // 2
            await attempt(part[:mid])
            await attempt(part[mid:])
            return
        merged += n

    await attempt(page)
    names = _columns(spec)
    if refused:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO rejected_rows (gatherer_id, table_name, reason, payload) VALUES (%s, %s, %s, %s)",
                [(gatherer_id, spec.name, why, orjson.dumps(dict(zip(names, r, strict=True))).decode())
                 for r, why in refused])
    await _stage(conn, spec, page)  # the cursor moves past the whole page, refused rows included
    return merged, len(refused)
