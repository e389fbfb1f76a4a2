"""Crafted rows for the verify and gaps tests, written the way a gatherer and the deduplicator
would write them (units of data-model.md)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from kalshi_data.verify import Report, verify

US = 1_000_000


def _now_us() -> int:
    import time

    return int(time.time() * US) // 1000 * 1000


class Data:
    """Writes rows the way a gatherer and the deduplicator would (units of data-model.md)."""

    def __init__(self, production: str, gatherers: dict[str, str]) -> None:
        self.production = production
        self.gatherers = gatherers
        self.t0 = _now_us() - 600 * US  # ten minutes ago, on a millisecond

    def conn(self, name: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.production if name == "production" else self.gatherers[name], autocommit=True)

    def trade(self, where: str, tid: str, ticker: str, ts: int, *, count: int = 100, yes: int = 5600,
              received_at: int | None = None, gatherer: str = "gatherer-1") -> None:
        with self.conn(where) as c:
            row = (tid, ticker, ts, yes, 10_000 - yes, count, "yes", "ws", received_at or ts + 1000)
            if where == "production":
                c.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, taker_side, "
                          "source, received_at, gatherer_id, merged_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                          (*row, gatherer, ts + 2000))
                c.execute("INSERT INTO trade_ids VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (tid, ts, ticker))
            else:
                c.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, taker_side, "
                          "source, received_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", row)
                c.execute("INSERT INTO trade_ids VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (tid, ts, ticker))

    def delta(self, where: str, ticker: str, ts: int, side: str, price: int, delta: int, occurrence: int = 0,
              gatherer: str = "gatherer-1") -> None:
        with self.conn(where) as c:
            if where == "production":
                c.execute("INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, occurrence, seq, "
                          "received_at, gatherer_id, merged_at) VALUES (%s,%s,%s,%s,%s,%s,1,%s,%s,%s)",
                          (ticker, ts, side, price, delta, occurrence, ts + 1000, gatherer, ts + 2000))
            else:
                c.execute("INSERT INTO orderbook_deltas (ticker, exchange_ts, side, price, delta, occurrence, seq, sid, "
                          "received_at) VALUES (%s,%s,%s,%s,%s,%s,1,1,%s)",
                          (ticker, ts, side, price, delta, occurrence, ts + 1000))

    def snapshot(self, where: str, ticker: str, ts: int, yes: list[list[int]], no: list[list[int]],
                 last_delta_ts: int | None, gatherer: str = "gatherer-1",
                 cut: tuple[Any, ...] | None = None) -> None:
        """``cut``: (cut_kind, cut_ts, side, price, delta, occurrence), the snapshot's place in the
        delta stream as the router records it; None = not recorded (place unknown)."""
        cut_cols = cut if cut is not None else (None,) * 6
        with self.conn(where) as c:
            args = (ticker, ts, "ws", orjson.dumps(yes).decode(), orjson.dumps(no).decode(), last_delta_ts,
                    0 if last_delta_ts else None, ts, *cut_cols)
            cols = ("ticker, snapshot_ts, source, yes_levels, no_levels, last_delta_ts, last_delta_occurrence, "
                    "received_at, cut_kind, cut_ts, cut_side, cut_price, cut_delta, cut_occurrence")
            if where == "production":
                c.execute(f"INSERT INTO orderbook_snapshots ({cols}, gatherer_id, merged_at) "
                          f"VALUES ({', '.join(['%s'] * 16)})", (*args, gatherer, ts))
            else:
                c.execute(f"INSERT INTO orderbook_snapshots ({cols}) VALUES ({', '.join(['%s'] * 14)})", args)

    def coverage(self, where: str, gatherer: str, ticker: str | None, kind: str, a: int, b: int | None,
                 recovered: bool, scope: str = "market", event_id: str | None = None,
                 detail: dict[str, Any] | None = None) -> str:
        event_id = event_id or str(uuid.uuid4())
        with self.conn(where) as c:
            cols = ("(gatherer_id, event_id, scope, ticker, kind, window_start, window_end, recovered, created_at, "
                    "updated_at, detail")
            args: tuple[Any, ...] = (gatherer, event_id, scope, ticker, kind, a, b, recovered, a, a,
                                     Jsonb(detail or {}))
            if where == "production":
                c.execute(f"INSERT INTO coverage_events {cols}, merged_at) VALUES "
                          "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", (*args, a))
            else:
                c.execute(f"INSERT INTO coverage_events {cols}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", args)
        return event_id

    def merge_all(self, gatherer: str) -> None:
        """Set every cursor of ``gatherer`` to its newest row, as a caught-up deduplicator would."""
        with self.conn(gatherer) as g, self.conn("production") as p:
            uid = g.execute("SELECT db_uuid::text FROM gatherer_meta").fetchone()[0]  # type: ignore[index]
            for table in ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "coverage_events",
                          "markets", "events", "series"):
                row = g.execute(f"SELECT ingest_xid::text::bigint, ingest_seq FROM {table} "
                                "ORDER BY ingest_xid DESC, ingest_seq DESC LIMIT 1").fetchone()
                x, s = row if row else (0, 0)
                p.execute("INSERT INTO sync_cursors (gatherer_id, table_name, db_uuid, cursor_xid, cursor_seq, "
                          "updated_at) VALUES (%s,%s,%s,%s,%s,0) ON CONFLICT (gatherer_id, table_name) DO UPDATE "
                          "SET db_uuid = EXCLUDED.db_uuid, cursor_xid = EXCLUDED.cursor_xid, "
                          "cursor_seq = EXCLUDED.cursor_seq", (gatherer, table, uid, x, s))

    def run(self, **kw: Any) -> Report:
        kw.setdefault("since_us", self.t0 - 60 * US)
        kw.setdefault("until_us", self.t0 + 600 * US)
        kw.setdefault("max_gap_s", 3600.0)
        return verify(self.production, self.gatherers, **kw)
