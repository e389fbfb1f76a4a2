"""``kalshi-data probe-limits`` against a simulator whose limits are known and not the defaults:
it must find every one of them, print the config snippet, stop by itself, and never print key
material."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kalshi_sim import SimConfig, SimThread, Simulator

KNOWN = {"tier": "advanced", "ws_max_markets": 37, "ws_cmd_rate": 9, "ws_max_connections": 7}


@pytest.fixture(scope="module")
def limited_sim() -> Iterator[tuple[SimThread, Simulator]]:
    t = SimThread(SimConfig(preset="tiny", seed=3, clock_speed=0.0, **KNOWN))  # type: ignore[arg-type]
    sim = t.start()
    yield t, sim
    t.stop()


def _key(t: SimThread, sim: Simulator, tmp_path: Path) -> tuple[str, str, Path]:
    """A fresh registered key: (key id, private PEM, the file holding it)."""
    key_id, pem = t.call(sim.keygen)
    pem_file = tmp_path / "key.pem"
    pem_file.write_text(pem)
    return key_id, pem, pem_file


def _probe(sim: Simulator, key_arg: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kalshi_data", "probe-limits", "--env", "sim", "--api-key", key_arg,
         "--rest-url", sim.rest_url, "--ws-url", sim.ws_url, *extra],
        check=False, capture_output=True, text=True, timeout=240)


def test_probe_limits_finds_the_simulators_known_limits(limited_sim: tuple[SimThread, Simulator],
                                                         tmp_path: Path) -> None:
    t, sim = limited_sim
    key_id, pem, pem_file = _key(t, sim, tmp_path)
    r = _probe(sim, f"{key_id}={pem_file}")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    print(out)  # the report quotes it
    assert "REST read budget (GET /account/limits, tier advanced): 300 tokens/s, bucket 300" in out
    m = re.search(r"measured: bucket (\d+) tokens .* refill ~([\d.]+) tokens/s", out)
    assert m and int(m.group(1)) == 300 and 240 <= float(m.group(2)) <= 330, out
    assert "markets per subscription: 37 (" in out
    assert "commands per second per socket: 9 (" in out
    assert "sockets per key: 7 (" in out
    snippet = yaml.safe_load(out.split("# gatherer config (/etc/kalshi/gatherer.yaml) for this key:")[1])
    assert snippet["connections"]["markets_per_subscription"] == 37
    assert snippet["connections"]["max_per_key"] == 7
    assert 0 < snippet["connections"]["commands_per_s"] < 9
    assert snippet["rate_limit"]["tier"] == "advanced"
    # bounded: a handful of REST requests, and it closed every socket it opened
    n = int(re.search(r"(\d+) REST requests", out).group(1))  # type: ignore[union-attr]
    assert n <= 60
    assert t.call(lambda: sim.hub.connections_of(key_id)) == 0
    # never any key material, on either stream
    body = "".join(pem.splitlines()[1:-1])
    for line in pem.splitlines()[1:-1]:
        assert line not in r.stdout + r.stderr
    assert body[:40] not in r.stdout + r.stderr


def test_probe_limits_reports_what_it_could_not_reach(limited_sim: tuple[SimThread, Simulator],
                                                      tmp_path: Path) -> None:
    """A bound reached is 'at least', not a limit; a refused key is one line and exit 1."""
    t, sim = limited_sim
    key_id, _, pem_file = _key(t, sim, tmp_path)
    r = _probe(sim, f"{key_id}={pem_file}", "--max-requests", "4", "--max-markets", "20",
               "--max-commands", "5", "--max-connections", "3")
    assert r.returncode == 0, r.stderr
    assert "REST budget not measured" in r.stdout
    assert "markets per subscription: at least 20" in r.stdout
    assert "commands per second per socket: at least 5" in r.stdout
    assert "sockets per key: at least 3" in r.stdout
    r = _probe(sim, f"not-a-key-id={pem_file}")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "refused key not-a-key-id" in r.stderr
    r = _probe(sim, f"{key_id}={tmp_path / 'missing.pem'}")
    assert r.returncode == 2 and "cannot read" in r.stderr
