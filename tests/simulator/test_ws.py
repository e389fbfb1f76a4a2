"""WebSocket conformance: commands, replies, channels, seq, error codes, heartbeat."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from kalshi_sim import Simulator
from tests.fix_sim import open_ws


async def test_subscribe_orderbook_snapshots_then_deltas_share_seq(sim: Simulator, ws_connect):
    tickers = sim.market_tickers(limit=5)
    ws = await ws_connect()
    i = await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    first = await ws.recv()
    assert first == {"id": i, "type": "subscribed", "msg": {"channel": "orderbook_delta",
                                                            "sid": 1}}
    snaps = [await ws.recv() for _ in tickers]
    assert [s["type"] for s in snaps] == ["orderbook_snapshot"] * 5
    assert [s["seq"] for s in snaps] == [1, 2, 3, 4, 5]
    assert [s["msg"]["market_ticker"] for s in snaps] == tickers
    for s in snaps:
        m = s["msg"]
        assert s["sid"] == 1 and isinstance(m["market_id"], str) and len(m["market_id"]) == 36
        for side in ("yes_dollars_fp", "no_dollars_fp"):
            if side in m:  # key absent when that side is empty
                levels = m[side]
                assert levels and all(isinstance(p, str) and isinstance(c, str)
                                      for p, c in levels)
                prices = [float(p) for p, _ in levels]
                assert prices == sorted(prices)
    await sim.advance(3_000)
    frames = await ws.drain()
    deltas = [f for f in frames if f["type"] == "orderbook_delta"]
    assert deltas, "tiny preset at 200 msg/s must move the hottest markets within 3 s"
    assert [f["seq"] for f in deltas] == list(range(6, 6 + len(deltas)))
    d = deltas[0]["msg"]
    assert set(d) == {"market_ticker", "market_id", "price_dollars", "delta_fp", "side", "ts",
                      "ts_ms"}
    assert d["market_ticker"] in tickers and d["side"] in ("yes", "no")
    assert isinstance(d["ts_ms"], int) and d["ts"].endswith("Z") and len(d["ts"]) == 27


async def test_trade_ticker_lifecycle_channels(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["trade", "ticker", "market_lifecycle_v2"]})
    subs = [await ws.recv() for _ in range(3)]
    assert [(s["msg"]["channel"], s["msg"]["sid"]) for s in subs] == [
        ("trade", 1), ("ticker", 2), ("market_lifecycle_v2", 3)]
    await sim.advance(8_000)
    frames = await ws.drain()
    trades = [f for f in frames if f["type"] == "trade"]
    tickers = [f for f in frames if f["type"] == "ticker"]
    life = [f for f in frames if f["sid"] == 3]
    assert trades and tickers and life
    assert [t["seq"] for t in trades] == list(range(1, len(trades) + 1))
    assert all("seq" not in t for t in tickers)
    assert [f["seq"] for f in life] == list(range(1, len(life) + 1))
    t = trades[0]["msg"]
    assert set(t) == {"trade_id", "market_ticker", "yes_price_dollars", "no_price_dollars",
                      "count_fp", "taker_side", "taker_outcome_side", "taker_book_side",
                      "is_block_trade", "ts", "ts_ms"}
    from decimal import Decimal
    assert Decimal(t["yes_price_dollars"]) + Decimal(t["no_price_dollars"]) == 1
    k = tickers[0]["msg"]
    for f in ("market_id", "market_ticker", "price_dollars", "yes_bid_dollars",
              "yes_ask_dollars", "volume_fp", "open_interest_fp", "dollar_volume",
              "dollar_open_interest", "yes_bid_size_fp", "yes_ask_size_fp",
              "last_trade_size_fp", "ts", "ts_ms", "time"):
        assert f in k
    assert isinstance(k["dollar_volume"], int)
    kinds = {f["msg"].get("event_type") for f in life if f["type"] == "market_lifecycle_v2"}
    assert kinds & {"created", "close_date_updated", "deactivated", "determined", "settled"}


async def test_ticker_initial_snapshot(sim: Simulator, ws_connect):
    t = sim.market_tickers(limit=2)
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["ticker"], "market_tickers": t,
                               "send_initial_snapshot": True})
    frames = await ws.until(lambda m: m["type"] == "ticker" and m["msg"]["market_ticker"] == t[1])
    assert [f["type"] for f in frames] == ["subscribed", "ticker", "ticker"]


async def test_unsubscribe_reports_seq_and_stops_data(sim: Simulator, ws_connect):
    t = sim.market_tickers(limit=3)
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t})
    await ws.drain()
    i = await ws.cmd("unsubscribe", {"sids": [1]})
    assert await ws.recv() == {"id": i, "sid": 1, "seq": 3, "type": "unsubscribed"}
    await sim.advance(2_000)
    assert await ws.drain() == []


async def test_update_subscription_add_delete_get_snapshot(sim: Simulator, ws_connect):
    t = sim.market_tickers(limit=4)
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": t[:2]})
    await ws.drain()
    i = await ws.cmd("update_subscription", {"sid": 1, "action": "add_markets",
                                             "market_tickers": t[2:]})
    frames = await ws.until(lambda m: m["type"] == "ok")
    assert [(f["type"], f["seq"]) for f in frames] == [
        ("orderbook_snapshot", 3), ("orderbook_snapshot", 4), ("ok", 4)]
    ok = frames[-1]
    assert ok["id"] == i and ok["sid"] == 1 and ok["msg"]["market_tickers"] == t
    assert len(ok["msg"]["market_ids"]) == 4
    i = await ws.cmd("update_subscription", {"sids": [1], "action": "delete_markets",
                                             "market_tickers": [t[0]]})
    ok = await ws.recv()
    assert ok["type"] == "ok" and ok["msg"]["market_tickers"] == t[1:]
    i = await ws.cmd("update_subscription", {"sid": 1, "action": "get_snapshot",
                                             "market_tickers": [t[1]]})
    snap = await ws.recv()
    assert snap["type"] == "orderbook_snapshot" and snap["id"] == i and snap["seq"] == 5
    book = sim.true_book(t[1])
    assert book is not None
    got = [[round(float(p) * 10_000), round(float(c) * 100)]
           for p, c in snap["msg"].get("yes_dollars_fp", [])]
    assert got == book["yes"]


async def test_list_subscriptions(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["ticker", "trade"]})
    await ws.recv()
    await ws.recv()
    i = await ws.cmd("list_subscriptions")
    assert await ws.recv() == {"id": i, "type": "ok", "msg": [
        {"channel": "ticker", "sid": 1}, {"channel": "trade", "sid": 2}]}


ERROR_CASES = [
    ("not json", None, 1),
    ('["a list"]', None, 1),
    ({"id": 1, "cmd": "subscribe"}, None, 2),
    ({"id": 1, "cmd": "subscribe", "params": {}}, None, 3),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": []}}, None, 3),
    ({"id": 1, "cmd": "unsubscribe", "params": {}}, None, 4),
    ({"id": 1, "cmd": "fly"}, None, 5),
    ({"id": 1, "cmd": "unsubscribe", "params": {"sids": [99]}}, None, 7),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["nope"]}}, None, 8),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"],
                                              "market_tickers": ["NOPE-1"]}}, None, 11),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_ticker": "A",
                                              "market_tickers": ["B"]}}, None, 11),
    ({"id": 1, "cmd": "update_subscription", "params": {"sids": [1, 2],
                                                        "action": "add_markets"}}, None, 12),
    ({"id": 1, "cmd": "update_subscription", "params": {"sid": 1, "action": "fly"}}, None, 13),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}, None, 14),
    ({"id": 1, "cmd": "update_subscription", "params": {"sid": 1}}, None, 15),
    ({"id": 1, "cmd": "update_subscription", "params": {"action": "add_markets"}}, None, 4),
    ({"id": 1, "cmd": "update_subscription", "params": {"sid": 42,
                                                        "action": "add_markets"}}, None, 7),
]


@pytest.mark.parametrize("cmd,_unused,code", ERROR_CASES)
async def test_error_codes(sim: Simulator, ws_connect, cmd, _unused, code):
    ws = await ws_connect()
    await ws.send(cmd)
    m = await ws.recv()
    assert m["type"] == "error" and m["msg"]["code"] == code and isinstance(m["msg"]["msg"], str)
    if isinstance(cmd, dict):
        assert m["id"] == 1
    # The connection keeps serving after a bad command.
    i = await ws.cmd("list_subscriptions")
    assert (await ws.recv())["id"] == i


async def test_market_limit_and_command_flood(make_sim):
    sim = await make_sim(ws_max_markets=2, ws_cmd_rate=3)
    key_id, pem = sim.keygen()
    from tests.fix_sim import SimKey
    ws = await open_ws(sim, SimKey(key_id, pem))
    await ws.cmd("subscribe", {"channels": ["trade"],
                               "market_tickers": sim.market_tickers(limit=3)})
    assert (await ws.recv())["msg"]["code"] == 26
    codes = []
    for _ in range(4):
        await ws.cmd("list_subscriptions")
        m = await ws.recv()
        codes.append(m["msg"]["code"] if m["type"] == "error" else "ok")
    assert codes[-1] == 27 and codes[0] == "ok"
    await ws.close()


async def test_private_channel_needs_auth_when_ws_auth_optional(make_sim):
    sim = await make_sim(ws_require_auth=False)
    ws = await open_ws(sim, None)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": sim.market_tickers(limit=1)})
    assert (await ws.recv())["msg"]["code"] == 9
    await ws.cmd("subscribe", {"channels": ["trade"]})
    assert (await ws.recv())["type"] == "subscribed"
    await ws.close()


async def test_server_pings_with_heartbeat_payload(make_sim):
    sim = await make_sim(ping_interval_s=0.05, pong_timeout_s=5)
    key_id, pem = sim.keygen()
    from tests.fix_sim import SimKey
    ws = await open_ws(sim, SimKey(key_id, pem))
    got = asyncio.get_running_loop().create_future()
    proto = ws.conn.protocol
    orig = proto.recv_frame  # type: ignore[attr-defined]

    def spy(frame):  # observe incoming ping frames at the protocol layer
        if frame.opcode.name == "PING" and not got.done():
            got.set_result(bytes(frame.data))
        return orig(frame)

    proto.recv_frame = spy  # type: ignore[attr-defined]
    assert await asyncio.wait_for(got, 5) == b"heartbeat"
    await ws.close()


async def test_client_that_never_pongs_is_dropped(make_sim):
    sim = await make_sim(ping_interval_s=0.05, pong_timeout_s=0.3)
    key_id, pem = sim.keygen()
    from tests.fix_sim import SimKey
    ws = await open_ws(sim, SimKey(key_id, pem))
    proto = ws.conn.protocol
    orig = proto.recv_frame  # type: ignore[attr-defined]

    def swallow_pings(frame):  # the client "stops answering": pings never reach auto-pong
        if frame.opcode.name == "PING":
            return None
        return orig(frame)

    proto.recv_frame = swallow_pings  # type: ignore[attr-defined]
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await ws.recv(timeout=5)
    assert sim.ws.counters["ws_pong_timeouts"] == 1


async def test_legacy_profile_ws_shapes(make_sim):
    from tests.fix_sim import SimKey
    sim = await make_sim(profile="legacy2025")
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    t = sim.market_tickers(limit=50)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta", "trade", "ticker"],
                               "market_tickers": t})
    frames = await ws.until(lambda m: m.get("msg", {}).get("channel") == "ticker")
    await sim.advance(3_000)
    frames += await ws.drain()
    snap = next(f for f in frames if f["type"] == "orderbook_snapshot"
                and "yes" in f["msg"])["msg"]
    assert all(isinstance(p, int) and isinstance(q, int) for p, q in snap["yes"])
    assert "yes_dollars_fp" not in snap
    d = next(f for f in frames if f["type"] == "orderbook_delta")["msg"]
    assert isinstance(d["price"], int) and isinstance(d["delta"], int)
    assert "ts_ms" not in d and len(d["ts"]) == 30  # RFC 3339 with nanoseconds
    tr = next(f for f in frames if f["type"] == "trade")["msg"]
    assert isinstance(tr["yes_price"], int) and isinstance(tr["count"], int)
    assert tr["yes_price"] + tr["no_price"] == 100
    tk = next(f for f in frames if f["type"] == "ticker")["msg"]
    assert isinstance(tk["yes_bid"], int) and isinstance(tk["Clock"], int)
    await ws.close()


def test_sim_thread_for_sync_callers():
    import httpx as hx

    from kalshi_sim import SimConfig, SimThread
    runner = SimThread(SimConfig(preset="tiny", seed=5, clock_speed=0, tier=None,
                                 anon_tier=None))
    sim = runner.start()
    try:
        assert hx.get(sim.rest_url + "/exchange/status").json()["exchange_active"] is True
        n = runner.call(sim.advance, 2_000)
        assert n > 0
        runner.call(sim.faults.rest_429, 1)
        assert hx.get(sim.rest_url + "/markets").status_code == 429
        assert runner.call(sim.fault_counts)["rest_429"] == 1
    finally:
        runner.stop()
