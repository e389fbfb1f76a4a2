"""One secret holds a gatherer's Kalshi key id and PEM key (operations.md, docs/runbook.md).

The config names the secret (``kalshi.api_key_secret``); its value is the JSON the runbook has the
operator upload, ``{"key_id": ..., "private_key_pem": ...}``. A rotation is one secret update and
a restart. A secret that is missing, empty or not that JSON stops the gatherer at start with ONE
line naming the secret, never quoting it, and exit code 2. Against a real Secrets Manager API
(moto server, tests/fix_aws.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from gatherer.app import load_key
from gatherer.config import GathererConfig, parse_api_key
from kalshi_sim import keygen
from shared.config import Environment, load_config, parse_config
from shared.errors import ConfigError, SecretError
from shared.kalshi.auth import load_private_key
from tests.fix_aws import endpoint_env


@pytest.fixture(scope="module")
def keys() -> list[tuple[str, str]]:
    """Two (key id, PEM) pairs: the key in place and the one rotated to."""
    return [(kid, pem) for kid, pem, _pub in (keygen(), keygen())]


def _bundle(key_id: str, pem: str) -> str:
    return json.dumps({"key_id": key_id, "private_key_pem": pem})


def _config_text(secret: str) -> str:
    return ("gatherer_id: gatherer-1\n"
            "kalshi:\n  env: prod\n"
            f"  api_key_secret: {secret}\n"
            "database:\n  host: 127.0.0.1\n  port: 5432\n")


@pytest.fixture
def secrets(moto_endpoint: str, aws_env: None) -> tuple[object, str]:
    """A Secrets Manager client on the moto server and a unique secret-name prefix."""
    client = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
    return client, f"test-{uuid.uuid4().hex[:8]}/prod"


def _environment(moto_endpoint: str) -> Environment:
    return Environment.from_env({**os.environ, **endpoint_env(moto_endpoint)})


def test_bundle_parses_and_loads_the_key(keys: list[tuple[str, str]]) -> None:
    key_id, pem = keys[0]
    assert parse_api_key(_bundle(key_id, pem), "aws:x") == (key_id, pem)
    cfg = parse_config(_config_text("ignored").replace("api_key_secret: ignored", "api_key_env: KALSHI_KEY"),
                       GathererConfig, Environment({"KALSHI_KEY": _bundle(key_id, pem)}))
    resolved = cfg.kalshi.with_api_key()
    assert resolved.api_key_id == key_id and resolved.api_key is None
    assert load_key(dataclasses.replace(cfg, kalshi=resolved)).key_size >= 2048
    assert pem not in repr(resolved) and pem not in str(resolved.private_key)


@pytest.mark.parametrize(("value", "reason"), [
    ("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "not JSON"),
    ('["k", "pem"]', "not a JSON object"),
    ('{"key_id": "k-1"}', "private_key_pem missing or empty"),
    ('{"key_id": "", "private_key_pem": "-----BEGIN PRIVATE KEY-----\\nMIIE"}', "key_id missing or empty"),
])
def test_wrong_format_names_the_secret_never_its_content(value: str, reason: str) -> None:
    with pytest.raises(SecretError) as err:
        parse_api_key(value, "aws:kalshi/prod/kalshi-api-key-2")
    text = str(err.value)
    assert text.startswith(f"secret aws:kalshi/prod/kalshi-api-key-2: {reason}; expected ")
    assert "\n" not in text and "MIIE" not in text and "k-1" not in text


def test_bundle_and_key_pair_are_exclusive() -> None:
    text = _config_text("kalshi/prod/kalshi-api-key-1").replace(
        "  env: prod\n", "  env: prod\n  api_key_id: key-0001\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, GathererConfig, Environment({}))
    assert str(err.value).startswith("config error: kalshi.api_key: give either api_key_secret")


def test_rotation_is_one_secret_update(tmp_path: Path, secrets: tuple[object, str], moto_endpoint: str,
                                       keys: list[tuple[str, str]]) -> None:
    client, prefix = secrets
    name = f"{prefix}/kalshi-api-key-1"
    client.create_secret(Name=name, SecretString=_bundle(*keys[0]))  # type: ignore[attr-defined]
    path = tmp_path / "gatherer.yaml"
    path.write_text(_config_text(name))
    env = _environment(moto_endpoint)
    assert load_config(path, GathererConfig, env).kalshi.with_api_key().api_key_id == keys[0][0]
    client.put_secret_value(SecretId=name, SecretString=_bundle(*keys[1]))  # type: ignore[attr-defined]
    # the restart after the upload: same config file, same terraform output, the new key
    cfg = load_config(path, GathererConfig, env)
    rotated = dataclasses.replace(cfg, kalshi=cfg.kalshi.with_api_key())
    assert rotated.kalshi.api_key_id == keys[1][0]
    assert load_key(rotated).private_numbers() == load_private_key(keys[1][1].encode(), "k").private_numbers()


def _run_gatherer(tmp_path: Path, secret_name: str, moto_endpoint: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gatherer.yaml"
    path.write_text(_config_text(secret_name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(endpoint_env(moto_endpoint))
    return subprocess.run([sys.executable, "-m", "gatherer", "--config", str(path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("case", ["missing", "no-value-yet", "wrong-format"])
def test_bad_secret_stops_the_gatherer_with_one_line(tmp_path: Path, secrets: tuple[object, str],
                                                     moto_endpoint: str, case: str) -> None:
    client, prefix = secrets
    name = f"{prefix}/kalshi-api-key-1"
    pem_marker = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ"
    if case == "no-value-yet":  # what terraform leaves before the operator's first upload
        client.create_secret(Name=name)  # type: ignore[attr-defined]
    elif case == "wrong-format":  # the PEM alone, without the JSON around it
        client.create_secret(Name=name,  # type: ignore[attr-defined]
                             SecretString=f"-----BEGIN PRIVATE KEY-----\n{pem_marker}\n-----END PRIVATE KEY-----\n")
    res = _run_gatherer(tmp_path, name, moto_endpoint)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    expected = {
        "missing": f"kalshi-gatherer: secret {name}: not found in AWS Secrets Manager (wrong name or region?)",
        "no-value-yet": f"kalshi-gatherer: secret {name}: exists but holds no value yet: upload it "
                        "(docs/runbook.md)",
        "wrong-format": f"kalshi-gatherer: secret aws:{name}: not JSON; expected ",
    }[case]
    assert len(lines) == 1 and lines[0].startswith(expected), res.stderr
    assert pem_marker not in res.stderr + res.stdout
