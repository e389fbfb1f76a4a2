"""Every file terraform puts on a host, rendered offline by the real terraform binary from
examples/prod.tfvars.example (tests/ops/_host_files.py), is what the services accept.

Guards: the deduplicator's config has the schema's ``database:`` blocks (a flat gatherer entry
was refused with exit 2), every config validates against its service's schema, export.yaml
exists, each gatherer names its own Kalshi-key and admin-token secrets, every secret named is one
terraform creates and that host's role may read, user data carries the files byte for byte, and
a bad input to the rendering is refused with one line naming it.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deduplicator.config import DeduplicatorConfig
from gatherer.config import GathererConfig
from kalshi_data.archive.config import ArchiveConfig
from shared.config import Environment, parse_config

from ._host_files import Rendered, RenderError, render, user_data_files
from ._tools import REPO, require_tool, run
from .test_terraform import load_all

UNITS = REPO / "systemd"
GATHERER_FILES = {
    "/etc/kalshi/gatherer.yaml", "/etc/kalshi/gatherer.env", "/etc/kalshi/migrator.env",
    "/etc/kalshi/bootstrap.env", "/etc/systemd/system/kalshi-gatherer.service",
    "/etc/systemd/system/kalshi-migrator.service", "/usr/local/sbin/kalshi-bootstrap",
}
DEDUP_FILES = {
    "/etc/kalshi/deduplicator.yaml", "/etc/kalshi/deduplicator.env", "/etc/kalshi/export.yaml",
    "/etc/kalshi/export.env", "/etc/kalshi/migrator.env", "/etc/kalshi/bootstrap.env",
    "/etc/systemd/system/kalshi-deduplicator.service", "/etc/systemd/system/kalshi-migrator.service",
    "/etc/systemd/system/kalshi-export.service", "/etc/systemd/system/kalshi-export.timer",
    "/usr/local/sbin/kalshi-bootstrap",
}
BOOTSTRAP = REPO / "terraform" / "host-files" / "bootstrap"


def env_file(text: str) -> dict[str, str]:
    """A systemd EnvironmentFile (also sourced by the bootstrap): KEY=VALUE lines, # comments."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=VALUE: {line!r}"
        out[key] = value.strip("'")
    return out


def _secret_refs(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k.endswith("_secret") and isinstance(v, str)] + \
            [r for v in doc.values() for r in _secret_refs(v)]
    if isinstance(doc, list):
        return [r for v in doc for r in _secret_refs(v)]
    return []


def test_three_gatherers_and_a_deduplicator_get_every_file(host_files: Rendered) -> None:
    assert len(host_files.gatherer_files) == 3
    for files in host_files.gatherer_files:
        assert set(files) == GATHERER_FILES
    assert set(host_files.deduplicator_files) == DEDUP_FILES
    for files in host_files.hosts().values():
        for path, content in files.items():
            if path.startswith("/etc/systemd/system/"):
                assert content == (UNITS / Path(path).name).read_text(), path
            assert "${" not in content or path.startswith(("/etc/systemd/", "/usr/")), path
            assert content.endswith("\n"), path


def test_user_data_carries_the_files_exactly(host_files: Rendered) -> None:
    pairs = list(zip(host_files.gatherer_user_data, host_files.gatherer_files, strict=True))
    pairs.append((host_files.deduplicator_user_data, host_files.deduplicator_files))
    for user_data, files in pairs:
        written = user_data_files(user_data)
        assert {p: c for p, (_, c) in written.items()} == files
        assert all(perm == ("0755" if p.startswith("/usr/local/sbin/") else "0644")
                   for p, (perm, _) in written.items())
        assert yaml.safe_load(user_data)["runcmd"] == [["/usr/local/sbin/kalshi-bootstrap"]]
        assert len(gzip.compress(user_data.encode())) < 16384, "EC2 user data limit (gzipped)"


def test_configs_validate_against_the_service_schemas(host_files: Rendered) -> None:
    env = Environment({})  # AWS secrets are named only; nothing is fetched while validating
    for i, files in enumerate(host_files.gatherer_files, 1):
        g = parse_config(files["/etc/kalshi/gatherer.yaml"], GathererConfig, env)
        assert g.gatherer_id == f"gatherer-{i}"
        assert g.kalshi.api_key is not None and g.kalshi.api_key.source == f"aws:kalshi/prod/kalshi-api-key-{i}"
        assert g.admin.token is not None and g.admin.token.source == f"aws:kalshi/prod/admin-token-{i}"
        assert g.kalshi.rest_base == "https://external-api.kalshi.com/trade-api/v2"
        assert g.database.host == "/var/run/postgresql" and g.database.user == "gatherer"
        assert g.retention.consumers == ("deduplicator",)
    d = parse_config(host_files.deduplicator_files["/etc/kalshi/deduplicator.yaml"], DeduplicatorConfig, env)
    assert [(s.id, s.database.host, s.database.user) for s in d.gatherers] == [
        (f"gatherer-{i}", f"gatherer-{i}.internal", "dedup_reader") for i in (1, 2, 3)]
    assert d.production.host == "kalshi-prod.c0ffee123456.us-east-1.rds.amazonaws.com"
    assert d.production.sslmode == "require" and d.consumer_id == "deduplicator"
    e = parse_config(host_files.deduplicator_files["/etc/kalshi/export.yaml"], ArchiveConfig, env)
    assert e.archive.bucket == "kalshi-prod-archive-123456789012" and e.archive.region == "us-east-1"
    assert e.database.user == "analyst" and e.database.host == d.production.host


