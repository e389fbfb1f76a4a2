"""simulator send: live, consistent traffic to one client vs a pre-framed blast, same server stack.

Both servers run in this process, on one event loop (one core), as aiohttp WebSocket servers:

- live: the real ``Simulator`` (``medium`` preset, real-time clock, engine rate far above what one
  core can send), one client subscribed to ``orderbook_delta`` for every active market plus the
  ``trade`` and ``ticker`` firehoses: engine + truth log + encoder + hub fan-out + socket writes;
- raw: a handler that sends recorded frames (bench.frames, same sizes) in a loop with
  ``send_frame``, nothing else.

The client is a separate process (bench._wscount: parses frame headers only, ~1 µs/frame), so
the server is what is measured. Reps alternate live / blast; each live rep gets a fresh
simulator (stopped before the blast window). CPU is this process's over the client's counting
window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from kalshi_sim import SimConfig, Simulator

from . import frames
from ._harness import Sample, Stat, peak_rss_bytes, summarise
from ._simproc import NO_WS_LIMITS
from ._model import Context, Row

LIVE_RATE = 60_000.0  # engine msgs per virtual second: more than one core can generate + send


class _CpuTrack:
    """(monotonic, process CPU) samples every 50 ms from a thread (the event loop may be busy
    for seconds), to read this process's CPU over a window another process measured."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-track", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.monotonic(), time.process_time()))

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, t0: float, t1: float) -> float:
        inside = [(t, c) for t, c in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return 0.0
        (ta, ca), (tb, cb) = inside[0], inside[-1]
        return (cb - ca) * (t1 - t0) / (tb - ta) if tb > ta else 0.0


async def _client(url: str, subs_file: Path, warm: float, measure: float,
                  headers: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._wscount", url, f"@{subs_file}", str(warm), str(measure),
        json.dumps(headers), stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), warm + measure + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"ws counter exited {proc.returncode}")
    return json.loads(out)  # type: ignore[no-any-return]


async def _blast_server(payloads: list[bytes]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        send = ws.send_frame
        text = WSMsgType.TEXT
        try:
            for data in itertools.cycle(payloads):
                await send(data, text)
        except (ConnectionError, RuntimeError):
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


async def arun(ctx: Context) -> list[Row]:
    warm, measure = (2.0, 3.0) if ctx.quick else (3.0, 4.0)
    _, stream = frames.load(ctx.frames, "fp2026")
    conf = SimConfig(
        preset="medium", profile="fp2026", seed=3, clock_speed=1.0, rate=LIVE_RATE,
        churn_per_s=0.0, tier=None, anon_tier=None, ws_require_auth=False,
        ws_max_buffer=20_000_000, truth_tickers=False, ping_interval_s=30.0, pong_timeout_s=60.0,
        auth_skew_ms=3_600_000, **NO_WS_LIMITS)  # a busy loop may take seconds to get to a handshake
    runner, blast_port = await _blast_server(stream)
    track = _CpuTrack()
    track.start()
    live: list[Sample] = []
    blast: list[Sample] = []
    queued: list[int] = []
    try:
        none_file = Path(ctx.workdir) / "no_subs.json"
        none_file.write_text("[]")
        subs_file = Path(ctx.workdir) / "sim_subs.json"
        for rep in range(min(ctx.reps, 3) + 1):  # rep 0 is the warm-up
            # a fresh simulator per rep: its in-memory truth log grows with every event, and
            # reps must not inherit the previous one's (GC) load
            sim = Simulator(conf)
            await sim.start()
            try:
                key_id, pem = sim.keygen()
                if not subs_file.exists():
                    tickers = sim.market_tickers(status="active", limit=sim.catalog.count)
                    subs_file.write_text(json.dumps([
                        {"id": 1, "cmd": "subscribe", "params": {
                            "channels": ["orderbook_delta"], "market_tickers": tickers}},
                        {"id": 2, "cmd": "subscribe", "params": {"channels": ["trade", "ticker"]}},
                    ]))
                headers = Simulator.auth_headers(key_id, pem, "GET", "/trade-api/ws/v2")
                r = await _client(sim.ws_url, subs_file, warm, measure, headers)
                queued.append(sim.hub.frames)
            finally:
                await sim.stop()
            s_live = Sample(r["count"], r["t1"] - r["t0"], track.cpu_between(r["t0"], r["t1"]))
            r = await _client(f"ws://127.0.0.1:{blast_port}/ws", none_file, 1.0, measure, {})
            s_blast = Sample(r["count"], r["t1"] - r["t0"], track.cpu_between(r["t0"], r["t1"]))
            if rep:
                live.append(s_live)
                blast.append(s_blast)
    finally:
        await track.stop()
        await runner.cleanup()
    st_live: Stat = summarise(live)
    st_blast: Stat = summarise(blast)
    return [Row("simulator send", "simulator send: live medium → 1 client", "msgs/s", st_blast,
                st_live, "≥ 0.5 of raw", 0.5, peak_rss=peak_rss_bytes(),
                extra={"frames_queued_per_rep": queued[1:]},
                note="raw = pre-framed blast (aiohttp send_frame of recorded frames)")]


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))
