"""One sync loop per (gatherer, table): probe, merge a page, acknowledge, repeat.

Each iteration: borrow a checked gatherer connection; confirm the cursor's database identity;
``probe`` past the cursor (gatherer clock, lag); if a page is readable, borrow a production
connection and ``merge_page`` (one production transaction); then write the gatherer's
``sync_acks``. A full page loops at once; otherwise the loop sleeps ``poll_interval_ms`` or until a
NOTIFY wakes it.

Failures are attributed to the side that failed: a gatherer error marks only that gatherer down
and backs off only its loops (no production connection is held while connecting to a gatherer),
a production error marks production down; both back off exponentially with jitter up to
``sync.retry_max_s`` and are counted in ``dedup_errors_total{gatherer, type}`` (``gatherer`` is
the gatherer id, or ``production``; ``type`` is connection/timeout/constraint/other from
shared/db.py, or schema/identity for refusals, or ack).

Lag (hardening 9, one clock: the gatherer's ``now_us()``): ``complete_through`` is the gatherer
time before which every row of this table is merged: the probe's own ``now`` when nothing is
pending, otherwise the newer of ``merged_through`` (newest merged ``received_at``) and the first
pending row's time. Lag is ``gatherer now - complete_through`` while rows are pending (including
rows held back behind an open gatherer transaction), 0 only when truly caught up. While the
gatherer is unreachable its clock is estimated from the last probe's offset and the lag keeps
growing: a down gatherer's lag is reported, not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Literal

import psycopg

from deduplicator._backoff import Backoff
from deduplicator.config import SyncConfig
from deduplicator.cursors import NIL_UUID, Cursor, read_cursor
from deduplicator.errors import CursorMismatch, GathererRefused
from deduplicator.merge import FailureSide, PageResult, Side, merge_page
from deduplicator.production import Production
from deduplicator.pull import Probe, probe, write_ack
from deduplicator.sources import GathererConn, Source
from deduplicator.tables import TableSpec
from shared.db import classify, error_type
from shared.errors import StorageError
from shared.logging import RateLimitedLog
from shared.metrics import DeduplicatorMetrics

log = logging.getLogger("deduplicator.sync")

Step = Literal["full", "idle", "paused"]


class TableSync:
    """The loop for one (gatherer, table). Build with its dependencies; ``await run()`` until stop."""

    def __init__(self, source: Source, production: Production, spec: TableSpec, sync: SyncConfig,
                 consumer_id: str, metrics: DeduplicatorMetrics, stop: asyncio.Event,
                 rng: random.Random, wall: Callable[[], float]) -> None:
        self.source = source
        self.production = production
        self.spec = spec
        self.table = spec.name
        self._sync = sync
        self._consumer = consumer_id
        self._m = metrics
        self._stop = stop
        self._wall = wall
        self._backoff = Backoff(sync.poll_interval_ms / 1000.0, sync.retry_max_s, rng)
        self._rl = RateLimitedLog(log, 60.0)
        self.wake = asyncio.Event()
        # cursor state, mirrored from production sync_cursors
        self._loaded = False
        self._row_uuid: str | None = None
        self.cursor = Cursor()
        self.merged_through: int | None = None
        self.rows_merged = 0
        self.rows_duplicate = 0
        # lag state (µs on the gatherer clock)
        self._complete_through: int | None = None
        self._offset_us = 0
        self._pending = True
        self._started_us = int(wall() * 1e6)
        self._ack_due = False
        self._side: Side = "gatherer"
        self._where: FailureSide | None = None

    # -- public state -------------------------------------------------------------------------
    def lag_seconds(self) -> float:
        """Current lag (see module docstring); 0 only when the last probe found nothing pending."""
        if self.source.healthy and not self._pending:
            return 0.0
        now_g = int(self._wall() * 1e6) + self._offset_us
        base = self._complete_through
        if base is None:
            base = self.merged_through if self.merged_through is not None else self._started_us
        return max(0.0, (now_g - base) / 1e6)

    # -- loop -----------------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("sync started for %s from %s", self.table, self.source.id,
                 extra={"gatherer_id": self.source.id, "table": self.table})
        while not self._stop.is_set():
            try:
                step = await self._step()
            except asyncio.CancelledError:
                raise
            except GathererRefused as exc:
                ident = isinstance(exc, CursorMismatch)
                self.source.refuse(exc, self.table if ident else None)
                self._m.dedup_errors_total.labels(gatherer=self.source.id,
                                                  type="identity" if ident else "schema").inc()
                await self._sleep(self._sync.retry_max_s)
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: attribute, count, back off, retry
                side = self._failed(exc)
                # after a connection failure the other idle connections are most likely dead too
                await (self.source if side == "gatherer" else self.production).discard_idle()
                await self._sleep(self._backoff.next())
                continue
            self._backoff.reset()
            if step == "full":
                continue
            if step == "paused":
                await self._sleep(self._sync.retry_max_s)
            else:
                await self._wait(self._sync.poll_interval_ms / 1000.0)

    async def _step(self) -> Step:
        self._side, self._where = "gatherer", None
        async with self.source.connection() as g:
            self.source.schema_ok()
            self.source.mark_up()
            if not self._loaded or self._row_uuid not in (None, NIL_UUID, g.db_uuid):
                await self._load_cursor()  # maybe reset by an operator since we last looked
                if self._row_uuid not in (None, NIL_UUID, g.db_uuid):
                    raise CursorMismatch(self.source.id, self.table, str(self._row_uuid), g.db_uuid)
            self.source.identity_ok(self.table)
            if self.source.refused:
                return "paused"  # another table found this gatherer's identity wrong
            self._side = "gatherer"
            pr = await probe(g.conn, self.spec, self.cursor)
            self._observe(pr)
            if self._ack_due:
                await self._ack(g)
            if not pr.ready:
                return "idle"
            self._side = "production"
            async with self.production.connection() as pc:
                self._where = FailureSide()
                p = await pc.staging_for(self.spec)
                res = await merge_page(p, g.conn, self.spec, self.source.id, g.db_uuid,
                                       self._sync.page_size, self._where)
            self._where = None
            self.production.mark_up()
            self._apply(res)
            if res.cursor is not None:
                self._ack_due = True
                await self._ack(g)
            return "full" if res.rows >= self._sync.page_size else "idle"

    async def _load_cursor(self) -> None:
        self._side = "production"
        async with self.production.connection() as pc:
            try:
                row = await read_cursor(pc.conn, self.source.id, self.table)
            except psycopg.Error as exc:
                raise classify(exc, self.production.display_name) from None
        self.production.mark_up()
        self._loaded = True
        if row is None:
            self._row_uuid, self.cursor = None, Cursor()
            return
        self._row_uuid, self.cursor, self.merged_through = row.db_uuid, row.cursor, row.merged_through
        self.rows_merged, self.rows_duplicate = row.rows_merged, row.rows_duplicate

    def _observe(self, pr: Probe) -> None:
        self._offset_us = pr.now_us - int(self._wall() * 1e6)
        self._pending = pr.pending
        if not pr.pending:
            self._complete_through = pr.now_us
        else:
            assert pr.first_pending_time is not None
            self._complete_through = max(self.merged_through or 0, pr.first_pending_time - 1)
        self._m.dedup_sync_lag_seconds.labels(gatherer=self.source.id, table=self.table).set(self.lag_seconds())

    def _apply(self, res: PageResult) -> None:
        self._m.dedup_page_duration_seconds.labels(table=self.table).observe(res.seconds)
        if res.cursor is None:
            return
        self._m.dedup_rows_read_total.labels(gatherer=self.source.id, table=self.table).inc(res.rows)
        self._m.dedup_records_written_total.labels(table=self.table).inc(res.merged)
        self._m.dedup_duplicates_total.labels(table=self.table).inc(res.duplicate)
        if res.rejected:
            self._m.dedup_rejected_rows_total.labels(gatherer=self.source.id, table=self.table).inc(res.rejected)
            log.error("%s %s: production refused %d row(s); set aside in rejected_rows, the cursor "
                      "moved on", self.source.id, self.table, res.rejected,
                      extra={"gatherer_id": self.source.id, "table": self.table, "rejected": res.rejected})
        c = res.cursor
        self._row_uuid, self.cursor, self.merged_through = c.db_uuid, c.cursor, c.merged_through
        self.rows_merged, self.rows_duplicate = c.rows_merged, c.rows_duplicate

    async def _ack(self, g: GathererConn) -> None:
        """Acknowledge the committed cursor on the gatherer; a failure is retried next iteration."""
        try:
            await write_ack(g.conn, self._consumer, self.table, self.cursor, self.merged_through)
        except psycopg.Error as exc:
            self._m.dedup_errors_total.labels(gatherer=self.source.id, type="ack").inc()
            self._rl.log(logging.WARNING, "ack", "%s %s: sync_acks not updated (will retry): %s",
                         self.source.id, self.table, classify(exc, self.source.display_name).reason,
                         gatherer_id=self.source.id, table=self.table)
            if g.conn.broken:
                raise classify(exc, self.source.display_name) from None
            return
        self._ack_due = False

    def _failed(self, exc: Exception) -> Side:
        side: Side = self._side
        if self._where is not None:
            side = self._where.side
            exc = self._where.first_error if isinstance(self._where.first_error, Exception) else exc
        if isinstance(exc, StorageError):
            err: StorageError = exc
        elif isinstance(exc, psycopg.Error):
            name = self.source.display_name if side == "gatherer" else self.production.display_name
            err = classify(exc, name)
        else:
            err = StorageError(side, f"{type(exc).__name__}: {exc}")
            err.__cause__ = exc
        etype = error_type(err) if isinstance(exc, StorageError | psycopg.Error) else "other"
        if side == "gatherer":
            self.source.mark_down(err.reason)
            self._m.dedup_errors_total.labels(gatherer=self.source.id, type=etype).inc()
        else:
            self.production.mark_down(err.reason)
            self._m.dedup_errors_total.labels(gatherer="production", type=etype).inc()
        if etype == "other":
            self._rl.log(logging.ERROR, f"other:{type(exc).__name__}", "%s %s: unexpected error: %s",
                         self.source.id, self.table, err, gatherer_id=self.source.id, table=self.table)
        return side

    async def _wait(self, seconds: float) -> None:
        """Sleep until the poll interval passes, a NOTIFY wakes us, or stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    async def _sleep(self, seconds: float) -> None:
        """Back off; only stop cuts it short (a NOTIFY storm must not defeat the backoff)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
