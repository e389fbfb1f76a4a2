"""gatherer end-to-end: socket to committed rows, all features on, zero loss, vs a minimal
pipeline (websockets receive + orjson + row tuple + binary COPY in 10k batches) in the same
process shape, fed by the same simulator.

The simulator (``medium`` preset, 20,000 markets) runs in its own process on a manual clock.
Each rep asks it to advance N ms of virtual time at a high engine rate: the burst of frames is
generated and queued for the connected client at once, so the consumer is fed as fast as the
simulator can write (a pre-framed send). A rep ends when every delta and trade of the burst is
committed (``writer_inserts_total`` for ours, rows COPY'd for raw). msgs/s = frames of the burst
/ (commit of the last row - start of the burst). Zero loss is checked: no sequence gap, no
buffer overflow at the simulator, stored deltas and trades == the simulator's truth.

Raw reps run first (only the raw client connected), then the gatherer is started and its reps
run. CPU s/M is this process only (the consumer), not the simulator or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg
from websockets.asyncio.client import connect

from kalshi_sim import Simulator

from ._db import fresh_database
from ._gatherer import config, make_app, metric
from ._harness import Sample, peak_rss_bytes, summarise
from ._model import Context, Row
from ._simproc import SimProcess

RATE = 50_000.0  # engine msgs per virtual second during a burst
WAIT_S = 60.0  # a burst's rows commit in seconds; past this a rep is counted as loss
RAW_BATCH = 10_000


class RawPipeline:
    """websockets receive -> orjson -> row tuple -> list; a writer task COPYs 10k-row batches
    (binary) into a scratch table. The floor of any Python gatherer with this stack."""

    def __init__(self, sim: SimProcess, dsn: str, tickers: list[str]) -> None:
        self.sim = sim
        self.dsn = dsn
        self.tickers = tickers
        self.rows: list[tuple[Any, ...]] = []
        self.committed = 0
        self.received = 0
        self.last_rx = 0.0
        self.last_commit = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: list[Any] = []

    async def start(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as c:
            await c.execute("CREATE UNLOGGED TABLE IF NOT EXISTS raw_frames (kind text, ticker "
                            "text, ts bigint, a text, b text, c text, seq bigint, sid bigint, "
                            "rx bigint)")
        self._tasks.append(asyncio.create_task(self._writer()))
        subs = [{"channels": ["orderbook_delta"], "market_tickers": self.tickers},
                {"channels": ["trade"]}, {"channels": ["ticker"]}]
        for i, params in enumerate(subs):
            headers = Simulator.auth_headers(self.sim.key_id, self.sim.key_file.read_text(),
                                             "GET", "/trade-api/ws/v2")
            # a busy simulator may take seconds to answer (it sends 20,000 snapshots at once)
            ws = await connect(self.sim.ws_url, max_size=None, compression=None,
                               additional_headers=headers, open_timeout=120)
            await ws.send(orjson.dumps({"id": i + 1, "cmd": "subscribe", "params": params}))
            self._ws.append(ws)
            self._tasks.append(asyncio.create_task(self._reader(ws)))

    async def _reader(self, ws: Any) -> None:
        loads = orjson.loads
        rows = self.rows
        now = time.time_ns
        try:
            async for raw in ws:
                o = loads(raw)
                m = o.get("msg")
                if type(m) is not dict or "market_ticker" not in m:
                    continue
                rows.append((o["type"], m["market_ticker"], m.get("ts_ms"),
                             m.get("price_dollars") or m.get("yes_price_dollars")
                             or m.get("yes_bid_dollars"),
                             m.get("delta_fp") or m.get("count_fp") or m.get("volume_fp"),
                             m.get("side") or m.get("taker_side"), o.get("seq"), o.get("sid"),
                             now() // 1000))
                self.received += 1
                self.last_rx = time.perf_counter()
                if len(rows) >= RAW_BATCH:
                    self._wake.set()
        except Exception:  # noqa: BLE001 - closed at the end of the benchmark
            return

    async def _writer(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.05)
                except TimeoutError:
                    pass
                self._wake.clear()
                while self.rows:
                    batch = self.rows[:RAW_BATCH]
                    del self.rows[:RAW_BATCH]
                    async with conn.transaction(), conn.cursor().copy(
                            "COPY raw_frames FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["text", "text", "int8", "text", "text", "text", "int8",
                                      "int8", "int8"])
                        for r in batch:
                            await cp.write_row(r)
                    self.committed += len(batch)
                    self.last_commit = time.perf_counter()

    async def stop(self) -> None:
        for ws in self._ws:
            await ws.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _quiet(sim: SimProcess, idle_s: float = 1.5, timeout: float = 180) -> None:
    """Wait until the simulator has sent nothing new for ``idle_s`` (snapshot bursts done)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = (await sim.control("GET", "/stats"))["frames"]
        if f != last:
            last, since = f, time.monotonic()
        elif time.monotonic() - since >= idle_s:
            return
        await asyncio.sleep(0.25)


