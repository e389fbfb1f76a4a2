"""The monitoring stack's generated files: what changes from alerts/ (receivers, for:, route
timings, intervals, targets) and what must not (expressions, thresholds, routes, inhibitions);
each written config passes promtool / amtool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kalshi_data.fleet.monitoring import (
    ALERTS_DIR,
    MonitoringPlan,
    alertmanager_document,
    format_duration,
    parse_duration,
    rule_files,
    scaled_rules,
    write_configs,
)
from tests.ops._tools import require_tool, run


@pytest.mark.parametrize(("text", "seconds"), [("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("24h", 86400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration("2 minutes")


def test_scaled_rules_change_only_for() -> None:
    for f in rule_files():
        shipped = yaml.safe_load(f.read_text())
        scaled = scaled_rules(f, 60.0)
        for g0, g1 in zip(shipped["groups"], scaled["groups"], strict=True):
            for r0, r1 in zip(g0["rules"], g1["rules"], strict=True):
                assert {k: v for k, v in r0.items() if k != "for"} == {k: v for k, v in r1.items() if k != "for"}
                if "for" in r0:
                    assert parse_duration(r1["for"]) == pytest.approx(parse_duration(r0["for"]) / 60)
    assert {f.name for f in rule_files()} == {"archive.yml", "deduplicator.yml", "gatherer.yml", "infrastructure.yml",
                                            "reconcile.yml"}


def test_local_alertmanager_keeps_routes_and_inhibitions() -> None:
    shipped = yaml.safe_load((ALERTS_DIR / "alertmanager.yml").read_text())
    local = alertmanager_document(60.0, "http://127.0.0.1:1/hook")
    assert local["inhibit_rules"] == shipped["inhibit_rules"]
    assert [r["matchers"] for r in local["route"]["routes"]] == [r["matchers"] for r in shipped["route"]["routes"]]
    assert parse_duration(local["route"]["group_wait"]) == parse_duration(shipped["route"]["group_wait"]) / 60
    assert local["receivers"] == [
        {"name": r["name"], "webhook_configs": [{"url": f"http://127.0.0.1:1/hook/{r['name']}", "send_resolved": True}]}
        for r in shipped["receivers"]]
    assert alertmanager_document()["receivers"] == [{"name": r["name"]} for r in shipped["receivers"]]


def test_written_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    mp = MonitoringPlan(tmp_path / "monitoring", 9990, 9993, 9999, scrape_interval_s=1.0,
                        evaluation_interval_s=1.0, time_factor=60.0, webhook_url="http://127.0.0.1:1")
    write_configs(mp, [("gatherer-1", 9101), ("gatherer-2", 9102)], ("deduplicator", 9200))
    prom = yaml.safe_load((mp.prometheus_dir / "prometheus.yml").read_text())
    assert prom["global"]["scrape_interval"] == "1000ms" and prom["global"]["scrape_timeout"] == "1000ms"
    targets = json.loads((mp.prometheus_dir / "targets" / "kalshi-gatherer.json").read_text())
    assert targets == [{"targets": ["127.0.0.1:9101"], "labels": {"instance": "gatherer-1"}},
                       {"targets": ["127.0.0.1:9102"], "labels": {"instance": "gatherer-2"}}]
    proc = run([require_tool("promtool"), "check", "config", str(mp.prometheus_dir / "prometheus.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rule files found" in proc.stdout
    proc = run([require_tool("amtool"), "check-config", str(mp.alertmanager_dir / "alertmanager.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
