"""A real AWS-compatible endpoint for the whole session (plugin: ``tests.fix_aws``).

``moto_endpoint`` is moto in server mode (Secrets Manager, S3 and the rest) on a free port of
127.0.0.1, started once and stopped at the end. Clients reach it the way a host reaches AWS:
boto3's standard chain finds ``AWS_TEST_ENV``'s fake credentials, and the endpoint override
variables (shared/config.py) point the calls at the server. moto keeps one state per process,
so tests name their secrets and buckets uniquely.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def endpoint_env(endpoint: str) -> dict[str, str]:
    """Environment of a child process that should talk to ``endpoint`` instead of AWS."""
    return {**AWS_TEST_ENV, "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    # moto's in-thread werkzeug server logs every request; commands under test log to stderr
    # too, and their one-line error output is asserted exactly.
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, found by boto3's standard chain (never passed in code)."""
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
