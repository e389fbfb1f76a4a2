"""Realistic gatherer rows for the deduplicator tests, written the way a gatherer writes them.

An ``Exchange`` is the truth: every event the exchange emitted. A gatherer "sees" a subset of it,
in its own arrival order and with its own ``received_at``; ``insert`` writes such a copy into a
gatherer database as role ``gatherer`` with COPY, in several transactions (one xid each), like the
real writer. Identity keys are what data-model.md says, so tests can compute the exact union.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

TICKERS = ("KXBTCD-25NOV2517-T96999.99", "KXHIGHNY-25NOV25-B52.5", "INXD-25NOV25-B5900",
           "KXFEDDECISION-25DEC-H0", "KXNBAGAME-25NOV25LALBOS-LAL")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Exchange:
    """Ground truth rows per table (dicts keyed by column), plus how to key them."""

    rng: random.Random
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    keys: set[tuple[Any, ...]] = field(default_factory=set)

    def _add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.setdefault(table, []).append(row)
        return row

    def _fresh(self, table: str, row: dict[str, Any]) -> bool:
        """Random events may collide on their identity key; the exchange never repeats one."""
        k = (table, *key_of(table, row))
        if k in self.keys:
            return False
        self.keys.add(k)
        return True

    def trade(self, ts_us: int | None = None) -> dict[str, Any]:
        ts = (ts_us if ts_us is not None else now_us()) // 1000 * 1000  # ms precision, in µs
        yes = self.rng.randrange(100, 9900, 100)
        return self._add("trades", {
            "trade_id": uuid.UUID(int=self.rng.getrandbits(128), version=4), "ticker": self.rng.choice(TICKERS),
            "exchange_ts": ts, "yes_price": yes, "no_price": 10000 - yes,
            "count": self.rng.randrange(1, 500) * 100, "taker_side": self.rng.choice(("yes", "no")),
            "taker_outcome_side": None, "taker_book_side": None, "is_block_trade": False,
            "source": "ws", "received_at": ts + 3000})

    def delta(self) -> dict[str, Any]:
        while True:
            row = self._delta()
            if self._fresh("orderbook_deltas", row):
                return self._add("orderbook_deltas", row)

    def _delta(self) -> dict[str, Any]:
        ts = now_us() // 1000 * 1000 + self.rng.randrange(0, 1000) * 1000
        return ({
            "ticker": self.rng.choice(TICKERS), "exchange_ts": ts, "side": self.rng.choice(("yes", "no")),
            "price": self.rng.randrange(1, 100) * 100, "delta": self.rng.choice((-1, 1)) * self.rng.randrange(1, 90) * 100,
            "occurrence": 0, "seq": self.rng.randrange(1, 10**9), "sid": 7, "received_at": ts + 2000})

    def snapshot(self) -> dict[str, Any]:
        while True:
            row = self._snapshot()
            if self._fresh("orderbook_snapshots", row):
                return self._add("orderbook_snapshots", row)

    def _snapshot(self) -> dict[str, Any]:
        ts = now_us() // 1000 * 1000 + self.rng.randrange(0, 10**6) * 1000
        return ({
            "ticker": self.rng.choice(TICKERS), "snapshot_ts": ts, "source": self.rng.choice(("ws", "rest")),
            "yes_levels": Jsonb([[5600, 1200], [5500, 300]]), "no_levels": Jsonb([[4300, 900]]),
            "seq": self.rng.randrange(1, 10**6), "last_delta_ts": ts - 1000, "last_delta_occurrence": 0,
            "received_at": ts + 1000})

    def ticker(self) -> dict[str, Any]:
        ts = now_us() // 1000 * 1000 + self.rng.randrange(0, 10**6) * 1000
        return self._add("tickers", {
            "ticker": self.rng.choice(TICKERS), "exchange_ts": ts, "yes_bid": 5500, "yes_ask": 5700, "price": 5600,
            "volume": self.rng.randrange(0, 10**6) * 100, "open_interest": 12345600, "dollar_volume": 1200,
            "dollar_open_interest": 6900, "content_hash": self.rng.getrandbits(62), "received_at": ts + 1000})

    def market(self, ticker: str, updated_ts: int | None, status: str = "active", received_at: int | None = None
               ) -> dict[str, Any]:
        r = received_at if received_at is not None else now_us()
        return {"ticker": ticker, "event_ticker": ticker.rsplit("-", 1)[0], "series_ticker": ticker.split("-")[0],
                "market_type": "binary", "title": f"Will {ticker} resolve yes?", "subtitle": None, "status": status,
                "open_time": r - 10**9, "close_time": r + 10**10, "expiration_time": r + 10**10, "result": None,
                "exchange_updated_ts": updated_ts, "raw": Jsonb({"ticker": ticker, "status": status}),
                "received_at": r, "updated_at": r}

    def event(self, event_ticker: str, status: str = "open") -> dict[str, Any]:
        r = now_us()
        return self._add("events", {
            "event_ticker": event_ticker, "series_ticker": event_ticker.split("-")[0], "title": "An event",
            "sub_title": None, "category": "Crypto", "mutually_exclusive": True, "status": status,
            "exchange_updated_ts": None, "raw": Jsonb({"event_ticker": event_ticker}), "received_at": r,
            "updated_at": r})

    def series(self, series_ticker: str) -> dict[str, Any]:
        r = now_us()
        return self._add("series", {
            "series_ticker": series_ticker, "title": "A series", "category": "Crypto", "frequency": "daily",
            "exchange_updated_ts": None, "raw": Jsonb({"ticker": series_ticker}), "received_at": r, "updated_at": r})


KEYS = {
    "trades": ("trade_id",),
    "orderbook_deltas": ("ticker", "exchange_ts", "side", "price", "delta", "occurrence"),
    "orderbook_snapshots": ("ticker", "snapshot_ts", "source"),
    "tickers": ("ticker", "exchange_ts", "content_hash"),
}


def key_of(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in KEYS[table])


def seen_by(rows: list[dict[str, Any]], delay_us: int, rng: random.Random) -> list[dict[str, Any]]:
    """One gatherer's copy: same identity, its own received_at, its own arrival order."""
    out = [dict(r, received_at=r["received_at"] + delay_us + rng.randrange(0, 500)) for r in rows]
    rng.shuffle(out)
    return out


