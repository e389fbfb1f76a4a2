"""YAML config files validated into frozen, typed dataclasses; the only reader of ``os.environ``.

A schema is a tree of frozen dataclasses (``gatherer/config.py``, ``deduplicator/config.py``).
``load_config(path, Schema)`` parses the YAML and validates every value against the field types,
so a bad file fails at start with ONE line naming the key path::

    config error: database.port: expected integer 1-65535, got "54x2"

Unknown keys, wrong types, missing required values and bad ranges are all reported that way; the
CLI turns ``ConfigError`` into exit code 2.

Secrets never sit in the YAML text. A field typed ``Secret`` is written as one of
``<name>_file: /path`` (read at load time, so an unreadable file fails at start),
``<name>_env: VAR`` (read from the environment at load time) or
``<name>_secret: aws/secret/name`` (AWS Secrets Manager, fetched with boto3 when first used; the
services call ``fetch_secrets`` right after loading, so a missing or unreadable secret stops them
at start with one line naming it, exit 2).
A ``Secret`` prints as ``Secret(<source>)`` and its value is only reachable through ``reveal()``,
so it cannot leak through a log line, a repr, an exception or /health.

AWS endpoints: boto3's standard endpoint override variables point the AWS calls elsewhere (a
VPC endpoint, an S3-compatible store, a local test server). ``Environment.aws_endpoint_url``
reads them here, once, for every AWS client this project creates::

    AWS_ENDPOINT_URL_SECRETS_MANAGER   Secrets Manager only
    AWS_ENDPOINT_URL_S3                S3 only (the archive)
    AWS_ENDPOINT_URL                   every service without its own variable
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from shared.errors import ConfigError, SecretError

T = TypeVar("T")

_SECRET_SUFFIXES = ("_file", "_env", "_secret")


# --------------------------------------------------------------------------------------------
# Constraints usable with Annotated[...]
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """Inclusive numeric bounds for ``Annotated[int, Range(1, 65535)]``."""

    lo: float | None = None
    hi: float | None = None


@dataclasses.dataclass(frozen=True)
class NonEmpty:
    """A string or list that must not be empty."""


Port = Annotated[int, Range(1, 65535)]
PositiveInt = Annotated[int, Range(1, None)]
PositiveFloat = Annotated[float, Range(0.0, None)]


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------
SecretFetcher = Callable[[str], str]


# boto3's standard endpoint override variables, most specific first (see the module docstring).
AWS_ENDPOINT_VARIABLES: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "secretsmanager": ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL"),
    "s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
})

# Secrets Manager error codes an operator can act on, as one line each.
_SECRET_ERRORS = {
    "ResourceNotFoundException": "not found in AWS Secrets Manager (wrong name or region?)",
    "AccessDeniedException": "access denied by AWS Secrets Manager (check the instance role's policy)",
    "DecryptionFailure": "AWS Secrets Manager cannot decrypt it (KMS key permissions)",
    "InvalidRequestException": "not readable now (scheduled for deletion?)",
    "UnrecognizedClientException": "AWS rejected the credentials",
}


def _fetch_aws_secret(name: str, endpoint_url: str | None = None) -> str:
    """Fetch a Secrets Manager value with the standard AWS credential chain."""
    try:
        import boto3  # imported lazily: most processes never touch AWS
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise SecretError(name, f"boto3 unavailable: {exc}") from None
    try:
        client = boto3.client("secretsmanager", endpoint_url=endpoint_url)
        resp = client.get_secret_value(SecretId=name)
    except NoRegionError:
        raise SecretError(name, "no AWS region (set AWS_DEFAULT_REGION)") from None
    except NoCredentialsError:
        raise SecretError(name, "no AWS credentials (instance profile or environment)") from None
    except EndpointConnectionError:
        raise SecretError(name, "cannot reach AWS Secrets Manager"
                          + (f" at {endpoint_url}" if endpoint_url else "")) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if code == "ResourceNotFoundException" and "AWSCURRENT" in message:
            raise SecretError(name, "exists but holds no value yet: upload it (docs/runbook.md)") from None
        reason = _SECRET_ERRORS.get(code, f"cannot fetch from AWS Secrets Manager: {code or 'error'}")
        raise SecretError(name, reason) from None
    except BotoCoreError as exc:
        raise SecretError(name, f"cannot fetch from AWS Secrets Manager: {type(exc).__name__}") from None
    value = resp.get("SecretString")
    if value is None:
        raise SecretError(name, "secret has no SecretString (binary secrets are not supported)")
    return str(value)


class Secret:
    """A secret value with a printable source and no printable value."""

    __slots__ = ("_source", "_value", "_fetch", "_lock")

    def __init__(self, source: str, value: str | None = None, fetch: SecretFetcher | None = None) -> None:
        self._source = source
        self._value = value
        self._fetch = fetch
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """Where the value comes from (``file:/etc/kalshi/key.pem``); safe to log."""
        return self._source

    def reveal(self) -> str:
        """Return the value, fetching it on first use for AWS-backed secrets."""
        with self._lock:
            if self._value is None:
                assert self._fetch is not None
                self._value = self._fetch(self._source.split(":", 1)[1])
            return self._value

    def __repr__(self) -> str:
        return f"Secret({self._source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._source == self._source

    def __hash__(self) -> int:
        return hash(self._source)

    def __reduce__(self) -> Any:  # pickling would copy the value somewhere we do not control
        raise TypeError("Secret cannot be pickled")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Environment:
    """What the loader may read besides the file: the process environment and the AWS fetcher.

    Tests pass their own mapping; production uses ``Environment.from_os()``.
    """

    env: Mapping[str, str]
    fetch_secret: SecretFetcher = _fetch_aws_secret

    @classmethod
    def from_os(cls) -> Environment:
        return cls.from_env(os.environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Environment:
        """``env`` as the process environment, Secrets Manager reached at its endpoint override."""
        env = dict(env)
        endpoint = _endpoint_url(env, "secretsmanager")
        return cls(env=env, fetch_secret=functools.partial(_fetch_aws_secret, endpoint_url=endpoint))

    def aws_endpoint_url(self, service: str) -> str | None:
        """The endpoint override for ``service`` (``secretsmanager``, ``s3``), or None for AWS's own."""
        return _endpoint_url(self.env, service)


