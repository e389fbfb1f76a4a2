"""books: what analysts wait for (issue 19), each beside a raw limit measured in the same run.

1. **Book rebuild, one day after the last snapshot, busy market.** Production holds a market
   with one snapshot and then a day of deltas (1,000,000; 200,000 with --quick) among other
   markets' deltas. We time ``book_state()`` (SQL) and ``kalshi_data.books.book_at`` (the
   ``kalshi-data book`` path) at the instant a day after the snapshot. Raw limit: the plain
   ``SUM(delta) GROUP BY side, price`` over the same rows, which any rebuild must at least do.
   Unit: deltas folded into the book per second (latency in ``extra``).
2. **Archive scan.** A local archive (Hive layout, manifest, zstd Parquet as export writes it)
   of 2,000,000 trades (500,000 quick). Ours: ``kalshi-data query``'s path (DuckDB over the
   manifest-listed parts through Arrow's dataset reader) running a per-market aggregate over
   three columns; raw: ``pyarrow.parquet.read_table`` of the same three columns of the same
   files. Unit: rows per second.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.manifest import MANIFEST_NAME, Manifest, Part, columns_of
from kalshi_data.archive.schema import TABLES
from kalshi_data.books import book_at

from ._db import fresh_database
from ._harness import repeat
from ._model import Context, Row

TICKER = "KXBENCH-26DEC01-BUSY"
DAY_US = 86_400_000_000
T0 = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z
ARCHIVE_DAY = date(2026, 12, 1)


def _fill_books(dsn: str, busy: int, other: int) -> None:
    """One snapshot of TICKER placed before its first delta, then ``busy`` deltas of it spread
    over the next day (ranked), and ``other`` deltas of 200 other markets."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orderbook_snapshots (ticker, snapshot_ts, source, yes_levels, no_levels, cut_kind, "
                     "cut_ts, cut_side, cut_price, cut_delta, cut_occurrence, received_at, gatherer_id, merged_at) "
                     "VALUES (%s, %s, 'ws', %s, %s, 'next', %s, 'yes', 1000, 100, 0, %s, 'gatherer-1', %s)",
                     (TICKER, T0 - 1000, "[[5000, 100000], [4900, 50000]]", "[[4800, 70000]]", T0, T0, T0))
        # i -> exchange_ts spread over the day at millisecond precision, side/price cycling, each
        # (side, price) alternating +1 / -1 contract so no level goes negative
        conn.execute(
            "INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, occurrence, ts_rank, received_at, "
            "gatherer_id, merged_at) "
            "SELECT %(t)s, %(t0)s + (i * (%(day)s / %(n)s)) / 1000 * 1000, CASE WHEN i %% 2 = 0 THEN 'yes' ELSE 'no' END, "
            "100 * (10 + i %% 80), CASE WHEN i = 0 THEN 100 WHEN (i / 80) %% 2 = 0 THEN 100 ELSE -100 END, "
            "0, 0, %(t0)s + i, 'gatherer-1', %(t0)s + i FROM generate_series(0, %(n)s - 1) i "
            "ON CONFLICT DO NOTHING",
            {"t": TICKER, "t0": T0, "day": DAY_US, "n": busy})
        # ranks in exchange order within each millisecond
        conn.execute("UPDATE orderbook_deltas d SET ts_rank = r.rk - 1 FROM (SELECT ctid AS c, row_number() OVER "
                     "(PARTITION BY exchange_ts ORDER BY received_at) AS rk FROM orderbook_deltas WHERE ticker = %s) r "
                     "WHERE d.ctid = r.c AND d.ticker = %s", (TICKER, TICKER))
        conn.execute(
            "INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, occurrence, ts_rank, received_at, "
            "gatherer_id, merged_at) "
            "SELECT 'KXBENCH-OTHER-' || (i %% 200), %(t0)s + (i * (%(day)s / %(n)s)) / 1000 * 1000, 'yes', "
            "100 * (1 + i %% 99), 100, i / 200, 0, %(t0)s + i, 'gatherer-1', %(t0)s + i "
            "FROM generate_series(0, %(n)s - 1) i ON CONFLICT DO NOTHING",
            {"t0": T0, "day": DAY_US, "n": other})
        conn.execute("VACUUM ANALYZE orderbook_deltas")
        conn.execute("VACUUM ANALYZE orderbook_snapshots")


