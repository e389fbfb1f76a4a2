"""The simulator in its own process, for benchmarks that must not share a core with it.

``SimProcess(workdir, **SimConfig fields)`` starts ``python -m bench._simproc`` with the config
as JSON, waits for its ready file, and exposes the URLs, a registered key pair (``key_id``,
``key_file``), start time and RSS. ``stop()`` terminates it (SIGTERM, then SIGKILL).

Like REST billing (``tier=None``), the simulator's WebSocket limits model is off here unless a
benchmark asks for it (``NO_WS_LIMITS``): the raw-limit clients subscribe every market in one
command, and a benchmark measures the machine. ``bench/coverage.py`` turns Kalshi's limits on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ._harness import proc_rss_bytes

__all__ = ["NO_WS_LIMITS", "SimProcess"]

#: SimConfig fields that switch off the WebSocket limits model (markets per subscription,
#: command rate, sockets per key; multivariate tickers accepted in a subscribe).
NO_WS_LIMITS: dict[str, Any] = {"ws_max_markets": 0, "ws_cmd_rate": 0, "ws_max_connections": 0,
                                "ws_reject_mve": False}


class SimProcess:
    def __init__(self, workdir: Path, name: str = "sim", **config: Any) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        from kalshi_sim.auth import write_keypair

        self.key_id, self.key_file = write_keypair(self.dir / "keys")
        self.config = {"tier": None, "anon_tier": None, "auth_skew_ms": 3_600_000, **NO_WS_LIMITS,
                       "key_dir": str(self.dir / "keys"), **config}
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.start_s = 0.0

    def start(self, timeout: float = 180.0) -> None:
        ready = self.dir / "ready.json"
        ready.unlink(missing_ok=True)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._simproc", json.dumps(self.config), str(ready)],
            cwd=Path(__file__).resolve().parents[1], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "wb"))  # noqa: SIM115
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited {self.proc.returncode}: "
                                   f"{(self.dir / 'stderr.log').read_text()[-500:]}")
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError("simulator did not start in time")
            time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        self.info = json.loads(ready.read_text())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def rest_url(self) -> str:
        return str(self.info["rest_url"])

    @property
    def ws_url(self) -> str:
        return str(self.info["ws_url"])

    @property
    def control_url(self) -> str:
        return str(self.info["control_url"])

    def rss(self, peak: bool = False) -> int:
        return proc_rss_bytes(self.pid, peak)

    async def control(self, method: str, path: str, body: Any = None, timeout: float = 300
                      ) -> Any:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.request(method, self.control_url + path, json=body)
            r.raise_for_status()
            return r.json()

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()



async def _serve(config: dict[str, Any], ready: str) -> None:
    from kalshi_sim import SimConfig, Simulator

    sim = Simulator(SimConfig(**config))
    await sim.start()
    info = {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "control_url": sim.control_url,
            "pid": os.getpid()}
    tmp = Path(ready + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(_serve(json.loads(sys.argv[1]), sys.argv[2]))
