"""One page, one production transaction: lock cursor, stream COPY into staging, INSERT ... ON
CONFLICT, advance cursor, COMMIT.

The page is streamed from the gatherer's binary ``COPY ... TO STDOUT`` directly into production's
``COPY <staging> FROM STDIN``: bytes in, bytes out, never parsed in Python. Staging tables are
per-connection ``TEMP ... ON COMMIT DELETE ROWS`` tables created once when the connection opens
(``create_staging``), so a page costs no catalog churn and a rolled-back page leaves nothing.

The INSERTs are idempotent (identity keys from data-model.md, hardening 1), which is what makes a
crash between any two statements harmless: the page is read again from the unchanged cursor and
whatever a concurrent page from another gatherer already inserted counts as a duplicate. Each
INSERT ... SELECT orders its rows by the conflict key, so two gatherers' pages that overlap take
their key locks in the same order and cannot deadlock each other. The INSERT runs under a
savepoint: a page production refuses for a row's sake is bisected to those rows, which are set
aside in production's rejected_rows, and the cursor still moves on (poison.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from deduplicator import poison
from deduplicator.cursors import CursorRow, advance_cursor, lock_cursor
from deduplicator.pull import page_copy_sql
from deduplicator.tables import SPECS, TableSpec
from shared.db import is_row_error

Conn = psycopg.AsyncConnection[Any]
Side = Literal["gatherer", "production"]


def staging_ddl(spec: TableSpec) -> sql.Composed:
    cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in spec.columns)
    return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {stage} ({cols}, ingest_xid bigint NOT NULL, "
                   "ingest_seq bigint NOT NULL) ON COMMIT DELETE ROWS").format(
        stage=sql.Identifier(spec.staging), cols=cols)


async def create_staging(conn: Conn, specs: Iterable[TableSpec] | None = None) -> None:
    """Create staging tables (default: all) on a production connection; idempotent."""
    for spec in SPECS.values() if specs is None else specs:
        await conn.execute(staging_ddl(spec))


def _ids(names: tuple[str, ...] | list[str], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def merge_sql(spec: TableSpec) -> sql.Composed:
    """The INSERT ... SELECT FROM staging for ``spec``; parameter ``%(gid)s`` is the delivering gatherer."""
    cols = list(spec.column_names)
    stage = sql.Identifier(spec.staging)
    table = sql.Identifier(spec.name)
    key = _ids(spec.key)
    if spec.adds_gatherer_id:
        target = sql.SQL("{}, gatherer_id, merged_at").format(_ids(cols))
        values = sql.SQL("{}, %(gid)s, now_us()").format(_ids(cols, "s"))
    else:
        target = sql.SQL("{}, merged_at").format(_ids(cols))
        values = sql.SQL("{}, now_us()").format(_ids(cols, "s"))
    order_key = _ids([k for k in spec.key if k in cols], "s")

    if spec.kind == "trades":
        # Hardening 1: trade identity is trade_id alone; the trade_ids guard admits each id once,
        # with the first row in this gatherer's ingest order, and only admitted ids reach trades.
        return sql.SQL("""
            WITH admitted AS (
                INSERT INTO trade_ids (trade_id, exchange_ts, ticker)
                SELECT DISTINCT ON (s.trade_id) s.trade_id, s.exchange_ts, s.ticker FROM {stage} s
                 ORDER BY s.trade_id, s.ingest_xid, s.ingest_seq
                ON CONFLICT (trade_id) DO NOTHING
                RETURNING trade_id)
            INSERT INTO {table} AS t ({target})
            SELECT DISTINCT ON (s.trade_id) {values} FROM {stage} s JOIN admitted a ON a.trade_id = s.trade_id
             ORDER BY s.trade_id, s.ingest_xid, s.ingest_seq
            ON CONFLICT ({key}) DO NOTHING
        """).format(stage=stage, table=table, target=target, values=values, key=key)

    if spec.kind == "deltas":
        # A known ts_rank fills a NULL one (issue 19); never the other way round. DISTINCT ON
        # because DO UPDATE cannot touch one row twice in a statement.
        return sql.SQL("""
            INSERT INTO {table} AS t ({target})
            SELECT DISTINCT ON ({order}) {values} FROM {stage} s
             ORDER BY {order}, s.ts_rank NULLS LAST, s.ingest_xid, s.ingest_seq
            ON CONFLICT ({key}) DO UPDATE SET ts_rank = EXCLUDED.ts_rank
             WHERE t.ts_rank IS NULL AND EXCLUDED.ts_rank IS NOT NULL
        """).format(table=table, target=target, values=values, stage=stage, order=order_key, key=key)

    if spec.kind == "event":
        return sql.SQL("""
            INSERT INTO {table} AS t ({target})
            SELECT {values} FROM {stage} s ORDER BY {order}
            ON CONFLICT ({key}) DO NOTHING
        """).format(table=table, target=target, values=values, stage=stage, order=order_key, key=key)

    updates = [c for c in cols if c not in spec.key] + ["merged_at"]
    if spec.adds_gatherer_id:
        updates.append("gatherer_id")
    set_clause = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates)
    if spec.kind == "coverage":
        newest_first = sql.SQL("s.updated_at DESC, s.ingest_xid DESC, s.ingest_seq DESC")
        newer = sql.SQL("EXCLUDED.updated_at > t.updated_at")
    else:  # reference: (exchange_updated_ts, received_at) newer wins, NULL as -1; never regress
        newest_first = sql.SQL("coalesce(s.exchange_updated_ts, -1) DESC, s.received_at DESC, "
                               "s.ingest_xid DESC, s.ingest_seq DESC")
        newer = sql.SQL("(coalesce(EXCLUDED.exchange_updated_ts, -1), EXCLUDED.received_at) > "
                        "(coalesce(t.exchange_updated_ts, -1), t.received_at)")
    return sql.SQL("""
        INSERT INTO {table} AS t ({target})
        SELECT DISTINCT ON ({order}) {values} FROM {stage} s ORDER BY {order}, {newest_first}
        ON CONFLICT ({key}) DO UPDATE SET {set_clause} WHERE {newer}
    """).format(table=table, target=target, order=order_key, values=values, stage=stage,
                newest_first=newest_first, key=key, set_clause=set_clause, newer=newer)


@dataclass
class PageResult:
    rows: int                      # rows read from the gatherer
    merged: int                    # rows inserted (or newer versions applied) in production
    cursor: CursorRow | None       # the committed cursor; None when the page was empty
    seconds: float = 0.0
    rejected: int = 0              # rows production refused, set aside in rejected_rows

    @property
    def duplicate(self) -> int:
        return self.rows - self.merged - self.rejected


@dataclass
class FailureSide:
    """Which database an exception of ``merge_page`` came from (for health and error labels)."""

    side: Side = "production"
    first_error: BaseException | None = field(default=None)


async def merge_page(prod: Conn, gath: Conn, spec: TableSpec, gatherer_id: str, db_uuid: str,
                     page_size: int, where: FailureSide) -> PageResult:
    """Merge the next page of ``spec`` from ``gath`` into ``prod`` in one production transaction.

    ``prod`` must be an autocommit connection holding ``spec``'s staging table (``create_staging``);
    ``gath`` an autocommit gatherer connection. On any exception nothing is committed, and ``where`` says
    which side failed first.

    Raises:
        CursorMismatch: the cursor belongs to another gatherer database (nothing merged).
        psycopg.Error: from either connection; the caller classifies it (shared/db.py).
    """
    t0 = time.perf_counter()
    copy_in = sql.SQL("COPY {stage} ({cols}, ingest_xid, ingest_seq) FROM STDIN (FORMAT BINARY)").format(
        stage=sql.Identifier(spec.staging), cols=_ids(list(spec.column_names)))
    where.side = "production"
    async with prod.transaction():
        start = await lock_cursor(prod, gatherer_id, spec.name, db_uuid)
        async with prod.cursor() as pcur:
            async with pcur.copy(copy_in) as dst, gath.cursor() as gcur:
                where.side = "gatherer"
                async with gcur.copy(page_copy_sql(spec, start.cursor, page_size)) as src:
                    while True:
                        where.side = "gatherer"
                        try:
                            data = await src.read()
                        except BaseException as exc:
                            where.first_error = where.first_error or exc
                            raise
                        if not data:
                            break
                        where.side = "production"
                        try:
                            await dst.write(data)
                        except BaseException as exc:
                            where.first_error = where.first_error or exc
                            raise
                where.side = "production"
            rows = max(pcur.rowcount, 0)
        if rows == 0:
            return PageResult(0, 0, None, time.perf_counter() - t0)
        merge = merge_sql(spec)
        rejected = 0
        try:
            async with prod.transaction():  # a savepoint: a refused row must not cost the page
                res = await prod.execute(merge, {"gid": gatherer_id})
            merged = max(res.rowcount, 0)
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            merged, rejected = await poison.isolate(prod, spec, merge, gatherer_id)
        end = await advance_cursor(prod, spec, gatherer_id, db_uuid, merged, rows - merged - rejected)
    return PageResult(rows, merged, end, time.perf_counter() - t0, rejected)
