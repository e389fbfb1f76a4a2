"""REST objects -> rows, both profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from shared.kalshi.models import EventRow, MarketRow, Rejected, SeriesRow, SnapshotRow, TradeRow
from shared.kalshi.objects import (
    event_from_rest,
    market_from_rest,
    series_from_rest,
    snapshot_from_rest,
    trade_from_rest,
)

REST = Path(__file__).resolve().parents[2] / "data" / "frames" / "rest"
RX = 1_778_774_600_000_000


def load(name: str) -> Any:
    return orjson.loads((REST / name).read_bytes())


def test_rest_trade_fp2026_matches_ws_identity() -> None:
    row = trade_from_rest(load("trades_fp2026.json")["trades"][0], RX)
    # created_time .204811 -> truncated to ms, the same exchange_ts the WS ts_ms gives
    assert row == TradeRow(
        "3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13",
        "KXBTCD-26MAY1417-T98999.99",
        1778774531204000,
        6300,
        3700,
        4550,
        "no",
        "no",
        "ask",
        None,
        "rest",
        RX,
    )


def test_rest_trade_legacy() -> None:
    row = trade_from_rest(load("trades_legacy2025.json")["trades"][0], RX)
    assert isinstance(row, TradeRow)
    assert (row.yes_price, row.no_price, row.count, row.exchange_ts, row.source) == (
        5100,
        4900,
        1000,
        1755032432000000,
        "rest",
    )


def test_rest_trade_bad() -> None:
    bad = dict(load("trades_fp2026.json")["trades"][0], count_fp="1.001")
    rej = trade_from_rest(bad, RX)
    assert isinstance(rej, Rejected) and rej.reason == "too_precise"
    assert isinstance(trade_from_rest({"ticker": "X"}, RX), Rejected)
    assert isinstance(trade_from_rest("nope", RX), Rejected)


def test_rest_orderbooks() -> None:
    fp = snapshot_from_rest(load("orderbook_fp2026.json"), "T", RX)
    assert fp == SnapshotRow(
        "T",
        RX,
        "rest",
        ((4100, 1000), (4200, 1300)),
        ((5500, 2000), (5600, 1700)),
        None,
        None,
        None,
        RX,
    )
    legacy = snapshot_from_rest(load("orderbook_legacy2025.json"), "T", RX)
    assert isinstance(legacy, SnapshotRow)
    assert legacy.yes_levels == ((4100, 1000), (4200, 1300)) and legacy.no_levels == ()
    batch = load("orderbooks_batch_fp2026.json")["orderbooks"]
    rows = [snapshot_from_rest(b, b["ticker"], RX) for b in batch]
    assert [(r.ticker, r.yes_levels, r.no_levels) for r in rows] == [  # type: ignore[union-attr]
        ("KXHIGHNY-26MAY14-B72.5", ((3100, 25000),), ()),
        ("KXHIGHNY-26MAY14-B74.5", (), ((9000, 500),)),
    ]
    assert snapshot_from_rest({"orderbook": None}, "T", RX).yes_levels == ()  # type: ignore[union-attr]
    rej = snapshot_from_rest({"orderbook_fp": {"yes_dollars": [["0.12345", "1.00"]]}}, "T", RX)
    assert isinstance(rej, Rejected) and rej.reason == "too_precise"


def test_reference_objects() -> None:
    m = market_from_rest(load("market.json")["market"], RX, series_ticker="KXHIGHNY")
    assert isinstance(m, MarketRow)
    assert (m.ticker, m.event_ticker, m.series_ticker, m.status, m.market_type) == (
        "KXHIGHNY-26MAY14-B72.5",
        "KXHIGHNY-26MAY14",
        "KXHIGHNY",
        "active",
        "binary",
    )
    assert m.open_time == 1778680800000000 and m.close_time == 1778817540000000
    assert m.expiration_time == 1779458400000000  # latest_expiration_time
    assert m.exchange_updated_ts == 1778680800000000
    assert orjson.loads(m.raw)["price_level_structure"] == "linear_cent"
    e = event_from_rest(load("event.json")["event"], RX)
    assert isinstance(e, EventRow)
    assert (e.event_ticker, e.series_ticker, e.mutually_exclusive, e.exchange_updated_ts) == (
        "KXHIGHNY-26MAY14",
        "KXHIGHNY",
        True,
        1778680801500000,
    )
    s = series_from_rest(load("series.json")["series"], RX)
    assert isinstance(s, SeriesRow)
    assert (s.series_ticker, s.frequency, s.exchange_updated_ts) == (
        "KXHIGHNY",
        "daily",
        1775001600000000,
    )
    assert isinstance(market_from_rest({"ticker": "X", "open_time": "soon"}, RX), Rejected)
