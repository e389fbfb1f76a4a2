"""Engine consistency over real sockets: WS snapshot + deltas == REST book == truth book;
trades agree across WS, REST and truth; ticker agrees with REST; determinism; pagination
during concurrent market creation; the JSONL truth file replays to the true books."""

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson
import pytest

from kalshi_sim import SimConfig, Simulator
from tests.fix_sim import START_MS


def _p(s: str) -> int:
    return int(Decimal(s) * 10_000)


def _c(s: str) -> int:
    return int(Decimal(s) * 100)


# Reads every market's REST book one by one (50 requests, 500 tokens): more than the 200-token
# burst of a Basic-tier IP, which is not what this test is about.
@pytest.mark.sim(anon_tier="premier")
async def test_replayed_deltas_equal_rest_book_for_every_market(sim: Simulator, ws_connect,
                                                                rest):
    tickers = sim.market_tickers(status=None, limit=1000)
    assert len(tickers) == 50
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["orderbook_delta", "trade", "ticker"],
                               "market_tickers": tickers})
    frames = await ws.until(lambda m: m.get("msg", {}).get("channel") == "ticker")
    await sim.advance(20_000)
    frames += await ws.drain()
    books: dict[str, dict[str, dict[int, int]]] = {}
    last_seq = 0
    ws_trades = []
    last_ticker: dict[str, dict] = {}
    for f in frames:
        m = f.get("msg", {})
        if f["type"] == "subscribed":
            continue
        if f["type"] == "orderbook_snapshot":
            books[m["market_ticker"]] = {
                "yes": {_p(p): _c(c) for p, c in m.get("yes_dollars_fp", [])},
                "no": {_p(p): _c(c) for p, c in m.get("no_dollars_fp", [])}}
        elif f["type"] == "orderbook_delta":
            side = books[m["market_ticker"]][m["side"]]
            p = _p(m["price_dollars"])
            side[p] = side.get(p, 0) + _c(m["delta_fp"])
            assert side[p] >= 0
            if side[p] == 0:
                del side[p]
        elif f["type"] == "trade":
            ws_trades.append(m)
        elif f["type"] == "ticker":
            last_ticker[m["market_ticker"]] = m
        if f["type"].startswith("orderbook"):
            assert f["seq"] == last_seq + 1
            last_seq = f["seq"]
    assert len(books) == 50 and last_seq > 500
    for t in tickers:
        ob = (await rest.get(f"/markets/{t}/orderbook")).json()["orderbook_fp"]
        rest_book = {"yes": {_p(p): _c(c) for p, c in ob["yes_dollars"]},
                     "no": {_p(p): _c(c) for p, c in ob["no_dollars"]}}
        assert books[t] == rest_book, t
        true = sim.true_book(t)
        assert true == {"yes": sorted(map(list, books[t]["yes"].items())),
                        "no": sorted(map(list, books[t]["no"].items()))}
    # Trades: WS == truth == REST, same ids, prices, sizes.
    truth = [t for t in sim.truth.trades() if t["ticker"] in set(tickers)]
    assert [t["trade_id"] for t in ws_trades] == [t["trade_id"] for t in truth]
    for w, t in zip(ws_trades, truth, strict=True):
        assert (_p(w["yes_price_dollars"]), _c(w["count_fp"]), w["ts_ms"]) == (
            t["yes_price"], t["count"], t["ts_ms"])
    rest_ids = []
    cursor = ""
    while True:
        r = (await rest.get("/markets/trades", params={"limit": 1000, "cursor": cursor})).json()
        rest_ids += [x["trade_id"] for x in r["trades"]]
        cursor = r["cursor"]
        if not cursor:
            break
    assert rest_ids[::-1] == [t["trade_id"] for t in sim.truth.trades()]
    # Ticker: the last ticker frame of each market matches REST market fields.
    for t, k in last_ticker.items():
        m = (await rest.get(f"/markets/{t}")).json()["market"]
        assert k["yes_bid_dollars"] == m["yes_bid_dollars"]
        assert k["yes_ask_dollars"] == m["yes_ask_dollars"]
        assert k["volume_fp"] == m["volume_fp"]
        assert k["price_dollars"] == m["last_price_dollars"]


async def test_trade_consumes_best_liquidity(sim: Simulator):
    await sim.advance(10_000)
    deltas = sim.truth.deltas()
    by_ts: dict[tuple[int, str], list[dict]] = {}
    for d in deltas:
        by_ts.setdefault((d["ts_us"], d["ticker"]), []).append(d)
    for t in sim.truth.trades():
        ds = by_ts[(t["ts_us"], t["ticker"])]
        side = "no" if t["taker_side"] == "yes" else "yes"
        price = t["no_price"] if side == "no" else t["yes_price"]
        assert {"side": side, "price": price, "delta": -t["count"]} in [
            {"side": d["side"], "price": d["price"], "delta": d["delta"]} for d in ds]


async def _run(seed: int, ms: int) -> tuple[list, list, list, list]:
    sim = Simulator(SimConfig(preset="tiny", seed=seed, clock_speed=0, start_ms=START_MS,
                              churn_per_s=3.0))
    await sim.start()
    try:
        await sim.advance(ms)
        return (sim.truth.trades(), sim.truth.deltas(), sim.truth.lifecycle(),
                sim.truth.tickers())
    finally:
        await sim.stop()


