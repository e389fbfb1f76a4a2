"""alerts/: promtool-clean rule files, every spec alert present, fired and silenced by unit tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from ._promql import metric_names
from ._rules import (
    ALERT_TESTS_DIR,
    RUNBOOK,
    alert_rules,
    rule_files,
    rule_test_files,
    runbook_anchors,
    spec_alerts,
    spec_aliases,
)
from ._tools import REPO, require_tool, run
from .exported_metrics import series_names

SEVERITIES = {"critical", "warning", "info"}


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "check", "rules", *map(str, rule_files())])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr


def test_promtool_test_rules_pass() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "test", "rules", *map(str, rule_test_files())], cwd=ALERT_TESTS_DIR)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("SUCCESS") == len(rule_test_files()), out


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: turn one expected firing into 'silent' and promtool must object."""
    promtool = require_tool("promtool")
    src = ALERT_TESTS_DIR / "deduplicator.test.yml"
    doc = yaml.safe_load(src.read_text())
    doc["rule_files"] = [str((src.parent / f).resolve()) for f in doc["rule_files"]]
    flipped = 0
    for case in doc["tests"]:
        for at in case["alert_rule_test"]:
            if at["alertname"] == "ProductionRDSUnreachable" and at["exp_alerts"]:
                at["exp_alerts"] = []
                flipped += 1
    assert flipped == 1
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(doc))
    proc = run([promtool, "test", "rules", str(broken)])
    assert proc.returncode != 0
    assert "ProductionRDSUnreachable" in proc.stdout + proc.stderr


def test_every_spec_alert_is_defined_with_its_severity() -> None:
    spec = spec_alerts()
    assert len(spec) >= 23, f"could not read the alert list from observability.md: {spec}"
    defined = {r["alert"]: r["labels"]["severity"] for r in alert_rules()}
    missing = sorted(set(spec) - set(defined))
    assert not missing, f"alerts in observability.md without a rule: {missing}"
    wrong = {n: (defined[n], s) for n, s in spec.items() if defined[n] != s}
    assert not wrong, f"severity differs from observability.md (rule, spec): {wrong}"


def test_spec_aliases_are_labelled() -> None:
    aliases = spec_aliases()
    assert aliases == {"RDSConnectionFailure": "ProductionRDSUnreachable"}
    by_name = {r["alert"]: r for r in alert_rules()}
    for alias, name in aliases.items():
        assert by_name[name]["labels"].get("alias") == alias


def test_alert_names_are_unique_and_well_formed() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for r in alert_rules():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", r["alert"]), r["alert"]
        assert r["labels"]["severity"] in SEVERITIES, r["alert"]
        ann = r.get("annotations", {})
        assert ann.get("summary"), f"{r['alert']}: no summary"
        assert ann.get("description"), f"{r['alert']}: no description"
        assert ann.get("runbook_url") == f"docs/runbook.md#{r['alert'].lower()}", r["alert"]


def test_every_runbook_link_resolves() -> None:
    assert RUNBOOK.is_file(), "docs/runbook.md missing"
    anchors = runbook_anchors()
    dangling = [
        r["alert"]
        for r in alert_rules()
        if r["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    ]
    assert not dangling, f"runbook has no section for: {dangling}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    tested_files: set[str] = set()
    for f in rule_test_files():
        doc = yaml.safe_load(f.read_text())
        tested_files.update(Path(p).name for p in doc["rule_files"])
        for case in doc["tests"]:
            for at in case.get("alert_rule_test", []):
                (fired if at.get("exp_alerts") else silent).add(at["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert {p.name for p in rule_files()} <= tested_files
    assert not names - fired, f"never shown firing: {sorted(names - fired)}"
    assert not names - silent, f"never shown silent: {sorted(names - silent)}"


def test_alerts_only_use_exported_metrics() -> None:
    allowed = series_names()
    unknown: dict[str, set[str]] = {}
    for r in alert_rules():
        used = metric_names(r["expr"])
        assert used, f"{r['alert']}: no metric found in expression"
        if used - allowed:
            unknown[r["alert"]] = used - allowed
    assert not unknown, (
        f"metrics not exported by the code (tests/ops/exported_metrics.py): {unknown}"
    )


def test_no_per_market_label_in_alerts() -> None:
    for r in alert_rules():
        assert not re.search(r"\bticker\b\s*(=|!=|=~|!~)", r["expr"]), r["alert"]
        assert not re.search(r"\b(by|without|on|ignoring)\s*\([^)]*\bticker\b", r["expr"]), r[
            "alert"
        ]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (instance) (rate(writer_errors_total{type!="x"}[5m])) / 2',
            {"writer_errors_total"},
        ),
        ("up == 0 and on() sum(up) > 0 or vector(0)", {"up"}),
        ('{__name__="dedup_rds_connected"} offset 5m', {"dedup_rds_connected"}),
        ("histogram_quantile(0.99, sum without (le) (rate(a_bucket[5m:1m])))", {"a_bucket"}),
        (
            "time() - market_registry_last_sync_timestamp > 1e3",
            {"market_registry_last_sync_timestamp"},
        ),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_ensure_tools_script_is_quick_and_idempotent_when_tools_present() -> None:
    require_tool("promtool")
    require_tool("systemd-analyze")
    proc = run(["bash", str(REPO / "scripts" / "ensure-tools.sh")], timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed" not in proc.stderr
    assert shutil.which("promtool")