async def insert(dsn: str | psycopg.AsyncConnection[Any], table: str, rows: list[dict[str, Any]],
                 batches: int = 1) -> None:
    """COPY ``rows`` into a gatherer table in ``batches`` transactions (each its own ingest_xid).

    ``dsn`` may be an open autocommit connection (writers that insert often keep theirs).
    """
    if not rows:
        return
    if not isinstance(dsn, str):
        await _insert(dsn, table, rows, batches)
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await _insert(conn, table, rows, batches)


async def _insert(conn: psycopg.AsyncConnection[Any], table: str, rows: list[dict[str, Any]], batches: int) -> None:
    cols = list(rows[0])
    if True:
        size = max(1, -(-len(rows) // batches))
        for i in range(0, len(rows), size):
            async with conn.transaction(), conn.cursor() as cur:
                q = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
                async with cur.copy(q) as cp:
                    for r in rows[i:i + size]:
                        await cp.write_row([r[c] for c in cols])


async def upsert_market(dsn: str | psycopg.AsyncConnection[Any], row: dict[str, Any]) -> None:
    """Write a market the way the gatherer's registry does: insert or update in place."""
    cols = list(row)
    q = sql.SQL("INSERT INTO markets ({cols}) VALUES ({vals}) ON CONFLICT (ticker) DO UPDATE SET {sets}").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        vals=sql.SQL(", ").join(sql.Placeholder() for _ in cols),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols[1:]))
    if not isinstance(dsn, str):
        await dsn.execute(q, [row[c] for c in cols])
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(q, [row[c] for c in cols])
