"""Shared readers for the ops tests: rule files, their unit tests, the observability spec."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._tools import REPO

ALERTS_DIR = REPO / "alerts"
ALERT_TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"


def spec_dir() -> Path:
    """shared/spec of the steering repo: beside the clone in CI, or $KALSHI_SPEC_DIR."""
    candidates = [Path(os.environ["KALSHI_SPEC_DIR"])] if os.environ.get("KALSHI_SPEC_DIR") else []
    candidates += [REPO.parent / "shared" / "spec", REPO / "shared" / "spec"]
    for c in candidates:
        if (c / "observability.md").is_file():
            return c
    pytest.fail(
        f"observability.md not found in any of {[str(c) for c in candidates]}", pytrace=False
    )


def rule_files() -> list[Path]:
    files = sorted(ALERTS_DIR.glob("*.yml"))
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
    """alert name -> severity, from the 'Alerts' section of observability.md."""
    text = (spec_dir() / "observability.md").read_text()
    section = text.split("## Alerts", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for severity, body in re.findall(
        r"(Critical|Warning|Info):(.*?)(?=(?:Critical|Warning|Info):|Every alert|$)",
        section,
        re.DOTALL,
    ):
        # `(alias the runbook's `X`)` names an alias, not a separate alert.
        body = re.sub(r"\(alias[^)]*\)", "", body)
        for name in re.findall(r"`([A-Z][A-Za-z0-9]+)`", body):
            out[name] = severity.lower()
    return out


def spec_aliases() -> dict[str, str]:
    """alias -> alert name, from '`Alert` (alias the runbook's `Alias`)'."""
    text = (spec_dir() / "observability.md").read_text()
    return {alias: name for name, alias in re.findall(r"`(\w+)`\s*\(alias[^`]*`(\w+)`\)", text)}


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
