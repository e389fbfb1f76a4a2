"""Columnar conversion between PostgreSQL's COPY CSV text and the archive's Arrow schema.

Why CSV: ``COPY ... TO STDOUT (FORMAT csv)`` streams a day at the server's full speed, and Arrow's
C++ CSV reader parses it in blocks with explicit column types, so no row ever becomes a Python
object. NULL and the empty string stay distinct because every text-like column is quoted
(``FORCE_QUOTE``): a quoted ``""`` is an empty string, an unquoted empty field is NULL.
Booleans arrive as ``t``/``f``. The reverse direction writes the same dialect for
``COPY ... FROM STDIN (FORMAT csv)``.

UUIDs are converted between their 36-character text and 16 raw bytes through one
``bytes.fromhex`` / ``bytes.hex`` over a whole column buffer, again without per-row Python.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from kalshi_data.archive.schema import TableSpec

_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# Character ranges of the five groups of the canonical 8-4-4-4-12 text form, without dashes.
_GROUPS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))


def csv_read_options(spec: TableSpec, block_size: int) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions,
                                                                  pacsv.ConvertOptions]:
    """Options for parsing ``copy_out_sql(spec)``'s output."""
    types = {c.name: (pa.string() if c.is_text_like else c.arrow_type) for c in spec.columns}
    read = pacsv.ReadOptions(column_names=list(spec.column_names), block_size=block_size,
                             use_threads=False)
    # newlines_in_values: free text (titles) and JSON may carry a newline inside quotes.
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                                   quoted_strings_can_be_null=False, true_values=["t"],
                                   false_values=["f"])
    return read, parse, convert


def to_archive_batch(batch: pa.RecordBatch, spec: TableSpec) -> pa.RecordBatch:
    """A parsed CSV batch -> the archive schema (UUID bytes, JSON type, NOT NULL fields)."""
    arrays: list[pa.Array] = []
    for col, arr in zip(spec.columns, batch.columns, strict=True):
        if col.pg_type == "uuid":
            arr = uuid_from_text(arr)
        elif col.pg_type == "jsonb":
            arr = pa.ExtensionArray.from_storage(pa.json_(), arr)
        if not col.nullable and arr.null_count:
            raise ValueError(f"column {col.name} holds NULL but is NOT NULL in the archive schema")
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=spec.arrow_schema)


def uuid_from_text(arr: pa.Array) -> pa.Array:
    """36-char UUID strings -> ``arrow.uuid`` (16 bytes each); NULLs are kept."""
    n = len(arr)
    filled = pc.fill_null(arr, _ZERO_UUID) if arr.null_count else arr
    if filled.type != pa.string():
        filled = filled.cast(pa.string())
    hexed = pc.replace_substring(filled, "-", "")
    if n and (pc.min(pc.binary_length(filled)).as_py() != 36 or
              pc.min(pc.binary_length(hexed)).as_py() != 32 or pc.max(pc.binary_length(hexed)).as_py() != 32):
        raise ValueError("UUID column holds a value that is not in 8-4-4-4-12 form")
    hexed = pa.concat_arrays([hexed])  # fresh, unsliced buffers
    first = int.from_bytes(hexed.buffers()[1].to_pybytes()[:4], "little")
    text = hexed.buffers()[2].to_pybytes()[first:first + 32 * n].decode("ascii")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("UUID column holds a non-hex character") from None
    storage = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    if arr.null_count:
        storage = pc.if_else(pc.is_valid(arr), storage, pa.scalar(None, pa.binary(16)))
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def uuid_to_text(arr: pa.Array) -> pa.Array:
    """``arrow.uuid`` (or fixed_size_binary(16)) -> canonical lower-case 36-char strings."""
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    n = len(storage)
    raw = storage.buffers()[1].to_pybytes()[storage.offset * 16:(storage.offset + n) * 16]
    digits = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), n, [None, pa.py_buffer(raw.hex().encode("ascii"))]).cast(pa.string())
    text = pc.binary_join_element_wise(
        *(pc.utf8_slice_codeunits(digits, a, b) for a, b in _GROUPS), "-")
    if storage.null_count:
        text = pc.if_else(pc.is_valid(storage), text, pa.scalar(None, pa.string()))
    return text


def to_copy_csv(batch: pa.RecordBatch, spec: TableSpec) -> bytes:
    """An archive batch -> CSV bytes for ``COPY table (cols) FROM STDIN (FORMAT csv)``.

    Arrow quotes every string (so "" stays an empty string) and leaves NULL as an empty
    unquoted field, which is exactly PostgreSQL's CSV convention.
    """
    arrays: list[pa.Array] = []
    for col, arr in zip(spec.columns, batch.columns, strict=True):
        if col.pg_type == "uuid":
            arr = uuid_to_text(arr)
        elif isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        arrays.append(arr)
    table = pa.Table.from_arrays(arrays, names=list(spec.column_names))
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()
