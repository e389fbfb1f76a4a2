"""The archive's S3 access: one boto3 client, endpoint override, and errors an operator can act on.

Credentials are never handled here: boto3 finds them itself through the standard chain
(environment, shared config/credentials files, web identity, the EC2 instance profile). The
endpoint override (``endpoint_url``) points the same code at any S3-compatible store (MinIO,
moto in the tests); such stores get path-style addressing, which all of them accept.

Every botocore failure becomes ``S3Error`` with a one-line reason: missing bucket, no permission,
no credentials, unreachable endpoint, or the S3 error code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from kalshi_data.archive.errors import S3Error

# Parts are tens to hundreds of MB. boto3 holds up to max_concurrency chunks in memory, which
# showed in the 10M-row bench (499 MiB peak RSS with 4 x 64 MiB); 2 x 32 MiB bounds upload
# buffers to 64 MiB and still keeps an upload to a few requests per part.
_TRANSFER = TransferConfig(multipart_threshold=32 << 20, multipart_chunksize=32 << 20,
                           max_concurrency=2, use_threads=True)

_MISSING_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidClientTokenId", "ExpiredToken", "InvalidToken", "403"}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@dataclass(frozen=True)
class S3Location:
    """Where the archive lives: ``s3://bucket/prefix<table>/date=YYYY-MM-DD/...``."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    def key(self, *parts: str) -> str:
        base = self.prefix.strip("/")
        return "/".join(([base] if base else []) + [p.strip("/") for p in parts])

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


class S3Store:
    """Thin wrapper over one boto3 S3 client bound to one bucket.

    Raises ``S3Error`` (kalshi_data.archive.errors) for every failure; ``get_bytes``/``head``
    return None for a missing key instead, because "not there" is an answer, not an error.
    """

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        self.bucket = location.bucket
        if client is None:
            cfg = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10,
                         read_timeout=120,
                         s3={"addressing_style": "path" if location.endpoint_url else "auto"})
            client = boto3.session.Session().client(
                "s3", endpoint_url=location.endpoint_url, region_name=location.region, config=cfg)
        self._client = client

    # ---------------------------------------------------------------------------------------
    def check_bucket(self) -> None:
        """Fail early, with a clear line, when the bucket is missing or not ours to use."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - mapped right here
            raise self._error("", exc, "check bucket") from None

    def upload_file(self, path: Path, key: str, metadata: dict[str, str], content_type: str) -> None:
        try:
            self._client.upload_file(str(path), self.bucket, key, Config=_TRANSFER,
                                     ExtraArgs={"Metadata": metadata, "ContentType": content_type})
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc, "upload") from None

    def download_file(self, key: str, path: Path) -> None:
        try:
            self._client.download_file(self.bucket, key, str(path), Config=_TRANSFER)
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc, "download") from None

    def put_bytes(self, key: str, body: bytes, content_type: str, if_absent: bool = False) -> bool:
        """PUT one object (atomic on S3: readers see the old or the new body, never a mix).

        With ``if_absent`` the write is conditional (``If-None-Match: *``) and returns False when
        the key already exists, so two concurrent runs cannot both believe they wrote it.
        """
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "ContentType": content_type}
        if if_absent:
            kw["IfNoneMatch"] = "*"
        try:
            self._client.put_object(**kw)
        except ClientError as exc:
            if if_absent and _code(exc) in _PRECONDITION:
                return False
            if if_absent and _code(exc) in ("NotImplemented", "501"):
                # An S3-compatible store without conditional writes: plain PUT (the exporter is
                # a single scheduled job; the condition only guards against manual overlap).
                return self.put_bytes(key, body, content_type, if_absent=False)
            raise self._error(key, exc, "upload") from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc, "upload") from None
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(resp["Body"].read())
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise self._error(key, exc, "read") from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc, "read") from None

    def head(self, key: str) -> dict[str, Any] | None:
        """Size (``ContentLength``) and user metadata of ``key``, or None when it does not exist."""
        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise self._error(key, exc, "read") from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc, "read") from None

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (paginated; S3 returns at most 1000 per page)."""
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    yield str(obj["Key"])
        except Exception as exc:  # noqa: BLE001
            raise self._error(prefix, exc, "list") from None

    def list_dirs(self, prefix: str) -> list[str]:
        """The "sub-directories" (common prefixes) right under ``prefix``."""
        out: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                out.extend(str(p["Prefix"]) for p in page.get("CommonPrefixes", ()))
        except Exception as exc:  # noqa: BLE001
            raise self._error(prefix, exc, "list") from None
        return out

    def delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = keys[i:i + 1000]
            try:
                resp = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            except Exception as exc:  # noqa: BLE001
                raise self._error(chunk[0], exc, "delete") from None
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise S3Error(self.bucket, str(first.get("Key", "")),
                              f"delete failed: {first.get('Code', '?')} ({len(errors)} key(s))")

    # ---------------------------------------------------------------------------------------
    def _error(self, key: str, exc: BaseException, action: str) -> S3Error:
        # boto3's managed transfers wrap the service error (S3UploadFailedError and friends).
        inner = exc.__cause__ or exc.__context__
        if not isinstance(exc, ClientError) and isinstance(inner, ClientError):
            exc = inner
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            reason = "no AWS credentials found (instance profile / standard credential chain)"
        elif isinstance(exc, EndpointConnectionError):
            reason = f"cannot reach the S3 endpoint ({self.location.endpoint_url or 'AWS'})"
        elif isinstance(exc, ClientError):
            code = _code(exc)
            if code in _MISSING_BUCKET or (code in _NOT_FOUND and action == "check bucket"):
                reason = "bucket does not exist"
            elif code in _DENIED:
                reason = f"permission denied ({action}: {code})"
            else:
                msg = exc.response.get("Error", {}).get("Message") or ""
                reason = f"{action} failed: {code}" + (f" ({msg})" if msg else "")
        elif isinstance(exc, BotoCoreError):
            reason = f"{action} failed: {exc}"
        else:
            reason = f"{action} failed: {type(exc).__name__}: {exc}"
        err = S3Error(self.bucket, key, reason)
        err.__cause__ = exc
        return err


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or
               exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
