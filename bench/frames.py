"""Record realistic WebSocket frames from the simulator, in both wire profiles.

For each profile a ``medium`` simulator (manual clock) is started in-process; one client
subscribes ``orderbook_delta`` for every active market plus the ``trade`` firehose, the engine is
advanced until about ``n`` data frames are queued, and the client drains them. Two files per
profile, one frame per line (frames are single-line JSON):

- ``<profile>.pre.jsonl``: the replies and initial snapshots (the state a decoder/router needs
  before deltas are accepted; fed untimed),
- ``<profile>.stream.jsonl``: the orderbook_delta / trade frames that follow, in arrival order
  (seq-continuous per sid, so replaying them on a fresh decoder shows no gaps).

Nothing is committed: the frames are regenerated in the run's temp dir (deterministic seed).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from kalshi_sim import SimConfig, Simulator

from ._simproc import NO_WS_LIMITS

__all__ = ["PROFILES", "load", "record", "record_all"]

PROFILES = ("fp2026", "legacy2025")
START_MS = 1_780_000_000_000
SEED = 11


async def record(out_dir: Path, profile: str, n: int, preset: str = "medium") -> dict[str, int]:
    """Record about ``n`` stream frames for ``profile``; returns counts per frame type."""
    rate = 40_000.0
    sim = Simulator(
        SimConfig(
            preset=preset, profile=profile, seed=SEED, clock_speed=0.0, start_ms=START_MS,
            tier=None, anon_tier=None, ws_require_auth=False, ws_max_buffer=10_000_000,
            truth_tickers=False, churn_per_s=0.0, rate=rate, **NO_WS_LIMITS,
        )
    )
    await sim.start()
    counts: dict[str, int] = {}
    try:
        tickers = sim.market_tickers(status="active", limit=sim.catalog.count)
        key_id, pem = sim.keygen()  # orderbook_delta is a private channel
        headers = Simulator.auth_headers(key_id, pem, "GET", "/trade-api/ws/v2")
        async with connect(sim.ws_url, max_size=None, compression=None,
                           additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": {
                "channels": ["orderbook_delta"], "market_tickers": tickers}}))
            await ws.send(orjson.dumps({"id": 2, "cmd": "subscribe", "params": {
                "channels": ["trade"]}}))
            pre = await _drain(ws, 3)
            # engine rate = msgs per virtual second; ~2/3 are deltas/trades (the rest tickers)
            await sim.advance(int(n / rate * 1000 / 0.65) + 10)
            stream = await _drain(ws, 4)
        for raw in stream:
            t = orjson.loads(raw)["type"]
            counts[t] = counts.get(t, 0) + 1
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{profile}.pre.jsonl").write_bytes(b"\n".join(pre) + b"\n")
        (out_dir / f"{profile}.stream.jsonl").write_bytes(b"\n".join(stream[:n]) + b"\n")
    finally:
        await sim.stop()
    return counts


async def _drain(ws: object, id_: int) -> list[bytes]:
    """Every frame up to the reply to a ``list_subscriptions`` sent now (the server answers
    commands in order after the data it already queued)."""
    await ws.send(orjson.dumps({"id": id_, "cmd": "list_subscriptions"}))  # type: ignore[attr-defined]
    out: list[bytes] = []
    while True:
        raw = await ws.recv(decode=False)  # type: ignore[attr-defined]
        if raw.startswith(b'{"id":%d,"type":"ok"' % id_) or (
            b'"type":"ok"' in raw[:40] and orjson.loads(raw).get("id") == id_
        ):
            return out
        out.append(raw)


def load(frames_dir: Path, profile: str) -> tuple[list[bytes], list[bytes]]:
    """(preamble frames, stream frames) recorded for ``profile``."""
    pre = (frames_dir / f"{profile}.pre.jsonl").read_bytes().splitlines()
    stream = (frames_dir / f"{profile}.stream.jsonl").read_bytes().splitlines()
    return pre, stream


async def record_all(out_dir: Path, n: int) -> dict[str, dict[str, int]]:
    return {p: await record(out_dir, p, n) for p in PROFILES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("-n", type=int, default=100_000)
    a = ap.parse_args()
    t0 = time.monotonic()
    counts = asyncio.run(record_all(a.out_dir, a.n))
    print(orjson.dumps({"counts": counts, "seconds": round(time.monotonic() - t0, 1)}).decode())


if __name__ == "__main__":
    main()
