"""Keyset pages from one gatherer database, read as ``dedup_reader`` (autocommit, READ COMMITTED).

Three statements, each one round trip on the gatherer:

- ``probe``: is anything past the cursor, is it readable yet, and the gatherer's clock (lag is
  measured on the gatherer's clock, hardening rule 9). One index probe, cheap enough to run
  every poll interval per table.
- ``page_copy_sql``: the page itself as a binary ``COPY (SELECT ...) TO STDOUT``, streamed
  straight into production's staging table by merge.py: the deduplicator never parses rows and
  never holds more than one COPY buffer of a page in memory. The page is a keyset page
  (``(ingest_xid, ingest_seq) > cursor ... ORDER BY ... LIMIT``; never OFFSET) limited to rows
  below the snapshot's xmin; cursors.py explains why that can never skip a late commit.
- ``write_ack``: upsert this consumer's position into the gatherer's ``sync_acks`` after the page
  committed in production, so retention drops only merged partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from deduplicator.cursors import Cursor
from deduplicator.tables import TableSpec

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class Probe:
    """What lies past the cursor on the gatherer, as of one snapshot."""

    now_us: int                        # the gatherer's now_us()
    first_pending_time: int | None     # time_column of the first row past the cursor; None: caught up
    ready: bool                        # that row is below xmin, i.e. a page would return it

    @property
    def pending(self) -> bool:
        return self.first_pending_time is not None


def _position(cursor: Cursor) -> sql.Composed:
    # xid8 has no cast from bigint; text is its canonical input form.
    return sql.SQL("({x})::text::xid8, {s}").format(x=sql.Literal(cursor.xid), s=sql.Literal(cursor.seq))


def _past(cursor: Cursor) -> sql.Composed:
    """Rows past ``cursor``. The second condition is implied by the first; it is there for
    TimescaleDB, whose compressed chunks keep a min/max of ingest_xid per batch (gatherer
    migration 005): with it the planner skips every compressed batch below the cursor by that
    metadata instead of decompressing whole chunks on every page, and the recent chunks stay
    index scans (tests/deduplicator/test_timescale_plan.py). On native partitions it is one more
    bound of the same index condition."""
    return sql.SQL("(ingest_xid, ingest_seq) > ({pos}) AND ingest_xid >= ({x})::text::xid8").format(
        pos=_position(cursor), x=sql.Literal(cursor.xid))


async def probe(conn: Conn, spec: TableSpec, cursor: Cursor) -> Probe:
    """Look one row past ``cursor``. ``ready`` is False while only in-flight-shadowed rows exist."""
    q = sql.SQL("""
        SELECT now_us(), p.t, p.x < pg_snapshot_xmin(pg_current_snapshot())
          FROM (SELECT 1) AS one
          LEFT JOIN LATERAL (
                SELECT {time} AS t, ingest_xid AS x FROM {table}
                 WHERE {past}
                 ORDER BY ingest_xid, ingest_seq LIMIT 1) p ON true
    """).format(time=sql.Identifier(spec.time_column), table=sql.Identifier(spec.name), past=_past(cursor))
    r = await (await conn.execute(q)).fetchone()
    assert r is not None
    return Probe(int(r[0]), None if r[1] is None else int(r[1]), bool(r[2]))


def page_select_sql(spec: TableSpec, cursor: Cursor, limit: int) -> sql.Composed:
    """The keyset page as a SELECT: spec columns cast to their exact types, then the cursor pair."""
    cols = sql.SQL(", ").join(
        sql.SQL("{c}::{t}").format(c=sql.Identifier(c), t=sql.SQL(t)) for c, t in spec.columns)
    return sql.SQL("""
        SELECT {cols}, ingest_xid::text::bigint, ingest_seq::bigint FROM {table}
         WHERE {past}
           AND ingest_xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY ingest_xid, ingest_seq
         LIMIT {limit}
    """).format(cols=cols, table=sql.Identifier(spec.name), past=_past(cursor), limit=sql.Literal(limit))


def page_copy_sql(spec: TableSpec, cursor: Cursor, limit: int) -> sql.Composed:
    """``COPY (page) TO STDOUT (FORMAT BINARY)``; one statement, so xmin and visibility share a snapshot."""
    return sql.SQL("COPY ({q}) TO STDOUT (FORMAT BINARY)").format(q=page_select_sql(spec, cursor, limit))


async def write_ack(conn: Conn, consumer: str, table: str, cursor: Cursor, merged_through: int | None) -> None:
    """Record in the gatherer's ``sync_acks`` that everything up to ``cursor`` is in production."""
    await conn.execute(
        """INSERT INTO sync_acks (consumer, table_name, cursor_xid, cursor_seq, merged_through, updated_at)
           VALUES (%s, %s, %s, %s, %s, now_us())
           ON CONFLICT (consumer, table_name) DO UPDATE
              SET cursor_xid = EXCLUDED.cursor_xid, cursor_seq = EXCLUDED.cursor_seq,
                  merged_through = EXCLUDED.merged_through, updated_at = EXCLUDED.updated_at""",
        (consumer, table, cursor.xid, cursor.seq, merged_through))


async def schema_version(conn: Conn) -> int:
    """The gatherer's applied schema version (0 when ``schema_migrations`` is missing)."""
    r = await (await conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")).fetchone()
    if not r or not r[0]:
        return 0
    r = await (await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")).fetchone()
    return int(r[0]) if r else 0


async def database_uuid(conn: Conn) -> str | None:
    """``gatherer_meta.db_uuid`` (None when the table is missing or empty)."""
    r = await (await conn.execute("SELECT to_regclass('public.gatherer_meta') IS NOT NULL")).fetchone()
    if not r or not r[0]:
        return None
    r = await (await conn.execute("SELECT db_uuid::text FROM gatherer_meta")).fetchone()
    return None if r is None else str(r[0])
