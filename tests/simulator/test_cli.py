"""The ``kalshi-sim`` command as a subprocess, and the lazily materialised xl preset."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from kalshi_sim import SimConfig, Simulator

PY = sys.executable


async def _wait_file(path: str, proc: asyncio.subprocess.Process, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.returncode is None, "simulator exited before it was ready"
        assert time.monotonic() < deadline, "simulator not ready in time"
        await asyncio.sleep(0.05)
    return json.loads(Path(path).read_text())  # tiny file, written atomically


async def test_subprocess_ready_file_serves_and_stops_on_sigterm(tmp_path):
    ready = str(tmp_path / "ready.json")
    truth = tmp_path / "truth.jsonl"
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "kalshi_sim", "--preset", "tiny", "--seed", "3", "--port", "0",
        "--control-port", "0", "--ready-file", ready, "--truth", str(truth),
        "--clock-speed", "20", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        info = await _wait_file(ready, proc)
        assert info["pid"] == proc.pid
        async with httpx.AsyncClient() as c:
            st = (await c.get(info["rest_url"] + "/exchange/status")).json()
            assert st["exchange_active"] is True
            assert (await c.get(info["control_url"] + "/health")).json() == {"ok": True}
            deadline = time.monotonic() + 20
            while (await c.get(info["control_url"] + "/stats")).json()["trades"] == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 20)
    assert rc == 0
    lines = truth.read_bytes().splitlines()
    assert json.loads(lines[0])["k"] == "header"
    assert any(json.loads(x)["k"] == "trade" for x in lines[1:])


async def test_port_in_use_is_one_clear_line():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            PY, "-m", "kalshi_sim", "--port", str(port), "--control-port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        s.close()
    assert proc.returncode == 2
    assert err.decode().strip() == f"kalshi-sim: port {port} already in use"


async def test_help():
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "kalshi_sim", "--help", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"--preset" in out and b"--control-port" in out


async def test_xl_preset_is_lazy():
    t0 = time.monotonic()
    sim = Simulator(SimConfig(preset="xl", seed=1, clock_speed=0, tier=None, anon_tier=None))
    await sim.start()
    try:
        assert time.monotonic() - t0 < 5
        assert sim.catalog.count == 1_000_000
        async with httpx.AsyncClient(base_url=sim.rest_url) as c:
            last = sim.catalog.market_ticker(999_999)
            m = (await c.get(f"/markets/{last}")).json()["market"]
            assert m["ticker"] == last
            page = (await c.get("/markets", params={"limit": 1000})).json()
            assert len(page["markets"]) == 1000 and page["cursor"]
            ser = (await c.get("/markets", params={"limit": 1000,
                                                   "series_ticker": "KXSIM4999"})).json()
            # 100K events over 5K series: 20 events x 10 markets per series.
            assert len(ser["markets"]) == 200 and ser["cursor"] == ""
        await sim.advance(1_000)
        assert len(sim.truth.trades_) > 0
        assert len(sim.engine.states) < 20_000  # only touched markets are materialised
    finally:
        await sim.stop()
