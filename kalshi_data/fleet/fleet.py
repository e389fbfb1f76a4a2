"""The local fleet, in-process: simulator, N gatherer-local clusters + production, N gatherers,
one deduplicator. ``kalshi-data demo`` drives it; so can a test::

    plan = make_plan(tmp_path / "fleet", preset="tiny", fast_pg=True)
    with Fleet(plan, env=Environment.from_os().env) as fleet:
        info = fleet.start()                       # everything ready, DIR/fleet.json written
        fleet.sim_fault("drop_connections", mode="reset")
        fleet.kill("gatherer-2"); fleet.start_process("gatherer-2")
        fleet.clusters.cluster("production").stop(); fleet.clusters.cluster("production").start()
    # leaving the block stops everything, in order, even after a failure

Start order: keys -> clusters (parallel) -> configs -> simulator -> gatherers (parallel) ->
deduplicator -> monitoring stack (node exporter, Alertmanager, Prometheus; if planned) -> chaos
(if asked) -> fleet.json. Stop order: the monitoring stack first (it would only page about the
shutdown), then gatherers (they flush their queues into their own databases on SIGTERM), the
deduplicator, the simulator and the clusters. A failure anywhere during start stops everything
already started and raises ONE FleetError naming the piece.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from kalshi_data.fleet import monitoring
from kalshi_data.fleet.clusters import FleetClusters, write_secret
from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.plan import (
    HOST,
    FleetPlan,
    ServicePlan,
    deduplicator_config,
    gatherer_config,
    keygen_argv,
    service_argv,
    simulator_argv,
)
from kalshi_data.fleet.processes import ManagedProcess, find_leftovers, http_ready
from shared.pgcluster import port_in_use

Progress = Callable[[str], None]
# A gatherer's writer flush deadline defaults to 20 s; give it that plus a margin before SIGKILL.
GATHERER_STOP_S = 30.0
DEDUP_STOP_S = 20.0
SIM_STOP_S = 10.0
MONITORING_STOP_S = 10.0
# How long a clean stop lets the deduplicator catch up after the gatherers flushed.
DRAIN_S = 10.0


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment every child gets: the caller's, minus libpq variables (each service's
    database comes from its config, never from a stray PGHOST), with unbuffered Python output."""
    env = {k: v for k, v in base.items() if not k.startswith("PG")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Fleet:
    """Owns every process and cluster of one fleet; see the module docstring."""

    def __init__(self, plan: FleetPlan, env: Mapping[str, str], *, ready_timeout: float = 180.0,
                 progress: Progress | None = None, hurry: Callable[[], bool] | None = None) -> None:
        """``hurry`` (e.g. "a second Ctrl-C arrived") makes every stop wait end at once in SIGKILL."""
        self.plan = plan
        self.hurry: Callable[[], bool] = hurry or (lambda: False)
        self.env = child_env(env)
        self.ready_timeout = ready_timeout
        self.progress: Progress = progress or (lambda _msg: None)
        self.clusters = FleetClusters(plan)
        self.processes: dict[str, ManagedProcess] = {}
        self.api_keys: dict[str, tuple[str, Path]] = {}
        self.started_at: str | None = None
        self._stopped = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start ---------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Bring the whole fleet up; returns (and writes to DIR/fleet.json) its description."""
        try:
            self._prepare_workdir()
            self.clusters.check_binaries()
            if self.plan.uses_simulator:
                self.progress("generating API keys")
                self._keygen()
            else:
                self.api_keys = {g.name: k for g, k in zip(self.plan.gatherers, self.plan.api_keys, strict=True)}
            self.progress("starting PostgreSQL clusters (" + ", ".join(d.name for d in self.plan.databases) + ")")
            self.clusters.start()
            self._write_configs()
            if self.plan.uses_simulator:
                self.progress(f"starting simulator (preset {self.plan.preset})")
                self._start_simulator()
            else:
                self.progress(f"pointing the gatherers at Kalshi {self.plan.kalshi_env} (no simulator)")
            self.progress("starting gatherers")
            self._start_services([self._gatherer_process(g) for g in self.plan.gatherers])
            self.progress("starting deduplicator")
            self._start_services([self._dedup_process()])
            if self.plan.monitoring is not None:
                self.progress("starting Prometheus, Alertmanager and node exporter")
                self._start_monitoring(self.plan.monitoring)
            if self.plan.chaos:
                self.progress("chaos mode on")
                self.sim_fault("chaos", on=True, seed=self.plan.seed, per_s=self.plan.chaos_per_s)
            self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
            info = self.info()
            tmp = self.plan.fleet_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.plan.fleet_file)
            return info
        except BaseException:
            self.stop(fast=True)
            raise

    def _prepare_workdir(self) -> None:
        wd = self.plan.workdir
        try:
            wd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FleetError(f"workdir {wd}", f"cannot create: {exc.strerror}") from None
        busy = [d.name for d in self.plan.databases if (d.base_dir / "data").exists()]
        if busy:
            raise FleetError(f"workdir {wd}", f"already holds a fleet's database ({busy[0]}); "
                             "stop that fleet or choose another --workdir")
        for sub in (self.plan.logs_dir, self.plan.config_dir, self.plan.keys_dir):
            sub.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.plan.fleet_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.plan.sim_ready_file.unlink()

    def _keygen(self) -> None:
        """One simulator API key per gatherer via ``kalshi-sim keygen`` (registered at sim start)."""
        import subprocess

        for g in self.plan.gatherers:
            try:
                res = subprocess.run(keygen_argv(self.plan), capture_output=True, text=True, timeout=120,
                                     env=self.env, cwd=self.plan.workdir, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FleetError("kalshi-sim keygen", f"could not run: {exc}") from None
            if res.returncode != 0:
                raise FleetError("kalshi-sim keygen", (res.stderr or res.stdout).strip().splitlines()[-1]
                                 if (res.stderr or res.stdout).strip() else f"exit code {res.returncode}")
            try:
                doc = json.loads(res.stdout.strip().splitlines()[-1])
                self.api_keys[g.name] = (str(doc["key_id"]), Path(doc["private_key"]))
            except (ValueError, KeyError, IndexError):
                raise FleetError("kalshi-sim keygen", f"unexpected output: {res.stdout.strip()[:200]!r}") from None

    def _write_configs(self) -> None:
        for g in self.plan.gatherers:
            write_secret(self.plan.admin_token_file(g.name), os.urandom(24).hex())
            key_id, key_path = self.api_keys[g.name]
            self._write_yaml(g.config_path, gatherer_config(self.plan, g, key_id, key_path))
        self._write_yaml(self.plan.deduplicator.config_path, deduplicator_config(self.plan))

    @staticmethod
    def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by kalshi-data demo; regenerated on every start\n"
                        + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def _check_ports(self, name: str, ports: dict[str, int]) -> None:
        # Planned ports were free when planned; something may have taken one since.
        for kind, port in ports.items():
            if port_in_use(port, HOST):
                raise FleetError(name, f"{kind} port {port} on {HOST} is already in use")

    def _start_simulator(self) -> None:
        self._check_ports("simulator", {"REST/WS": self.plan.sim_port, "control": self.plan.sim_control_port})
        proc = ManagedProcess("simulator", simulator_argv(self.plan), self.env, self.plan.sim_log,
                              http_ready(f"{self.plan.sim_control_url}/health"), self.plan.workdir, SIM_STOP_S)
        self.processes["simulator"] = proc
        proc.start()
        proc.wait_ready(time.monotonic() + min(self.ready_timeout, 120.0))

    def _gatherer_process(self, g: ServicePlan) -> ManagedProcess:
        ports = {"health": g.health_port, "metrics": g.metrics_port}
        if g.admin_port is not None:
            ports["admin"] = g.admin_port
        self._check_ports(g.name, ports)
        return ManagedProcess(g.name, service_argv("kalshi-gatherer", g), self.env, g.log_path,
                              http_ready(g.ready_url), self.plan.workdir, GATHERER_STOP_S)

    def _dedup_process(self) -> ManagedProcess:
        d = self.plan.deduplicator
        self._check_ports(d.name, {"health": d.health_port, "metrics": d.metrics_port})
        return ManagedProcess(d.name, service_argv("kalshi-deduplicator", d), self.env, d.log_path,
                              http_ready(d.ready_url), self.plan.workdir, DEDUP_STOP_S)

    def _start_monitoring(self, mp: monitoring.MonitoringPlan) -> None:
        monitoring.write_configs(mp, [(g.name, g.metrics_port) for g in self.plan.gatherers],
                                 (self.plan.deduplicator.name, self.plan.deduplicator.metrics_port))
        procs = []
        for role, port in (("node-exporter", mp.node_exporter_port), ("alertmanager", mp.alertmanager_port),
                           ("prometheus", mp.prometheus_port)):
            self._check_ports(role, {"HTTP": port})
            procs.append(ManagedProcess(role, mp.argv(role), self.env, self.plan.logs_dir / f"{role}.log",
                                        http_ready(mp.ready_url(role)), self.plan.workdir, MONITORING_STOP_S))
        self._start_services(procs)

    def _start_services(self, procs: list[ManagedProcess]) -> None:
        for p in procs:
            self.processes[p.name] = p
            p.start()
        deadline = time.monotonic() + self.ready_timeout
        for p in procs:
            p.wait_ready(deadline)

    # --- control (tests, chaos) ----------------------------------------------------------------
    def process(self, name: str) -> ManagedProcess:
        try:
            return self.processes[name]
        except KeyError:
            raise FleetError(name, f"no such process; one of {', '.join(self.processes)}") from None

    def kill(self, name: str) -> None:
        """``kill -9`` one process (it stays down until ``start_process``)."""
        self.process(name).kill()

    def stop_process(self, name: str) -> str | None:
        """Stop one process cleanly (SIGTERM, flush, exit); returns a note if it had to be killed."""
        return self.process(name).stop()

    def start_process(self, name: str, wait: bool = True) -> None:
        """(Re)start one process and, by default, wait until it is ready again."""
        p = self.process(name)
        p.start()
        if wait:
            p.wait_ready(time.monotonic() + self.ready_timeout)

    def restart(self, name: str, wait: bool = True) -> None:
        self.stop_process(name)
        self.start_process(name, wait)

    def sim_fault(self, name: str, **kwargs: Any) -> Any:
        """Inject a simulator fault through its control API (``POST /control/faults/<name>``)."""
        url = f"{self.plan.sim_control_url}/faults/{name}"
        try:
            resp = httpx.post(url, json=kwargs, timeout=10)
        except httpx.HTTPError as exc:
            raise FleetError("simulator", f"control API unreachable at {url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise FleetError("simulator", f"fault {name} refused (HTTP {resp.status_code}): {resp.text[:200]}")
        return resp.json().get("result")

    def wait_merged(self, timeout: float = 30.0) -> bool:
        """Wait until the deduplicator reports no lag (every gatherer row it can read is merged).

        True when caught up within ``timeout``; acceptance tests call it before ``verify``.
        """
        url = self.plan.deduplicator.health_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.hurry():
            try:
                doc = httpx.get(url, timeout=2).json()
                lag = (doc.get("components") or {}).get("sync", {}).get("max_lag_seconds")
                if lag == 0:
                    return True
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            time.sleep(0.2)
        return False

    def dead_processes(self) -> list[str]:
        """One line per started process that has exited on its own."""
        out = []
        for p in self.processes.values():
            rc = p.returncode()
            if rc is not None:
                out.append(f"{p.name}: exited unexpectedly with code {rc} (log: {p.log_path})")
        return out

    # --- description ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``fleet.json`` holds: every URL, DSN, pid, config and log path (no secrets)."""
        plan = self.plan
        sim = self.processes.get("simulator")
        procs: dict[str, Any] = {}
        if plan.uses_simulator:
            procs["simulator"] = {"pid": sim.pid if sim else None, "log": str(plan.sim_log),
                                  "health_url": f"{plan.sim_control_url}/health",
                                  "metrics_url": f"{plan.sim_control_url}/stats",
                                  "faults_url": f"{plan.sim_control_url}/faults"}
        for svc in (*plan.gatherers, plan.deduplicator):
            p = self.processes.get(svc.name)
            entry: dict[str, Any] = {"pid": p.pid if p else None, "health_url": svc.health_url,
                                     "ready_url": svc.ready_url, "metrics_url": svc.metrics_url,
                                     "config": str(svc.config_path), "log": str(svc.log_path)}
            if svc.admin_url is not None:
                entry["admin_url"] = svc.admin_url
                entry["admin_token_file"] = str(plan.admin_token_file(svc.name))
            if svc.name in self.api_keys:
                entry["api_key_id"] = self.api_keys[svc.name][0]
                entry["database"] = svc.name
            procs[svc.name] = entry
        dbs: dict[str, Any] = {}
        for d in plan.databases:
            running = d.name in self.clusters.names()
            dbs[d.name] = {
                "dsn": self.clusters.dsn(d.name) if running else f"host={HOST} port={d.port} dbname={d.dbname} user=postgres",
                "host": HOST, "port": d.port, "dbname": d.dbname, "target": d.target,
                "data_dir": str(self.clusters.data_dir(d.name)) if running else None,
                "roles": {r: {"user": r, "password_file": str(plan.password_file(d.name, r))} for r in d.roles},
            }
        return {
            "workdir": str(plan.workdir), "kalshi_env": plan.kalshi_env, "preset": plan.preset,
            "seed": plan.seed, "chaos": plan.chaos, "started_at": self.started_at, "demo_pid": os.getpid(),
            "simulator": {"rest_url": plan.sim_rest_url, "ws_url": plan.sim_ws_url,
                          "control_url": plan.sim_control_url, "truth": str(plan.truth_path)}
            if plan.uses_simulator else None,
            "processes": procs, "databases": dbs,
            "monitoring": None if plan.monitoring is None else {
                **plan.monitoring.info(),
                "pids": {n: p.pid for n, p in self.processes.items() if n in monitoring.PROCESS_NAMES}},
        }

    def markers(self) -> list[str]:
        """Strings that appear in the command line of every process this fleet started."""
        # Specific paths only (config files, the simulator's ready file, data directories), so a
        # user's `tail -f DIR/logs/...` is never mistaken for part of the fleet.
        out = [str(s.config_path) for s in (*self.plan.gatherers, self.plan.deduplicator)]
        out.append(str(self.plan.sim_ready_file))
        out += [str(self.clusters.data_dir(n)) for n in self.clusters.names()]
        if self.plan.monitoring is not None:
            out.append(str(self.plan.monitoring.directory) + "/")
        return out

    # --- stop ----------------------------------------------------------------------------------
    def stop(self, fast: bool = False) -> list[str]:
        """Stop everything in order; idempotent. Returns one line per thing that did not go
        cleanly (a process that had to be killed, a cluster that would not stop, a leftover).
        ``fast`` (a failed start) gives each process 2 s instead of its flush deadline."""
        if self._stopped:
            return []
        self._stopped = True
        markers = self.markers()
        notes: list[str] = []
        gatherers = [p for n, p in self.processes.items() if n.startswith("gatherer-")]
        dedup = [self.processes[n] for n in ("deduplicator",) if n in self.processes]
        sim = [self.processes[n] for n in ("simulator",) if n in self.processes]
        mon = [self.processes[n] for n in monitoring.PROCESS_NAMES if n in self.processes]
        for group, timeout in ((mon, MONITORING_STOP_S), (gatherers, GATHERER_STOP_S), (dedup, DEDUP_STOP_S),
                               (sim, SIM_STOP_S)):
            if group is dedup and dedup and dedup[0].running() and not fast:
                # the gatherers have flushed; let the deduplicator merge what they wrote last
                self.wait_merged(DRAIN_S)
            for p in group:
                p.terminate()
            for p in group:
                note = p.wait_stopped(2.0 if fast else timeout, self.hurry)
                if note:
                    notes.append(note)
        notes += self.clusters.stop(fast=not (fast or self.hurry()))
        for pid, cmd in find_leftovers(markers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
            notes.append(f"left running and killed: pid {pid}: {cmd[:160]}")
        return notes
