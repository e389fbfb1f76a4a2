"""Streamed tabular output for the read-side commands: CSV, JSON lines or Parquet.

::

    with open_sink("parquet", "out.parquet", COLUMNS) as sink:
        for rows in batches:
            sink.write(rows)          # tuples in COLUMNS order

Rows are written as they come (Parquet: one row group per ``ROW_GROUP`` rows), so memory is one
batch whatever the range. Units are the database's exact integers (prices dollars x 10,000,
sizes contracts x 100, times µs since the epoch) plus an ISO-8601 ``time`` column for people.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

FORMATS = ("csv", "json", "parquet")
ROW_GROUP = 100_000

Column = tuple[str, str]  # (name, type: "string" | "int64" | "int32" | "bool")


class Sink:
    """Base: counts rows; subclasses write them."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows += len(rows)
        self._write(rows)

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _TextSink(Sink):
    def __init__(self, columns: Sequence[Column], path: str | None) -> None:
        super().__init__(columns)
        self._own = path not in (None, "-")
        self._f: IO[str] = (open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                            if self._own and path is not None else sys.stdout)

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()


class CsvSink(_TextSink):
    def __init__(self, columns: Sequence[Column], path: str | None) -> None:
        super().__init__(columns, path)
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow([c for c, _t in self.columns])

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._w.writerows(rows)


class JsonLinesSink(_TextSink):
    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        names = [c for c, _t in self.columns]
        buf = io.StringIO()
        for r in rows:
            buf.write(orjson.dumps(dict(zip(names, r, strict=True))).decode())
            buf.write("\n")
        self._f.write(buf.getvalue())


class ParquetSink(Sink):
    def __init__(self, columns: Sequence[Column], path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(columns)
        types = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "bool": pa.bool_()}
        self._schema = pa.schema([(c, types[t]) for c, t in self.columns])
        self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        self._pending: list[Sequence[Any]] = []

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        cols = list(zip(*self._pending, strict=True))
        self._writer.write_table(pa.Table.from_arrays(
            [pa.array(list(c), type=f.type) for c, f in zip(cols, self._schema, strict=True)],
            schema=self._schema))
        self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def open_sink(fmt: str, path: str | None, columns: Sequence[Column]) -> Sink:
    """A sink for ``fmt``; ``path`` None or ``-`` = stdout (not for Parquet)."""
    if fmt == "csv":
        return CsvSink(columns, path)
    if fmt == "json":
        return JsonLinesSink(columns, path)
    if fmt == "parquet":
        if path in (None, "-"):
            raise ValueError("--format parquet needs --output FILE")
        Path(str(path)).parent.mkdir(parents=True, exist_ok=True)
        return ParquetSink(columns, str(path))
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
