"""Shared readers for the ops tests: rule files, their unit tests, the observability spec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ._tools import REPO

ALERTS_DIR = REPO / "alerts"
ALERT_TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"


# The contract of observability.md, recorded here so the suite runs from any clone (the spec
# folder lives beside the repository only in CI). Update these when the spec changes.
SPEC_ALERTS: dict[str, str] = {
    "AllGatherersDown": "critical", "DeduplicatorDown": "critical", "ProductionRDSUnreachable": "critical",
    "AllWebSocketsDisconnected": "critical", "SyncLagCritical": "critical", "NoMarketsPolled": "critical",
    "SingleGathererDown": "warning", "DeduplicatorSyncStalled": "warning", "HighWriterErrorRate": "warning",
    "HighFlushLatency": "warning", "PollCycleApproachingLimit": "warning", "HighFetchErrorRate": "warning",
    "SequenceGapsDetected": "warning", "HighReconnectRate": "warning", "SingleRoleDown": "warning",
    "DiskUsageHigh": "warning", "ConnectionPoolExhaustion": "warning", "WriterBackpressure": "warning",
    "ExportLagWarning": "warning", "ExportErrorRate": "warning", "S3UploadFailure": "warning",
    "MarketRegistryReconciling": "info", "HighDuplicateRate": "info",
}
SPEC_ALIASES: dict[str, str] = {"RDSConnectionFailure": "ProductionRDSUnreachable"}
SPEC_LOG_LINES: tuple[str, ...] = (
    "connected to Kalshi WebSocket", "subscribed to ticker channel", "loaded N markets from REST API",
    "connected to gatherer-N", "connected to production RDS", "sync started for trades",
)


# alerts/ also holds the Prometheus and Alertmanager configurations, which are not rule files.
CONFIG_FILES = ("prometheus.yml", "alertmanager.yml")


def rule_files() -> list[Path]:
    files = sorted(f for f in ALERTS_DIR.glob("*.yml") if f.name not in CONFIG_FILES)
    assert files, "no alerts/*.yml rule files"
    return files


def rule_test_files() -> list[Path]:
    files = sorted(ALERT_TESTS_DIR.glob("*.test.yml"))
    assert files, "no alerts/tests/*.test.yml files"
    return files


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule across alerts/*.yml, with `_file` added."""
    out = []
    for f in rule_files():
        doc = yaml.safe_load(f.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out.append({**rule, "_file": f.name})
    return out


def spec_alerts() -> dict[str, str]:
    """alert name -> severity, as observability.md lists them."""
    return dict(SPEC_ALERTS)


def spec_aliases() -> dict[str, str]:
    """alias -> alert name ('`Alert` (alias the runbook's `Alias`)')."""
    return dict(SPEC_ALIASES)


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of every heading in docs/runbook.md."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            title = m.group(1).strip().lower()
            title = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(title)
    return anchors
