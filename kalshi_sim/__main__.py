"""``kalshi-sim``: run the exchange simulator, or ``kalshi-sim keygen`` a throwaway key.

Examples::

    kalshi-sim keygen --key-dir ./sim-keys
    kalshi-sim --preset tiny --profile fp2026 --seed 7 --port 8080 --control-port 8081 \\
        --key-dir ./sim-keys --truth truth.jsonl --ready-file ready.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

from .auth import write_keypair
from .catalog import PRESETS
from .config import SimConfig
from .encode import PROFILES
from .ratelimit import TIERS
from .server import Simulator, StartError


def _tier(v: str) -> str | None:
    if v == "none":
        return None
    if v not in TIERS:
        raise argparse.ArgumentTypeError(f"tier must be one of {sorted(TIERS)} or none")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kalshi-sim", description=(
        "Local, deterministic Kalshi exchange simulator (REST, WebSocket, control API)."))
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--profile", choices=list(PROFILES), default="fp2026")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=None,
                   help="engine messages per virtual second (default: preset)")
    p.add_argument("--churn", type=float, default=None,
                   help="lifecycle actions per virtual second (default: preset)")
    p.add_argument("--clock-speed", type=float, default=1.0,
                   help="virtual ms per real ms; 0 = manual (advance via control API)")
    p.add_argument("--start-ms", type=int, default=None,
                   help="virtual start time (default: now); fix it for identical truth logs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="REST + WebSocket port (0 = any)")
    p.add_argument("--control-port", type=int, default=8081, help="control API port (0 = any)")
    p.add_argument("--key-dir", default=None, help="register every *.pub.pem in this directory")
    p.add_argument("--truth", default=None, help="append the truth log to this JSONL file")
    p.add_argument("--ready-file", default=None,
                   help="write {rest_url, ws_url, control_url, pid} as JSON here when ready")
    p.add_argument("--tier", type=_tier, default="basic", help="rate-limit tier for keys")
    p.add_argument("--anon-tier", type=_tier, default="basic",
                   help="rate-limit tier per IP for unsigned requests")
    p.add_argument("--ping-interval", type=float, default=10.0)
    p.add_argument("--pong-timeout", type=float, default=20.0)
    p.add_argument("--no-ws-auth", action="store_true", help="allow anonymous WebSocket")
    p.add_argument("--rest-trade-skew-us", type=int, default=0,
                   help="REST created_time = WS trade time + this many microseconds")
    d = SimConfig()
    lim = p.add_argument_group("limits model (on by default; 0 turns a WebSocket limit off)")
    lim.add_argument("--ws-max-markets", type=int, default=d.ws_max_markets,
                     help="markets per subscription before error 26")
    lim.add_argument("--ws-cmd-rate", type=int, default=d.ws_cmd_rate,
                     help="commands per second per connection before error 27")
    lim.add_argument("--ws-max-connections", type=int, default=d.ws_max_connections,
                     help="sockets per API key before a handshake 429")
    lim.add_argument("--mve-markets", type=int, default=None,
                     help="multivariate (combo) markets in /markets (default: 1%% of the preset)")
    lim.add_argument("--historical-window-s", type=float,
                     default=d.historical_window_ms / 1000,
                     help="trades/markets older than this move behind the historical cutoff")
    return p


def _keygen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kalshi-sim keygen", description=(
        "Write a throwaway RSA key pair: <id>.key (private) and <id>.pub.pem (registered by "
        "`kalshi-sim --key-dir DIR`)."))
    p.add_argument("--key-dir", default="./sim-keys")
    p.add_argument("--pkcs1", action="store_true", help="PKCS#1 PEM instead of PKCS#8")
    a = p.parse_args(argv)
    try:
        key_id, path = write_keypair(a.key_dir, pkcs1=a.pkcs1)
    except OSError as e:
        print(f"kalshi-sim keygen: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"key_id": key_id, "private_key": str(path)}))
    return 0


def _write_ready(path: str, info: dict[str, object]) -> None:
    # Atomic: a watcher never reads a half-written file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


async def _serve(conf: SimConfig, ready_file: str | None) -> int:
    sim = Simulator(conf)
    try:
        await sim.start()
    except StartError as e:
        print(f"kalshi-sim: {e}", file=sys.stderr)
        return 2
    info = {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "control_url": sim.control_url,
            "pid": os.getpid()}
    print(json.dumps(info), flush=True)
    if ready_file:
        _write_ready(ready_file, info)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        return _keygen_main(argv[1:])
    a = build_parser().parse_args(argv)
    if a.key_dir and not os.path.isdir(a.key_dir):
        print(f"kalshi-sim: key directory {a.key_dir} does not exist", file=sys.stderr)
        return 2
    conf = SimConfig(
        preset=a.preset, profile=a.profile, seed=a.seed, rate=a.rate, churn_per_s=a.churn,
        clock_speed=a.clock_speed, start_ms=a.start_ms, host=a.host, port=a.port,
        control_port=a.control_port, key_dir=a.key_dir, truth_path=a.truth, tier=a.tier,
        anon_tier=a.anon_tier, ping_interval_s=a.ping_interval, pong_timeout_s=a.pong_timeout,
        ws_require_auth=not a.no_ws_auth, rest_trade_skew_us=a.rest_trade_skew_us,
        ws_max_markets=a.ws_max_markets, ws_cmd_rate=a.ws_cmd_rate,
        ws_max_connections=a.ws_max_connections, mve_markets=a.mve_markets,
        historical_window_ms=int(a.historical_window_s * 1000))
    try:
        return asyncio.run(_serve(conf, a.ready_file))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
