"""Config validation: every kind of error gives exit code 2 and ONE line naming the key path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deduplicator.config import DeduplicatorConfig
from gatherer.config import GathererConfig
from shared.config import DatabaseConfig, Environment, Secret, load_config, parse_config
from shared.errors import ConfigError, SecretError

KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n"


def _valid_gatherer(tmp_path: Path) -> str:
    key = tmp_path / "key.pem"
    key.write_text(KEY_PEM)
    pw = tmp_path / "db.pw"
    pw.write_text("s3cret-db-pw\n")
    return (f"gatherer_id: gatherer-1\n"
            f"kalshi:\n  env: demo\n  api_key_id: a952bcbe-ec3b-4b5b-b8f9-11dae589608c\n"
            f"  private_key_file: {key}\n"
            f"database:\n  host: 127.0.0.1\n  port: 5432\n  password_file: {pw}\n")


def _check(tmp_path: Path, text: str, service: str = "gatherer") -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "kalshi_data", "config-check", "--service", service, str(cfg)],
                          capture_output=True, text=True, timeout=60)


def test_valid_config_loads_typed_frozen(tmp_path: Path) -> None:
    cfg = parse_config(_valid_gatherer(tmp_path), GathererConfig, Environment({}))
    assert cfg.database.port == 5432
    assert cfg.connections.orderbook == 144  # production default
    assert cfg.kalshi.rest_base == "https://external-api.demo.kalshi.co/trade-api/v2"
    with pytest.raises(AttributeError):
        cfg.gatherer_id = "x"  # type: ignore[misc]
    res = _check(tmp_path, _valid_gatherer(tmp_path))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("port: 5432", 'port: "54x2"'), 'config error: database.port: expected integer 1-65535, got "54x2"'),
        (("port: 5432", "port: 70000"), "config error: database.port: expected integer 1-65535, got 70000"),
        (("  host: 127.0.0.1\n", "  host: 127.0.0.1\n  hots: typo\n"), "config error: database.hots: unknown key"),
        (("gatherer_id: gatherer-1\n", ""), "config error: gatherer_id: required value missing"),
        (("env: demo", "env: staging"), 'config error: kalshi.env: expected one of prod, demo, sim, got "staging"'),
        (("port: 5432", "port: true"), "config error: database.port: expected integer 1-65535, got true"),
    ],
    ids=["not-an-int", "port-range", "unknown-key", "missing-required", "bad-enum", "wrong-type"],
)
def test_config_errors_one_line_exit_2(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    text = _valid_gatherer(tmp_path).replace(*edit)
    res = _check(tmp_path, text)
    assert res.returncode == 2
    assert res.stderr.strip() == expected
    assert res.stderr.count("\n") == 1  # one line, no traceback


def test_unreadable_key_file(tmp_path: Path) -> None:
    text = _valid_gatherer(tmp_path)
    key = tmp_path / "key.pem"
    if os.geteuid() == 0:  # root reads anything: use a missing file instead of chmod
        text = text.replace(str(key), str(tmp_path / "missing.pem"))
        want = f"config error: kalshi.private_key_file: file {tmp_path / 'missing.pem'} not found"
    else:
        key.chmod(0)
        want = f"config error: kalshi.private_key_file: file {key} is not readable (permission denied)"
    res = _check(tmp_path, text)
    assert res.returncode == 2
    assert res.stderr.strip() == want


def test_directory_as_key_file_is_unreadable(tmp_path: Path) -> None:
    text = _valid_gatherer(tmp_path).replace(str(tmp_path / "key.pem"), str(tmp_path))
    res = _check(tmp_path, text)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"config error: kalshi.private_key_file: file {tmp_path} is not readable")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    res = _check(tmp_path, "gatherer_id: [unclosed\n")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("config error: ") and "not valid YAML" in res.stderr
    res = subprocess.run([sys.executable, "-m", "kalshi_data", "config-check", "--service", "gatherer",
                          str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == f"config error: file {tmp_path / 'nope.yaml'} not found"


def test_deduplicator_errors(tmp_path: Path) -> None:
    res = _check(tmp_path, "gatherers: []\nproduction: {}\n", service="deduplicator")
    assert (res.returncode, res.stderr.strip()) == (2, "config error: gatherers: must not be empty")
    res = _check(tmp_path, "gatherers:\n  - id: g1\n    database: {port: 0}\nproduction: {}\n", service="deduplicator")
    assert (res.returncode, res.stderr.strip()) == (
        2, "config error: gatherers[0].database.port: expected integer 1-65535, got 0")


def test_two_secret_sources_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("password_file: /a\npassword_env: B\n", DatabaseConfig, Environment({"B": "x"}))
    assert str(err.value) == "config error: password: give only one of password_file, password_env"


def test_dsn_with_password_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("dsn: postgresql://u:hunter2@h/db\n", DatabaseConfig, Environment({}))
    assert "hunter2" not in str(err.value)
    assert str(err.value).startswith("config error: dsn: must not contain a password")


# ---------------------------------------------------------------------------------------------
# Secrets never leak
# ---------------------------------------------------------------------------------------------
SECRET = "Sup3r-Secret-Value-42"


def test_secret_from_env_file_and_aws_never_printed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    fetched: list[str] = []

    def fake_fetch(name: str) -> str:  # the AWS call itself is boto3's; here we count when it happens
        fetched.append(name)
        return SECRET

    env = Environment({"DB_PW": SECRET}, fetch_secret=fake_fetch)
    a = parse_config(f"password_file: {pw}\n", DatabaseConfig, env)
    b = parse_config("password_env: DB_PW\n", DatabaseConfig, env)
    c = parse_config("password_secret: kalshi/prod/gatherer-db-password\n", DatabaseConfig, env)
    assert fetched == []  # Secrets Manager is only asked when the value is used
    for cfg in (a, b, c):
        assert cfg.password is not None and cfg.password.reveal() == SECRET
        for text in (repr(cfg), str(cfg), cfg.display_name(), repr(cfg.password), f"{cfg}"):
            assert SECRET not in text
    assert fetched == ["kalshi/prod/gatherer-db-password"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config loaded: %s", a)
        logging.getLogger("test").info("config loaded", extra={"cfg": b})
    assert SECRET not in caplog.text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(a.password)


def test_secret_error_names_source_not_value() -> None:
    err = SecretError("aws:kalshi/prod/x", "cannot fetch from AWS Secrets Manager: ClientError")
    assert str(err) == "secret aws:kalshi/prod/x: cannot fetch from AWS Secrets Manager: ClientError"
    s = Secret("env:X", SECRET)
    try:
        raise ValueError(f"bad value {s}")
    except ValueError as exc:
        assert SECRET not in str(exc)


def test_unset_env_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("password_env: NOT_SET_ANYWHERE\n", DatabaseConfig, Environment({}))
    assert str(err.value) == "config error: password_env: environment variable NOT_SET_ANYWHERE is not set"


def test_migrate_cli_connection_error_has_no_password(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "kalshi_data", "migrate", "--target", "gatherer", "--dsn",
                          f"host=127.0.0.1 port=1 dbname=x user=u password={SECRET}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith("kalshi-data migrate: cannot connect to the database")
    assert SECRET not in res.stderr + res.stdout
