"""``kalshi-data demo``: the whole fleet on one machine, with a live status view.

::

    kalshi-data demo                                  # medium preset, live view, Ctrl-C stops
    kalshi-data demo --preset tiny --chaos            # random simulator faults: watch it heal
    kalshi-data demo --headless --duration 60 --workdir /tmp/fleet   # scripts and CI

Beside the fleet run Prometheus (alerts/prometheus.yml and the rule files of alerts/),
Alertmanager (alerts/alertmanager.yml's routing; its receivers send nowhere locally) and a node
exporter; the live view lists pending and firing alerts, and fleet.json's ``monitoring`` gives
their URLs. ``--no-monitoring`` leaves them out.

Headless: once every process is ready it prints ONE JSON line (the same object as
``DIR/fleet.json``) on stdout, runs ``--duration`` seconds (or until SIGINT/SIGTERM), stops
everything and exits 0 (1 if a process died on its own meanwhile). Progress goes to stderr.

Signals: the first Ctrl-C (or SIGTERM) starts an orderly stop; a second one shortens every wait
and kills what is still running. Either way nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.fleet import Fleet
from kalshi_data.fleet.plan import PRESETS, make_plan, port_role_names
from shared.config import Environment


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo", help="run the whole fleet locally (simulator, PostgreSQL x4, 3 gatherers, deduplicator)",
        description="Start the simulator, four throwaway PostgreSQL clusters, three gatherers and the "
                    "deduplicator, then show a live status view. Ctrl-C stops everything.")
    p.add_argument("--preset", choices=PRESETS, default="medium", help="simulator scale (default: medium)")
    p.add_argument("--seed", type=int, default=1, help="simulator seed (default: 1)")
    p.add_argument("--chaos", action="store_true", help="turn on the simulator's seeded random faults")
    p.add_argument("--chaos-rate", type=float, default=0.2, metavar="PER_S",
                   help="average chaos faults per second (default: 0.2)")
    p.add_argument("--headless", action="store_true",
                   help="no live view: print one JSON line when ready, stop after --duration")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="where logs, configs, keys, secrets, databases and fleet.json go "
                        "(default: a new directory under the system temp dir)")
    p.add_argument("--base-port", type=int, default=None, metavar="N",
                   help="use consecutive ports from N instead of free ones (order: "
                        + ", ".join(port_role_names(monitoring=True)) + ")")
    p.add_argument("--port", action="append", default=[], metavar="ROLE=PORT",
                   help="fix one port, e.g. --port simulator=8080 --port gatherer-1-health=8180")
    p.add_argument("--kalshi", choices=("sim", "demo", "prod"), default="sim",
                   help="sim (default): the local simulator; demo/prod: Kalshi's own API, no simulator")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY_ID=PEM",
                   help="with --kalshi demo|prod: a Kalshi API key id and its private key file; one per "
                        "gatherer (repeat 3 times) or one shared by all")
    p.add_argument("--gatherers", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--ready-timeout", type=float, default=180.0, metavar="S",
                   help="how long each process may take to become ready (default: 180)")
    p.add_argument("--no-monitoring", action="store_true",
                   help="do not start Prometheus, Alertmanager and the node exporter")
    p.add_argument("--fast-pg", action="store_true",
                   help="run PostgreSQL without fsync (faster start; for tests)")
    p.set_defaults(run=run)


@dataclass
class _Signals:
    """What the signal handler may change: the main loop reads it (no module-level state)."""

    starting: bool = True
    stop: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False
    hurry: bool = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            self.hurry = True
            return
        self.interrupted = True
        self.stop.set()
        if self.starting:
            raise KeyboardInterrupt


def _parse_ports(specs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for spec in specs:
        role, sep, value = spec.partition("=")
        if not sep or not value.isdigit():
            raise FleetError(f"--port {spec}", "expected ROLE=PORT, e.g. simulator=8080")
        out[role] = int(value)
    return out


def _parse_keys(specs: list[str]) -> tuple[tuple[str, Path], ...]:
    out = []
    for spec in specs:
        key_id, sep, path = spec.partition("=")
        if not sep or not key_id or not path:
            raise FleetError(f"--api-key {key_id or spec}", "expected KEY_ID=PATH_TO_PRIVATE_KEY_PEM")
        out.append((key_id, Path(path)))
    return tuple(out)


def _err(msg: str) -> None:
    print(f"kalshi-data demo: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    env = Environment.from_os().env
    workdir = args.workdir
    try:
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="kalshi-demo-")
            # traversable, so PostgreSQL's unprivileged account (when we are root) reaches pg/;
            # the secrets inside stay 0700/0600
            os.chmod(workdir, 0o755)
        plan = make_plan(workdir, preset=args.preset, seed=args.seed, chaos=args.chaos,
                         chaos_per_s=args.chaos_rate, n_gatherers=args.gatherers,
                         ports=_parse_ports(args.port), base_port=args.base_port, fast_pg=args.fast_pg,
                         kalshi_env=args.kalshi, api_keys=_parse_keys(args.api_key),
                         monitoring=not args.no_monitoring)
    except FleetError as exc:
        if args.workdir is None and workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        _err(str(exc))
        return 1

    sig = _Signals()
    previous = {s: signal.signal(s, sig.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    console = None
    if not args.headless:
        from rich.console import Console

        console = Console()

    def progress(msg: str) -> None:
        if console is not None:
            console.print(f"[dim]{msg}…[/dim]")
        else:
            print(f"kalshi-data demo: {msg}", file=sys.stderr, flush=True)

    fleet = Fleet(plan, env, ready_timeout=args.ready_timeout, progress=progress, hurry=lambda: sig.hurry)
    try:
        progress(f"workdir {plan.workdir}")
        try:
            info = fleet.start()
        except FleetError as exc:
            _err(str(exc))
            return 1
        except KeyboardInterrupt:
            _err("interrupted while starting; everything started was stopped")
            return 130
        sig.starting = False
        if sig.interrupted:  # a signal between start() returning and the flag flip
            sig.stop.set()
        if args.headless:
            print(json.dumps(info, separators=(",", ":")), flush=True)
            failed = _wait_headless(fleet, sig, args.duration)
        else:
            failed = _live(fleet, info, sig, args.duration)
        progress("stopping (gatherers flush first)")
        notes = fleet.stop()
        for note in notes:
            _err(note)
        for line in failed:
            _err(line)
        if console is not None:
            console.print(f"stopped; logs in {plan.logs_dir}")
        return 1 if failed else 0
    finally:
        fleet.stop(fast=True)  # no-op after a clean stop; covers every other way out
        for s, h in previous.items():
            signal.signal(s, h)


def _wait_headless(fleet: Fleet, sig: _Signals, duration: float | None) -> list[str]:
    """Run until the duration ends or a signal arrives; returns lines for processes that died."""
    end = None if duration is None else time.monotonic() + duration
    while not sig.stop.is_set():
        left = 1.0 if end is None else min(1.0, end - time.monotonic())
        if left <= 0:
            break
        sig.stop.wait(left)
        dead = fleet.dead_processes()
        if dead:
            return dead
    return []


def _live(fleet: Fleet, info: dict[str, Any], sig: _Signals, duration: float | None) -> list[str]:
    from rich.live import Live

    from kalshi_data.fleet.status import StatusPoller, render

    started = time.monotonic()
    end = None if duration is None else started + duration
    poller = StatusPoller(info, exited=lambda name: fleet.process(name).returncode())
    try:
        with Live(render(poller.poll(), info, started), refresh_per_second=2, screen=False) as live:
            while not sig.stop.is_set() and (end is None or time.monotonic() < end):
                sig.stop.wait(1.0)
                live.update(render(poller.poll(), info, started))
    finally:
        poller.close()
    return []
