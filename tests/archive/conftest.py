"""Archive fixtures: a real S3-compatible server (moto in server mode, tests/fix_aws.py) and
helpers. Each test gets its own bucket. boto3 (and pyarrow's S3 filesystem) find the fake
credentials in the environment through their normal chain (``aws_env``, ``fake_aws``), exactly
as on an instance they find the profile.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import boto3
import pytest

from kalshi_data.archive.s3 import S3Location, S3Store
from tests.fix_aws import AWS_TEST_ENV

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


FAKE_AWS = AWS_TEST_ENV


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
def bucket(s3_endpoint: str, aws_env: None) -> str:
    name = f"archive-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3_endpoint: str, bucket: str) -> S3Store:
    return S3Store(S3Location(bucket=bucket, endpoint_url=s3_endpoint))
