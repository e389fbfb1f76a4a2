"""Every fault kind is observable by a real client, and counted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from decimal import Decimal

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import connect

from kalshi_sim import Simulator
from tests.fix_sim import SimKey, open_ws, signed


async def _trade_sub(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["trade"]})
    assert (await ws.recv())["type"] == "subscribed"
    return ws


def _seqs(frames, type_="trade"):
    return [f["seq"] for f in frames if f["type"] == type_]


async def test_drop_reset_gives_abnormal_close(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.drain()
    assert sim.faults.drop_connections(mode="reset") == 1
    with pytest.raises(websockets.ConnectionClosed) as e:
        await ws.recv()
    assert e.value.rcvd is None  # no close frame: TCP reset
    assert sim.fault_counts()["drop_reset"] == 1


async def test_drop_close_with_code(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.drain()
    sim.faults.drop_connections(mode="close", code=4000, reason="bye")
    with pytest.raises(websockets.ConnectionClosed) as e:
        await ws.recv()
    assert e.value.rcvd is not None and e.value.rcvd.code == 4000
    assert e.value.rcvd.reason == "bye"


async def test_drop_cut_mid_frame(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.drain()
    sim.faults.drop_connections(mode="cut")
    with pytest.raises(websockets.ConnectionClosed) as e:
        await ws.recv()
    assert e.value.rcvd is None
    assert sim.fault_counts()["drop_cut"] == 1


async def test_refuse_connections(sim: Simulator, sim_key: SimKey):
    sim.faults.refuse_connections(count=1, status=503)
    with pytest.raises(websockets.InvalidStatus) as e:
        await open_ws(sim, sim_key)
    assert e.value.response.status_code == 503
    ws = await open_ws(sim, sim_key)  # only the next one was refused
    await ws.close()
    assert sim.fault_counts()["refuse"] == 1


@pytest.mark.parametrize("kind", ["skip_seq", "duplicate_seq", "reorder_seq"])
async def test_seq_faults(sim: Simulator, ws_connect, kind):
    ws = await _trade_sub(sim, ws_connect)
    getattr(sim.faults, kind)(n=1)
    await sim.advance(5_000)
    seqs = _seqs(await ws.drain())
    assert len(seqs) > 5
    ok = list(range(1, len(seqs) + 1))
    if kind == "skip_seq":
        assert seqs == list(range(2, len(seqs) + 2))  # seq 1 never arrives: a gap
    elif kind == "duplicate_seq":
        assert seqs == [1, 1] + ok[1:-1]
    else:
        assert seqs == [2, 1] + ok[2:]
    assert sim.fault_counts()[kind] == 1


async def test_data_shape_faults(sim: Simulator, ws_connect):
    ws = await ws_connect()
    await ws.drain()
    for name in ("send_malformed", "send_truncated", "send_binary", "send_unknown_type"):
        getattr(sim.faults, name)()
    raws = [await ws.recv_raw() for _ in range(4)]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raws[0])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raws[1])
    assert isinstance(raws[2], bytes)
    assert orjson.loads(raws[3])["type"] == "sim_unknown_type"
    c = sim.fault_counts()
    assert c["malformed"] == c["truncated"] == c["binary"] == c["unknown_type"] == 1
    i = await ws.cmd("list_subscriptions")  # still serving
    assert (await ws.recv())["id"] == i


@pytest.mark.parametrize("code", [10, 25])
async def test_terminal_subscription_errors(sim: Simulator, ws_connect, code):
    ws = await _trade_sub(sim, ws_connect)
    await ws.cmd("subscribe", {"channels": ["ticker"]})
    await ws.recv()
    assert sim.faults.slow_consumer(code=code, channel="trade") == 1
    err = await ws.recv()
    assert err == {"type": "error", "sid": 1, "msg": {"code": code, "msg": err["msg"]["msg"]}}
    await sim.advance(3_000)
    frames = await ws.drain()
    assert not [f for f in frames if f.get("sid") == 1]
    assert [f for f in frames if f.get("sid") == 2]
    i = await ws.cmd("list_subscriptions")
    assert (await ws.recv())["msg"] == [{"channel": "ticker", "sid": 2}]
    assert sim.fault_counts()[f"error_{code}"] == 1
    del i


async def test_buffer_overflow_gives_error_25(make_sim):
    sim = await make_sim(ws_max_buffer=5)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": sim.market_tickers(status=None, limit=50)})
    frames = await ws.until(lambda m: m["type"] == "error")
    assert frames[-1]["msg"]["code"] == 25 and frames[-1]["sid"] == 1
    assert len(frames) < 50
    assert sim.fault_counts()["error_25_overflow"] == 1
    await ws.close()


async def test_stop_pings(make_sim):
    # Watches pings by sending a command per round trip, far above Kalshi's command rate:
    # the command-rate limit (error 27) is off here, it is not what this test is about.
    sim = await make_sim(ping_interval_s=0.02, pong_timeout_s=5, ws_cmd_rate=0)
    ws = await open_ws(sim, SimKey(*sim.keygen()))
    pings: list[bytes] = []
    proto = ws.conn.protocol
    orig = proto.recv_frame  # type: ignore[attr-defined]

    def spy(frame):
        if frame.opcode.name == "PING":
            pings.append(bytes(frame.data))
        return orig(frame)

    proto.recv_frame = spy  # type: ignore[attr-defined]
    while not pings:
        await ws.drain()
    sim.faults.stop_pings(True)
    await ws.drain()
    n = len(pings)
    for _ in range(20):  # 20 round trips spanning many ping intervals
        await asyncio.sleep(0.02)
        await ws.drain()
    assert len(pings) == n
    sim.faults.stop_pings(False)
    while len(pings) == n:
        await ws.drain()
    await ws.close()


async def test_rest_429_storm_and_5xx_and_hang(sim: Simulator, rest):
    sim.faults.rest_429(n=3)
    codes = [(await rest.get("/exchange/status")) for _ in range(4)]
    assert [r.status_code for r in codes] == [429, 429, 429, 200]
    assert codes[0].json() == {"error": "too many requests"}
    assert "Retry-After" not in codes[0].headers
    sim.faults.rest_5xx(n=1, status=503)
    r = await rest.get("/markets")
    assert r.status_code == 503 and "error" in r.json()
    sim.faults.rest_5xx(n=1, status=502)
    r = await rest.get("/markets")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    sim.faults.rest_hang(n=1, seconds=3)
    with pytest.raises(httpx.ReadTimeout):
        await rest.get("/markets", timeout=0.3)
    assert (await rest.get("/markets")).status_code == 200
    c = sim.fault_counts()
    assert c["rest_429"] == 3 and c["rest_5xx"] == 2 and c["rest_hang"] == 1


async def test_maintenance_window(sim: Simulator, sim_key: SimKey, ws_connect, rest):
    ws = await ws_connect()
    await ws.drain()
    sim.faults.maintenance(True)
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()
    st = (await rest.get("/exchange/status")).json()
    assert st["exchange_active"] is False and st["trading_active"] is False
    assert st["exchange_estimated_resume_time"]
    with pytest.raises(websockets.InvalidStatus) as e:
        await open_ws(sim, sim_key)
    assert e.value.response.status_code == 503
    n = len(sim.truth.trades_)
    await sim.advance(3_000)
    assert len(sim.truth.trades_) == n  # no trading during maintenance
    sim.faults.maintenance(False)
    await sim.advance(3_000)
    assert len(sim.truth.trades_) > n
    assert (await rest.get("/exchange/status")).json()["trading_active"] is True


async def test_clock_skew_breaks_auth(sim: Simulator, sim_key: SimKey):
    path = "/trade-api/v2/account/limits"
    async with httpx.AsyncClient() as c:
        sim.faults.clock_skew(ms=120_000)
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(sim_key, "GET", path))
        assert r.status_code == 401
        sim.faults.clock_skew(ms=0)
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(sim_key, "GET", path))
        assert r.status_code == 200


async def test_withhold_trade_from_ws_but_not_rest(sim: Simulator, ws_connect, rest):
    ws = await _trade_sub(sim, ws_connect)
    sim.faults.withhold_next(kind="trade", n=1)
    await sim.advance(5_000)
    frames = await ws.drain()
    ws_ids = [f["msg"]["trade_id"] for f in frames if f["type"] == "trade"]
    truth_ids = [t["trade_id"] for t in sim.truth.trades()]
    withheld = sim.truth.withheld
    assert len(withheld) == 1 and withheld[0]["what"] == "trade"
    gone = withheld[0]["trade_id"]
    assert gone in truth_ids and gone not in ws_ids
    assert set(truth_ids) - set(ws_ids) == {gone}
    assert _seqs(frames) == list(range(1, len(ws_ids) + 1))  # silent: no seq gap
    r = (await rest.get("/markets/trades", params={"limit": 1000})).json()
    assert gone in {t["trade_id"] for t in r["trades"]}
    assert sim.fault_counts()["withhold_trade"] == 1


# Compares every market's REST book (50 requests): more than a Basic-tier IP's 20-request burst.
@pytest.mark.sim(anon_tier="premier")
async def test_withhold_delta_makes_book_diverge(sim: Simulator, ws_connect, rest):
    tickers = sim.market_tickers(status=None, limit=50)
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    frames = await ws.until(lambda m: m.get("seq") == 50)
    sim.faults.withhold_next(kind="delta", n=1, ticker=None)
    await sim.advance(3_000)
    frames += await ws.drain()
    books: dict[str, dict] = {}
    for f in frames:
        m = f.get("msg", {})
        if f["type"] == "orderbook_snapshot":
            books[m["market_ticker"]] = {(s, Decimal(p)): Decimal(c)
                                         for s in ("yes", "no")
                                         for p, c in m.get(f"{s}_dollars_fp", [])}
        elif f["type"] == "orderbook_delta":
            b = books[m["market_ticker"]]
            k = (m["side"], Decimal(m["price_dollars"]))
            b[k] = b.get(k, Decimal(0)) + Decimal(m["delta_fp"])
            if b[k] == 0:
                del b[k]
    w = sim.truth.withheld[0]
    victim = sim.truth.deltas()[w["n"]]["ticker"]
    mismatched = []
    for t in tickers:
        ob = (await rest.get(f"/markets/{t}/orderbook")).json()["orderbook_fp"]
        rb = {(s, Decimal(p)): Decimal(c) for s in ("yes", "no")
              for p, c in ob[f"{s}_dollars"]}
        if rb != books[t]:
            mismatched.append(t)
    assert mismatched == [victim]


async def test_chaos_mode_injects_and_counts(sim: Simulator, ws_connect):
    ws = await _trade_sub(sim, ws_connect)
    sim.faults.chaos(on=True, seed=3, per_s=5.0)
    await sim.advance(5_000)
    sim.faults.chaos(on=False)
    c = sim.fault_counts()
    assert c["chaos"] >= 5
    try:
        await ws.drain(timeout=2)
    except (websockets.ConnectionClosed, orjson.JSONDecodeError, TimeoutError):
        pass  # chaos may have dropped or corrupted the stream; that is the point


async def test_rate_limit_tier_429(make_sim):
    sim = await make_sim(anon_tier="basic", retry_after_header=True)
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        rs = await asyncio.gather(*[c.get("/exchange/status") for _ in range(30)])
    codes = [r.status_code for r in rs]
    assert codes.count(200) >= 20 and codes.count(429) >= 5
    bad = next(r for r in rs if r.status_code == 429)
    assert bad.json() == {"error": "too many requests"} and bad.headers["Retry-After"] == "1"
    assert sim.fault_counts()["rate_limited"] == codes.count(429)


async def test_control_api(sim: Simulator, ws_connect):
    ws = await _trade_sub(sim, ws_connect)
    async with httpx.AsyncClient(base_url=sim.control_url) as c:
        assert (await c.get("/health")).json() == {"ok": True}
        r = await c.post("/faults/skip_seq", json={"n": 1})
        assert r.json()["ok"] is True
        r = await c.post("/clock/advance", json={"ms": 3_000})
        assert r.json()["events"] > 0
        frames = await ws.drain()
        seqs = _seqs(frames)
        assert seqs == list(range(2, len(seqs) + 2))
        assert (await c.get("/faults")).json()["counts"]["skip_seq"] == 1
        tr = (await c.get("/truth/trades", params={"since": 0, "limit": 5})).json()
        assert tr["next"] == len(tr["records"]) == 5
        assert tr["records"] == sim.truth.trades(0, 5)
        t = tr["records"][0]["ticker"]
        assert (await c.get(f"/book/{t}")).json() == {"ticker": t, **sim.true_book(t)}
        assert (await c.get("/book/NOPE")).status_code == 404
        assert (await c.post("/faults/nope", json={})).status_code == 404
        assert (await c.post("/faults/skip_seq", json={"bogus": 1})).status_code == 400
        kg = (await c.post("/keygen", json={})).json()
        assert sim.keys.get(kg["key_id"]) is not None
        info = (await c.get("/info")).json()
        assert info["rest_url"] == sim.rest_url and info["markets"] >= 50
        assert (await c.get("/stats")).json()["connections"] == 1


async def test_ws_auth_failure_does_not_affect_others(sim: Simulator, ws_connect):
    ws = await _trade_sub(sim, ws_connect)
    with pytest.raises(websockets.InvalidStatus):
        async with connect(sim.ws_url):
            pass
    await sim.advance(2_000)
    assert _seqs(await ws.drain())


async def test_rest_reset_and_truncated_body(sim: Simulator, rest):
    sim.faults.rest_reset(n=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await rest.get("/markets")
    sim.faults.rest_truncate(n=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await rest.get("/markets")
    assert (await rest.get("/markets")).status_code == 200
    c = sim.fault_counts()
    assert c["rest_reset"] == 1 and c["rest_truncate"] == 1


async def test_reset_seq_without_resubscribe(sim: Simulator, ws_connect):
    ws = await _trade_sub(sim, ws_connect)
    await sim.advance(3_000)
    before = _seqs(await ws.drain())
    assert before[-1] > 3
    assert sim.faults.reset_seq() == 1
    await sim.advance(3_000)
    after = _seqs(await ws.drain())
    assert after[:3] == [1, 2, 3]


async def test_new_market_404_window(make_sim):
    sim = await make_sim(churn_per_s=20.0, new_market_404_ms=5_000)
    await sim.advance(2_000)
    created = [x for x in sim.truth.lifecycle() if x.get("event_type") == "created"]
    assert created
    t = created[-1]["ticker"]
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        assert (await c.get(f"/markets/{t}")).status_code == 404
        assert t in {m["ticker"] for m in
                     (await c.get("/markets", params={"limit": 1000})).json()["markets"]}
        await sim.advance(5_000)
        assert (await c.get(f"/markets/{t}")).status_code == 200


async def test_drop_deltas_loses_them_for_every_client_with_a_seq_gap(sim: Simulator, ws_connect):
    """Unlike skip_seq (a number skipped, no data lost), drop_deltas really loses the deltas on
    the wire for every subscriber; each client sees a gap of exactly that many seq numbers."""
    tickers = sim.market_tickers(status=None, limit=50)
    clients = [await ws_connect(), await ws_connect()]
    for ws in clients:
        await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    got = [await ws.until(lambda m: m.get("seq") == 50) for ws in clients]
    n_before = len(sim.truth.deltas_)
    sim.faults.drop_deltas(n=2)
    await sim.advance(3_000)
    for i, ws in enumerate(clients):
        got[i] += await ws.drain()
    dropped = [r["n"] for r in sim.truth.withheld if r["k"] == "dropped"]
    assert len(dropped) == 2 and all(n >= n_before for n in dropped)
    assert not any(r["k"] == "withheld" for r in sim.truth.withheld)
    truth = sim.truth.deltas()
    want = [(d["ticker"], d["price"], d["delta"]) for d in truth[n_before:]
            if d["n"] not in dropped and d["ticker"] in tickers]
    for frames in got:
        seqs = [f["seq"] for f in frames if "seq" in f]
        gaps = [b - a for a, b in itertools.pairwise(seqs) if b != a + 1]
        assert gaps == [3], seqs  # two numbers used by deltas that never came
        ds = [f for f in frames if f["type"] == "orderbook_delta"]
        recv = [(f["msg"]["market_ticker"], round(Decimal(f["msg"]["price_dollars"]) * 10_000),
                 round(Decimal(f["msg"]["delta_fp"]) * 100)) for f in ds]
        assert recv[-len(want):] == want  # everything but the dropped ones, in order
    assert sim.fault_counts()["drop_delta"] == 2


async def test_clock_skew_of_one_key_only(sim: Simulator, sim_key: SimKey):
    """Per-key skew: to that client it is as if its own clock were off (its signatures are judged
    late, our Date header disagrees with it); other clients are untouched."""
    other_id, other_pem = sim.keygen()
    other = SimKey(other_id, other_pem)
    path = "/trade-api/v2/account/limits"
    async with httpx.AsyncClient() as c:
        sim.faults.clock_skew(ms=60_000, key_id=sim_key.key_id)
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(sim_key, "GET", path))
        assert r.status_code == 401
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(other, "GET", path))
        assert r.status_code == 200
        sim.faults.clock_skew(ms=5_000, key_id=sim_key.key_id)  # inside the auth window
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(sim_key, "GET", path))
        assert r.status_code == 200
        import email.utils
        import time
        shift = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp() - time.time()
        assert 3.5 <= shift <= 6.0, shift
        r = await c.get(sim.rest_url + "/account/limits", headers=signed(other, "GET", path))
        shift = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp() - time.time()
        assert -1.5 <= shift <= 1.0, shift
        sim.faults.clock_skew(ms=0, key_id=sim_key.key_id)
        assert sim.faults.key_skew_ms == {}


async def test_refuse_connections_of_one_key(sim: Simulator, sim_key: SimKey):
    other_id, other_pem = sim.keygen()
    sim.faults.refuse_connections(seconds=30, status=503, key_id=sim_key.key_id)
    with pytest.raises(websockets.InvalidStatus) as e:
        await open_ws(sim, sim_key)
    assert e.value.response.status_code == 503
    ws = await open_ws(sim, SimKey(other_id, other_pem))  # another client gets in
    await ws.close()
    assert sim.fault_counts()["refuse_key"] == 1
    with pytest.raises(ValueError):
        sim.faults.refuse_connections(count=1, key_id=sim_key.key_id)


async def test_chaos_menu_can_leave_entries_out(sim: Simulator, ws_connect):
    ws = await _trade_sub(sim, ws_connect)
    labels = sim.faults.chaos(on=True, seed=5, per_s=20.0, exclude=["withhold_next:delta", "reset_seq"])
    assert "withhold_next:delta" not in labels and "reset_seq" not in labels
    assert "withhold_next:trade" in labels and "drop_connections:reset" in labels
    await sim.advance(5_000)
    sim.faults.chaos(on=False)
    picked = {k[len("chaos:"):]: v for k, v in sim.fault_counts().items() if k.startswith("chaos:")}
    assert sum(picked.values()) == sim.fault_counts()["chaos"] >= 5
    assert not {"withhold_next:delta", "reset_seq"} & set(picked)
    assert "withhold_delta" not in sim.fault_counts() and "reset_seq" not in sim.fault_counts()
    with pytest.raises(ValueError):
        sim.faults.chaos(on=True, exclude=["no_such_fault"])
    with contextlib.suppress(websockets.ConnectionClosed, orjson.JSONDecodeError, TimeoutError):
        await ws.drain(timeout=2)


async def test_ignored_commands_get_no_answer(sim: Simulator, ws_connect):
    tickers = sim.market_tickers(status=None, limit=5)
    ws = await ws_connect()
    sim.faults.ignore_commands(n=1, action="subscribe")
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    with pytest.raises(TimeoutError):
        await ws.until(lambda m: m.get("type") == "subscribed", timeout=0.5)
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    sub = await ws.until(lambda m: m.get("type") == "subscribed")
    sid = sub[-1]["msg"]["sid"]
    await ws.drain()
    sim.faults.ignore_commands(n=1, action="get_snapshot")
    await ws.cmd("update_subscription", {"sid": sid, "action": "get_snapshot", "market_tickers": tickers[:1]})
    frames = await ws.drain(timeout=0.5)
    assert not [f for f in frames if f["type"] == "orderbook_snapshot"]
    await ws.cmd("update_subscription", {"sid": sid, "action": "get_snapshot", "market_tickers": tickers[:1]})
    got = await ws.until(lambda m: m.get("type") == "orderbook_snapshot")
    assert got[-1]["msg"]["market_ticker"] == tickers[0]
    assert sim.fault_counts()["ignore_subscribe"] == 1 and sim.fault_counts()["ignore_get_snapshot"] == 1
    with pytest.raises(ValueError):
        sim.faults.ignore_commands(action="unsubscribe")


async def test_a_rest_storm_can_be_ended(sim: Simulator, rest):
    sim.faults.rest_5xx(n=1000, status=503)
    assert (await rest.get("/exchange/status")).status_code == 503
    sim.faults.rest_5xx(n=0)
    sim.faults.rest_hang(n=50, seconds=30)
    sim.faults.rest_hang(n=0)
    assert (await rest.get("/exchange/status")).status_code == 200  # neither 503 nor a hang


async def test_mute_stalls_one_channel_of_one_key(sim: Simulator, ws_connect, sim_key: SimKey):
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["trade", "ticker"]})
    await ws.drain()
    sim.faults.mute("ticker", key_id="another-client")
    await sim.advance(3_000)
    assert {f["type"] for f in await ws.drain()} >= {"trade", "ticker"}
    sim.faults.mute("ticker", key_id=sim_key.key_id)
    await sim.advance(3_000)
    types = {f["type"] for f in await ws.drain()}
    assert "trade" in types and "ticker" not in types  # the socket stays up, one feed stalls
    sim.faults.mute("ticker", key_id=sim_key.key_id, on=False)
    await sim.advance(3_000)
    assert "ticker" in {f["type"] for f in await ws.drain()}
    assert sim.fault_counts()["mute"] == 2 and sim.fault_counts()["unmute"] == 1