def _endpoint_url(env: Mapping[str, str], service: str) -> str | None:
    for var in AWS_ENDPOINT_VARIABLES[service]:
        if env.get(var):
            return env[var]
    return None


def fetch_secrets(cfg: Any) -> None:
    """Reveal every ``Secret`` in a loaded config now (AWS ones are fetched), so a missing or
    unreadable secret fails at start with ``SecretError`` naming it, not at first use."""
    if isinstance(cfg, Secret):
        cfg.reveal()
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            fetch_secrets(getattr(cfg, f.name))
    elif isinstance(cfg, tuple | list):
        for item in cfg:
            fetch_secrets(item)


def load_config(path: str | Path, schema: type[T], environment: Environment | None = None) -> T:
    """Read ``path`` and validate it into ``schema``; raises ``ConfigError`` with the key path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"file {p} not found") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {p}: {exc.strerror}") from None
    return parse_config(text, schema, environment, source=str(p))


def parse_config(text: str, schema: type[T], environment: Environment | None = None, source: str = "<config>") -> T:
    """Validate YAML text into ``schema`` (see ``load_config``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{source} is not valid YAML{where}") from None
    if data is None:
        data = {}
    env = environment or Environment.from_os()
    return _build(schema, data, "", env)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return str(value)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _build(schema: type[T], data: Any, path: str, env: Environment) -> T:
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    secret_fields = {n for n in fields if _is_secret(hints[n])}

    known: set[str] = set(fields)
    for n in secret_fields:
        known.update(n + s for s in _SECRET_SUFFIXES)
    for key in data:
        if not isinstance(key, str) or key not in known:
            raise ConfigError(_join(path, str(key)), "unknown key")

    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in secret_fields:
            secret = _resolve_secret(data, name, path, env)
            if secret is None and not _optional(hints[name]):
                raise ConfigError(key_path, f"missing: give {name}_file, {name}_env or {name}_secret")
            kwargs[name] = secret
            continue
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key_path, env)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if _optional(hints[name]):
                kwargs[name] = None
            elif dataclasses.is_dataclass(_base(hints[name])):
                kwargs[name] = _build(_base(hints[name]), {}, key_path, env)
            else:
                raise ConfigError(key_path, "required value missing")
    obj = schema(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path)
    return obj


