"""alerts/alertmanager.yml: valid for amtool, routed by severity, and its inhibition works in a
real Alertmanager (the receivers swapped for a local webhook, as the demo and the Prometheus loop
test run it)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from kalshi_data.fleet.monitoring import ALERTMANAGER_FILE, alertmanager_document, find_tool
from shared.pgcluster import free_port

from ._rules import ALERTS_DIR, alert_rules
from ._tools import require_tool, run
from ._webhook import WebhookReceiver

CONFIG = ALERTS_DIR / ALERTMANAGER_FILE


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    proc = run([amtool, "check-config", str(CONFIG)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out and "1 inhibit rules" in out, out


def test_amtool_check_config_can_fail(tmp_path: Path) -> None:
    amtool = require_tool("amtool")
    doc = yaml.safe_load(CONFIG.read_text())
    doc["route"]["routes"][0]["receiver"] = "nobody"
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(yaml.safe_dump(doc))
    proc = run([amtool, "check-config", str(bad)])
    assert proc.returncode != 0 and "nobody" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("severity", "receivers"), [
    ("critical", "pager,chat"), ("warning", "chat"), ("info", "chat"), ("", "chat")])
def test_routing_by_severity(severity: str, receivers: str) -> None:
    amtool = require_tool("amtool")
    labels = ["alertname=X"] + ([f"severity={severity}"] if severity else [])
    proc = run([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receivers


def test_every_alert_severity_reaches_a_human() -> None:
    """Every rule's severity is one the routing tree names (no alert falls into a silent hole)."""
    routes = yaml.safe_load(CONFIG.read_text())["route"]["routes"]
    named = " ".join(m for r in routes for m in r["matchers"])
    for rule in alert_rules():
        assert rule["labels"]["severity"] in named, rule["alert"]


def test_no_secret_in_the_shipped_config() -> None:
    text = CONFIG.read_text()
    assert "hooks.slack.com" not in text and "routing_key:" not in text and "api_url:" not in text
    doc = yaml.safe_load(text)
    pd = doc["receivers"][0]["pagerduty_configs"][0]
    assert set(pd) >= {"routing_key_file"} and "routing_key" not in pd


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WebhookReceiver]]:
    """A real Alertmanager running the shipped routing, posting to a local webhook."""
    require_tool("amtool")  # installs the Alertmanager too (scripts/ensure-tools.sh)
    d = tmp_path_factory.mktemp("alertmanager")
    with WebhookReceiver() as hook:
        (d / ALERTMANAGER_FILE).write_text(yaml.safe_dump(alertmanager_document(60.0, hook.url)))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(d / "alertmanager.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen([find_tool("alertmanager"), f"--config.file={d / ALERTMANAGER_FILE}",
                                 f"--storage.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (d / "alertmanager.log").read_text()
                try:
                    if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "Alertmanager not ready in 30 s"
                time.sleep(0.1)
            yield url, hook
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def _post(url: str, *labels: dict[str, str]) -> None:
    r = httpx.post(f"{url}/api/v2/alerts", json=[{"labels": lb, "annotations": {"summary": "test"}}
                                                 for lb in labels], timeout=5)
    assert r.status_code == 200, r.text


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_critical_pages_and_chats_warning_only_chats(alertmanager: tuple[str, WebhookReceiver]) -> None:
    url, hook = alertmanager
    _post(url, {"alertname": "DeduplicatorDown", "severity": "critical", "service": "deduplicator"},
          {"alertname": "SequenceGapsDetected", "severity": "warning", "instance": "gatherer-2"})
    _wait(lambda: {n.receiver for n in hook.notifications("DeduplicatorDown")} == {"pager", "chat"}
          and hook.notifications("SequenceGapsDetected"))
    time.sleep(1.0)  # a few more group intervals (5 s / 60... 5m / 60): nothing else may arrive
    assert {n.receiver for n in hook.notifications("SequenceGapsDetected")} == {"chat"}


def test_all_gatherers_down_inhibits_single_gatherer_down(alertmanager: tuple[str, WebhookReceiver]) -> None:
    url, hook = alertmanager
    single = {"alertname": "SingleGathererDown", "severity": "warning", "service": "gatherer",
              "instance": "gatherer-1"}
    _post(url, {"alertname": "AllGatherersDown", "severity": "critical", "service": "gatherer"}, single)

    def inhibited() -> bool:
        alerts = httpx.get(f"{url}/api/v2/alerts", params={"filter": 'alertname="SingleGathererDown"'},
                           timeout=5).json()
        return bool(alerts) and all(a["status"]["inhibitedBy"] for a in alerts)

    _wait(lambda: hook.notifications("AllGatherersDown") and inhibited())
    time.sleep(1.0)
    assert hook.notifications("SingleGathererDown") == []
    # Once AllGatherersDown resolves, the inhibition lifts and SingleGathererDown goes to chat.
    ended = datetime.now(UTC) - timedelta(seconds=1)
    r = httpx.post(f"{url}/api/v2/alerts", timeout=5, json=[{
        "labels": {"alertname": "AllGatherersDown", "severity": "critical", "service": "gatherer"},
        "endsAt": ended.isoformat()}])
    assert r.status_code == 200, r.text
    _post(url, single)
    _wait(lambda: hook.notifications("SingleGathererDown", "firing"))
    assert {n.receiver for n in hook.notifications("SingleGathererDown")} == {"chat"}
