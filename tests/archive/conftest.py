"""Archive fixtures: a real S3-compatible server (moto in server mode, tests/fix_aws.py) and
helpers. Each test gets its own bucket. boto3 (and pyarrow's S3 filesystem) find the fake
credentials in the environment through their normal chain (``aws_env``), exactly as on an
instance they find the profile.
"""

from __future__ import annotations

import itertools

import boto3
import pytest

from kalshi_data.archive.s3 import S3Location, S3Store

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None) -> str:
    name = f"archive-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3_endpoint: str, bucket: str) -> S3Store:
    return S3Store(S3Location(bucket=bucket, endpoint_url=s3_endpoint))
