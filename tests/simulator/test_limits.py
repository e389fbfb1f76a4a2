"""Kalshi's operational rules, as the simulator enforces them (its limits model, on by default):
token billing per endpoint and per batch item, tier budgets, ``/account/limits``; WebSocket
markets-per-subscription (26), command rate (27) and connections per key (handshake 429);
refused tickers (unknown, closed, multivariate); combo markets in ``/markets``; the moving
historical cutoff; both readings of ``ok``'s seq; ``use_yes_price``; deltas without timestamps.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
import websockets

from kalshi_sim import Simulator
from kalshi_sim.catalog import MVE_SERIES
from tests.fix_sim import SimKey, open_ws, signed

LIMITS = "/trade-api/v2/account/limits"


async def _get(sim: Simulator, key: SimKey, path: str, params: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.get(sim.rest_url + path, params=params,
                           headers=signed(key, "GET", "/trade-api/v2" + path))


# --- REST token billing -------------------------------------------------------------------------
async def test_batch_billed_per_item_and_a_batch_above_the_bucket_never_passes(sim: Simulator):
    key = SimKey(*sim.keygen(tier="basic"))
    tickers = sim.market_tickers(status=None, limit=25)
    # 20 tickers x 10 tokens = 200 = the Basic read bucket: allowed once, then the bucket is empty
    r = await _get(sim, key, "/markets/orderbooks", [("tickers", t) for t in tickers[:20]])
    assert r.status_code == 200 and len(r.json()["orderbooks"]) == 20
    await asyncio.sleep(1.1)  # a full bucket again
    # 21 tickers = 210 tokens > the 200 the bucket can ever hold: refused however long we wait
    for _ in range(2):
        r = await _get(sim, key, "/markets/orderbooks", [("tickers", t) for t in tickers[:21]])
        assert r.status_code == 429
        assert r.json() == {"error": "too many requests"}  # Kalshi's documented body
        assert "retry-after" not in r.headers and not any(
            h.lower().startswith("x-ratelimit") for h in r.headers)
        await asyncio.sleep(1.1)
    assert (await _get(sim, key, "/exchange/status")).status_code == 200  # they cost nothing
    prime = SimKey(*sim.keygen(tier="prime"))
    hundred = sim.market_tickers(status=None, limit=50) * 2
    r = await _get(sim, prime, "/markets/orderbooks", [("tickers", t) for t in hundred])
    assert r.status_code == 200  # 1,000 tokens fit Prime's 4,000-token bucket
    assert sim.limiter.tokens_spent["read"] == 200 + 10 + 1_000


async def test_default_cost_budget_and_per_endpoint_costs(make_sim):
    sim = await make_sim(endpoint_costs=(("/exchange/status", 1),))
    key = SimKey(*sim.keygen(tier="basic"))
    # 200 tokens / 10 per request = 20 at once (plus what refills while 40 go out); anonymous
    # callers get a Basic budget per IP (unsigned, so signing time does not spread them out)
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as c:
        codes = [r.status_code for r in await asyncio.gather(*(c.get("/series")
                                                               for _ in range(40)))]
    assert 20 <= codes.count(200) <= 26 and codes.count(429) == 40 - codes.count(200)
    await asyncio.sleep(1.05)
    # a cheaper endpoint is billed its own cost (1 token), the rest the default (10)
    spent = sim.limiter.tokens_spent["read"]
    for _ in range(10):
        assert (await _get(sim, key, "/exchange/status")).status_code == 200
    assert sim.limiter.tokens_spent["read"] == spent + 10
    assert (await _get(sim, key, "/series")).status_code == 200
    assert sim.limiter.tokens_spent["read"] == spent + 20
    r = await _get(sim, key, "/account/endpoint_costs")
    assert r.json() == {"default_cost": 10, "endpoint_costs": [
        {"method": "GET", "path": "/exchange/status", "cost": 1}]}


@pytest.mark.parametrize(("tier", "read", "write", "write_cap"), [
    ("basic", 200, 100, 100), ("advanced", 300, 300, 600), ("premier", 1_000, 1_000, 2_000),
    ("paragon", 2_000, 2_000, 4_000), ("prime", 4_000, 4_000, 8_000)])
async def test_account_limits_per_tier(sim: Simulator, tier, read, write, write_cap):
    key = SimKey(*sim.keygen(tier=tier))
    r = await _get(sim, key, "/account/limits")
    assert r.json() == {"usage_tier": tier, "read": {"refill_rate": read, "bucket_capacity": read},
                        "write": {"refill_rate": write, "bucket_capacity": write_cap}}


# --- WebSocket limits ----------------------------------------------------------------------------
async def test_markets_per_subscription_and_command_rate(make_sim):
    sim = await make_sim(ws_max_markets=10, ws_cmd_rate=5)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    t = sim.market_tickers(limit=30)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t[:11]})
    err = await ws.until(lambda m: m["type"] == "error")
    assert err[-1]["msg"]["code"] == 26
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t[:10]})
    sub = await ws.until(lambda m: m["type"] == "subscribed")
    sid = sub[-1]["msg"]["sid"]
    await ws.cmd("update_subscription", {"sid": sid, "action": "add_markets",
                                         "market_tickers": t[10:11]})
    err = await ws.until(lambda m: m["type"] == "error")
    assert err[-1]["msg"]["code"] == 26
    await asyncio.sleep(1.05)
    ids = [await ws.cmd("list_subscriptions") for _ in range(7)]
    replies = await ws.until(lambda m: m.get("id") == ids[-1])
    codes = [m.get("msg", {}).get("code") if m["type"] == "error" else "ok"
             for m in replies if m.get("id") in ids]
    assert codes[:5] == ["ok"] * 5 and set(codes[5:]) == {27}
    await ws.close()


async def test_connections_per_key_handshake_429(make_sim):
    sim = await make_sim(ws_max_connections=3)
    key, other = SimKey(*sim.keygen()), SimKey(*sim.keygen())
    socks = [await open_ws(sim, key) for _ in range(3)]
    with pytest.raises(websockets.InvalidStatus) as e:
        await open_ws(sim, key)
    assert e.value.response.status_code == 429
    extra = await open_ws(sim, other)  # the limit is per key
    await socks[0].close()
    await asyncio.sleep(0.2)
    socks[0] = await open_ws(sim, key)  # a slot came free
    for s in [*socks, extra]:
        await s.close()
    assert sim.fault_counts()["ws_conn_limited"] == 1


async def test_refused_tickers_are_named_and_refuse_the_whole_command(make_sim):
    sim = await make_sim(churn_per_s=20.0)
    await sim.advance(60_000)
    closed = next(t for t in sim.market_tickers(status=None, limit=10_000)
                  if sim.rest.status_of(sim.catalog.parse_market(t)) in ("closed", "finalized"))
    good = sim.market_tickers(limit=3)
    mve = sim.catalog.mve_ticker(0)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    bad = ["KXSIM0000-E0000000-M9999999", closed, mve]
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": good + bad})
    f = (await ws.until(lambda m: m["type"] in ("error", "subscribed")))[-1]
    assert f["type"] == "error" and f["msg"]["code"] == 11
    assert sorted(f["msg"]["market_tickers"]) == sorted(bad)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": good})
    sid = (await ws.until(lambda m: m["type"] == "subscribed"))[-1]["msg"]["sid"]
    await ws.cmd("update_subscription", {"sid": sid, "action": "add_markets",
                                         "market_tickers": [closed]})
    f = (await ws.until(lambda m: m["type"] in ("error", "ok")))[-1]
    assert f["type"] == "error" and f["msg"]["market_tickers"] == [closed]
    # leaving a market that has closed is always allowed
    await ws.cmd("update_subscription", {"sid": sid, "action": "delete_markets",
                                         "market_tickers": good[:1]})
    assert (await ws.until(lambda m: m["type"] in ("error", "ok")))[-1]["type"] == "ok"
    await ws.close()
    quiet = await make_sim(ws_reject_names_tickers=False)
    ws = await open_ws(quiet, SimKey(*quiet.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": good + [quiet.catalog.mve_ticker(1)]})
    f = (await ws.until(lambda m: m["type"] in ("error", "subscribed")))[-1]
    assert f["type"] == "error" and f["msg"]["code"] == 11 and "market_tickers" not in f["msg"]
    await ws.close()


@pytest.mark.parametrize("reading", ["last", "next"])
async def test_ok_and_unsubscribed_seq_readings(make_sim, reading):
    sim = await make_sim(ws_ok_seq=reading)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    t = sim.market_tickers(limit=3)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t[:2]})
    frames = await ws.until(lambda m: m.get("seq") == 2)
    sid = frames[0]["msg"]["sid"]
    await ws.cmd("update_subscription", {"sid": sid, "action": "add_markets",
                                         "market_tickers": t[2:]})
    ok = (await ws.until(lambda m: m["type"] == "ok"))[-1]
    assert ok["seq"] == (3 if reading == "last" else 4)  # the new market's snapshot was seq 3
    await ws.cmd("unsubscribe", {"sids": [sid]})
    un = (await ws.until(lambda m: m["type"] == "unsubscribed"))[-1]
    assert un["seq"] == ok["seq"]
    await ws.close()


@pytest.mark.parametrize(("param", "sent", "yes_scale"), [
    ("accepted", True, True), ("accepted", False, False), ("ignored", True, False)])
async def test_use_yes_price_reports_no_side_on_the_yes_scale(make_sim, param, sent, yes_scale):
    sim = await make_sim(ws_use_yes_price_param=param)
    t = next(x for x in sim.market_tickers(limit=50) if sim.true_book(x)["no"])
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": [t],
                               "use_yes_price": sent})
    snap = (await ws.until(lambda m: m["type"] == "orderbook_snapshot"))[-1]["msg"]
    true_no = {p: c for p, c in sim.true_book(t)["no"]}
    got = {int(Decimal(p) * 10_000): int(Decimal(c) * 100) for p, c in snap["no_dollars_fp"]}
    assert got == ({10_000 - p: c for p, c in true_no.items()} if yes_scale else true_no)
    await ws.close()


async def test_use_yes_price_rejected_once_removed(make_sim):
    sim = await make_sim(ws_use_yes_price_param="rejected")
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "use_yes_price": False,
                               "market_tickers": sim.market_tickers(limit=1)})
    assert (await ws.until(lambda m: m["type"] in ("error", "subscribed")))[-1]["msg"]["code"] == 11
    await ws.close()


async def test_a_share_of_deltas_without_timestamps(make_sim):
    sim = await make_sim(delta_no_ts_share=0.2)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": sim.market_tickers(limit=50)})
    await ws.drain()
    await sim.advance(10_000)
    deltas = [f["msg"] for f in await ws.drain() if f["type"] == "orderbook_delta"]
    bare = [m for m in deltas if "ts" not in m and "ts_ms" not in m]
    assert len(deltas) > 100 and 0.1 < len(bare) / len(deltas) < 0.3
    assert all("ts" in m and "ts_ms" in m for m in deltas if m not in bare)
    assert sim.fault_counts()["delta_no_ts"] >= len(bare)
    await ws.close()


# --- multivariate markets -----------------------------------------------------------------------
async def test_multivariate_markets_listed_unless_excluded(sim: Simulator, rest):
    everything = (await rest.get("/markets", params={"limit": 1000})).json()["markets"]
    combos = [m for m in everything if m.get("mve_collection_ticker")]
    assert len(combos) == sim.catalog.n_mve == 5 and len(everything) == 55
    assert all(m["ticker"].startswith(MVE_SERIES) and len(m["mve_selected_legs"]) == 2
               for m in combos)
    plain = (await rest.get("/markets", params={"limit": 1000, "mve_filter": "exclude"})).json()
    assert len(plain["markets"]) == 50
    assert not any("mve_collection_ticker" in m for m in plain["markets"])
    only = (await rest.get("/markets", params={"mve_filter": "only"})).json()["markets"]
    assert [m["ticker"] for m in only] == [m["ticker"] for m in combos]
    one = (await rest.get(f"/markets/{combos[0]['ticker']}")).json()["market"]
    assert one == combos[0]
    events = (await rest.get("/events", params={"limit": 200})).json()["events"]
    assert not any(e["event_ticker"].startswith(MVE_SERIES) for e in events)
    # paging walks combos then ordinary markets without repeats
    seen, cursor = [], ""
    while True:
        r = (await rest.get("/markets", params={"limit": 4, "cursor": cursor})).json()
        seen += [m["ticker"] for m in r["markets"]]
        cursor = r["cursor"]
        if not cursor:
            break
    assert seen == [m["ticker"] for m in everything]


# --- historical cutoff --------------------------------------------------------------------------
@pytest.mark.sim(historical_window_ms=10_000, historical_step_ms=1_000, churn_per_s=5.0)
async def test_historical_cutoff_moves_and_splits_trades_and_markets(sim: Simulator, rest):
    def cutoff() -> int:
        return sim.rest.cutoff_ms()

    await sim.advance(8_000)
    c0 = (await rest.get("/historical/cutoff")).json()
    assert set(c0) == {"market_settled_ts", "trades_created_ts", "orders_updated_ts"}
    before = cutoff()
    await sim.advance(30_000)
    assert cutoff() > before and cutoff() % 1_000 == 0  # it moved, in whole steps
    c1 = (await rest.get("/historical/cutoff")).json()
    assert c1["trades_created_ts"] > c0["trades_created_ts"]

    async def pages(path: str) -> list[dict[str, Any]]:
        out, cursor = [], ""
        while True:
            r = (await rest.get(path, params={"limit": 1000, "cursor": cursor})).json()
            out += r["trades"]
            cursor = r["cursor"]
            if not cursor:
                return out

    live, hist = await pages("/markets/trades"), await pages("/historical/trades")
    truth = sim.truth.trades()
    cut_us = cutoff() * 1000
    assert {t["trade_id"] for t in live} == {t["trade_id"] for t in truth if t["ts_us"] >= cut_us}
    assert {t["trade_id"] for t in hist} == {t["trade_id"] for t in truth if t["ts_us"] < cut_us}
    assert hist and live
    # a window straddling the cutoff: each endpoint answers only its side of it
    lo, hi = cut_us // 1_000_000 - 3, cut_us // 1_000_000 + 3
    w_live = (await rest.get("/markets/trades", params={"min_ts": lo, "max_ts": hi,
                                                       "limit": 1000})).json()["trades"]
    w_hist = (await rest.get("/historical/trades", params={"min_ts": lo, "max_ts": hi,
                                                          "limit": 1000})).json()["trades"]
    want = {t["trade_id"] for t in truth if lo <= t["ts_us"] // 1_000_000 <= hi}
    assert {t["trade_id"] for t in w_live} | {t["trade_id"] for t in w_hist} == want
    assert not {t["trade_id"] for t in w_live} & {t["trade_id"] for t in w_hist}
    # markets settled before the cutoff left the live listing for /historical/markets
    old = (await rest.get("/historical/markets", params={"limit": 1000})).json()["markets"]
    assert old and all(m["status"] == "finalized" for m in old)
    live_m = {m["ticker"] for m in (await rest.get("/markets", params={"limit": 1000})).json()[
        "markets"]}
    assert not live_m & {m["ticker"] for m in old}
    assert (await rest.get(f"/markets/{old[0]['ticker']}")).status_code == 404
    assert (await rest.get(f"/historical/markets/{old[0]['ticker']}")).json()["market"] == old[0]


async def test_limits_are_on_by_default():
    from kalshi_sim import SimConfig

    c = SimConfig()
    assert c.tier == "basic" and c.anon_tier == "basic" and c.default_cost == 10
    assert c.ws_max_markets > 0 and c.ws_cmd_rate > 0 and c.ws_max_connections > 0
    assert c.ws_reject_closed and c.ws_reject_mve and c.mve_markets is None
