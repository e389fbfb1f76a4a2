"""Writers: one per table. Bounded queue (in rows) -> batch -> binary COPY -> local database.

Public API::

    w = Writer(SPECS["trades"], PgSink(dsn), metrics, batch_size=5000, flush_interval_s=0.2,
               queue_max_rows=500_000)
    w.start()                      # spawns the flush task (needs a running loop)
    await w.put(row)               # returns at once unless the queue is full (backpressure)
    w.offer(row) -> bool           # same without suspending; False = full, call put()
    await w.put_many(rows)
    w.queued_rows, w.failing, w.last_error      # for /health
    left = await w.close(deadline_s)            # flush all accepted rows; 0 = nothing left

Guarantees:

- Never drops an accepted row. On connection/timeout errors (``shared.db.is_retryable``) the batch
  is kept and retried forever with exponential backoff and jitter. Any other error splits the
  batch in halves until the bad rows are isolated; those go to ``rejected_rows`` (payload +
  reason) and are counted in ``writer_rejected_rows_total``; the good rows still land.
- The queue bound counts rows accepted but not yet committed (including the batch in flight), so
  memory stays bounded while the database is down; ``put`` then waits and the time it waited is
  added to ``writer_backpressure_seconds_total``.
- ``writer_inserts_total`` counts rows actually stored (after ON CONFLICT dedup).
- With a spool (``gatherer.spool.Spool``), a full queue spills further rows to disk instead of
  blocking the producer; the flush loop replays them in order once the database takes rows
  again, and ``close()`` hands rows it could not commit back to the spool (``prepend``) instead
  of losing them. Only a full spool blocks the producer.
- ``mark`` / ``settled(mark)``: a barrier. Rows are committed in the order they were accepted,
  so once ``settled(w.mark)`` returns, every row accepted before that ``mark`` was read is
  committed (or, if the database refused it as bad data, stored in ``rejected_rows``): the
  evidence the coverage ledger waits for before it calls a window recovered.
- Tables with a fast path (``_copy.DirectCopy``) try a plain COPY into the real tables first; a
  batch the database refuses there (duplicate, CHECK, bad value) is rolled back, counted in
  ``writer_copy_fallbacks_total`` and written through staging as above. Retryable errors are
  retried on whichever route the batch is on.
- Tables with an in-batch identity (``TableSpec.batch_key``: trades, by trade_id) drop a row
  repeating an earlier row of the same batch before writing, counted in
  ``writer_batch_duplicates_total``: the staging merge would have kept the first one too, and
  a batch with the same trade twice (one per trade socket) stays on the fast path.

The sink is swappable (``BatchSink``): ``PgSink`` for PostgreSQL, ``MemorySink``/``NullSink`` for
tests and benchmarks, so COPY formatting can be timed apart from the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import psycopg

from shared.db import error_type, is_retryable, is_row_error
from shared.errors import KalshiDataError
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

from ._copy import SPECS, CopyFormatter, DirectFormatter, TableSpec, row_payload
from .spool import Spool

__all__ = [
    "SPECS",
    "BatchSink",
    "MemorySink",
    "NullSink",
    "PgSink",
    "Writer",
    "WriterClosed",
    "make_writers",
]

Row = Sequence[Any]
#: (reason, payload JSON, received_at) for rejected_rows
RejectItem = tuple[str, str, int | None]

# A 5,000-row batch keeps a COPY round trip well under 10 ms locally and amortises the
# per-transaction cost (three round trips) to < 1 µs/row; see bench/ for the measurement.
DEFAULT_BATCH_SIZE = 5000
DEFAULT_FLUSH_INTERVAL_S = 0.2
DEFAULT_QUEUE_MAX_ROWS = 500_000


class WriterClosed(KalshiDataError):
    """``put`` after ``close()`` started: the row was not accepted."""

    def __init__(self, writer: str) -> None:
        super().__init__(writer)
        self.writer = writer

    def __str__(self) -> str:
        return f"writer {self.writer} is closed"


class BatchSink(Protocol):
    """Where formatted batches go. ``write`` commits one batch atomically and returns the number
    of rows stored; it raises on failure (the writer classifies with ``shared.db``)."""

    async def write(
        self, spec: TableSpec, payload: bytes | bytearray, rows: Sequence[Row]
    ) -> int: ...

    async def reject(self, table: str, items: Sequence[RejectItem]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class DirectSink(Protocol):
    """A sink that also takes the fast path: ``write_direct`` COPYs one payload per
    ``spec.direct`` target in one transaction and returns the rows stored, or None when the
    database refused the batch there as bad data (rolled back; the caller takes staging)."""

    async def write_direct(
        self, spec: TableSpec, payloads: Sequence[bytes | bytearray], rows: Sequence[Row]
    ) -> int | None: ...


class NullSink:
    """Discards everything (benchmarks: formatting cost alone)."""

    async def write(self, spec: TableSpec, payload: bytes | bytearray, rows: Sequence[Row]) -> int:
        return len(rows)

    async def write_direct(
        self, spec: TableSpec, payloads: Sequence[bytes | bytearray], rows: Sequence[Row]
    ) -> int | None:
        return len(rows)

    async def reject(self, table: str, items: Sequence[RejectItem]) -> None:
        return None

    async def close(self) -> None:
        return None


class MemorySink:
    """Keeps every committed batch (payload and rows) and rejected item, for tests.
    ``fail_next(exc, n)`` makes the next n writes raise ``exc``."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, bytes, list[Row]]] = []
        self.rejected: list[tuple[str, RejectItem]] = []
        self._fail: list[BaseException] = []

    @property
    def rows(self) -> list[Row]:
        return [r for _, _, rows in self.batches for r in rows]

    def fail_next(self, exc: BaseException, n: int = 1) -> None:
        self._fail.extend([exc] * n)

    async def write(self, spec: TableSpec, payload: bytes | bytearray, rows: Sequence[Row]) -> int:
        await asyncio.sleep(0)
        if self._fail:
            raise self._fail.pop(0)
        self.batches.append((spec.name, bytes(payload), list(rows)))
        return len(rows)

    async def reject(self, table: str, items: Sequence[RejectItem]) -> None:
        self.rejected.extend((table, it) for it in items)

    async def close(self) -> None:
        return None


