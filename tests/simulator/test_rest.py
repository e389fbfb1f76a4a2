"""REST conformance per endpoint (fp2026 and legacy2025 shapes, errors, pagination)."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest

from kalshi_sim import Simulator

DOLLARS = re.compile(r"^\d\.\d{4}$")
FP = re.compile(r"^-?\d+\.\d{2}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

MARKET_REQUIRED = {
    "ticker", "event_ticker", "market_type", "yes_sub_title", "no_sub_title", "created_time",
    "updated_time", "open_time", "close_time", "latest_expiration_time",
    "settlement_timer_seconds", "status", "yes_bid_dollars", "yes_ask_dollars",
    "no_bid_dollars", "no_ask_dollars", "yes_bid_size_fp", "yes_ask_size_fp",
    "last_price_dollars", "previous_yes_bid_dollars", "previous_yes_ask_dollars",
    "previous_price_dollars", "volume_fp", "volume_24h_fp", "open_interest_fp",
    "notional_value_dollars", "liquidity_dollars", "result", "can_close_early",
    "fractional_trading_enabled", "expiration_value", "rules_primary", "rules_secondary",
    "price_level_structure", "price_ranges",
}


def check_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    if code:
        assert body["error"]["code"] == code


async def test_exchange_status_and_schedule(rest):
    r = await rest.get("/exchange/status")
    assert r.json() == {"exchange_active": True, "trading_active": True,
                        "exchange_estimated_resume_time": None}
    s = (await rest.get("/exchange/schedule")).json()["schedule"]
    assert set(s) == {"standard_hours", "maintenance_windows"}
    wk = s["standard_hours"][0]
    assert ISO.match(wk["start_time"]) and wk["monday"][0] == {"open_time": "00:00",
                                                               "close_time": "23:59"}


async def test_series(rest):
    lst = (await rest.get("/series")).json()
    assert "cursor" not in lst and len(lst["series"]) == 3
    s = lst["series"][0]
    assert {"ticker", "frequency", "title", "category", "tags", "settlement_sources",
            "fee_type", "fee_multiplier", "last_updated_ts"} <= set(s)
    one = (await rest.get(f"/series/{s['ticker']}")).json()
    assert one == {"series": s}
    check_error(await rest.get("/series/KXNOPE"), 404, "series_not_found")


async def test_events_pagination_nested_and_404(rest):
    seen = []
    cursor = ""
    while True:
        r = (await rest.get("/events", params={"limit": 3, "cursor": cursor})).json()
        seen += [e["event_ticker"] for e in r["events"]]
        cursor = r["cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 10
    e = (await rest.get(f"/events/{seen[0]}", params={"with_nested_markets": "true"})).json()
    assert len(e["event"]["markets"]) == 5 and e["markets"] == e["event"]["markets"]
    assert {"event_ticker", "series_ticker", "title", "sub_title", "collateral_return_type",
            "mutually_exclusive", "strike_date", "last_updated_ts"} <= set(e["event"])
    check_error(await rest.get("/events/KXSIM0000-E9999999"), 404, "event_not_found")
    check_error(await rest.get("/events", params={"limit": 201}), 400, "bad_request")
    series = (await rest.get("/events", params={"series_ticker": "KXSIM0001"})).json()
    assert {x["series_ticker"] for x in series["events"]} == {"KXSIM0001"}


async def test_markets_fields_types_and_pagination(rest):
    tickers = []
    cursor = ""
    while True:
        r = (await rest.get("/markets", params={"limit": 7, "cursor": cursor,
                                                "mve_filter": "exclude"})).json()
        assert set(r) == {"markets", "cursor"}
        tickers += [m["ticker"] for m in r["markets"]]
        cursor = r["cursor"]
        if not cursor:
            break
    assert len(tickers) == len(set(tickers)) == 50
    m = (await rest.get(f"/markets/{tickers[0]}")).json()["market"]
    assert MARKET_REQUIRED <= set(m)
    for k, v in m.items():
        if k.endswith("_dollars"):
            assert DOLLARS.match(v), (k, v)
        if k.endswith("_fp"):
            assert FP.match(v), (k, v)
        if k.endswith("_time") and v is not None:
            assert ISO.match(v), (k, v)
    assert Decimal(m["yes_ask_dollars"]) + Decimal(m["no_bid_dollars"]) == 1
    assert "yes_bid" not in m and "volume" not in m  # fp2026 has no integer twins
    check_error(await rest.get("/markets/KXSIM0000-E0000000-M9999999"), 404, "market_not_found")


async def test_market_filters(rest, sim: Simulator):
    ev = (await rest.get("/markets", params={"event_ticker": "KXSIM0001-E0000001"})).json()
    assert [m["ticker"][-8:] for m in ev["markets"]] == [f"M000000{i}" for i in range(5, 10)]
    se = (await rest.get("/markets", params={"series_ticker": "KXSIM0002", "limit": 1000})).json()
    assert se["markets"] and all(m["ticker"].startswith("KXSIM0002-") for m in se["markets"])
    want = sim.market_tickers(limit=3)
    tk = (await rest.get("/markets", params={"tickers": ",".join(want)})).json()
    assert [m["ticker"] for m in tk["markets"]] == want
    op = (await rest.get("/markets", params={"status": "open", "limit": 1000,
                                             "mve_filter": "exclude"})).json()
    assert op["markets"] and {m["status"] for m in op["markets"]} == {"active"}
    un = (await rest.get("/markets", params={"status": "unopened", "limit": 1000,
                                             "mve_filter": "exclude"})).json()
    assert {m["status"] for m in un["markets"]} <= {"initialized"}
    assert len(op["markets"]) + len(un["markets"]) == 50


@pytest.mark.parametrize("params", [
    {"limit": 1001}, {"limit": "x"}, {"status": "active"}, {"cursor": "!!!"},
    {"status": "closed", "min_created_ts": 1}, {"status": "open", "min_close_ts": 1},
    {"status": "open", "min_settled_ts": 1}, {"min_updated_ts": 1, "status": "open"},
    {"mve_filter": "sometimes"},
])
async def test_markets_bad_params_400(rest, params):
    check_error(await rest.get("/markets", params=params), 400, "bad_request")


async def test_orderbook_shape_depth_and_batch(rest, sim: Simulator):
    await sim.advance(2_000)
    t = sim.market_tickers(limit=10)
    full = None
    for ticker in t:
        ob = (await rest.get(f"/markets/{ticker}/orderbook")).json()
        assert set(ob) == {"orderbook_fp"} and set(ob["orderbook_fp"]) == {"yes_dollars",
                                                                          "no_dollars"}
        yes = ob["orderbook_fp"]["yes_dollars"]
        prices = [Decimal(p) for p, _ in yes]
        assert prices == sorted(prices)
        if len(yes) >= 2:
            full = (ticker, ob)
    assert full is not None
    ticker, ob = full
    d1 = (await rest.get(f"/markets/{ticker}/orderbook", params={"depth": 1})).json()
    assert d1["orderbook_fp"]["yes_dollars"] == ob["orderbook_fp"]["yes_dollars"][-1:]
    check_error(await rest.get(f"/markets/{ticker}/orderbook", params={"depth": 101}), 400)
    check_error(await rest.get("/markets/NOPE/orderbook"), 404, "market_not_found")
    b = (await rest.get("/markets/orderbooks", params=[("tickers", t[0]),
                                                        ("tickers", t[1])])).json()
    assert [x["ticker"] for x in b["orderbooks"]] == t[:2]
    assert b["orderbooks"][0]["orderbook_fp"] == (
        await rest.get(f"/markets/{t[0]}/orderbook")).json()["orderbook_fp"]
    check_error(await rest.get("/markets/orderbooks"), 400)


async def test_trades_filters_and_cursor(rest, sim: Simulator):
    await sim.advance(10_000)
    truth = sim.truth.trades()
    assert len(truth) > 50
    got = []
    cursor = ""
    while True:
        r = (await rest.get("/markets/trades", params={"limit": 40, "cursor": cursor})).json()
        got += r["trades"]
        cursor = r["cursor"]
        if not cursor:
            break
    assert [t["trade_id"] for t in got] == [t["trade_id"] for t in reversed(truth)]
    t0 = got[0]
    assert set(t0) == {"trade_id", "ticker", "count_fp", "yes_price_dollars",
                       "no_price_dollars", "taker_side", "taker_outcome_side",
                       "taker_book_side", "created_time"}
    hot = truth[0]["ticker"]
    mine = (await rest.get("/markets/trades", params={"ticker": hot, "limit": 1000})).json()
    assert [t["trade_id"] for t in mine["trades"]] == [
        t["trade_id"] for t in reversed(truth) if t["ticker"] == hot]
    mid_s = truth[len(truth) // 2]["ts_us"] // 1_000_000
    win = (await rest.get("/markets/trades", params={"min_ts": mid_s, "max_ts": mid_s,
                                                     "limit": 1000})).json()["trades"]
    assert win and all(t["ts_us"] // 1_000_000 == mid_s for t in truth
                       if t["trade_id"] in {w["trade_id"] for w in win})
    assert len(win) == sum(1 for t in truth if t["ts_us"] // 1_000_000 == mid_s)
    check_error(await rest.get("/markets/trades", params={"limit": 5000}), 400)
    check_error(await rest.get("/markets/trades", params={"min_ts": "yesterday"}), 400)


async def test_candlesticks(rest, sim: Simulator):
    await sim.advance(130_000)
    tr = sim.truth.trades()
    hot = tr[0]["ticker"]
    series = hot.split("-")[0]
    start = sim.catalog.start_ms // 1000
    params = {"start_ts": start, "end_ts": start + 600, "period_interval": 1}
    r = (await rest.get(f"/series/{series}/markets/{hot}/candlesticks", params=params)).json()
    assert r["ticker"] == hot and r["candlesticks"]
    c = r["candlesticks"][0]
    assert set(c) == {"end_period_ts", "yes_bid", "yes_ask", "price", "volume_fp",
                      "open_interest_fp"}
    assert set(c["price"]) == {"open_dollars", "low_dollars", "high_dollars", "close_dollars",
                               "mean_dollars", "previous_dollars", "min_dollars", "max_dollars"}
    vol = sum(Decimal(x["volume_fp"]) for x in r["candlesticks"])
    assert vol * 100 == sum(t["count"] for t in tr if t["ticker"] == hot)
    b = (await rest.get("/markets/candlesticks", params={"market_tickers": hot, **params})).json()
    assert b["markets"][0]["market_ticker"] == hot
    assert b["markets"][0]["candlesticks"] == r["candlesticks"]
    check_error(await rest.get(f"/series/{series}/markets/{hot}/candlesticks",
                               params={**params, "period_interval": 5}), 400)
    check_error(await rest.get(f"/series/{series}/markets/{hot}/candlesticks",
                               params={"start_ts": start}), 400)


async def test_unknown_path_and_historical(rest):
    check_error(await rest.get("/no/such/thing"), 404, "not_found")
    c = (await rest.get("/historical/cutoff")).json()
    assert set(c) == {"market_settled_ts", "trades_created_ts", "orders_updated_ts"}


async def test_legacy_profile_shapes(make_sim):
    sim = await make_sim(profile="legacy2025")
    await sim.advance(3_000)
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        t = sim.market_tickers(limit=1)[0]
        # legacy2025 REST: the integer twins of 2025 beside the fixed-point fields Kalshi's
        # schema requires (test_openapi.py validates both profiles against it)
        m = (await c.get(f"/markets/{t}")).json()["market"]
        assert isinstance(m["yes_bid"], int) and isinstance(m["volume"], int)
        assert m["volume"] * 100 == int(Decimal(m["volume_fp"]) * 100)
        assert m["price_level_structure"] == "linear_cent"
        ob = (await c.get(f"/markets/{t}/orderbook")).json()
        assert set(ob) == {"orderbook", "orderbook_fp"}
        assert set(ob["orderbook"]) == {"yes", "no", "yes_dollars", "no_dollars"}
        for side in ("yes", "no"):
            lv = ob["orderbook"][side]
            assert lv is None or all(isinstance(p, int) and isinstance(q, int) for p, q in lv)
            assert [[p, q] for p, q in lv or []] == [
                [int(Decimal(p) * 100), int(Decimal(q))]
                for p, q in ob["orderbook_fp"][f"{side}_dollars"]]
        tr = (await c.get("/markets/trades")).json()["trades"][0]
        assert isinstance(tr["yes_price"], int) and isinstance(tr["count"], int)
        assert tr["yes_price"] == int(Decimal(tr["yes_price_dollars"]) * 100)
        assert "taker_outcome_side" not in tr  # a May 2026 addition


def test_fast_listing_helpers_match_the_reference_forms() -> None:
    # /markets over an xl catalog: REST times come from a per-day cache and status filters read
    # only a market's (open, close) window; both must equal what they replace.
    import random
    import time

    from kalshi_sim.catalog import PRESETS, Catalog
    from kalshi_sim.encode import Encoder, iso_ms, iso_s

    cat = Catalog(PRESETS["medium"], 5, 1_780_000_000_000, "fp2026")
    enc = Encoder("fp2026", cat)
    rnd = random.Random(7)
    for ms in [0, 86_399_999, 86_400_000, *(rnd.randrange(4_102_444_800_000) for _ in range(5000))]:
        assert enc._iso_s(ms) == iso_s(ms) == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
        assert enc._iso_ms(ms) == iso_ms(ms)
    fresh = Catalog(PRESETS["medium"], 5, 1_780_000_000_000, "fp2026")
    born = cat.add_market(1_780_000_100_000, 2_000, 90_000)
    for i in [*range(0, cat.count - 1, 97), born]:
        st = cat.static(i)
        assert cat.window(i) == (st.open_ms, st.close_ms)
        assert cat.static(i) is st  # the one-entry memo
        if i != born:
            assert fresh.static(i) == st  # still a pure function of (seed, i)