def _rebuild_rows(ctx: Context) -> list[Row]:
    busy = 200_000 if ctx.quick else 1_000_000
    dsn = fresh_database(ctx.pg_dsn, "production", prefix="books")
    _fill_books(dsn, busy, busy)
    at = T0 + DAY_US
    rows = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = int(conn.execute("SELECT count(*) FROM orderbook_deltas WHERE ticker = %s AND exchange_ts BETWEEN %s "
                             "AND %s", (TICKER, T0, at)).fetchone()[0])  # type: ignore[index]

        def raw() -> int:
            conn.execute("SELECT side, price, sum(delta) FROM orderbook_deltas WHERE ticker = %s AND exchange_ts "
                         "BETWEEN %s AND %s GROUP BY 1, 2", (TICKER, T0, at)).fetchall()
            return n

        def sql() -> int:
            r = conn.execute("SELECT deltas_applied, uncertain FROM book_state(%s, %s)", (TICKER, at)).fetchone()
            assert r is not None and not r[1], r
            return int(r[0])

        def python() -> int:
            b = book_at(conn, TICKER, at)
            assert not b.uncertain, b.reasons
            return b.deltas_applied

        raw_s = repeat(raw, ctx.reps)
        for name, fn in (("SQL book_state()", sql), ("kalshi-data book (Python)", python)):
            ours = repeat(fn, ctx.reps)
            rows.append(Row("book rebuild", f"book a day after its snapshot, {n:,} deltas: {name}", "deltas/s",
                            raw=raw_s, ours=ours, target="report",
                            extra={"latency_ms_median": round(n / ours.median * 1000, 1),
                                   "raw_latency_ms_median": round(n / raw_s.median * 1000, 1), "deltas": n},
                            note="raw = SUM(delta) GROUP BY side, price over the same rows"))
    return rows


def _write_archive(root: Path, n: int, parts: int = 4) -> list[Path]:
    """``n`` trades of one day in the export's layout, as ``kalshi-data export`` writes them."""
    spec = TABLES["trades"]
    lo, _hi = day_range_us(ARCHIVE_DAY)
    day_dir = root / "table=trades" / f"date={ARCHIVE_DAY.isoformat()}"
    day_dir.mkdir(parents=True)
    files, meta = [], []
    per = n // parts
    for k in range(parts):
        idx = pa.array(range(k * per, (k + 1) * per), pa.int64())
        m = len(idx)
        cols = {
            "trade_id": pa.ExtensionArray.from_storage(pa.uuid(), pa.array(
                [os.urandom(16) for _ in range(m)], pa.binary(16))),
            "ticker": pa.array([f"KXBENCH-T{i % 5000}" for i in range(k * per, (k + 1) * per)]),
            "exchange_ts": pa.compute.add(pa.compute.multiply(idx, 40_000), lo),
            "yes_price": pa.compute.cast(pa.compute.add(pa.compute.bit_wise_and(idx, 8191), 1), pa.int32()),
            "no_price": pa.compute.cast(pa.compute.subtract(9999, pa.compute.bit_wise_and(idx, 8191)), pa.int32()),
            "count": pa.compute.multiply(pa.compute.add(pa.compute.bit_wise_and(idx, 511), 1), 100),
            "taker_side": pa.array(["yes", "no"] * (m // 2) + ["yes"] * (m % 2)),
            "taker_outcome_side": pa.nulls(m, pa.string()), "taker_book_side": pa.nulls(m, pa.string()),
            "is_block_trade": pa.nulls(m, pa.bool_()), "source": pa.array(["ws"] * m),
            "received_at": pa.compute.add(pa.compute.multiply(idx, 40_000), lo + 500),
            "gatherer_id": pa.array(["gatherer-1"] * m),
            "merged_at": pa.compute.add(pa.compute.multiply(idx, 40_000), lo + 900),
        }
        table = pa.Table.from_pydict(cols, schema=spec.arrow_schema)
        path = day_dir / f"part-bench-{k:04d}.parquet"
        pq.write_table(table, path, compression="zstd", compression_level=3, row_group_size=250_000)
        data = path.read_bytes()
        files.append(path)
        meta.append(Part(path.name, m, len(data), hashlib.sha256(data).hexdigest(), None, None))
    manifest = Manifest(table="trades", day=ARCHIVE_DAY.isoformat(), kind="day", time_column="exchange_ts",
                        range_us=day_range_us(ARCHIVE_DAY), run_id="bench", created_at="2026-12-02T00:00:00Z",
                        row_count=sum(p.rows for p in meta), min_ts=None, max_ts=None, sort_key=spec.sort_key,
                        columns=columns_of(spec), parts=tuple(meta))
    (day_dir / MANIFEST_NAME).write_bytes(manifest.to_json())
    return files


def _scan_rows(ctx: Context) -> list[Row]:
    import duckdb

    from kalshi_data.archive.query import attach_archive

    n = 500_000 if ctx.quick else 2_000_000
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-archive-") as tmp:
        root = Path(tmp)
        files = _write_archive(root, n)
        cols = ["ticker", "count", "yes_price"]

        def raw() -> int:
            return sum(pq.read_table(f, columns=cols).num_rows for f in files)

        def ours() -> int:
            con = duckdb.connect()
            attach_archive(con, str(root), tables=["trades"])
            got = con.sql("SELECT ticker, count(*) AS n, sum(count) AS c, max(yes_price) AS p FROM trades "
                          "GROUP BY 1").fetchall()
            con.close()
            return sum(int(r[1]) for r in got)

        raw_s = repeat(raw, ctx.reps)
        ours_s = repeat(ours, ctx.reps)
    return [Row("archive query", f"archive scan: {n:,} trades, per-market aggregate of 3 columns", "rows/s",
                raw=raw_s, ours=ours_s, target="report",
                note="ours = kalshi-data query path (DuckDB over the manifest's parts via Arrow); "
                     "raw = pyarrow.parquet.read_table of the same columns")]


def run(ctx: Context) -> list[Row]:
    return _rebuild_rows(ctx) + _scan_rows(ctx)
