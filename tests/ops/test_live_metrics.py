"""The cross-check against running code: start a real fleet (simulator, gatherers, deduplicator
as processes), scrape their /metrics over HTTP, and require every metric that alerts/, grafana/
and docs/runbook.md use to be exported there with the type the rules assume."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kalshi_data.fleet import Fleet, find_leftovers, make_plan
from shared.config import Environment

from ._promql import metric_names, substitute_grafana_variables
from ._rules import alert_rules
from .exported_metrics import DATABASE, DEDUPLICATOR, GATHERER

# The names the issue lists explicitly; the rest come from the rule files and the runbook.
NAMED_IN_ISSUE = {
    "gatherer": ["gatherer_markets_active", "gatherer_websocket_connections", "ws_client_connected",
                 "conn_manager_connections_healthy", "ws_client_messages_received_total",
                 "writer_inserts_total", "writer_errors_total", "writer_flush_duration_seconds"],
    "deduplicator": ["dedup_sync_lag_seconds", "dedup_gatherer_health", "dedup_records_written_total"],
}
_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def scrape(url: str) -> tuple[dict[str, str], str]:
    """Family name (counters with ``_total``, as PromQL sees them) -> type, plus the raw text."""
    text = httpx.get(url, timeout=10).text
    families: dict[str, str] = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        families[name + ("_total" if kind == "counter" and not name.endswith("_total") else "")] = kind
    return families, text


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@pytest.fixture(scope="module")
def live_metrics() -> Iterator[dict[str, tuple[dict[str, str], str]]]:
    workdir = Path(tempfile.mkdtemp(prefix="kalshi-live-metrics-"))
    os.chmod(workdir, 0o755)
    markers: list[str] = [str(workdir)]
    try:
        plan = make_plan(workdir, preset="tiny", fast_pg=True)
        with Fleet(plan, Environment.from_os().env, ready_timeout=180) as fleet:
            info = fleet.start()
            markers = [*fleet.markers(), str(workdir)]
            procs = info["processes"]
            yield {"gatherer": scrape(procs["gatherer-1"]["metrics_url"]),
                   "deduplicator": scrape(procs["deduplicator"]["metrics_url"])}
            assert fleet.stop() == []
        assert find_leftovers(markers) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("service", ["gatherer", "deduplicator"])
def test_issue_named_metrics_are_exported(live_metrics: dict[str, tuple[dict[str, str], str]],
                                          service: str) -> None:
    families, _ = live_metrics[service]
    missing = [n for n in NAMED_IN_ISSUE[service] if n not in families]
    assert not missing, f"{service} /metrics lacks {missing}"


@pytest.mark.slow
def test_every_metric_used_by_alerts_dashboards_runbook_is_exported_live(
        live_metrics: dict[str, tuple[dict[str, str], str]]) -> None:
    expected = {**GATHERER, **DEDUPLICATOR, **DATABASE}
    used: set[str] = set()
    for rule in alert_rules():
        used |= metric_names(rule["expr"])
    for dash in Path(__file__).resolve().parents[2].joinpath("grafana", "dashboards").glob("*.json"):
        for expr in re.findall(r'"expr":\s*"((?:[^"\\]|\\.)*)"', dash.read_text()):
            used |= metric_names(substitute_grafana_variables(expr.encode().decode("unicode_escape")))
    runbook = Path(__file__).resolve().parents[2].joinpath("docs", "runbook.md").read_text()
    used |= {n for n in re.findall(r"\b([a-z][a-z0-9_]+)\b", runbook) if _base(n) in expected or n in expected}
    ours = {n for n in used if _base(n) in expected or n in expected}
    assert len(ours) > 40, f"too few metric names found in the ops files: {sorted(ours)}"
    assert {"writer_inserts_total", "dedup_sync_lag_seconds", "retention_blocked_partitions"} <= ours
    gatherer, _ = live_metrics["gatherer"]
    dedup, _ = live_metrics["deduplicator"]
    exported = {**gatherer, **dedup}
    missing = sorted(n for n in ours if n not in exported and _base(n) not in exported)
    assert not missing, f"used by alerts/dashboards/runbook but not exported by a running process: {missing}"
    wrong = sorted((n, exported.get(n) or exported.get(_base(n)), expected.get(n) or expected.get(_base(n)))
                   for n in ours
                   if (exported.get(n) or exported.get(_base(n))) != (expected.get(n) or expected.get(_base(n))))
    assert not wrong, f"type differs (name, exported, expected): {wrong}"


@pytest.mark.slow
def test_no_per_market_label_anywhere(live_metrics: dict[str, tuple[dict[str, str], str]]) -> None:
    for service, (_, text) in live_metrics.items():
        assert 'ticker="' not in text and "market_ticker=" not in text, service