def _base(tp: Any) -> Any:
    """Strip Annotated and Optional wrappers."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _base(args[0])
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _optional(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return _is_union(tp) and type(None) in typing.get_args(tp)


def _is_secret(tp: Any) -> bool:
    return _base(tp) is Secret


def _resolve_secret(data: dict[str, Any], name: str, path: str, env: Environment) -> Secret | None:
    given = [s for s in _SECRET_SUFFIXES if name + s in data]
    if len(given) > 1:
        raise ConfigError(_join(path, name), "give only one of " + ", ".join(name + s for s in given))
    if not given:
        return None
    suffix = given[0]
    key_path = _join(path, name + suffix)
    ref = data[name + suffix]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(key_path, f"expected a non-empty string, got {_describe(ref)}")
    if suffix == "_file":
        try:
            value = Path(ref).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(key_path, f"file {ref} not found") from None
        except PermissionError:
            raise ConfigError(key_path, f"file {ref} is not readable (permission denied)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(key_path, f"file {ref} is not readable ({type(exc).__name__})") from None
        value = value.strip() if not value.lstrip().startswith("-----BEGIN") else value
        if not value:
            raise ConfigError(key_path, f"file {ref} is empty")
        return Secret(f"file:{ref}", value)
    if suffix == "_env":
        if ref not in env.env or env.env[ref] == "":
            raise ConfigError(key_path, f"environment variable {ref} is not set")
        return Secret(f"env:{ref}", env.env[ref])
    return Secret(f"aws:{ref}", None, env.fetch_secret)


def _coerce(tp: Any, value: Any, path: str, env: Environment) -> Any:
    constraints: tuple[Any, ...] = ()
    if typing.get_origin(tp) is Annotated:
        tp, *rest = typing.get_args(tp)
        constraints = tuple(rest)
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
            raise ConfigError(path, "must not be null")
        if len(args) == 1:
            return _coerce(Annotated[(args[0], *constraints)] if constraints else args[0], value, path, env)
        raise ConfigError(path, "unsupported union type in schema")  # pragma: no cover

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = tuple(_coerce(item_tp, v, f"{path}[{i}]", env) for i, v in enumerate(value))
        _check(constraints, items, path)
        return items
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, env)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected integer{_range_text(constraints)}, got {_describe(value)}")
        _check(constraints, value, path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected number{_range_text(constraints)}, got {_describe(value)}")
        _check(constraints, float(value), path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_describe(value)}")
        _check(constraints, value, path)
        return value
    if tp is Any:
        return value
    raise ConfigError(path, f"unsupported type {tp!r} in schema")  # pragma: no cover


def _range_text(constraints: tuple[Any, ...]) -> str:
    for c in constraints:
        if isinstance(c, Range):
            lo = "" if c.lo is None else f"{c.lo:g}"
            hi = "" if c.hi is None else f"{c.hi:g}"
            if c.lo is not None and c.hi is not None:
                return f" {lo}-{hi}"
            return f" >= {lo}" if c.lo is not None else f" <= {hi}"
    return ""


def _check(constraints: tuple[Any, ...], value: Any, path: str) -> None:
    for c in constraints:
        if isinstance(c, Range):
            if (c.lo is not None and value < c.lo) or (c.hi is not None and value > c.hi):
                kind = "integer" if isinstance(value, int) else "number"
                raise ConfigError(path, f"expected {kind}{_range_text((c,))}, got {value}")
        elif isinstance(c, NonEmpty) and len(value) == 0:
            raise ConfigError(path, "must not be empty")


# --------------------------------------------------------------------------------------------
# Sections shared by every process
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    """One PostgreSQL database. Either ``dsn`` (without a password) or host/port/dbname/user.

    The password comes from ``password_file`` / ``password_env`` / ``password_secret`` and is
    added to the connection parameters at connect time, never to a printable string.
    """

    dsn: str | None = None
    host: str = "127.0.0.1"
    port: Port = 5432
    dbname: str = "kalshi_ts"
    user: str = "gatherer"
    password: Secret | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    pool_min: Annotated[int, Range(0, 1000)] = 1
    pool_max: Annotated[int, Range(1, 1000)] = 8
    connect_timeout_s: Annotated[float, Range(0.1, 600)] = 5.0
    statement_timeout_ms: Annotated[int, Range(0, 86_400_000)] = 60_000
    application_name: str = "kalshi-data"

    def validate(self, path: str) -> None:
        if self.dsn is not None and ":" in self.dsn.split("@")[0].split("//")[-1]:
            raise ConfigError(_join(path, "dsn"), "must not contain a password; use password_file, "
                              "password_env or password_secret")
        if self.pool_min > self.pool_max:
            raise ConfigError(_join(path, "pool_min"), f"must be <= pool_max ({self.pool_max})")

    def display_name(self) -> str:
        """``user@host:port/dbname`` — safe for logs and /health (no password, ever)."""
        if self.dsn is not None:
            from psycopg.conninfo import conninfo_to_dict

            try:
                d = conninfo_to_dict(self.dsn)
            except Exception:
                return "<dsn>"
            return f"{d.get('user', '')}@{d.get('host', '')}:{d.get('port', '')}/{d.get('dbname', '')}"
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


@dataclasses.dataclass(frozen=True)
class HttpEndpoint:
    """A listening address for /health, /metrics or the admin API."""

    host: str = "0.0.0.0"
    port: Port = 8080


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