async def test_same_seed_same_truth_different_seed_differs():
    a = await _run(11, 15_000)
    b = await _run(11, 15_000)
    c = await _run(12, 15_000)
    assert a == b
    assert a[0] and a[1] and a[2]
    assert a[0] != c[0]


async def test_truth_identical_whatever_clients_do(make_sim, ws_connect, sim):
    # Subscribing clients and REST reads must not perturb the engine.
    other = await make_sim()
    ws = await ws_connect()
    await ws.cmd("subscribe", {"channels": ["orderbook_delta"],
                               "market_tickers": sim.market_tickers(limit=10)})
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        for step in range(5):
            await sim.advance(1_000)
            await other.advance(1_000)
            await c.get("/markets", params={"limit": 50})
            await c.get(f"/markets/{sim.market_tickers(limit=1)[0]}/orderbook")
    await ws.drain()
    assert sim.truth.trades() == other.truth.trades()
    assert sim.truth.deltas() == other.truth.deltas()


async def test_pagination_stable_during_market_creation(make_sim):
    sim = await make_sim(churn_per_s=10.0)
    before = {sim.catalog.market_ticker(i) for i in range(sim.catalog.count)}
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        cursor = ""
        while True:
            r = (await c.get("/markets", params={"limit": 10, "cursor": cursor})).json()
            seen += [m["ticker"] for m in r["markets"]]
            cursor = r["cursor"]
            await sim.advance(500)  # markets are created between pages
            if not cursor:
                break
    created = [x for x in sim.truth.lifecycle() if x.get("event_type") == "created"]
    assert created, "churn must create markets while paging"
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


async def test_truth_file_replays_to_true_books(tmp_path, make_sim):
    path = tmp_path / "truth.jsonl"
    sim = await make_sim(truth_path=str(path), churn_per_s=2.0)
    await sim.advance(10_000)
    sim.truth.flush()
    books: dict[str, dict[str, dict[int, int]]] = {}
    kinds = set()
    lines = path.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    assert header["k"] == "header" and header["seed"] == 7 and header["start_ms"] == START_MS
    n_trades = 0
    for line in lines[1:]:
        r = orjson.loads(line)
        kinds.add(r["k"])
        if r["k"] == "book0":
            books[r["ticker"]] = {"yes": dict(map(tuple, r["yes"])),
                                  "no": dict(map(tuple, r["no"]))}
        elif r["k"] == "delta":
            side = books[r["ticker"]][r["side"]]
            side[r["price"]] = side.get(r["price"], 0) + r["delta"]
            if side[r["price"]] == 0:
                del side[r["price"]]
        elif r["k"] == "trade":
            n_trades += 1
    assert {"book0", "delta", "trade", "ticker", "lifecycle"} <= kinds
    assert n_trades == len(sim.truth.trades_)
    for t, b in books.items():
        assert sim.true_book(t) == {"yes": sorted(map(list, b["yes"].items())),
                                    "no": sorted(map(list, b["no"].items()))}


async def test_rest_trade_time_can_differ_from_ws(make_sim):
    sim = await make_sim(rest_trade_skew_us=1_500)
    await sim.advance(3_000)
    t = sim.truth.trades()[0]
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        r = (await c.get("/markets/trades", params={"ticker": t["ticker"],
                                                    "limit": 1000})).json()
    rt = next(x for x in r["trades"] if x["trade_id"] == t["trade_id"])
    from datetime import datetime
    dt = datetime.fromisoformat(rt["created_time"])
    rest_ms = int(dt.timestamp() * 1000)
    assert rest_ms != t["ts_ms"] and abs(rest_ms - t["ts_ms"]) <= 2


async def test_rest_book_can_lag_the_true_book(make_sim):
    sim = await make_sim(rest_book_lag_ms=1_000)
    await sim.advance(5_000)
    hot = sim.truth.deltas()[-1]["ticker"]
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        ob = (await c.get(f"/markets/{hot}/orderbook")).json()["orderbook_fp"]
        lagged = {"yes": [[_p(p), _c(q)] for p, q in ob["yes_dollars"]],
                  "no": [[_p(p), _c(q)] for p, q in ob["no_dollars"]]}
        assert lagged != sim.true_book(hot)  # its newest delta is not visible yet
        await sim.advance(1_000)  # ... and is, a lag later (if nothing newer touched it)
        ob = (await c.get(f"/markets/{hot}/orderbook")).json()["orderbook_fp"]
        later = {"yes": [[_p(p), _c(q)] for p, q in ob["yes_dollars"]],
                 "no": [[_p(p), _c(q)] for p, q in ob["no_dollars"]]}
    # Rebuild the expected lagged book from truth: book0 + deltas up to now - lag.
    book = sim.truth.book0(hot)
    cutoff = (sim.now_ms - 1_000) * 1000
    for d in sim.truth.deltas():
        if d["ticker"] == hot and d["ts_us"] <= cutoff:
            side = book[0] if d["side"] == "yes" else book[1]
            side[d["price"]] = side.get(d["price"], 0) + d["delta"]
            if side[d["price"]] == 0:
                del side[d["price"]]
    assert later == {"yes": sorted(map(list, book[0].items())),
                     "no": sorted(map(list, book[1].items()))}