def test_env_files_give_the_units_what_they_read(host_files: Rendered) -> None:
    for files in host_files.hosts().values():
        for path, content in files.items():
            if path.endswith(".env"):
                assert env_file(content)["AWS_DEFAULT_REGION"] == "us-east-1", path
    g = env_file(host_files.gatherer_files[0]["/etc/kalshi/migrator.env"])
    assert g["KALSHI_MIGRATE_TARGET"] == "gatherer" and g["KALSHI_MIGRATE_ARGS"] == "--roles"
    assert g["KALSHI_MIGRATE_DSN"] == "postgresql:///kalshi_ts?host=/var/run/postgresql&port=5432"
    p = env_file(host_files.deduplicator_files["/etc/kalshi/migrator.env"])
    assert p["KALSHI_MIGRATE_TARGET"] == "production" and p["PGPASSFILE"] == "/etc/kalshi/migrator.pgpass"
    assert p["KALSHI_MIGRATE_DSN"] == ("postgresql://kalshi_admin@kalshi-prod.c0ffee123456.us-east-1.rds"
                                       ".amazonaws.com:5432/kalshi_prod?sslmode=require")
    # the units read exactly these files
    for files in host_files.hosts().values():
        for path, content in files.items():
            if path.endswith(".service"):
                for ref in re.findall(r"^EnvironmentFile=-?(\S+)$", content, re.MULTILINE):
                    assert ref in files, f"{Path(path).name} reads {ref}, which the host never gets"
                for ref in re.findall(r"--config (\S+)", content):
                    assert ref in files, f"{Path(path).name} reads {ref}, which the host never gets"


def test_every_secret_named_exists_and_the_host_may_read_it(host_files: Rendered) -> None:
    tf = load_all()
    created = {f"kalshi/prod/{k}" for k in tf["locals"]["generated_password_secrets"]}
    created |= {f"kalshi/prod/{kind}-{i}" for kind in ("kalshi-api-key", "admin-token") for i in (1, 2, 3)}
    assert set(host_files.secret_names.values()) == created
    policies = {name: str(tf["data"]["aws_iam_policy_document"][name]["statement"])
                for name in ("gatherer", "deduplicator")}

    def readable(role: str, name: str) -> bool:
        short = name.removeprefix("kalshi/prod/")
        per_host = re.fullmatch(r"(kalshi-api-key|admin-token)-\d", short)
        ref = (f"aws_secretsmanager_secret.{'kalshi_api_key' if short.startswith('kalshi') else 'admin_token'}"
               "[count.index].arn") if per_host else f'aws_secretsmanager_secret.db["{short}"].arn'
        return ref in policies[role]

    for host, files in host_files.hosts().items():
        role = "deduplicator" if host == "deduplicator" else "gatherer"
        refs = []
        for path, content in files.items():
            if path.endswith(".yaml"):
                refs += _secret_refs(yaml.safe_load(content))
            elif path.endswith("bootstrap.env"):
                refs += [v for k, v in env_file(content).items() if k.endswith("_SECRET")]
        assert refs, host
        for ref in refs:
            assert ref in created, f"{host}: {ref} is not a secret terraform creates"
            assert readable(role, ref), f"{host}: the {role} role may not read {ref}"
        if role == "gatherer":
            n = host.rsplit("-", 1)[1]
            assert {r for r in refs if re.search(r"-\d$", r)} == {
                f"kalshi/prod/kalshi-api-key-{n}", f"kalshi/prod/admin-token-{n}"}


def test_nothing_secret_is_written(host_files: Rendered) -> None:
    for files in host_files.hosts().values():
        for path, content in files.items():
            assert not re.search(r"(?i)^\s*(password|token|private_key|api_key)\s*[:=]", content, re.MULTILINE), path
            assert "BEGIN" not in content or path.startswith("/usr/local/sbin/"), path


@pytest.mark.parametrize(("overrides", "extra_vars", "named"), [
    ({"archive_bucket": "null"}, {}, "archive_bucket"),
    ({"rds_host": '""'}, {}, "rds_host must not be empty"),
    ({}, {"monitoring_cidrs": "[]"}, "monitoring_cidrs must list at least one CIDR"),
    ({}, {"kalshi_env": "staging"}, "kalshi_env must be prod or demo"),
], ids=["unset-value", "empty-host", "no-monitoring-cidr", "bad-kalshi-env"])
def test_bad_input_is_refused_naming_it(tmp_path: Path, overrides: dict[str, str],
                                        extra_vars: dict[str, str], named: str) -> None:
    with pytest.raises(RenderError) as err:
        render(tmp_path, overrides=overrides, extra_vars=extra_vars)
    text = " ".join(str(err.value).split())
    assert "Error:" in text and named in text, text


@pytest.mark.parametrize("script", sorted(p.name for p in BOOTSTRAP.glob("*.sh")))
def test_bootstrap_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = require_tool("shellcheck")
    proc = run([shellcheck, "--shell=bash", "--severity=style", str(BOOTSTRAP / script)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_catches_a_broken_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text((BOOTSTRAP / "gatherer.sh").read_text().replace('mount /var/lib/postgresql',
                                                                    'mount $DATA_DIR'))
    proc = run([require_tool("shellcheck"), "--shell=bash", str(bad)])
    assert proc.returncode != 0 and "SC2086" in proc.stdout, proc.stdout
