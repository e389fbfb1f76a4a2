"""Test data for the archive: every production table filled with awkward but valid values.

Values that break naive CSV or type handling on purpose: NULL next to the empty string,
quotes, commas, newlines, backslashes and non-ASCII in text, nested and unicode JSON, int64
and int32 extremes, negative deltas, booleans and NULL booleans. Rows sit on both edges of the
day (first and last microsecond) and just outside it, which must not be exported.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.schema import TABLES, TableSpec

DAY = date(2026, 11, 20)
AWKWARD = ["", 'a "quoted", comma', "line\nbreak\r\nCRLF", "back\\slash", "ünïcødé ✓", "NULL", "\\N", ","]


def fill(dsn: str, day: date = DAY, n: int = 120, seed: int = 0) -> dict[str, int]:
    """Insert ``n`` rows per event table for ``day`` (plus 2 outside it) and reference rows.

    Returns the number of rows per table that belong to ``day`` (all rows for reference tables).
    """
    lo, hi = day_range_us(day)
    counts: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        ts = [lo, hi - 1] + [lo + (i * 7_919_000 + seed * 13) % (hi - lo) for i in range(n - 2)]
        outside = [lo - 1, hi]
        rows: list[tuple[Any, ...]] = []
        for i, t in enumerate(ts + outside):
            rows.append((f"{seed:04x}{i:04x}-0000-4000-8000-{i:012x}", f"KX-{seed}-{i % 9}", t,
                         i % 10001, 10000 - i % 10001, 100 * (i + 1),
                         None if i % 4 == 0 else ("yes", "no")[i % 2],
                         None if i % 3 == 0 else AWKWARD[i % len(AWKWARD)], None,
                         None if i % 5 == 0 else i % 2 == 0, ("ws", "rest")[i % 2],
                         t + 500, f"gatherer-{i % 3 + 1}", t + 900))
        _insert(conn, TABLES["trades"], rows)
        conn.execute(sql.SQL("INSERT INTO trade_ids SELECT trade_id, exchange_ts, ticker FROM trades "
                             "ON CONFLICT DO NOTHING"))
        counts["trades"] = n

        rows = [(f"KX-{seed}-{i % 5}", t, ("yes", "no")[i % 2], i % 10001,
                 (-1) ** i * (i + 1) * 100 if i != 3 else -9_223_372_036_854_775_808,
                 i % 3 if i != 4 else 32767, None if i % 6 == 0 else 9_223_372_036_854_775_807 - i,
                 t + 10, f"gatherer-{i % 3 + 1}", t + 20, None if i % 7 == 0 else i % 32768)
                for i, t in enumerate(ts + outside)]
        _insert(conn, TABLES["orderbook_deltas"], rows)
        counts["orderbook_deltas"] = n

        rows = [(f"KX-{seed}-{i % 5}", t, ("ws", "rest", "resync")[i % 3],
                 '[[5600, 1200], [5700, 100]]' if i % 2 else '[]',
                 '[{"p": 100, "s": 2147483647, "note": "é\\n\\"x\\""}]',
                 None if i % 4 == 0 else i, None if i % 2 else t - 5, None if i % 2 else i % 7,
                 t + 1, f"gatherer-{i % 3 + 1}", t + 2,
                 *((("last", "next", "quiet")[i % 3], None if i % 3 == 2 else t - 7,
                    None if i % 3 == 2 else ("yes", "no")[i % 2], None if i % 3 == 2 else 10000,
                    None if i % 3 == 2 else -9_223_372_036_854_775_808 + i,
                    None if i % 3 == 2 else 32767) if i % 4 else (None,) * 6))
                for i, t in enumerate(ts + outside)]
        _insert(conn, TABLES["orderbook_snapshots"], rows)
        counts["orderbook_snapshots"] = n

        rows = [(f"KX-{seed}-{i % 5}", t, None if i % 3 == 0 else i % 10001, i % 10001,
                 None if i % 5 == 0 else 2_147_483_647 if i == 1 else -2_147_483_648 if i == 2 else i,
                 i * 100, None if i % 2 else i * 1000, i, None, i * 31 - 7, t + 3,
                 f"gatherer-{i % 3 + 1}", t + 4) for i, t in enumerate(ts + outside)]
        _insert(conn, TABLES["tickers"], rows)
        counts["tickers"] = n

        rows = [(f"gatherer-{i % 3 + 1}", f"{seed:04x}{i:04x}-1111-4000-8000-{i:012x}",
                 ("market", "connection", "process")[i % 3], None if i % 3 else f"KX-{seed}-{i % 5}",
                 ("seq_gap", "ws_down", "process_down", "resync", "trade_backfill", "book_mismatch")[i % 6],
                 t, None if i % 2 else t + 1000, i % 2 == 0, '{"reason": "x, \\"y\\"", "n": [1, 2.5, null]}',
                 t, t + 1, t + 2) for i, t in enumerate(ts + outside)]
        _insert(conn, TABLES["coverage_events"], rows)
        counts["coverage_events"] = n

        m = max(5, n // 10)
        rows = [(f"S-{seed}-{i}", None if i % 2 else AWKWARD[i % len(AWKWARD)], "Crypto", "daily",
                 None if i % 3 == 0 else lo + i, '{"series_ticker": "S", "tags": ["a", "b"]}',
                 lo + i, lo + i, "gatherer-1", lo + i) for i in range(m)]
        _insert(conn, TABLES["series"], rows)
        rows = [(f"E-{seed}-{i}", f"S-{seed}-{i}", AWKWARD[i % len(AWKWARD)], None, "Crypto",
                 None if i % 3 == 0 else i % 2 == 0, "open", lo + i, '{"k": {"deep": [true, false]}}',
                 lo + i, lo + i, "gatherer-2", lo + i) for i in range(m)]
        _insert(conn, TABLES["events"], rows)
        rows = [(f"M-{seed}-{i}", f"E-{seed}-{i}", f"S-{seed}-{i}", "binary", AWKWARD[i % len(AWKWARD)],
                 None, "active", lo, hi, None if i % 2 else hi + 1, None, lo + i,
                 '{"ticker": "M", "yes_bid_dollars": "0.5600"}', lo + i, lo + i, "gatherer-3", lo + i)
                for i in range(m)]
        _insert(conn, TABLES["markets"], rows)
        counts.update(series=m, events=m, markets=m)
    return counts


def _insert(conn: psycopg.Connection[Any], spec: TableSpec, rows: list[tuple[Any, ...]]) -> None:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(spec.name), cols)) as copy:
        for r in rows:
            copy.write_row(r)


def day_rows(dsn: str, spec: TableSpec, day: date = DAY) -> list[tuple[Any, ...]]:
    """Every column of every row of ``spec`` for ``day`` (all rows for reference tables), as
    text so that jsonb, uuid and booleans compare exactly, in identity order."""
    cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in spec.column_names)
    order = sql.SQL(", ").join(sql.SQL('{} COLLATE "C"').format(sql.Identifier(c))
                               if spec.column(c).pg_type == "text" else sql.Identifier(c)
                               for c in spec.identity)
    q = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(spec.name))
    if spec.time_column:
        lo, hi = day_range_us(day)
        q = sql.SQL("{} WHERE {} >= {} AND {} < {}").format(q, sql.Identifier(spec.time_column),
                                                             sql.Literal(lo), sql.Identifier(spec.time_column),
                                                             sql.Literal(hi))
    q = sql.SQL("{} ORDER BY {}").format(q, order)
    with psycopg.connect(dsn) as conn:
        return conn.execute(q).fetchall()
