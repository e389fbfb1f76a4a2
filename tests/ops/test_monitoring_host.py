"""terraform/monitoring.tf and ./monitoring: the optional monitoring host.

The module renders every file of the host from plain values and needs no provider, so this test
renders it offline with the real terraform binary (init + apply of a throwaway root module that
only calls it, local state in a temp dir) and checks the result with the real tools: promtool
for Prometheus' configuration and rules, amtool for Alertmanager's, bash -n for the bootstrap.
The root module's resources are checked as parsed HCL (no provider is available offline).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._tools import REPO, require_tool, run
from .test_terraform import load_all, res

MODULE = REPO / "terraform" / "monitoring"
VALUES = {
    "aws_region": "us-east-1",
    "gatherer_ips": ["10.40.16.10", "10.40.32.10", "10.40.48.10"], "deduplicator_ip": "10.40.16.20",
    "metrics_port": 9090, "node_exporter_port": 9100, "config_bucket": "kalshi-prod-monitoring-x",
    "pagerduty_secret": "kalshi/prod/alertmanager-pagerduty-routing-key",
    "slack_secret": "kalshi/prod/alertmanager-slack-webhook-url",
    "grafana_admin_secret": "kalshi/prod/grafana-admin-password",
}
USER_DATA_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    terraform = require_tool("terraform")
    root = tmp_path_factory.mktemp("monitoring-render")
    args = "\n".join(f"  {k} = {json.dumps(v)}" for k, v in VALUES.items())
    (root / "main.tf").write_text(
        # a relative source: terraform uses a local module in place (an absolute one is copied)
        f'module "m" {{\n  source = "{os.path.relpath(MODULE, root)}"\n{args}\n}}\n'
        'output "files" { value = module.m.files }\n'
        'output "cloud_config" { value = module.m.cloud_config }\n'
        'output "targets" { value = module.m.targets }\n')
    for cmd in (["init", "-input=false", "-no-color"],
                ["apply", "-auto-approve", "-input=false", "-no-color", "-lock=false"]):
        proc = run([terraform, f"-chdir={root}", *cmd], timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run([terraform, f"-chdir={root}", "output", "-json"])
    assert proc.returncode == 0, proc.stderr
    return {k: v["value"] for k, v in json.loads(proc.stdout).items()}


@pytest.fixture(scope="module")
def host(rendered: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered files laid out under a fake root, as the bootstrap lays them out."""
    root = tmp_path_factory.mktemp("monitoring-host")
    for path, content in rendered["files"].items():
        f = root / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
    return root


