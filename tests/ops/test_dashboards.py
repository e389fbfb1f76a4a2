"""grafana/: four dashboards whose PromQL parses (promtool) and reads only exported metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._promql import metric_names, substitute_grafana_variables
from ._tools import REPO, require_tool, run
from .exported_metrics import ARCHIVE, DATABASE, DEDUPLICATOR, GATHERER, HISTOGRAM, series_names

DASHBOARDS = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"
EXPECTED_TITLES = {
    "Gatherer Overview",
    "Deduplicator Sync",
    "Database Performance",
    "WebSocket Health",
}
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Stand-ins for dashboard query variables when parsing (the values never matter).
QUERY_VARIABLES = {"$instance": "gatherer-x:9090"}


def load_dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "no grafana/dashboards/*.json"
    return {f.name: json.loads(f.read_text()) for f in files}


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def exprs() -> list[tuple[str, str, str]]:
    """(file, panel title, expr) for every target."""
    out = []
    for name, dash in load_dashboards().items():
        for p in panels(dash):
            for t in p.get("targets", []):
                out.append((name, p["title"], t["expr"]))
    return out


def plain(expr: str) -> str:
    return substitute_grafana_variables(expr, QUERY_VARIABLES)


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    dashes = load_dashboards()
    assert {d["title"] for d in dashes.values()} == EXPECTED_TITLES
    uids = [d["uid"] for d in dashes.values()]
    assert len(set(uids)) == len(uids) == 4
    for d in dashes.values():
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{d['title']}: duplicate panel ids"


def test_datasource_is_the_template_variable_everywhere() -> None:
    for name, dash in load_dashboards().items():
        ds_vars = [v for v in dash["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
        assert (
            ds_vars and ds_vars[0]["type"] == "datasource" and ds_vars[0]["query"] == "prometheus"
        ), name
        for p in panels(dash):
            if p["type"] == "row":
                continue
            assert p["datasource"] == DS_REF, f"{name}/{p['title']}"
            for t in p["targets"]:
                assert t["datasource"] == DS_REF, f"{name}/{p['title']}"
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"] == DS_REF


def test_no_hard_coded_instances_hosts_or_datasource_names() -> None:
    for name, dash in load_dashboards().items():
        text = json.dumps(dash)
        assert not re.search(r"gatherer-\d", text), f"{name}: hard-coded gatherer instance"
        assert not re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", text), f"{name}: IP address"
        assert not re.search(r"\.(amazonaws\.com|internal|local)\b", text), f"{name}: host name"
        assert "localhost" not in text, name


def test_every_panel_sets_a_unit_and_has_a_query() -> None:
    count = 0
    for name, dash in load_dashboards().items():
        for p in panels(dash):
            if p["type"] == "row":
                continue
            count += 1
            assert p["fieldConfig"]["defaults"].get("unit"), f"{name}/{p['title']}: no unit"
            assert p["targets"], f"{name}/{p['title']}: no query"
            assert all(t["expr"].strip() for t in p["targets"])
    assert count >= 40


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """promtool check rules parses each expression as a recording rule."""
    promtool = require_tool("promtool")
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": plain(e)} for i, (_, _, e) in enumerate(exprs())
    ]
    assert len(rules) >= 60
    rule_file = tmp_path / "dashboard-exprs.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = run([promtool, "check", "rules", str(rule_file)])
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        bad = re.findall(r"expr_(\d+)", out)
        detail = [exprs()[int(i)] for i in bad[:5]]
        pytest.fail(f"promtool rejects dashboard PromQL: {out}\n{detail}", pytrace=False)
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def test_promtool_parse_check_can_fail(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule_file = tmp_path / "bad.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "x",
                        "rules": [
                            {
                                "record": "x:y",
                                "expr": "sum by (instance (rate(writer_inserts_total[5m]))",
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert run([promtool, "check", "rules", str(rule_file)]).returncode != 0


def test_dashboards_only_use_exported_metrics() -> None:
    allowed = series_names()
    unknown = {(f, title): metric_names(plain(e)) - allowed for f, title, e in exprs()}
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, (
        f"metrics not exported by the code (tests/ops/exported_metrics.py): {unknown}"
    )


def test_every_headline_metric_has_a_panel() -> None:
    used: set[str] = set()
    for _, _, e in exprs():
        used |= metric_names(plain(e))
    missing = []
    for family, kind in {**GATHERER, **DATABASE, **DEDUPLICATOR, **ARCHIVE}.items():
        candidates = (
            {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
            if kind == HISTOGRAM
            else {family}
        )
        if not candidates & used:
            missing.append(family)
    assert not missing, f"exported metrics shown on no dashboard: {missing}"


def test_no_per_market_label_in_dashboards() -> None:
    for f, title, e in exprs():
        assert "ticker" not in e, f"{f}/{title}"


def test_provisioning_files() -> None:
    dash_prov = yaml.safe_load((PROVISIONING / "dashboards.yml").read_text())
    assert dash_prov["apiVersion"] == 1
    (provider,) = dash_prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    ds_prov = yaml.safe_load((PROVISIONING / "datasources.yml").read_text())
    (ds,) = ds_prov["datasources"]
    assert ds["type"] == "prometheus"
    # uid and URL come from the environment, never a literal host or uid
    assert ds["uid"] == "${PROMETHEUS_DS_UID}"
    assert ds["url"] == "${PROMETHEUS_URL}"
