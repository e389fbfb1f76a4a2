"""systemd/: units pass `systemd-analyze verify` and carry the hardening operations.md requires."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ._tools import REPO, require_tool, run

UNITS = REPO / "systemd"
SERVICES = ["kalshi-gatherer", "kalshi-deduplicator", "kalshi-migrator", "kalshi-export", "kalshi-reconcile"]
ALL_UNITS = [f"{s}.service" for s in SERVICES] + ["kalshi-export.timer", "kalshi-reconcile.timer"]
SYSTEM_UNIT_DIRS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value)] keeping repeated keys, as systemd does."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = m.group(1)
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    vals = values(unit, section, key)
    assert vals, f"[{section}] {key}= missing"
    return vals[-1]


def build_root(tmp: Path, units: list[Path]) -> Path:
    """A minimal alternate root: the distribution's units, ours, and stub executables."""
    root = tmp / "root"
    sys_dir = next((d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if sys_dir is None:
        pytest.fail(
            f"no systemd unit directory with sysinit.target in {SYSTEM_UNIT_DIRS}", pytrace=False
        )
    shutil.copytree(sys_dir, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for u in units:
        shutil.copy(u, etc / u.name)
        for cmd in values(parse_unit(u), "Service", "ExecStart"):
            exe = cmd.lstrip("-@:+!").split()[0]
            stub = root / exe.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def verify(root: Path, names: list[str]) -> str:
    tool = require_tool("systemd-analyze")
    proc = run(
        [tool, "verify", "--man=no", f"--root={root}", *names], cwd=root / "etc/systemd/system"
    )
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}".strip()


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    root = build_root(tmp_path, [UNITS / n for n in ALL_UNITS])
    out = verify(root, ALL_UNITS)
    # verify exits 0 on mere warnings (unknown keys, bad values): any output is a failure.
    assert out == "rc=0", out


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    bad = tmp_path / "kalshi-gatherer.service"
    bad.write_text(
        (UNITS / "kalshi-gatherer.service")
        .read_text()
        .replace("Restart=on-failure", "Restart=sometimes\nMemoryMaxx=1G")
    )
    root = build_root(tmp_path, [bad])
    out = verify(root, ["kalshi-gatherer.service"])
    assert "sometimes" in out and "MemoryMaxx" in out, out


@pytest.mark.parametrize("service", SERVICES)
def test_security_exposure_is_low(tmp_path: Path, service: str) -> None:
    tool = require_tool("systemd-analyze")
    root = build_root(tmp_path, [UNITS / n for n in ALL_UNITS])
    proc = run(
        [tool, "security", "--offline=yes", f"--root={root}", f"{service}.service"],
        cwd=root / "etc/systemd/system",
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_service_requirements(service: str) -> None:
    u = parse_unit(UNITS / f"{service}.service")
    assert one(u, "Service", "Restart") == "on-failure"
    assert one(u, "Service", "KillSignal") == "SIGTERM"
    assert one(u, "Service", "User") == "kalshi"
    assert one(u, "Service", "NoNewPrivileges") == "yes"
    assert one(u, "Service", "ProtectSystem") == "strict"
    assert one(u, "Service", "PrivateTmp") == "yes"
    assert "/var/lib/kalshi" in one(u, "Service", "ReadWritePaths").split()
    assert int(one(u, "Service", "LimitNOFILE")) >= 65536
    assert re.fullmatch(r"\d+[KMG]", one(u, "Service", "MemoryMax"))
    assert int(one(u, "Service", "TasksMax")) > 0
    env = one(u, "Service", "EnvironmentFile")
    assert re.fullmatch(r"-/etc/kalshi/[\w-]+\.env", env), env
    assert one(u, "Service", "CapabilityBoundingSet") == ""
    stop = one(u, "Service", "TimeoutStopSec")
    assert int(stop.rstrip("s")) >= 60, "stop timeout must exceed the 60 s writer flush deadline"


def test_long_running_services_start_the_right_commands() -> None:
    g = parse_unit(UNITS / "kalshi-gatherer.service")
    d = parse_unit(UNITS / "kalshi-deduplicator.service")
    assert one(g, "Service", "ExecStart") == (
        "/opt/kalshi-data/.venv/bin/kalshi-gatherer --config /etc/kalshi/gatherer.yaml"
    )
    assert one(d, "Service", "ExecStart") == (
        "/opt/kalshi-data/.venv/bin/kalshi-deduplicator --config /etc/kalshi/deduplicator.yaml"
    )
    assert one(g, "Install", "Alias") == "gatherer.service"
    assert one(d, "Install", "Alias") == "deduplicator.service"
    for u in (g, d):
        assert "kalshi-migrator.service" in one(u, "Unit", "After").split()
        assert int(one(u, "Service", "TimeoutStopSec").rstrip("s")) >= 90


def test_migrator_is_a_oneshot_migrate() -> None:
    m = parse_unit(UNITS / "kalshi-migrator.service")
    assert one(m, "Service", "Type") == "oneshot"
    assert re.fullmatch(
        r"/opt/kalshi-data/\.venv/bin/kalshi-data migrate --target \$\{KALSHI_MIGRATE_TARGET\} "
        r"--dsn \$\{KALSHI_MIGRATE_DSN\} \$KALSHI_MIGRATE_ARGS",
        one(m, "Service", "ExecStart"),
    )
    before = one(m, "Unit", "Before").split()
    assert {"kalshi-gatherer.service", "kalshi-deduplicator.service"} <= set(before)


def test_export_timer_runs_the_export_service() -> None:
    t = parse_unit(UNITS / "kalshi-export.timer")
    assert one(t, "Timer", "Unit") == "kalshi-export.service"
    assert one(t, "Timer", "Persistent") == "true"
    assert one(t, "Install", "WantedBy") == "timers.target"
    s = parse_unit(UNITS / "kalshi-export.service")
    assert one(s, "Service", "Type") == "oneshot"
    cmds = values(s, "Service", "ExecStart")
    tables = [re.search(r"--table (\w+)", c).group(1) for c in cmds]  # type: ignore[union-attr]
    assert tables == [
        "trades",
        "orderbook_deltas",
        "orderbook_snapshots",
        "tickers",
        "coverage_events",
    ]
    assert all('--day "$(date -u -d yesterday +%%F)"' in c for c in cmds)
