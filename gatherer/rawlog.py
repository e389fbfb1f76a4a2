"""Optional raw frame log: every received frame with its ``received_at`` and ``conn_id``, in
rotating gzip files, so a parser fix can re-derive rows and the simulator can replay traffic.

The hot path only appends a tuple to a list (``write``); a background task hands the batch to a
worker thread every ``flush_interval_s``, where JSON lines are compressed and written, so neither
compression nor disk I/O ever runs on the event loop. Files: ``frames-<UTC start>-<n>.jsonl.gz``,
rotated at ``max_bytes`` of uncompressed input, at most ``backups`` kept. Line::

    {"received_at": 1732579880123456, "conn_id": "orderbook-3", "frame": "<text frame>"}

(binary frames: ``"frame_b64"`` instead of ``"frame"``). The bound on the in-memory batch is the
flush interval x message rate; when the writer thread falls behind by more than ``MAX_PENDING``
frames, frames are dropped from the raw log (never from the database) and counted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import threading
import time
from pathlib import Path
from typing import IO

import orjson

from gatherer.config import RawLogConfig
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.rawlog")

MAX_PENDING = 2_000_000


class RawLog:
    def __init__(self, cfg: RawLogConfig, gatherer_id: str, metrics: GathererMetrics | None = None) -> None:
        self._cfg = cfg
        self._dir = Path(cfg.directory)
        self._gid = gatherer_id
        self._m = metrics
        self._batch: list[tuple[int, str, bytes | str]] = []
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._written = 0
        self._seq = 0
        self._lock = threading.Lock()  # one writer thread at a time (close vs. last flush)
        self.dropped = 0
        self.frames = 0

    def write(self, received_at: int, conn_id: str, raw: bytes | str) -> None:
        """Hot path: remember the frame. Never blocks, never raises."""
        if len(self._batch) >= MAX_PENDING:
            self.dropped += 1
            return
        self._batch.append((received_at, conn_id, raw))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._cfg.flush_interval_s)
            await self._flush(loop)

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        try:
            await loop.run_in_executor(None, self._write_batch, batch)
        except OSError as exc:
            self.dropped += len(batch)
            log.error("raw frame log write failed (%s); %d frames not logged", exc, len(batch))

    async def close(self) -> None:
        await self._flush(asyncio.get_running_loop())
        await asyncio.get_running_loop().run_in_executor(None, self._close_file)

    # ---- worker thread ------------------------------------------------------------------------
    def _write_batch(self, batch: list[tuple[int, str, bytes | str]]) -> None:
        parts = []
        for rx, conn_id, raw in batch:
            if isinstance(raw, str):
                parts.append(orjson.dumps({"received_at": rx, "conn_id": conn_id, "frame": raw}))
            else:
                parts.append(orjson.dumps({"received_at": rx, "conn_id": conn_id,
                                           "frame_b64": base64.b64encode(raw).decode()}))
        data = b"\n".join(parts) + b"\n"
        with self._lock:
            if self._file is None or self._written >= self._cfg.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(data)
            self._file.flush()
            self._written += len(data)
            self.frames += len(batch)

    def _rotate(self) -> None:
        self._close_file_locked()
        self._dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._path = self._dir / f"frames-{self._gid}-{stamp}-{self._seq:04d}.jsonl.gz"
        self._file = gzip.GzipFile(self._path, "ab", compresslevel=5)  # type: ignore[assignment]
        self._written = 0
        files = sorted(self._dir.glob(f"frames-{self._gid}-*.jsonl.gz"), key=lambda p: p.stat().st_mtime)
        for old in files[:-self._cfg.backups] if len(files) > self._cfg.backups else []:
            with contextlib.suppress(OSError):
                old.unlink()

    def _close_file_locked(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _close_file(self) -> None:
        with self._lock:
            self._close_file_locked()