Connect = Callable[[], Awaitable["psycopg.AsyncConnection[Any]"]]


class PgSink:
    """Writes batches into PostgreSQL over one dedicated connection (its TEMP staging tables live
    in that session). Reconnects lazily after a failure.

    ``connect`` returns a new ``psycopg.AsyncConnection`` (e.g. ``lambda: shared.db.connect(cfg)``);
    a DSN string is accepted for convenience. ``notify_channel``: after each batch, in the same
    transaction, ``pg_notify(channel, table)`` so the deduplicator can wake (delivered at commit).
    """

    def __init__(self, connect: Connect | str, notify_channel: str | None = None) -> None:
        if isinstance(connect, str):
            dsn = connect
            self._connect: Connect = lambda: psycopg.AsyncConnection.connect(dsn)
        else:
            self._connect = connect
        self._notify = notify_channel
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._staged: set[str] = set()

    async def _get(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                await self._drop()
            conn = self._conn = await self._connect()
            self._staged = set()
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._staged = set()
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken; nothing to save
                pass

    async def write(self, spec: TableSpec, payload: bytes | bytearray, rows: Sequence[Row]) -> int:
        conn = await self._get()
        try:
            async with conn.transaction():
                cur = conn.cursor()
                if spec.name not in self._staged:
                    await cur.execute(spec.staging_ddl)
                async with cur.copy(spec.copy_sql) as cp:
                    await cp.write(payload)
                await cur.execute(spec.merge_sql)
                stored = max(cur.rowcount, 0)
                if self._notify:
                    await cur.execute("SELECT pg_notify(%s, %s)", (self._notify, spec.name))
            self._staged.add(spec.name)
            return stored
        except BaseException:
            # The staging table may have been created in the rolled-back transaction.
            self._staged.discard(spec.name)
            if conn.closed or conn.broken:
                await self._drop()
            raise

    async def write_direct(
        self, spec: TableSpec, payloads: Sequence[bytes | bytearray], rows: Sequence[Row]
    ) -> int | None:
        assert spec.direct is not None
        conn = await self._get()
        try:
            async with conn.transaction():
                cur = conn.cursor()
                for target, payload in zip(spec.direct.targets, payloads, strict=True):
                    async with cur.copy(target.copy_sql) as cp:
                        await cp.write(payload)
                if self._notify:
                    await cur.execute("SELECT pg_notify(%s, %s)", (self._notify, spec.name))
            return len(rows)
        except BaseException as exc:
            if conn.closed or conn.broken:
                await self._drop()
            elif is_row_error(exc):
                return None  # rolled back: nothing of this batch is stored
            raise

    async def reject(self, table: str, items: Sequence[RejectItem]) -> None:
        conn = await self._get()
        try:
            async with conn.transaction():
                cur = conn.cursor()
                await cur.executemany(
                    "INSERT INTO rejected_rows (table_name, reason, payload, received_at) "
                    "VALUES (%s, %s, %s, %s)",
                    [(table, reason, payload, rx) for reason, payload, rx in items],
                )
        except BaseException:
            if conn.closed or conn.broken:
                await self._drop()
            raise

    async def close(self) -> None:
        await self._drop()


def _describe(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = primary or (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {text}"[:500]


class Writer:
    """One table's writer. Not thread-safe; use from one event loop."""

    def __init__(
        self,
        spec: TableSpec,
        sink: BatchSink,
        metrics: GathererMetrics,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        queue_max_rows: int = DEFAULT_QUEUE_MAX_ROWS,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        logger: logging.Logger | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        spool: Spool | None = None,
    ) -> None:
        if batch_size < 1 or queue_max_rows < batch_size:
            raise ValueError("need 1 <= batch_size <= queue_max_rows")
        self.spec = spec
        self.name = spec.name
        self._sink = sink
        self._fmt = CopyFormatter(spec)
        self._direct: DirectFormatter | None = None
        self._direct_sink: DirectSink | None = None
        if spec.direct is not None and isinstance(sink, DirectSink):
            self._direct = DirectFormatter(spec.direct)
            self._direct_sink = sink
        self._batch = batch_size
        self._interval = flush_interval_s
        self._max = queue_max_rows
        self._retry0 = retry_initial_s
        self._retry_max = retry_max_s
        self._rng = rng
        self._clock = clock
        self._log = logger or logging.getLogger("gatherer.writer")
        self._rl = RateLimitedLog(self._log, 60.0)
        self._buf: list[Row] = []
        self._count = 0  # accepted, not yet committed (buffer + batch in flight)
        self._wake = asyncio.Event()  # buffer became non-empty, or closing
        self._full = asyncio.Event()  # buffer reached batch_size, or closing
        self._space = asyncio.Event()  # room in the queue
        self._space.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._spool = spool
        self._spilling = False  # rows sit in the spool: new rows queue behind them there
        self._inflight: list[Row] = []  # the batch being written
        self._accepted = 0
        self._settled = 0
        self._settled_evt = asyncio.Event()
        if spool is not None:
            spool.on_room = self._space.set
        self.failing = False
        self.last_error: str | None = None
        w = spec.name
        self._m_inserts = metrics.writer_inserts_total.labels(writer=w)
        self._m_errors = metrics.writer_errors_total
        self._m_rejected = metrics.writer_rejected_rows_total.labels(writer=w)
        self._m_fallback = metrics.writer_copy_fallbacks_total.labels(writer=w)
        self._m_dups = metrics.writer_batch_duplicates_total.labels(writer=w)
        self._m_batch = metrics.writer_batch_size.labels(writer=w)
        self._m_flush = metrics.writer_flush_duration_seconds.labels(writer=w)
        self._m_queue = metrics.writer_queue_rows.labels(writer=w)
        self._m_bp = metrics.writer_backpressure_seconds_total.labels(writer=w)
        metrics.writer_queue_max_rows.labels(writer=w).set(queue_max_rows)

    # -- producer side ------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        """Rows accepted and not yet committed, in memory (the spool's are ``spooled_rows``)."""
        return self._count

    @property
    def spooled_rows(self) -> int:
        return 0 if self._spool is None else self._spool.rows

    @property
    def mark(self) -> int:
        """How many rows this writer has accepted so far (see ``settled``)."""
        return self._accepted

    async def settled(self, mark: int) -> None:
        """Return once every row accepted before ``mark`` was taken is committed (or rejected
        into ``rejected_rows``). Waits as long as the database is down."""
        while self._settled < mark:
            self._settled_evt.clear()
            await self._settled_evt.wait()

    async def open_spool(self) -> int:
        """Open the spool (if any) and adopt what a previous run left there; those rows are
        written before any new one. Returns their number. Raises ``SpoolError``."""
        if self._spool is None:
            return 0
        n = await self._spool.open()
        if n:
            self._accepted += n  # older than anything accepted from now on
            self._spilling = True
            self._wake.set()
        return n

    def start(self) -> None:
        """Start the flush task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"writer-{self.name}"
            )

    def offer(self, row: Row) -> bool:
        """Accept ``row`` if there is room, without suspending; False = full (call ``put``).
        The router's hot path: it saves a coroutine per row when the queue has room."""
        if self._closing or self._count >= self._max or self._spilling:
            return False
        buf = self._buf
        buf.append(row)
        self._count += 1
        self._accepted += 1
        n = len(buf)
        if n == 1:
            self._wake.set()
        elif n == self._batch:
            self._full.set()
        return True

    async def put(self, row: Row) -> None:
        """Accept one row. Returns without suspending unless the queue is full (backpressure).

        Raises:
            WriterClosed: ``close()`` has begun; the row was not accepted.
        """
        if self._closing:
            raise WriterClosed(self.name)
        if self._count >= self._max or self._spilling:
            if self._spill(row):
                return
            await self._wait_space(1)
            if self._spill(row):
                return
        buf = self._buf
        buf.append(row)
        self._count += 1
        self._accepted += 1
        n = len(buf)
        if n == 1:
            self._wake.set()
        elif n == self._batch:
            self._full.set()

    async def put_many(self, rows: Sequence[Row]) -> None:
        """Accept several rows (e.g. a REST backfill page), waiting for room as needed."""
        i = 0
        while i < len(rows):
            if self._closing:
                raise WriterClosed(self.name)
            if self._count >= self._max or self._spilling:
                if self._spill(rows[i]):
                    i += 1
                    continue
                await self._wait_space(1)
                continue
            k = min(len(rows) - i, self._max - self._count)
            self._buf.extend(rows[i : i + k])
            self._count += k
            self._accepted += k
            i += k
            self._wake.set()
            if len(self._buf) >= self._batch:
                self._full.set()

    def _spill(self, row: Row) -> bool:
        """Queue ``row`` in the spool (behind every spooled row); False when there is none or
        it is full (the caller waits: backpressure)."""
        sp = self._spool
        if sp is None or not sp.has_room():
            return False
        sp.append(row, self._accepted)
        self._spilling = True
        self._accepted += 1
        self._wake.set()
        return True

    async def _wait_space(self, n: int) -> None:
        """Wait for room in the queue, or (with a spool) for room in the spool."""
        t0 = self._clock()
        self._m_queue.set(self._count)
        sp = self._spool
        try:
            while (self._count + n > self._max or self._spilling) and (sp is None or not sp.has_room()):
                if self._closing:
                    raise WriterClosed(self.name)
                self._space.clear()
                await self._space.wait()
        finally:
            self._m_bp.inc(self._clock() - t0)

    # -- flush side ---------------------------------------------------------------------------

    async def _refill(self) -> None:
        """Move the oldest spooled rows into the queue, as far as it has room."""
        sp = self._spool
        assert sp is not None
        room = self._max - self._count
        if room <= 0:
            return
        rows = await sp.take(room)
        self._buf.extend(rows)
        self._count += len(rows)
        if not sp.rows:
            self._spilling = False  # everything older is queued: new rows may go straight in
            self._space.set()

    async def _run(self) -> None:
        while True:
            if self._spilling and len(self._buf) < self._batch:
                await self._refill()
            if not self._buf:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._buf) < self._batch and not self._closing:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), self._interval)
                except TimeoutError:
                    pass
            buf = self._buf
            if len(buf) <= self._batch:
                batch, self._buf = buf, []
            else:
                batch = buf[: self._batch]
                del buf[: self._batch]
            n = len(batch)
            self._m_queue.set(self._count)
            t0 = self._clock()
            if self.spec.batch_key is not None:
                batch = self._drop_repeats(batch, self.spec.batch_key)
            self._inflight = batch
            stored = await self._write(batch)
            self._inflight = []
            self._m_flush.observe(self._clock() - t0)
            self._m_batch.observe(n)
            self._m_inserts.inc(stored)
            self._count -= n  # the rows taken off the queue, in-batch repeats included
            self._settled += n
            self._settled_evt.set()
            if self._spool is not None:
                self._spool.release(self._settled)
            self._m_queue.set(self._count)
            self._space.set()

    def _drop_repeats(self, rows: list[Row], key: Callable[[Row], Any]) -> list[Row]:
        """``rows`` without those whose key an earlier row of the batch already has (first
        arrival wins, as in the staging merge); counted in ``writer_batch_duplicates_total``."""
        keys = list(map(key, rows))
        if len(set(keys)) == len(keys):  # the common case, checked in C
            return rows
        seen: set[Any] = set()
        out = [r for k, r in zip(keys, rows, strict=True) if not (k in seen or seen.add(k))]
        self._m_dups.inc(len(rows) - len(out))
        return out

    async def _write(self, rows: list[Row]) -> int:
        """Store ``rows`` no matter what: fast path first where there is one, then staging;
        retry retryable errors forever, bisect the others. Returns the number of rows stored.
        Only cancellation escapes."""
        direct = self._direct.format(rows) if self._direct is not None else None
        payload: bytearray | None = None
        attempt = 0
        while True:
            try:
                if direct is not None:
                    assert self._direct_sink is not None
                    stored_or_none = await self._direct_sink.write_direct(self.spec, direct, rows)
                    if stored_or_none is None:
                        direct = None
                        self._m_fallback.inc()
                        continue
                    stored = stored_or_none
                else:
                    if payload is None:
                        payload, bad = self._fmt.format(rows)
                        if bad:
                            await self._reject([(rows[i], exc) for i, exc in bad])
                            skip = {i for i, _ in bad}
                            rows = [r for i, r in enumerate(rows) if i not in skip]
                            if not rows:
                                return 0
                    stored = await self._sink.write(self.spec, payload, rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                etype = error_type(exc)
                self._m_errors.labels(writer=self.name, type=etype).inc()
                if is_retryable(exc) or not is_row_error(exc):
                    # connection/timeout, or a schema/permission problem: the rows are fine;
                    # keep them and retry (backpressure builds) rather than reject them
                    self._note_failure(exc, etype)
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                self._rl.log(
                    logging.ERROR,
                    f"{self.name}:bisect",
                    "writer %s: batch of %d failed (%s); isolating bad rows",
                    self.name,
                    len(rows),
                    _describe(exc),
                    now=self._clock(),
                    writer=self.name,
                )
                if len(rows) == 1:
                    await self._reject([(rows[0], exc)])
                    return 0
                mid = len(rows) // 2
                return await self._write(rows[:mid]) + await self._write(rows[mid:])
            if self.failing:
                self._log.info(
                    "writer %s: database writable again after %d retries",
                    self.name,
                    attempt,
                    extra={"writer": self.name},
                )
            self.failing = False
            self.last_error = None
            return stored

    async def _reject(self, items: list[tuple[Row, BaseException]]) -> None:
        """Store rows that can never be written in rejected_rows (retrying connection errors)."""
        rejects: list[tuple[str, str, int | None]] = []
        for row, exc in items:
            rx = getattr(row, "received_at", None)
            rejects.append((_describe(exc), row_payload(row), rx if type(rx) is int else None))
        attempt = 0
        while True:
            try:
                await self._sink.reject(self.name, rejects)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                etype = error_type(exc)
                self._m_errors.labels(writer=self.name, type=etype).inc()
                if is_row_error(exc):
                    # rejected_rows itself refuses these payloads: they are lost; say so loudly.
                    self._log.error(
                        "writer %s: could not store %d rejected rows: %s",
                        self.name,
                        len(rejects),
                        _describe(exc),
                        extra={"writer": self.name},
                    )
                    break
                self._note_failure(exc, etype)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        self._m_rejected.inc(len(rejects))
        self._rl.log(
            logging.ERROR,
            f"{self.name}:rejected",
            "writer %s: %d rows rejected: %s",
            self.name,
            len(rejects),
            rejects[0][0],
            now=self._clock(),
            writer=self.name,
        )

    def _note_failure(self, exc: BaseException, etype: str) -> None:
        self.failing = True
        self.last_error = _describe(exc)
        self._m_queue.set(self._count)
        self._rl.log(
            logging.WARNING,
            f"{self.name}:retry",
            "writer %s: %s error, retrying: %s",
            self.name,
            etype,
            self.last_error,
            now=self._clock(),
            writer=self.name,
        )

    def _backoff(self, attempt: int) -> float:
        # exponential, capped, with "equal jitter": never below half the step, so a dead
        # database is not hammered, and writers that failed together do not retry together
        step = min(self._retry_max, self._retry0 * float(1 << min(attempt, 30)))
        return step / 2 + self._rng() * step / 2

    # -- shutdown -----------------------------------------------------------------------------

    async def close(self, deadline_s: float) -> int:
        """Stop accepting rows, flush everything accepted, stop. Returns the number of accepted
        rows that could not be committed before ``deadline_s`` (0 = everything landed)."""
        self._closing = True
        self._wake.set()
        self._full.set()
        self._space.set()  # blocked producers wake up and get WriterClosed
        if self._task is None and self._buf:
            self.start()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), deadline_s)
            except TimeoutError:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            self._task = None
        left = self._count
        if self._spool is not None:
            left = await self._keep_in_spool(left)
        if left:
            self._log.error(
                "writer %s: %d accepted rows not committed before the deadline",
                self.name,
                left,
                extra={"writer": self.name},
            )
        await self._sink.close()
        return left

    async def _keep_in_spool(self, left: int) -> int:
        """Shutdown with rows uncommitted: put the queue back at the head of the spool (older
        than anything spooled) and write it out, so the next start commits them first. Some of
        them may also still be in spool segments (read back, not yet committed): replaying a row
        twice is harmless, every insert is idempotent. Returns the rows still not safe (0 unless
        the disk refuses)."""
        sp = self._spool
        assert sp is not None
        head = self._inflight + self._buf
        try:
            await sp.prepend(head)
            await sp.close()
        except OSError as exc:
            self._log.error("writer %s: could not keep %d rows in the spool: %s", self.name,
                            len(head) + sp.rows, exc, extra={"writer": self.name})
            return left + sp.rows
        if head or sp.rows:
            self._log.warning(
                "writer %s: %d rows kept in the spool for the next start",
                self.name, len(head) + sp.rows, extra={"writer": self.name})
        self._buf, self._inflight, self._count = [], [], 0
        return 0


def make_writers(
    sink_factory: Callable[[], BatchSink],
    metrics: GathererMetrics,
    *,
    tables: Sequence[str] = tuple(SPECS),
    spool_factory: Callable[[str], Spool] | None = None,
    **kwargs: Any,
) -> dict[str, Writer]:
    """One writer per table, each with its own sink (its own connection) and, given
    ``spool_factory(table)``, its own spool; not yet started (``open_spool`` first)."""
    return {t: Writer(SPECS[t], sink_factory(), metrics,
                      spool=None if spool_factory is None else spool_factory(t), **kwargs)
            for t in tables}
