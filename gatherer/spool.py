"""On-disk spool: where a writer's rows wait when its in-memory queue is full.

Kalshi does not hold frames for a reader that stopped: a gatherer whose local database is down
must keep reading its sockets, or it earns slow-consumer errors and loses data. So a writer whose
queue (``writer.queue_max_rows``) is full spills further rows here instead of blocking, and
replays them, oldest first, once the database takes rows again. Only a full spool blocks the
producers (the sockets), and that wait is counted as backpressure as before.

Layout: ``<spool.directory>/<table>/seg-<n>.spool``, each segment a run of chunks::

    chunk = magic "KDS1" | u32 payload bytes | u32 crc32(payload) | u32 rows | payload
    payload = pickle.dumps(list of row NamedTuples)

A chunk is written and ``fsync``ed in a worker thread before the next one starts; a new
segment's directory entry is fsynced too. Reading checks magic and checksum, so a torn chunk (the
process or host died while writing it) is detected: counted in
``writer_spool_corrupt_chunks_total``, logged, and the rest of that segment skipped.

Durability: every row has its writer's acceptance index (``Writer.mark``); rows commit in that
order. A segment is deleted only once every row in it is committed (``release``), not when it is
read, so a process killed between reading rows back and committing them finds them again at the
next start (``open``). The price is that a restart may replay rows of a partly committed segment
that already landed, which is harmless: every table's insert is idempotent (ON CONFLICT). Rows
accepted but not yet fsynced are lost on a crash, exactly like rows in the memory queue. At a
clean shutdown a writer whose database is still down hands its own queue back with ``prepend``.

Bounds: disk bytes of every writer's spool together stay under ``spool.max_bytes``
(``SpoolBudget``; a chunk may overshoot by its own size), and rows not yet on disk under
``max_memory_rows`` per writer. ``has_room()`` is False past either.

The payload is pickle: the directory is this process's own state (created mode 0700) and is never
read from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.metrics import GathererMetrics

__all__ = ["Spool", "SpoolBudget", "SpoolError"]

MAGIC = b"KDS1"
_HEADER = struct.Struct("<4sIII")
# 2,000 rows (~0.3 MB pickled) per chunk: one fsync per chunk keeps a 5,000 rows/s spill at a
# few fsyncs a second (bench/spool.py).
DEFAULT_CHUNK_ROWS = 2000
# Small segments give disk space back soon after their rows commit, and bound what a restart
# may replay twice (harmlessly) to one segment.
DEFAULT_SEGMENT_BYTES = 8 << 20
#: Rows appended while the previous chunk is still being written, before has_room() says no
#: (~20 MB of rows; 20 s at 5,000 rows/s if the disk stalls).
DEFAULT_MEMORY_ROWS = 100_000
#: A partly filled chunk is written after this long, so a slow trickle is durable soon.
FLUSH_INTERVAL_S = 0.1

Row = Any


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a worker thread and see it finish even if we are cancelled meanwhile: a
    half-known disk state (a chunk written or read, but not recorded) would lose or repeat rows."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await fut
        raise


class SpoolError(OSError):
    """The spool directory cannot be used (not creatable, not writable)."""


class SpoolBudget:
    """The disk bound shared by every writer's spool (``spool.max_bytes``). Spools update it
    from their worker threads, hence the lock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.used += n

    def full(self) -> bool:
        return self.used >= self.max_bytes


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0  # valid bytes (a damaged tail found at open is excluded)
    read: int = 0  # bytes read back
    last_index: int = -1  # acceptance index of its newest row