def test_prometheus_config_and_rules_pass_promtool(host: Path) -> None:
    cfg = host / "etc/prometheus/kalshi/prometheus.yml"
    assert cfg.read_text() == (REPO / "alerts" / "prometheus.yml").read_text()
    proc = run([require_tool("promtool"), "check", "config", str(cfg)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS: 4 rule files found" in out and "does not exist" not in out, out
    rules = sorted(p.name for p in (host / "etc/prometheus/kalshi/rules").iterdir())
    assert rules == ["archive.yml", "deduplicator.yml", "gatherer.yml", "infrastructure.yml"]
    for name in rules:
        assert (host / "etc/prometheus/kalshi/rules" / name).read_text() == (REPO / "alerts" / name).read_text()


def test_targets_name_every_host_by_its_fleet_name(rendered: dict[str, Any], host: Path) -> None:
    t = json.loads((host / "etc/prometheus/kalshi/targets/kalshi-gatherer.json").read_text())
    assert t == [{"targets": [f"{ip}:9090"], "labels": {"instance": f"gatherer-{i + 1}"}}
                 for i, ip in enumerate(VALUES["gatherer_ips"])]
    d = json.loads((host / "etc/prometheus/kalshi/targets/kalshi-deduplicator.json").read_text())
    assert d == [{"targets": ["10.40.16.20:9090"], "labels": {"instance": "deduplicator"}}]
    node = json.loads((host / "etc/prometheus/kalshi/targets/node.json").read_text())
    assert len(node) == 5 and all(g["targets"][0].endswith(":9100") for g in node)
    assert set(rendered["targets"]) == {"kalshi-gatherer", "kalshi-deduplicator", "node", "alertmanager"}


def test_alertmanager_config_passes_amtool(host: Path) -> None:
    cfg = host / "etc/prometheus/kalshi/alertmanager.yml"
    assert cfg.read_text() == (REPO / "alerts" / "alertmanager.yml").read_text()
    proc = run([require_tool("amtool"), "check-config", str(cfg)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisioning_and_dashboards_are_the_repos(host: Path) -> None:
    for name, where in (("datasources.yml", "datasources"), ("dashboards.yml", "dashboards")):
        got = host / f"etc/grafana/provisioning/{where}/kalshi-data.yml"
        assert got.read_text() == (REPO / "grafana" / "provisioning" / name).read_text()
    dash = yaml.safe_load((REPO / "grafana/provisioning/dashboards.yml").read_text())["providers"][0]
    placed = host / dash["options"]["path"].lstrip("/")
    repo = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    assert sorted(p.name for p in placed.iterdir()) == [p.name for p in repo]
    for p in repo:
        assert (placed / p.name).read_text() == p.read_text()
    env = (host / "etc/default/grafana-server.kalshi").read_text()
    assert "PROMETHEUS_DS_UID=prometheus-kalshi" in env and "PROMETHEUS_URL=http://localhost:9090" in env


def test_service_flags_point_at_the_kalshi_config(host: Path) -> None:
    prom = (host / "etc/default/prometheus").read_text()
    assert "--config.file=/etc/prometheus/kalshi/prometheus.yml" in prom and "retention.time=30d" in prom
    am = (host / "etc/default/prometheus-alertmanager").read_text()
    assert "--config.file=/etc/prometheus/kalshi/alertmanager.yml" in am


def test_cloud_config_is_small_valid_and_runs_a_valid_bootstrap(rendered: dict[str, Any], tmp_path: Path) -> None:
    text = rendered["cloud_config"]
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "awscli"} <= set(doc["packages"])
    (boot,) = doc["write_files"]
    assert boot["path"] == "/usr/local/sbin/kalshi-monitoring-bootstrap" and boot["permissions"] == "0755"
    assert doc["runcmd"] == [["/usr/local/sbin/kalshi-monitoring-bootstrap"]]
    script = tmp_path / "bootstrap.sh"
    script.write_text(boot["content"])
    proc = run(["bash", "-n", str(script)])
    assert proc.returncode == 0, proc.stderr
    body = boot["content"]
    for v in ("kalshi-prod-monitoring-x", VALUES["pagerduty_secret"], VALUES["slack_secret"],
              VALUES["grafana_admin_secret"], "us-east-1"):
        assert v in body
    assert "/etc/alertmanager/secrets/" in body  # where alerts/alertmanager.yml reads its secrets
    # EC2 user data is at most 16 KiB; the files themselves travel through the config bucket.
    assert len(base64.b64encode(gzip.compress(text.encode()))) < USER_DATA_LIMIT


def test_no_secret_value_is_rendered(rendered: dict[str, Any]) -> None:
    blob = json.dumps(rendered)
    for needle in ("hooks.slack.com/services/", "routing_key:", "api_url:", "GF_SECURITY_ADMIN_PASSWORD=\\\""):
        assert needle not in blob


# --- the root module's resources, as parsed HCL --------------------------------------------------
@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    return load_all()


def test_everything_is_gated_on_monitoring_enabled(tf: dict[str, Any]) -> None:
    assert tf["variable"]["monitoring_enabled"]["default"] is False
    text = (REPO / "terraform" / "monitoring.tf").read_text()
    blocks = [b for b in text.split("\nresource ")[1:]]
    assert blocks
    for b in blocks:
        head = b.split("\n", 3)
        gated = "local.monitoring_count" in b.split("\n\n")[0] or "var.monitoring_enabled" in b.split("\n\n")[0] \
            or "local.monitoring_scrapes" in b.split("\n\n")[0]
        assert gated, f"resource {head[0]} is not gated on monitoring_enabled"


def test_uis_only_from_monitoring_cidrs_scrapes_only_to_the_fleet(tf: dict[str, Any]) -> None:
    ingress = res(tf, "aws_vpc_security_group_ingress_rule")
    ui = ingress["monitoring_ui"]
    assert ui["security_group_id"] == "${aws_security_group.monitoring[0].id}"
    assert ui["cidr_ipv4"] == "${each.value.cidr}"
    assert "var.monitoring_cidrs" in str(ui["for_each"])
    assert {str(v) for v in tf["locals"]["monitoring_ui_ports"].values()} == {"3000", "9090", "9093"}
    scraped = ingress["scraped_by_monitoring"]
    assert scraped["referenced_security_group_id"] == "${aws_security_group.monitoring[0].id}"
    assert "cidr_ipv4" not in scraped
    egress = res(tf, "aws_vpc_security_group_egress_rule")["monitoring_scrape"]
    assert egress["referenced_security_group_id"] == "${each.value.sg}"
    inst = res(tf, "aws_instance")["monitoring"]
    assert inst["subnet_id"] == "${aws_subnet.private[0].id}"
    assert "associate_public_ip_address" not in inst


def test_monitoring_role_reads_only_its_secrets_and_bucket(tf: dict[str, Any]) -> None:
    sts = tf["data"]["aws_iam_policy_document"]["monitoring"]["statement"]
    actions = sorted(a for st in sts for a in st["actions"])
    assert actions == ["s3:GetObject", "s3:ListBucket", "secretsmanager:DescribeSecret",
                       "secretsmanager:GetSecretValue"]
    resources = " ".join(r for st in sts for r in (st["resources"] if isinstance(st["resources"], list)
                                                    else [st["resources"]]))
    assert "aws_secretsmanager_secret.monitoring" in resources and "aws_s3_bucket.monitoring[0].arn" in resources
    assert "archive" not in resources and "kalshi_api_key" not in resources
