"""Archive fixtures: a real S3-compatible server (moto in server mode) and helpers.

The server runs once per session on a free port of 127.0.0.1 and is stopped at the end; each
test gets its own bucket. boto3 (and pyarrow's S3 filesystem) find the fake credentials in the
environment through their normal chain, exactly as on an instance they find the profile.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kalshi_data.archive.s3 import S3Location, S3Store

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    # moto's in-thread werkzeug server logs every request; the commands under test log to
    # stderr too, and their one-line error output is asserted exactly.
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


FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}


def fake_aws(mp: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, found by boto3's (and Arrow's) standard chain."""
    for k, v in FAKE_AWS.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)


@contextlib.contextmanager
def moto_bucket(endpoint: str, name: str) -> Iterator[S3Store]:
    """A bucket on the moto server, with fake credentials set while the block runs (for
    module-scoped fixtures, which cannot use the function-scoped ``monkeypatch``)."""
    with pytest.MonkeyPatch.context() as mp:
        fake_aws(mp)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
        yield S3Store(S3Location(bucket=name, endpoint_url=endpoint))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, found by boto3's standard chain (never passed in code)."""
    fake_aws(monkeypatch)


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None) -> str:
    name = f"archive-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3_endpoint: str, bucket: str) -> S3Store:
    return S3Store(S3Location(bucket=bucket, endpoint_url=s3_endpoint))