class Spool:
    """One writer's spool. Use from one event loop: ``open()`` once, then ``append``/``take``,
    and ``release(settled)`` after each commit."""

    def __init__(self, directory: str | Path, name: str, budget: SpoolBudget,
                 metrics: GathererMetrics | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 max_memory_rows: int = DEFAULT_MEMORY_ROWS, fsync: bool = True,
                 logger: logging.Logger | None = None) -> None:
        self.dir = Path(directory) / name
        self.name = name
        self._budget = budget
        self._chunk_rows = max(1, chunk_rows)
        self._segment_bytes = segment_bytes
        self._max_mem = max(max_memory_rows, self._chunk_rows)
        self._fsync = fsync
        self._log = logger or logging.getLogger("gatherer.spool")
        self._segments: deque[_Segment] = deque()
        self._write_seg: _Segment | None = None  # the segment chunks are appended to
        self._next_seq = 1
        self._disk_rows = 0  # rows in chunks on disk not read back yet
        self._head: deque[Row] = deque()  # rows read back, not yet taken
        self._tail: list[Row] = []  # rows appended, not yet on disk (newest)
        self._tail_last = -1  # acceptance index of the newest tail row
        self._writing = 0  # rows of the chunk being written right now
        self._written: list[Row] | None = None  # identity of the last chunk that reached disk
        self._lock = asyncio.Lock()  # one disk operation at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_room: Callable[[], None] = lambda: None
        self.corrupt_chunks = 0
        self._m_rows = self._m_bytes = self._m_spilled = self._m_replayed = self._m_corrupt = None
        if metrics is not None:
            self._m_rows = metrics.writer_spool_rows.labels(writer=name)
            self._m_bytes = metrics.writer_spool_bytes.labels(writer=name)
            self._m_spilled = metrics.writer_spool_spilled_rows_total.labels(writer=name)
            self._m_replayed = metrics.writer_spool_replayed_rows_total.labels(writer=name)
            self._m_corrupt = metrics.writer_spool_corrupt_chunks_total.labels(writer=name)

    # -- state ---------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows spooled and not yet taken back by the writer."""
        return self._disk_rows + len(self._head) + self._writing + len(self._tail)

    @property
    def bytes(self) -> int:
        """Disk bytes this spool holds (a segment until every row in it is committed)."""
        return sum(s.size for s in self._segments)

    def has_room(self) -> bool:
        """False when the disk budget is used up or too many rows wait to be written."""
        return not self._budget.full() and len(self._tail) < self._max_mem

    # -- start / stop --------------------------------------------------------------------------

    async def open(self) -> int:
        """Create the directory (0700) and adopt what a previous run left, as the rows with
        acceptance indexes 0..n-1 (the writer counts them first); returns n.

        Raises:
            SpoolError: the directory cannot be created or written.
        """
        n: int = await _in_thread(self._open_sync)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"spool-{self.name}")
        self._gauges()
        return n

    async def close(self) -> None:
        """Write everything appended so far to disk and stop the background writer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    # -- producer side -------------------------------------------------------------------------

    def append(self, row: Row, index: int) -> None:
        """Queue one row, accepted as number ``index`` by its writer, behind everything spooled
        (call only when ``has_room()``)."""
        self._tail.append(row)
        self._tail_last = index
        if self._m_spilled is not None:
            self._m_spilled.inc()
        n = len(self._tail)
        if n == 1 or n >= self._chunk_rows:
            self._wake.set()

    async def flush(self) -> None:
        """Write the rows appended so far (fsynced) before returning."""
        async with self._lock:
            await self._write_tail()

    async def prepend(self, rows: Sequence[Row]) -> None:
        """Store ``rows`` AHEAD of everything spooled (a writer's own queue at shutdown: older
        than any spooled row), fsynced, in a segment numbered before the first one."""
        if not rows:
            return
        chunk = list(rows)
        async with self._lock:
            seq = (self._segments[0].seq if self._segments else self._next_seq) - 1
            seg = await _in_thread(self._new_segment, seq)
            self._segments.appendleft(seg)
            try:
                await _in_thread(self._write_chunk, seg, chunk)
            finally:
                if self._written is chunk:
                    self._disk_rows += len(chunk)
        self._gauges()

    # -- consumer side -------------------------------------------------------------------------

    async def take(self, n: int) -> list[Row]:
        """Up to ``n`` of the oldest rows (disk first, then memory), in order."""
        out: list[Row] = []
        while len(out) < n:
            # One chunk per lock hold: the background writer gets its turn between chunks, so
            # a large read-back never starves the spilling of new rows (measured: holding the
            # lock across a 100,000-row refill let the memory tail hit its bound under load).
            async with self._lock:
                if self._head:
                    k = min(n - len(out), len(self._head))
                    out.extend(self._head.popleft() for _ in range(k))
                    continue
                if self._disk_rows:
                    # the chunk lands in self._head inside the thread, so a cancellation
                    # between here and there cannot lose it
                    if not await _in_thread(self._read_chunk):
                        self._disk_rows = 0  # the count ran ahead of the readable chunks
                    continue
                if self._tail:
                    # never written: these rows leave the spool now (memory to memory)
                    k = min(n - len(out), len(self._tail))
                    out.extend(self._tail[:k])
                    del self._tail[:k]
            break
        if out and self._m_replayed is not None:
            self._m_replayed.inc(len(out))
        self._gauges()
        if out:
            self.on_room()
        return out

    def release(self, settled: int) -> None:
        """The writer has committed every row with an acceptance index below ``settled``: give
        back the disk of segments read to the end whose rows are all committed."""
        freed = False
        while self._segments:
            seg = self._segments[0]
            if seg.read < seg.size or seg.last_index >= settled:
                break
            if seg is self._write_seg:
                if self._tail or self._writing:
                    break
                self._write_seg = None  # the next chunk starts a new segment
            self._drop_segment(seg)
            freed = True
        if freed:
            self._gauges()
            self.on_room()

    # -- background writer ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._tail:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._tail) < self._chunk_rows:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            try:
                async with self._lock:
                    await self._write_tail()
            except OSError as exc:
                # The disk refused (full, read-only): the rows stay in memory, has_room() turns
                # False at max_memory_rows, and the sockets get backpressure.
                self._log.error("spool %s: cannot write to %s: %s", self.name, self.dir, exc,
                                extra={"writer": self.name})
                await asyncio.sleep(1.0)
            self.on_room()

    async def _write_tail(self) -> None:
        """Move the memory tail to disk chunk by chunk (caller holds the lock)."""
        while self._tail:
            rows, self._tail = self._tail[: self._chunk_rows], self._tail[self._chunk_rows:]
            # Indexes of spilled rows are consecutive (while rows are spooled, every row the
            # writer accepts is spooled), so a chunk's newest index follows from the tail's.
            last = self._tail_last - len(self._tail)
            self._writing = len(rows)
            seg: _Segment | None = None
            try:
                seg = self._write_seg
                if seg is None or seg.size >= self._segment_bytes:
                    seg = await _in_thread(self._new_segment, self._next_seq)
                    self._next_seq = seg.seq + 1
                    self._segments.append(seg)
                    self._write_seg = seg
                await _in_thread(self._write_chunk, seg, rows)
            finally:
                self._writing = 0
                if self._written is rows and seg is not None:
                    self._disk_rows += len(rows)
                    seg.last_index = max(seg.last_index, last)
                else:
                    self._tail[:0] = rows  # not on disk: keep them, in order
            self._gauges()

    # -- blocking helpers (worker threads) -----------------------------------------------------

    def _open_sync(self) -> int:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.dir / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SpoolError(exc.errno, f"spool directory {self.dir} is not usable: "
                             f"{exc.strerror or exc}") from None
        found: list[_Segment] = []
        for p in self.dir.glob("seg-*.spool"):
            try:
                seq = int(p.name[4:-6])
            except ValueError:
                continue
            found.append(_Segment(seq, p, p.stat().st_size))
        found.sort(key=lambda s: s.seq)
        rows = 0
        for seg in found:
            n, valid = self._scan(seg)
            if n == 0:
                seg.path.unlink(missing_ok=True)
                continue
            rows += n
            seg.size, seg.last_index = valid, rows - 1
            self._segments.append(seg)
            self._budget.add(valid)
        self._disk_rows = rows
        self._next_seq = max((s.seq for s in found), default=0) + 1
        if rows:
            self._log.warning("spool %s: %d rows left by a previous run are written first",
                              self.name, rows, extra={"writer": self.name, "rows": rows})
        return rows

    def _scan(self, seg: _Segment) -> tuple[int, int]:
        """(rows, valid bytes) of a segment, stopping at the first bad chunk."""
        rows = pos = 0
        with open(seg.path, "rb") as f:
            while True:
                head = f.read(_HEADER.size)
                if not head:
                    break
                ok = len(head) == _HEADER.size
                if ok:
                    magic, size, crc, n = _HEADER.unpack(head)
                    payload = f.read(size)
                    ok = magic == MAGIC and len(payload) == size and zlib.crc32(payload) == crc
                if not ok:
                    self._corrupt(seg, pos)
                    break
                rows += n
                pos += _HEADER.size + size
        return rows, pos

    def _corrupt(self, seg: _Segment, pos: int) -> None:
        self.corrupt_chunks += 1
        if self._m_corrupt is not None:
            self._m_corrupt.inc()
        self._log.error("spool %s: %s is damaged at byte %d (a write cut short by a crash?); "
                        "the rest of that segment is skipped", self.name, seg.path, pos,
                        extra={"writer": self.name})

    def _new_segment(self, seq: int) -> _Segment:
        name = f"seg-{seq:012d}.spool" if seq >= 0 else f"seg--{-seq:011d}.spool"
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        if self._fsync:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return _Segment(seq, path)

    def _write_chunk(self, seg: _Segment, rows: list[Row]) -> None:
        payload = pickle.dumps(rows, protocol=5)
        data = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), len(rows)) + payload
        with open(seg.path, "r+b") as f:
            f.seek(seg.size)
            try:
                f.write(data)
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            except OSError:
                # a torn chunk would hide every later chunk of this segment: cut it off
                with contextlib.suppress(OSError):
                    f.truncate(seg.size)
                raise
        seg.size += len(data)
        self._budget.add(len(data))
        self._written = rows

    def _read_chunk(self) -> int:
        """Move the oldest unread chunk's rows to ``_head`` (skipping a damaged remainder);
        returns how many (0: nothing readable)."""
        for seg in self._segments:
            if seg.read >= seg.size:
                continue
            with open(seg.path, "rb") as f:
                f.seek(seg.read)
                head = f.read(_HEADER.size)
                magic, size, crc, n = (_HEADER.unpack(head) if len(head) == _HEADER.size
                                       else (b"", 0, 0, 0))
                payload = f.read(size)
            if magic != MAGIC or len(payload) != size or zlib.crc32(payload) != crc:
                # damaged after it was written (disk trouble): skip the rest of this segment
                self._corrupt(seg, seg.read)
                seg.read = seg.size
                continue
            rows: list[Row] = pickle.loads(payload)
            seg.read += _HEADER.size + size
            self._head.extend(rows)
            self._disk_rows -= n
            return n
        return 0

    def _drop_segment(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._budget.add(-seg.size)
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()

    def _gauges(self) -> None:
        if self._m_rows is not None and self._m_bytes is not None:
            self._m_rows.set(self.rows)
            self._m_bytes.set(self.bytes)
