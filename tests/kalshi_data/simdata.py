"""A production database holding what a short run of the real simulator emitted (no fleet).

The simulator (tiny preset, seeded, manual clock) runs ``minutes`` of virtual time; its REST API
gives the series, events and markets (decoded by shared/kalshi/objects.py, as the gatherer does)
and its ground truth gives every trade, delta and ticker. They are written into a migrated
production database as the fleet would hold them: exchange times at millisecond precision,
occurrence and ts_rank numbered per market, a WebSocket snapshot per market placed before its
first delta and one after every 300th delta, two gatherers with cursors, and one window in which
both gatherers' orderbook sockets were down (its deltas are missing, as they would be). The
truth stays available to check answers against.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from kalshi_sim import SimConfig
from kalshi_sim.server import SimThread
from shared.kalshi.models import MarketRow, ticker_content_hash
from shared.kalshi.objects import event_from_rest, market_from_rest, series_from_rest
from shared.kalshi.replay import plain_replay

US = 1_000_000
START_MS = 1_780_000_000_000
GATHERERS = ("gatherer-1", "gatherer-2")
SNAPSHOT_EVERY = 300
PREFIX = "/trade-api/v2"


@dataclass
class SimProduction:
    dsn: str
    start_us: int
    end_us: int
    book0: dict[str, tuple[dict[int, int], dict[int, int]]]
    deltas: dict[str, list[tuple[int, str, int, int]]]  # ticker -> (ts µs at ms, side, price, delta)
    trades: list[tuple[str, str, int, int, int, str]]  # (trade_id, ticker, ts µs, yes_price, count, side)
    markets: dict[str, MarketRow]
    lost: tuple[int, int] = (0, 0)  # [a, b] µs: both gatherers' orderbook sockets down
    stats: dict[str, int] = field(default_factory=dict)
    truth_path: str | None = None  # the simulator's JSONL truth log of the run

    def truth_book(self, ticker: str, at_us: int) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
        """The exchange's book of ``ticker`` after every delta stamped at or before ``at_us``."""
        yes, no = self.book0.get(ticker, ({}, {}))
        b = plain_replay(yes, no, ((s, p, d) for ts, s, p, d in self.deltas.get(ticker, ()) if ts <= at_us))
        return b.levels("yes"), b.levels("no")

    def busiest(self, n: int = 1) -> list[str]:
        return sorted(self.deltas, key=lambda t: -len(self.deltas[t]))[:n]