async def _burst(sim: SimProcess, ms: int) -> tuple[float, dict[str, int]]:
    """Advance ``ms`` virtual ms; returns (start time, counts of frames/deltas/trades sent)."""
    before = await sim.control("GET", "/stats")
    t0 = time.perf_counter()
    await sim.control("POST", "/clock/advance", {"ms": ms})
    after = await sim.control("GET", "/stats")
    return t0, {k: after[k] - before[k] for k in ("frames", "deltas", "trades")}


async def _missing(sim: SimProcess, dsn: str, since: dict[str, int]) -> dict[str, Any]:
    """Which deltas/trades of the simulator's truth since ``since`` the database lacks: a rep
    that times out says what it waited for (a wait once ran 180 s for one delta of a market the
    gatherer had never subscribed)."""
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        for kind, table in (("deltas", "orderbook_deltas"), ("trades", "trades")):
            recs = (await sim.control("GET", f"/truth/{kind}?since={since[kind]}"))["records"]
            if not recs:
                continue
            lo, hi = min(r["ts_ms"] for r in recs) * 1000, max(r["ts_ms"] for r in recs) * 1000
            if kind == "deltas":
                got = Counter(conn.execute(
                    "SELECT ticker, exchange_ts, side, price, delta FROM orderbook_deltas "
                    "WHERE exchange_ts BETWEEN %s AND %s", (lo, hi)).fetchall())
                want = Counter((r["ticker"], r["ts_ms"] * 1000, r["side"], r["price"], r["delta"])
                               for r in recs)
            else:
                got = Counter(conn.execute(f"SELECT ticker, trade_id::text FROM {table} "
                                           "WHERE exchange_ts BETWEEN %s AND %s", (lo, hi)))
                want = Counter((r["ticker"], r["trade_id"]) for r in recs)
            lost = want - got
            out[f"{kind}_missing"] = sum(lost.values())
            out[f"{kind}_missing_markets"] = sorted({k[0] for k in lost})[:5]
    return out


async def _until(pred: Any, timeout: float, what: Any) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.005)


