"""Secrets Manager through shared/config.py against a real API (moto server, tests/fix_aws.py).

The endpoint override is boto3's standard variable, read once in shared/config.py; every
failure an operator can meet is one line naming the secret (never its value), and every service
stops at start with exit code 2 when one of its secrets cannot be read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from shared.config import DatabaseConfig, Environment, fetch_secrets, parse_config
from shared.errors import SecretError
from shared.pgcluster import free_port
from tests.fix_aws import AWS_TEST_ENV, endpoint_env

VALUE = "pw-Zq81-never-printed"


@pytest.fixture
def name(moto_endpoint: str, aws_env: None) -> str:
    return f"test-{uuid.uuid4().hex[:8]}/prod/dedup-reader-password"


def _db(secret: str, env: dict[str, str]) -> DatabaseConfig:
    return parse_config(f"password_secret: {secret}\n", DatabaseConfig, Environment.from_env(env))


def test_endpoint_override_reaches_the_server(name: str, moto_endpoint: str) -> None:
    boto3.client("secretsmanager", endpoint_url=moto_endpoint).create_secret(Name=name, SecretString=VALUE)
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_endpoint}
    assert Environment.from_env(env).aws_endpoint_url("secretsmanager") == moto_endpoint
    assert Environment.from_env({"AWS_ENDPOINT_URL": "http://x:1"}).aws_endpoint_url("s3") == "http://x:1"
    assert Environment.from_env({}).aws_endpoint_url("s3") is None
    cfg = _db(name, env)
    fetch_secrets(cfg)
    assert cfg.password is not None and cfg.password.reveal() == VALUE


@pytest.mark.parametrize("case", ["missing", "no-value", "unreachable"])
def test_unreadable_secret_is_one_line_naming_it(name: str, moto_endpoint: str, case: str) -> None:
    endpoint = moto_endpoint
    if case == "no-value":
        boto3.client("secretsmanager", endpoint_url=moto_endpoint).create_secret(Name=name)
    if case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    cfg = _db(name, {**AWS_TEST_ENV, "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint})
    with pytest.raises(SecretError) as err:
        fetch_secrets(cfg)
    reason = {"missing": "not found in AWS Secrets Manager (wrong name or region?)",
              "no-value": "exists but holds no value yet: upload it (docs/runbook.md)",
              "unreachable": f"cannot reach AWS Secrets Manager at {endpoint}"}[case]
    assert str(err.value) == f"secret {name}: {reason}"


def _service_env(moto_endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **endpoint_env(moto_endpoint)}


def test_deduplicator_and_export_stop_at_start_naming_the_secret(tmp_path: Path, name: str,
                                                                  moto_endpoint: str) -> None:
    db = f"  host: 127.0.0.1\n  port: 5432\n  password_secret: {name}\n"
    dedup = tmp_path / "deduplicator.yaml"
    dedup.write_text("gatherers:\n  - id: gatherer-1\n    database:\n      host: 127.0.0.1\n"
                     f"      password_secret: {name}\nproduction:\n{db}")
    export = tmp_path / "export.yaml"
    export.write_text(f"database:\n{db}archive:\n  bucket: b\n")
    expected = f"secret {name}: not found in AWS Secrets Manager (wrong name or region?)"
    for argv, prefix in (([sys.executable, "-m", "deduplicator", "--config", str(dedup)], "config error: "),
                         ([sys.executable, "-m", "kalshi_data", "export", "--config", str(export),
                           "--table", "trades", "--day", "yesterday"], "kalshi-data export: ")):
        res = subprocess.run(argv, env=_service_env(moto_endpoint), capture_output=True, text=True,
                             timeout=120, check=False)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == prefix + expected
