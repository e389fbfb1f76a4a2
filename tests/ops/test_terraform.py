"""terraform/: parsed offline with python-hcl2; `terraform fmt -check` with the real binary.

`terraform validate` needs the hashicorp/aws and hashicorp/random providers from the Terraform
registry, which this project's machines cannot reach, so it is not run here (see docs/runbook.md,
"Deploy"): run it wherever `terraform init` works.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest

from ._tools import REPO, require_tool, run

TF = REPO / "terraform"
EXAMPLE = REPO / "examples" / "prod.tfvars.example"
SPEC_VARIABLE_DEFAULTS = {
    "project": None,
    "environment": None,
    "aws_region": None,
    "vpc_cidr": None,
    "gatherer_count": 3,
    "gatherer_instance_type": "t4g.2xlarge",
    "deduplicator_instance_type": "t4g.xlarge",
    "rds_instance_class": "db.t4g.large",
    "gatherer_volume_size": 200,
    "rds_storage_size": 500,
}
SPEC_OUTPUTS = {"gatherer_ips", "deduplicator_ip", "rds_endpoint", "rds_port", "s3_bucket"}
MONITORING_PORTS = {"8080", "9090", "9100"}


def _unquote(v: Any) -> Any:
    """python-hcl2 >= 7 keeps string quotes and marks blocks; strip both."""
    if isinstance(v, str):
        return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v
    if isinstance(v, list):
        return [_unquote(x) for x in v]
    if isinstance(v, dict):
        return {_unquote(k): _unquote(x) for k, x in v.items() if not k.startswith("__")}
    return v


def load_all() -> dict[str, Any]:
    """Merged view: {'variable': {...}, 'output': {...}, 'resource': {type: {name: body}}, ...}."""
    merged: dict[str, Any] = {
        "variable": {},
        "output": {},
        "resource": {},
        "data": {},
        "locals": {},
    }
    files = sorted(TF.glob("*.tf"))
    assert files, "no terraform/*.tf"
    for f in files:
        with f.open() as fh:
            doc = _unquote(hcl2.load(fh))
        for block in doc.get("variable", []):
            merged["variable"].update(block)
        for block in doc.get("output", []):
            merged["output"].update(block)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        assert name not in merged[kind].setdefault(rtype, {}), (
                            f"duplicate {rtype}.{name}"
                        )
                        merged[kind][rtype][name] = body
        for block in doc.get("locals", []):
            merged["locals"].update(block)
    return merged


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    return load_all()


def res(tf: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = tf["resource"].get(rtype)
    assert found, f"no {rtype} resource"
    return found


def test_terraform_fmt_check(tmp_path: Path) -> None:
    terraform = require_tool("terraform")
    proc = run([terraform, "fmt", "-check", "-recursive", "-diff", str(TF)])
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}{proc.stderr}"
    # the example is a tfvars file under another extension
    copy = tmp_path / "prod.tfvars"
    shutil.copy(EXAMPLE, copy)
    proc = run([terraform, "fmt", "-check", "-diff", str(copy)])
    assert proc.returncode == 0, f"examples/prod.tfvars.example is not fmt-clean:\n{proc.stdout}"


def test_spec_variables_with_defaults(tf: dict[str, Any]) -> None:
    variables = tf["variable"]
    for name, default in SPEC_VARIABLE_DEFAULTS.items():
        assert name in variables, f"variable {name} missing"
        assert variables[name].get("description"), f"variable {name} has no description"
        if default is not None:
            assert variables[name]["default"] == default, name
    assert all(v.get("type") for v in variables.values()), "every variable declares a type"


def test_spec_outputs(tf: dict[str, Any]) -> None:
    assert SPEC_OUTPUTS <= set(tf["output"])
    assert "aws_instance.gatherer[*].private_ip" in tf["output"]["gatherer_ips"]["value"]
    # the runbook's `psql -h $(terraform output -raw rds_endpoint)`: a host name, port apart
    assert tf["output"]["rds_endpoint"]["value"] == "${aws_db_instance.production.address}"
    assert tf["output"]["rds_port"]["value"] == "${aws_db_instance.production.port}"
    assert "aws_s3_bucket.archive.bucket" in tf["output"]["s3_bucket"]["value"]
    for name, out in tf["output"].items():
        assert "random_password" not in str(out["value"]), f"output {name} leaks a password"


def test_example_tfvars_sets_only_declared_variables(tf: dict[str, Any]) -> None:
    with EXAMPLE.open() as fh:
        example = _unquote(hcl2.load(fh))
    assert set(SPEC_VARIABLE_DEFAULTS) <= set(example)
    assert set(example) <= set(tf["variable"]), set(example) - set(tf["variable"])
    assert example["gatherer_count"] == 3
    # what a working deployment needs and has no default: /health and /metrics must be reachable
    required = {n for n, v in tf["variable"].items() if "default" not in v}
    assert required == {"monitoring_cidrs"} and example["monitoring_cidrs"], required
    assert not re.search(r"(?i)(password|secret|private_key)\s*=", EXAMPLE.read_text())


def test_network_spans_azs_with_nat(tf: dict[str, Any]) -> None:
    subnets = res(tf, "aws_subnet")
    assert subnets["private"]["count"] == "${var.az_count}"
    assert "local.azs[count.index]" in subnets["private"]["availability_zone"]
    assert subnets["public"]["map_public_ip_on_launch"] is False
    assert res(tf, "aws_nat_gateway")["main"]
    routes = res(tf, "aws_route_table")["private"]["route"]
    assert any("nat_gateway_id" in r for r in routes)
    az_validation = tf["variable"]["az_count"]["validation"][0]["condition"]
    assert ">= 2" in az_validation


def test_security_groups_least_privilege(tf: dict[str, Any]) -> None:
    for name, sg in res(tf, "aws_security_group").items():
        assert "ingress" not in sg and "egress" not in sg, (
            f"{name}: use the separate rule resources"
        )
    ingress = res(tf, "aws_vpc_security_group_ingress_rule")
    text = str(ingress)
    assert "0.0.0.0/0" not in text, "no ingress from the internet"
    assert "from_port': 22" not in text and "'22'" not in text, "no SSH"
    pg = ingress["gatherer_postgres_from_deduplicator"]
    assert pg["security_group_id"] == "${aws_security_group.gatherer.id}"
    assert pg["referenced_security_group_id"] == "${aws_security_group.deduplicator.id}"
    assert pg["from_port"] == pg["to_port"] == "${local.postgres_port}"
    rds = ingress["rds_postgres_from_deduplicator"]
    assert rds["security_group_id"] == "${aws_security_group.rds.id}"
    assert rds["referenced_security_group_id"] == "${aws_security_group.deduplicator.id}"
    # Only these ingress rules exist: postgres x2, the monitoring set, and the optional
    # monitoring host's (checked in test_monitoring_host.py).
    assert set(ingress) == {
        "gatherer_postgres_from_deduplicator",
        "rds_postgres_from_deduplicator",
        "monitoring",
        "monitoring_ui",
        "scraped_by_monitoring",
    }
    mon = ingress["monitoring"]
    assert mon["for_each"] == "${local.monitoring_rules}"
    assert mon["cidr_ipv4"] == "${each.value.cidr}"
    # the monitoring rules are built from var.monitoring_cidrs and exactly the health/metrics/node ports
    locals_text = str(tf["locals"])
    assert "var.monitoring_cidrs" in locals_text
    ports = tf["locals"]["monitoring_ports"]
    assert set(ports.values()) == {
        "${local.health_port}",
        "${local.metrics_port}",
        "${local.node_exporter_port}",
    }
    assert {
        str(tf["locals"][k]) for k in ("health_port", "metrics_port", "node_exporter_port")
    } == MONITORING_PORTS
    assert any("0.0.0.0/0" in v["condition"] for v in tf["variable"]["monitoring_cidrs"]["validation"])
    # RDS accepts nothing but the deduplicator; RDS has no egress rule at all
    egress = res(tf, "aws_vpc_security_group_egress_rule")
    assert not [
        n for n, r in egress.items() if r["security_group_id"] == "${aws_security_group.rds.id}"
    ]
    dedup_pg = {
        r["referenced_security_group_id"]
        for r in egress.values()
        if r["security_group_id"] == "${aws_security_group.deduplicator.id}"
        and "referenced_security_group_id" in r
    }
    assert dedup_pg == {"${aws_security_group.gatherer.id}", "${aws_security_group.rds.id}"}


def test_instances(tf: dict[str, Any]) -> None:
    inst = res(tf, "aws_instance")
    g, d = inst["gatherer"], inst["deduplicator"]
    assert g["count"] == "${var.gatherer_count}"
    assert g["instance_type"] == "${var.gatherer_instance_type}"
    assert d["instance_type"] == "${var.deduplicator_instance_type}"
    assert "aws_subnet.private[count.index % var.az_count].id" in g["subnet_id"]
    for i in (g, d):
        assert "associate_public_ip_address" not in i or i["associate_public_ip_address"] is False
        assert i["metadata_options"][0]["http_tokens"] == "required"
        root = i["root_block_device"][0]
        assert root["volume_type"] == "gp3" and root["encrypted"] is True
        assert "base64gzip(module.host_files." in i["user_data_base64"]
    vol = res(tf, "aws_ebs_volume")["gatherer_data"]
    assert vol["type"] == "gp3" and vol["encrypted"] is True
    assert vol["size"] == "${var.gatherer_volume_size}"


def test_rds(tf: dict[str, Any]) -> None:
    db = res(tf, "aws_db_instance")["production"]
    assert db["engine"] == "postgres"
    assert db["instance_class"] == "${var.rds_instance_class}"
    assert db["allocated_storage"] == "${var.rds_storage_size}"
    assert db["storage_encrypted"] is True
    assert db["publicly_accessible"] is False
    assert db["multi_az"] == "${var.rds_multi_az}"
    assert db["backup_retention_period"] == "${var.rds_backup_retention_days}"
    assert db["skip_final_snapshot"] == "${var.disposable}"  # production (default): a final snapshot
    assert db["identifier"] == "${local.name}"  # kalshi-prod with the defaults
    assert tf["locals"]["name"] == "${var.project}-${var.environment}"
    assert db["db_name"] == "${local.production_db}" and tf["locals"]["production_db"] == "kalshi_prod"
    assert db["vpc_security_group_ids"] == ["${aws_security_group.rds.id}"]
    params = {
        p["name"]: p["value"] for p in res(tf, "aws_db_parameter_group")["production"]["parameter"]
    }
    assert params["rds.force_ssl"] == "1"


def test_archive_bucket(tf: dict[str, Any]) -> None:
    assert res(tf, "aws_s3_bucket")["archive"]
    pab = res(tf, "aws_s3_bucket_public_access_block")["archive"]
    assert all(
        pab[k] is True
        for k in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )
    ver = res(tf, "aws_s3_bucket_versioning")["archive"]
    assert ver["versioning_configuration"][0]["status"] == "Enabled"
    sse = res(tf, "aws_s3_bucket_server_side_encryption_configuration")["archive"]
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in (
        "AES256",
        "aws:kms",
    )
    lc = res(tf, "aws_s3_bucket_lifecycle_configuration")["archive"]["rule"][0]
    assert lc["status"] == "Enabled" and lc["transition"]
    assert res(tf, "aws_s3_bucket_policy")["archive"]


def test_secrets_named_per_spec(tf: dict[str, Any]) -> None:
    names = tf["locals"]["generated_password_secrets"]
    assert {"rds-master-password", "gatherer-db-password", "dedup-reader-password",
            "deduplicator-db-password", "analyst-password"} == set(names)
    secrets = res(tf, "aws_secretsmanager_secret")
    assert secrets["db"]["name"] == "${local.secret_path}/${each.key}"
    assert (
        secrets["kalshi_api_key"]["name"]
        == "${local.secret_path}/kalshi-api-key-${count.index + 1}"
    )
    assert secrets["kalshi_api_key"]["count"] == "${var.gatherer_count}"
    assert tf["locals"]["secret_path"] == "${var.project}/${var.environment}"
    assert "kalshi_api_key" not in res(tf, "aws_secretsmanager_secret_version"), (
        "API keys are uploaded by operators"
    )
    # each gatherer's admin API token is generated into its own secret
    token = secrets["admin_token"]
    assert token["name"] == "${local.secret_path}/admin-token-${count.index + 1}"
    assert token["count"] == "${var.gatherer_count}"
    version = res(tf, "aws_secretsmanager_secret_version")["admin_token"]
    assert version["secret_string"] == "${random_password.admin_token[count.index].result}"


def _statements(tf: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return tf["data"]["aws_iam_policy_document"][name]["statement"]


def test_iam_scoped_to_exact_secrets_and_bucket(tf: dict[str, Any]) -> None:
    for role in ("gatherer", "deduplicator"):
        for st in _statements(tf, role):
            for r in st["resources"]:
                assert "*" not in r.replace("/*", ""), f"{role}: wildcard resource {r}"
                if any(a.startswith("secretsmanager:") for a in st["actions"]):
                    assert r.startswith("${aws_secretsmanager_secret."), r
            assert all(a != "*" and not a.endswith(":*") for a in st["actions"]), st["actions"]
    gatherer = _statements(tf, "gatherer")
    assert not [a for st in gatherer for a in st["actions"] if a.startswith("s3:")], (
        "gatherers never touch S3"
    )
    assert "aws_secretsmanager_secret.kalshi_api_key[count.index].arn" in str(gatherer)
    assert "aws_secretsmanager_secret.admin_token[count.index].arn" in str(gatherer)
    dedup = str(_statements(tf, "deduplicator"))
    assert 'aws_secretsmanager_secret.db["analyst-password"].arn' in dedup
    assert "admin_token" not in dedup
    assert "s3:PutObject" in dedup and "aws_s3_bucket.archive.arn" in dedup
    assert "kalshi_api_key" not in dedup
    profiles = res(tf, "aws_iam_instance_profile")
    assert set(profiles) == {"gatherer", "deduplicator", "monitoring"}


def test_private_dns_names_the_runbook_uses(tf: dict[str, Any]) -> None:
    zone = res(tf, "aws_route53_zone")["private"]
    assert zone["name"] == "${var.private_dns_zone}" and tf["variable"]["private_dns_zone"]["default"] == "internal"
    assert zone["vpc"][0]["vpc_id"] == "${aws_vpc.main.id}", "a private zone, attached to the VPC"
    records = res(tf, "aws_route53_record")
    g = records["gatherer"]
    assert g["count"] == "${var.gatherer_count}" and g["type"] == "A"
    assert g["name"] == "${local.gatherer_ids[count.index]}.${var.private_dns_zone}"  # gatherer-N.internal
    assert g["records"] == ["${aws_instance.gatherer[count.index].private_ip}"]
    d = records["deduplicator"]
    assert d["name"] == "deduplicator.${var.private_dns_zone}" and d["records"] == [
        "${aws_instance.deduplicator.private_ip}"]
    r = records["production_rds"]
    assert r["name"] == "production-rds.${var.private_dns_zone}" and r["type"] == "CNAME"
    assert r["records"] == ["${aws_db_instance.production.address}"]
    for rec in records.values():
        assert rec["zone_id"] == "${aws_route53_zone.private.zone_id}"
    # short names (`psql -h production-rds`) resolve through the DHCP search list
    dhcp = res(tf, "aws_vpc_dhcp_options")["main"]
    assert dhcp["domain_name"] == "${local.ec2_domain} ${var.private_dns_zone}"
    assert dhcp["domain_name_servers"] == ["AmazonProvidedDNS"]
    assoc = res(tf, "aws_vpc_dhcp_options_association")["main"]
    assert assoc["dhcp_options_id"] == "${aws_vpc_dhcp_options.main.id}"


def test_disposable_environment_tears_down(tf: dict[str, Any]) -> None:
    """`terraform destroy` works for a disposable environment; production keeps its data."""
    var = tf["variable"]["disposable"]
    assert var["type"] == "${bool}" or var["type"] == "bool"
    assert var["default"] is False
    db = res(tf, "aws_db_instance")["production"]
    assert db["deletion_protection"] == "${var.rds_deletion_protection && !var.disposable}"
    assert db["skip_final_snapshot"] == "${var.disposable}"
    assert db["delete_automated_backups"] == "${var.disposable}"
    assert res(tf, "aws_s3_bucket")["archive"]["force_destroy"] == "${var.disposable}"
    assert res(tf, "aws_route53_zone")["private"]["force_destroy"] == "${var.disposable}"
    assert tf["locals"]["secret_recovery_window"] == (
        "${var.disposable ? 0 : var.secret_recovery_window_days}")
    for name, secret in res(tf, "aws_secretsmanager_secret").items():
        assert secret["recovery_window_in_days"] == "${local.secret_recovery_window}", name
    runbook = (REPO / "docs" / "runbook.md").read_text()
    section = runbook[runbook.index("## Tear down"):]
    assert "-var disposable=true" in section and "terraform destroy" in section