def _rest_all(client: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        doc = client.get(client.base_url.join(client.base_url.path.rstrip("/") + path), params=params).raise_for_status().json()
        out.extend(doc.get(key, ()))
        cursor = doc.get("cursor") or ""
        if not cursor or path == "/series":
            return out


def build(dsn: str, minutes: int = 10, seed: int = 7, truth_path: str | None = None) -> SimProduction:
    """Run the simulator and load production at ``dsn`` (a fresh, migrated database); the
    simulator's truth log goes to ``truth_path`` when given."""
    cfg = SimConfig(preset="tiny", profile="fp2026", seed=seed, clock_speed=0.0, start_ms=START_MS,
                    tier=None, anon_tier=None, truth_path=truth_path)
    st = SimThread(cfg)
    sim = st.start()
    try:
        st.call(sim.advance, minutes * 60_000)
        truth = sim.truth
        trades, deltas, tickers, book0 = st.call(
            lambda: (list(truth.trades_), list(truth.deltas_), list(truth.tickers_), dict(truth._book0)))
        rx = (START_MS + minutes * 60_000) * 1000
        with httpx.Client(base_url=sim.rest_url, timeout=30) as c:
            series = [series_from_rest(o, rx) for o in _rest_all(c, "/series", "series")]
            events = [event_from_rest(o, rx) for o in _rest_all(c, "/events", "events")]
            ev_series = {e.event_ticker: e.series_ticker for e in events}  # type: ignore[union-attr]
            markets = [market_from_rest(o, rx, ev_series.get(o.get("event_ticker")))
                       for o in _rest_all(c, "/markets", "markets")]
    finally:
        st.stop()
    start_us, end_us = START_MS * 1000, (START_MS + minutes * 60_000) * 1000
    by_market: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    for d in deltas:
        by_market[d.ticker].append((d.ts_us // 1000 * 1000, d.side, d.price, d.delta))
    busiest = sorted(by_market, key=lambda t: -len(by_market[t]))
    # both gatherers' orderbook sockets down 20 s at 60% of the run: the exchange's deltas of
    # that window reach nobody (the busiest market keeps its record outside it)
    lost_a = start_us + (end_us - start_us) * 6 // 10
    lost = (lost_a, lost_a + 20 * US)
    prod = SimProduction(dsn, start_us, end_us, {t: (dict(y), dict(n)) for t, (y, n) in book0.items()},
                         dict(by_market), [(t.trade_id, t.ticker, t.ts_us // 1000 * 1000, t.yes_price, t.qty,
                                            t.taker_side) for t in trades],
                         {m.ticker: m for m in markets}, lost, truth_path=truth_path)  # type: ignore[union-attr]
    with psycopg.connect(dsn, autocommit=True) as conn:
        _load_reference(conn, series, events, markets)
        _load_trades(conn, trades)
        prod.stats["deltas"], prod.stats["snapshots"] = _load_books(conn, prod, busiest)
        _load_tickers(conn, tickers)
        _load_coverage(conn, lost)
        conn.execute("ANALYZE")
    prod.stats["trades"] = len(trades)
    return prod


def _copy(conn: psycopg.Connection[Any], table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def _load_reference(conn: psycopg.Connection[Any], series: list[Any], events: list[Any], markets: list[Any]) -> None:
    for table, rows in (("series", series), ("events", events), ("markets", markets)):
        cols = rows[0]._fields
        _copy(conn, table, (*cols, "gatherer_id", "merged_at"),
              [(*r, GATHERERS[0], r.received_at) for r in rows])


def _load_trades(conn: psycopg.Connection[Any], trades: list[Any]) -> None:
    rows = []
    for i, t in enumerate(trades):
        ts = t.ts_us // 1000 * 1000
        rows.append((uuid.UUID(t.trade_id), t.ticker, ts, t.yes_price, 10_000 - t.yes_price, t.qty, t.taker_side,
                     t.taker_side, "bid" if t.taker_side == "yes" else "ask", False, "ws", ts + 3000,
                     GATHERERS[i % 2], ts + 9000))
    _copy(conn, "trades", ("trade_id", "ticker", "exchange_ts", "yes_price", "no_price", "count", "taker_side",
                           "taker_outcome_side", "taker_book_side", "is_block_trade", "source", "received_at",
                           "gatherer_id", "merged_at"), rows)
    conn.execute("INSERT INTO trade_ids SELECT trade_id, exchange_ts, ticker FROM trades")


def _levels(book: dict[int, int]) -> Jsonb:
    return Jsonb([[p, s] for p, s in sorted(book.items()) if s > 0])


def _load_books(conn: psycopg.Connection[Any], prod: SimProduction, busiest: list[str]) -> tuple[int, int]:
    lo, hi = prod.lost
    drows: list[tuple[Any, ...]] = []
    srows: list[tuple[Any, ...]] = []
    for ticker in prod.book0:
        ds = prod.deltas.get(ticker, [])
        yes, no = (dict(x) for x in prod.book0[ticker])
        occ: dict[tuple[int, str, int, int], int] = {}
        rank: dict[int, int] = {}
        resubscribed = False
        for i, (ts, side, price, delta) in enumerate(ds):
            o = occ.get((ts, side, price, delta), 0)
            occ[(ts, side, price, delta)] = o + 1
            r = rank.get(ts, 0)
            rank[ts] = r + 1
            key = (ts, side, price, delta, o)
            if i == 0:  # the subscription snapshot, placed before the market's first delta
                srows.append((ticker, ts - 2000, "ws", _levels(yes), _levels(no), 1, None, None, "next", *key,
                              ts - 2000, GATHERERS[0], ts))
            if ts > hi and not resubscribed:
                srows.extend(_resubscribed(ticker, yes, no, hi, key))
                resubscribed = True
            levels = yes if side == "yes" else no
            levels[price] = levels.get(price, 0) + delta
            if not levels[price]:
                del levels[price]
            if lo - US <= ts <= hi:  # sent while every orderbook socket was down: nobody has it
                continue
            drows.append((ticker, ts, side, price, delta, o, r, None, ts + 2000, GATHERERS[i % 2], ts + 5000))
            if (i + 1) % SNAPSHOT_EVERY == 0:
                srows.append((ticker, ts + 4000, "resync", _levels(yes), _levels(no), None, ts, o, "last", *key,
                              ts + 4000, GATHERERS[1], ts + 6000))
        if not resubscribed and ds and ds[0][0] <= hi:
            srows.extend(_resubscribed(ticker, yes, no, hi, None))
    _copy(conn, "orderbook_deltas", ("ticker", "exchange_ts", "side", "price", "delta", "occurrence", "ts_rank",
                                     "seq", "received_at", "gatherer_id", "merged_at"), drows)
    _copy(conn, "orderbook_snapshots", ("ticker", "snapshot_ts", "source", "yes_levels", "no_levels", "seq",
                                        "last_delta_ts", "last_delta_occurrence", "cut_kind", "cut_ts", "cut_side",
                                        "cut_price", "cut_delta", "cut_occurrence", "received_at", "gatherer_id",
                                        "merged_at"), srows)
    return len(drows), len(srows)


def _resubscribed(ticker: str, yes: dict[int, int], no: dict[int, int], at: int,
                  nxt: tuple[int, str, int, int, int] | None) -> list[tuple[Any, ...]]:
    """Both gatherers' fresh subscription snapshots when the outage ends: placed before the
    market's next delta when one follows within the router's hold (10 s), else 'quiet'."""
    if nxt is not None and nxt[0] <= at + 10 * US:
        cut: tuple[Any, ...] = ("next", *nxt)
    else:
        cut = ("quiet", None, None, None, None, None)
    return [(ticker, at, "ws", _levels(yes), _levels(no), 1, None, None, *cut, at, g, at + 1000) for g in GATHERERS]


def _load_tickers(conn: psycopg.Connection[Any], tickers: list[Any]) -> None:
    rows = {}
    for t in tickers:
        ts = t.ts_us // 1000 * 1000
        h = ticker_content_hash(t.ticker, ts, t.yes_bid, t.yes_ask, t.price, t.volume, t.open_interest,
                                t.dollar_volume, t.dollar_open_interest)
        rows[(t.ticker, ts, h)] = (t.ticker, ts, t.yes_bid, t.yes_ask, t.price, t.volume, t.open_interest,
                                   t.dollar_volume, t.dollar_open_interest, h, ts + 2000, GATHERERS[0], ts + 5000)
    _copy(conn, "tickers", ("ticker", "exchange_ts", "yes_bid", "yes_ask", "price", "volume", "open_interest",
                            "dollar_volume", "dollar_open_interest", "content_hash", "received_at", "gatherer_id",
                            "merged_at"), list(rows.values()))


def _load_coverage(conn: psycopg.Connection[Any], lost: tuple[int, int]) -> None:
    for g in GATHERERS:
        conn.execute("INSERT INTO sync_cursors (gatherer_id, table_name, db_uuid, updated_at) "
                     "SELECT %s, t, gen_random_uuid(), 0 FROM unnest(ARRAY['trades', 'orderbook_deltas', "
                     "'orderbook_snapshots', 'tickers', 'coverage_events', 'markets']) t", (g,))
        conn.execute("INSERT INTO coverage_events (gatherer_id, event_id, scope, ticker, kind, window_start, "
                     "window_end, recovered, detail, created_at, updated_at, merged_at) VALUES "
                     "(%s, gen_random_uuid(), 'connection', NULL, 'ws_down', %s, %s, true, %s, %s, %s, %s)",
                     (g, lost[0], lost[1], Jsonb({"role": "orderbook", "conn_id": "ob-1"}), lost[1], lost[1], lost[1]))
