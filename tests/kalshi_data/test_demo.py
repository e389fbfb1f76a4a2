"""``kalshi-data demo`` and the in-process fleet: a real headless fleet (tiny preset) with every
process healthy and nothing left afterwards; bad input (a taken port, no PostgreSQL, a fleet that
fails half-way) gives one line and stops whatever had started."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from kalshi_data.fleet import Fleet, FleetError, find_leftovers, make_plan
from shared.config import Environment
from shared.pgcluster import PgClusterError

KALSHI_DATA = [str(Path(sys.executable).parent / "kalshi-data")]
if not Path(KALSHI_DATA[0]).exists():
    KALSHI_DATA = [sys.executable, "-m", "kalshi_data"]


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A work directory the unprivileged PostgreSQL account can reach (pytest's tmp is 0700), so
    the clusters live inside it and one path finds every process of the fleet."""
    d = Path(tempfile.mkdtemp(prefix="kalshi-fleet-test-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def _markers(info: dict[str, Any]) -> list[str]:
    out = [info["workdir"]]
    out += [d["data_dir"] for d in info["databases"].values() if d.get("data_dir")]
    return out


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    return ""


def _check_running_fleet(info: dict[str, Any]) -> None:
    procs = info["processes"]
    assert set(procs) == {"simulator", "gatherer-1", "gatherer-2", "gatherer-3", "deduplicator"}
    for name, p in procs.items():
        r = httpx.get(p["health_url"], timeout=5)
        assert r.status_code == 200, (name, r.text)
        if name != "simulator":
            doc = r.json()
            assert doc["status"] in ("healthy", "degraded"), (name, doc)
            metrics = httpx.get(p["metrics_url"], timeout=5)
            assert metrics.status_code == 200 and "# TYPE" in metrics.text, name
    assert httpx.get(procs["gatherer-1"]["metrics_url"], timeout=5).text.count("ws_client_messages_received_total") > 0
    dedup = httpx.get(procs["deduplicator"]["health_url"], timeout=5).json()
    assert set(dedup["gatherers"]) == {"gatherer-1", "gatherer-2", "gatherer-3"}
    assert set(info["databases"]) == {"gatherer-1", "gatherer-2", "gatherer-3", "production"}
    for name, db in info["databases"].items():
        with psycopg.connect(db["dsn"], connect_timeout=5) as conn:
            table = "sync_cursors" if name == "production" else "gatherer_meta"
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        for role in db["roles"].values():
            assert oct(os.stat(role["password_file"]).st_mode & 0o777) == "0o600"
    sim = info["simulator"]
    assert sim["rest_url"].endswith("/trade-api/v2") and sim["ws_url"].startswith("ws://")
    assert httpx.get(f"{sim['control_url']}/health", timeout=5).json() == {"ok": True}
    assert "password" not in json.dumps(info).replace("password_file", "")


def _check_monitoring(info: dict[str, Any]) -> None:
    """The demo's Prometheus loads the project's rules and scrapes every service; Alertmanager is
    the one it notifies (fleet.json gives both URLs)."""
    mon = info["monitoring"]
    prom, am = mon["prometheus_url"], mon["alertmanager_url"]
    assert httpx.get(f"{am}/-/ready", timeout=5).status_code == 200
    rules = httpx.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"kalshi-gatherer", "kalshi-deduplicator", "kalshi-infrastructure",
                                         "kalshi-archive", "kalshi-reconcile"}
    deadline = time.monotonic() + 60
    up: set[str] = set()
    while time.monotonic() < deadline and len(up) < 5:
        doc = httpx.get(f"{prom}/api/v1/query", params={"query": "up == 1"}, timeout=5).json()
        up = {r["metric"]["instance"] for r in doc["data"]["result"]}
        time.sleep(1)
    assert up >= {"gatherer-1", "gatherer-2", "gatherer-3", "deduplicator"}, up
    ams = httpx.get(f"{prom}/api/v1/alertmanagers", timeout=5).json()["data"]["activeAlertmanagers"]
    assert [a["url"] for a in ams] == [f"{am}/api/v2/alerts"]


@pytest.mark.slow
def test_headless_fleet_runs_reports_and_leaves_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "fleet"
    proc = subprocess.Popen([*KALSHI_DATA, "demo", "--headless", "--preset", "tiny", "--duration", "30",
                             "--workdir", str(workdir), "--fast-pg"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    info: dict[str, Any] = {}
    try:
        line = _read_line(proc, 240)
        assert line, f"no JSON line; stderr: {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}"
        info = json.loads(line)
        assert info == json.loads((workdir / "fleet.json").read_text())
        assert info["workdir"] == str(workdir) and info["preset"] == "tiny"
        _check_running_fleet(info)
        _check_monitoring(info)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out == "", "exactly one line on stdout"
        assert "stopping" in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(120)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert find_leftovers(_markers(info) if info else [str(workdir)]) == []
    for name in ("simulator", "gatherer-1", "deduplicator"):
        assert (workdir / "logs" / f"{name}.log").stat().st_size > 0


@pytest.mark.slow
def test_sigint_stops_a_headless_fleet_cleanly(open_workdir: Path) -> None:
    proc = subprocess.Popen([*KALSHI_DATA, "demo", "--headless", "--preset", "tiny", "--workdir", str(open_workdir),
                             "--fast-pg"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        info = json.loads(_read_line(proc, 240) or "{}")
        assert info.get("processes"), proc.stderr.read() if proc.stderr and proc.poll() is not None else "no line"
        time.sleep(3)
        # verify reads the running fleet from its fleet.json
        res = subprocess.run([*KALSHI_DATA, "verify", "--fleet", str(open_workdir / "fleet.json"), "--since", "10m"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode in (0, 1), res.stderr
        assert "counts trades: production=" in res.stdout
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert find_leftovers([str(open_workdir)]) == []


def test_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path, taken_port: int) -> None:
    res = subprocess.run([*KALSHI_DATA, "demo", "--headless", "--preset", "tiny", "--workdir", str(tmp_path / "w"),
                          "--port", f"simulator={taken_port}"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"kalshi-data demo: port {taken_port}: already in use on 127.0.0.1 (wanted for simulator REST/WS)"]
    assert find_leftovers([str(tmp_path / "w")]) == []


def test_missing_postgresql_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(*_a: object) -> None:
        raise PgClusterError("no PostgreSQL >= 14 server binaries found (looked in: PATH)")

    monkeypatch.setattr("kalshi_data.fleet.clusters.find_binaries", nothing)
    plan = make_plan(tmp_path / "w", preset="tiny")
    with pytest.raises(FleetError) as e, Fleet(plan, Environment.from_os().env) as fleet:
        fleet.start()
    assert str(e.value) == "PostgreSQL: no PostgreSQL >= 14 server binaries found (looked in: PATH)"
    assert fleet.processes == {}


@pytest.mark.slow
def test_half_started_fleet_is_stopped(open_workdir: Path) -> None:
    plan = make_plan(open_workdir, preset="tiny", fast_pg=True)
    steps: list[str] = []
    # something takes gatherer-2's health port after planning: clusters and the simulator are
    # already up when the fleet finds out
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", plan.gatherers[1].health_port))
    blocker.listen(1)
    try:
        with pytest.raises(FleetError) as e:
            Fleet(plan, Environment.from_os().env, progress=steps.append).start()
    finally:
        blocker.close()
    assert str(e.value) == (f"gatherer-2: health port {plan.gatherers[1].health_port} on 127.0.0.1 "
                            "is already in use")
    assert steps[-1] == "starting gatherers"
    assert find_leftovers([str(open_workdir)]) == []
    assert not any((open_workdir / "pg" / d.name / "data").exists() for d in plan.databases)


def _check_status_view(fleet: Fleet, info: dict[str, Any]) -> None:
    """The live view's data comes from the running fleet; the screen renders it."""
    from rich.console import Console

    from kalshi_data.fleet.status import StatusPoller, render

    poller = StatusPoller(info, exited=lambda name: fleet.process(name).returncode())
    try:
        poller.poll()
        time.sleep(1.5)
        snap = poller.poll()
    finally:
        poller.close()
    assert [g.name for g in snap.gatherers] == ["gatherer-1", "gatherer-2", "gatherer-3"]
    for g in snap.gatherers:
        assert g.status in ("healthy", "degraded") and g.connections and g.connections >= 1
        assert g.msgs_per_s is not None and g.queue_rows is not None and g.dedup_status is not None
    assert snap.dedup_status in ("healthy", "degraded") and snap.simulator == "healthy"
    assert isinstance(snap.counts["trades"], int)
    console = Console(record=True, width=160)
    console.print(render(snap, info, started=snap.at - 65))
    screen = console.export_text()
    for text in ("gatherer-3", "msgs/s", "production rows", "snapshots", "recent simulator faults",
                 "up 1m05s", "Ctrl-C stops everything"):
        assert text in screen, text


@pytest.mark.slow
def test_in_process_fleet_can_be_poked(open_workdir: Path) -> None:
    """What the acceptance tests need: kill -9 and restart a gatherer, stop and start a cluster,
    inject a simulator fault, read fleet.json; then everything stops."""
    plan = make_plan(open_workdir, preset="tiny", fast_pg=True)
    with Fleet(plan, Environment.from_os().env, ready_timeout=120) as fleet:
        info = fleet.start()
        assert json.loads(plan.fleet_file.read_text()) == info
        _check_status_view(fleet, info)
        fleet.kill("gatherer-2")
        assert fleet.process("gatherer-2").returncode() == -signal.SIGKILL
        assert any(line.startswith("gatherer-2: exited unexpectedly") for line in fleet.dead_processes())
        fleet.start_process("gatherer-2")
        assert fleet.dead_processes() == []
        assert isinstance(fleet.sim_fault("drop_connections", mode="reset"), int)
        with pytest.raises(FleetError, match="fault no_such_fault refused"):
            fleet.sim_fault("no_such_fault")
        prod = fleet.clusters.cluster("production")
        prod.stop()
        time.sleep(1)
        prod.start()
        assert fleet.dead_processes() == []
        markers = fleet.markers()
        notes = fleet.stop()
        assert notes == []
    assert find_leftovers([*markers, str(open_workdir)]) == []