async def arun(ctx: Context) -> list[Row]:
    burst_ms = int((30_000 if ctx.quick else 60_000) / RATE * 1000)
    reps = min(ctx.reps, 3)
    workdir = Path(ctx.workdir) / "e2e"
    workdir.mkdir(parents=True, exist_ok=True)
    sim = SimProcess(workdir, preset="medium", profile="fp2026", seed=5, clock_speed=0.0,
                     rate=RATE, churn_per_s=0.0, ws_max_buffer=5_000_000, truth_tickers=False,
                     ping_interval_s=30.0, pong_timeout_s=120.0)
    sim.start()
    raw_s: list[Sample] = []
    ours_s: list[Sample] = []
    loss: dict[str, Any] = {}
    raw_missing = 0
    timeouts = 0
    missing: dict[str, Any] = {}
    app = None
    try:
        # ---- raw ------------------------------------------------------------------------
        raw_dsn = fresh_database(ctx.pg_dsn, "gatherer", "bench_e2e_raw")
        body = await sim.control("GET", "/info")
        n_markets = body["markets"]
        from kalshi_sim.catalog import PRESETS, Catalog

        cat = Catalog(PRESETS["medium"], 5, 0, "fp2026")
        tickers = [cat.market_ticker(i) for i in range(n_markets)]
        raw = RawPipeline(sim, raw_dsn, tickers)
        await raw.start()
        await _quiet(sim)
        for rep in range(reps + 1):
            base_c, base_r = raw.committed, raw.received
            c0 = time.process_time()
            t0, sent = await _burst(sim, burst_ms)
            want = sent["frames"]
            # done when every frame sent arrived and is committed; or, should frames go missing
            # (never seen here, but a hang would cost the whole run), when nothing arrived for 2 s
            while True:
                got = raw.received - base_r
                idle = time.perf_counter() - max(raw.last_rx, t0)
                if not raw.rows and raw.committed - base_c >= got and (got >= want or idle > 2.0):
                    break
                await asyncio.sleep(0.005)
            raw_missing += max(0, want - got)
            c1 = time.process_time()
            s = Sample(got, max(raw.last_commit, raw.last_rx) - t0, c1 - c0)
            if rep:
                raw_s.append(s)
        await raw.stop()
        # ---- ours -----------------------------------------------------------------------
        dsn = fresh_database(ctx.pg_dsn, "gatherer", "bench_e2e")
        app = make_app(config(sim, dsn, workdir))
        await app.start()
        await _quiet(sim, idle_s=2.0)
        w = app.writers

        def inserted(t: str) -> float:
            return metric(app, "writer_inserts_total", writer=t)  # type: ignore[arg-type]

        await _until(lambda: all(x.queued_rows == 0 for x in w.values()), 120, "start-up flush")
        for rep in range(reps + 1):
            d0, tr0 = inserted("orderbook_deltas"), inserted("trades")
            truth0 = await sim.control("GET", "/stats")
            c0 = time.process_time()
            t0, sent = await _burst(sim, burst_ms)
            want_d, want_t = d0 + sent["deltas"], tr0 + sent["trades"]
            try:
                await _until(lambda a=want_d, b=want_t: inserted("orderbook_deltas") >= a  # type: ignore[misc]
                             and inserted("trades") >= b, WAIT_S, "every delta and trade committed")
            except RuntimeError:
                timeouts += 1  # counted as loss below (stored < sent)
                missing = await _missing(sim, dsn, truth0)
                print(f"e2e rep {rep}: timed out after {WAIT_S:.0f} s; missing {missing}",
                      file=sys.stderr)
            s = Sample(sent["frames"], time.perf_counter() - t0, time.process_time() - c0)
            loss = {"deltas_sent": sent["deltas"], "deltas_stored": inserted("orderbook_deltas") - d0,
                    "trades_sent": sent["trades"], "trades_stored": inserted("trades") - tr0}
            if rep:
                ours_s.append(s)
        gaps = sum(metric(app, "conn_manager_sequence_gaps_total", role=r)
                   for r in ("orderbook", "trade", "ticker", "lifecycle"))
        faults = (await sim.control("GET", "/faults"))["counts"]
        overflow = faults.get("error_25_overflow", 0)
        zero_loss = gaps == 0 and overflow == 0 and loss["deltas_stored"] == loss["deltas_sent"] \
            and loss["trades_stored"] == loss["trades_sent"]
    finally:
        if app is not None:
            await app.stop()
        sim.stop()
    rss = peak_rss_bytes()
    return [Row("gatherer end-to-end", "gatherer e2e: socket → committed rows", "msgs/s",
                summarise(raw_s), summarise(ours_s), "≥ 0.6 of raw, 0 loss", 0.6,
                ok=None if zero_loss else False, peak_rss=rss,
                extra={"zero_loss": zero_loss, "seq_gaps": gaps, "sim_overflows": overflow,
                       "raw_frames_missing": raw_missing, "ours_timeouts": timeouts, **missing,
                       "burst_frames": int(RATE * burst_ms / 1000), **{k: int(v) for k, v in
                                                                       loss.items()}},
                note="medium preset, 4 orderbook + ticker + trade + lifecycle sockets; raw reps "
                     "first, then ours (not interleaved: one consumer at a time)")]


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))
