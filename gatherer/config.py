"""The gatherer's config schema (``/etc/kalshi/gatherer.yaml``; every key is documented in
``examples/gatherer.yaml``). Validation and secret resolution live in ``shared/config.py``.

Every interval, timeout and period is a value here so tests can run in seconds what production
runs in minutes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

from shared.config import (
    DatabaseConfig,
    HttpEndpoint,
    LoggingConfig,
    Port,
    PositiveFloat,
    PositiveInt,
    Range,
    Secret,
)
from shared.errors import ConfigError, SecretError

#: Kalshi's recommended hosts (docs.kalshi.com/getting_started/api_environments): REST and
#: WebSocket on separate dedicated hosts. The shared hosts (api.elections.kalshi.com,
#: demo-api.kalshi.co) still work: set ``rest_url``/``ws_url`` to use them.
HOSTS = {
    "prod": ("https://external-api.kalshi.com/trade-api/v2",
             "wss://external-api-ws.kalshi.com/trade-api/ws/v2"),
    "demo": ("https://external-api.demo.kalshi.co/trade-api/v2",
             "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"),
}


@dataclasses.dataclass(frozen=True)
class KalshiConfig:
    """Which exchange to talk to and with which key. ``env: sim`` requires explicit URLs;
    otherwise ``rest_url`` and ``ws_url`` each default to the environment's recommended host.

    The key is either ``api_key`` (``api_key_secret`` / ``_file`` / ``_env``): ONE value holding
    the key id and the PEM private key as JSON ``{"key_id": ..., "private_key_pem": ...}``, so a
    key rotation is one secret update; or the pair ``api_key_id`` + ``private_key_*``.
    """

    env: Literal["prod", "demo", "sim"] = "prod"
    rest_url: str | None = None
    ws_url: str | None = None
    api_key: Secret | None = None
    api_key_id: str = ""
    private_key: Secret | None = None
    profile: Literal["auto", "fp2026", "legacy2025"] = "auto"
    request_timeout_s: Annotated[float, Range(0.1, 300)] = 10.0
    clock_skew_warn_s: PositiveFloat = 2.0
    auth_retry_s: PositiveFloat = 30.0
    # /historical/cutoff is re-read at most this often (it moves forward periodically)
    cutoff_refresh_s: PositiveFloat = 300.0

    def validate(self, path: str) -> None:
        if self.env == "sim" and (self.rest_url is None or self.ws_url is None):
            raise ConfigError(f"{path}.rest_url", "required when env is sim (with ws_url)")
        if self.api_key is not None:
            if self.api_key_id or self.private_key is not None:
                raise ConfigError(f"{path}.api_key", "give either api_key_secret (key id and PEM in one "
                                  "JSON secret) or api_key_id with private_key_*, not both")
            return
        if not self.api_key_id:
            raise ConfigError(f"{path}.api_key_id", "required value missing")
        if self.private_key is None:
            raise ConfigError(f"{path}.private_key", "missing: give private_key_file, private_key_env "
                              "or private_key_secret")

    def with_api_key(self) -> KalshiConfig:
        """This config with ``api_key_id`` and ``private_key`` read from the ``api_key`` JSON
        (fetching it if it is an AWS secret); unchanged when the pair is configured directly.

        Raises ``SecretError`` naming the secret, never quoting its content, when the value is
        not that JSON document.
        """
        if self.api_key is None:
            return self
        key_id, pem = parse_api_key(self.api_key.reveal(), self.api_key.source)
        return dataclasses.replace(self, api_key=None, api_key_id=key_id,
                                   private_key=Secret(f"{self.api_key.source}#private_key_pem", pem))

    @property
    def rest_base(self) -> str:
        return (self.rest_url or HOSTS[self.env][0]).rstrip("/")

    @property
    def ws_base(self) -> str:
        return self.ws_url or HOSTS[self.env][1]


API_KEY_FORMAT = '{"key_id": "...", "private_key_pem": "-----BEGIN PRIVATE KEY-----..."}'


def parse_api_key(text: str, source: str) -> tuple[str, str]:
    """(key id, PEM) from the JSON the runbook has an operator store; errors name ``source`` only."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise SecretError(source, f"not JSON; expected {API_KEY_FORMAT}") from None
    if not isinstance(doc, dict):
        raise SecretError(source, f"not a JSON object; expected {API_KEY_FORMAT}")
    missing = [k for k in ("key_id", "private_key_pem") if not isinstance(doc.get(k), str) or not doc[k].strip()]
    if missing:
        raise SecretError(source, f"{' and '.join(missing)} missing or empty; expected {API_KEY_FORMAT}")
    return doc["key_id"].strip(), doc["private_key_pem"]


@dataclasses.dataclass(frozen=True)
class ConnectionsConfig:
    """The WebSocket pool by role (production: 2 ticker, 2 trade, 2 lifecycle, 144 orderbook).

    Kalshi limits markets per subscription (error 26), commands per subscription/second (27) and
    sockets per key (handshake 429) without publishing the numbers: the values below are where
    the gatherer starts, and it learns lower ones from the exchange's answers
    (``kalshi-data probe-limits`` measures them for a key).
    """

    ticker: Annotated[int, Range(0, 64)] = 2
    trade: Annotated[int, Range(0, 64)] = 2
    lifecycle: Annotated[int, Range(0, 64)] = 2
    orderbook: Annotated[int, Range(0, 1024)] = 144
    markets_per_connection: PositiveInt = 5000
    # markets in one subscribe / subscription; halved towards the limit on error 26
    markets_per_subscription: PositiveInt = 5000
    # commands per second per socket; halved on error 27
    commands_per_s: Annotated[float, Range(0.1, 1000)] = 10.0
    # sockets opened on one key at most (orderbook sockets are parked first); fewer once a
    # handshake 429 shows the exchange's limit
    max_per_key: Annotated[int, Range(1, 4096)] = 150
    # consecutive handshake 429s after which an orderbook socket is parked (its markets move to
    # the other sockets), and how long before a parked socket tries again
    park_after_429s: Annotated[int, Range(1, 100)] = 3
    park_retry_s: PositiveFloat = 600.0
    # a market the exchange refuses to subscribe is retried on its next lifecycle event, or
    # after this long
    quarantine_retry_s: PositiveFloat = 600.0
    # use_yes_price sent explicitly on orderbook subscribes while Kalshi still accepts it;
    # null = do not send it (once Kalshi removes the parameter)
    use_yes_price: bool | None = False
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 15.0
    stagger_s: PositiveFloat = 0.05
    ping_interval_s: PositiveFloat = 10.0
    ping_timeout_s: PositiveFloat = 20.0
    silent_role_s: PositiveFloat = 120.0
    subscribe_timeout_s: PositiveFloat = 15.0
    max_message_bytes: PositiveInt = 16 * 1024 * 1024
    compression: bool = False


@dataclasses.dataclass(frozen=True)
class WriterConfig:
    batch_size: PositiveInt = 5000
    flush_interval_ms: PositiveInt = 200
    queue_max_rows: PositiveInt = 500_000
    flush_deadline_s: PositiveFloat = 20.0
    retry_max_s: PositiveFloat = 10.0
    notify: bool = True


@dataclasses.dataclass(frozen=True)
class PollerConfig:
    enabled: bool = True
    interval_s: PositiveFloat = 900.0
    # tickers per /markets/orderbooks call, at most: a batch is billed per ticker and must fit
    # the read bucket, so the REST client lowers this to what the key's budget allows
    batch_size: Annotated[int, Range(1, 100)] = 100


@dataclasses.dataclass(frozen=True)
class BackfillConfig:
    """REST trade backfill: the contiguous sweep and the durable queue (backfill_queue)."""

    enabled: bool = True
    sweep_interval_s: PositiveFloat = 60.0
    overlap_s: PositiveFloat = 1.0
    max_window_s: PositiveFloat = 86_400.0
    page_limit: Annotated[int, Range(1, 1000)] = 1000
    retry_min_s: PositiveFloat = 2.0  # a failed window is retried after this, doubling...
    retry_max_s: PositiveFloat = 300.0  # ...up to this, until it is done


@dataclasses.dataclass(frozen=True)
class ResyncConfig:
    """A dirty book's way back: get_snapshot, then (after its timeout) a resubscribe of the
    socket, then (after that one's) a REST snapshot, retried until a snapshot is committed."""

    get_snapshot_timeout_s: PositiveFloat = 10.0
    resubscribe_timeout_s: PositiveFloat = 20.0
    rest_retry_s: PositiveFloat = 15.0


@dataclasses.dataclass(frozen=True)
class SpoolConfig:
    """On-disk spool (gatherer/spool.py): rows beyond writer.queue_max_rows wait here while the
    local database is down or slow, so the sockets keep being read. One subdirectory per
    gatherer id and table; the bound covers all of them together."""

    enabled: bool = True
    directory: str = "/var/lib/kalshi/spool"
    max_bytes: PositiveInt = 4 * 1024**3
    chunk_rows: PositiveInt = 2000


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    reconcile_interval_s: PositiveFloat = 300.0
    page_limit: Annotated[int, Range(1, 1000)] = 1000
    # "unopened" too: Kalshi announces no initialized -> active transition, so a market listed
    # before we start and opening after is only known (and its open_time scheduled) if loaded here
    statuses: tuple[str, ...] = ("open", "unopened")
    # multivariate (combo) markets: Kalshi lists them in /markets unless mve_filter=exclude
    multivariate: Literal["exclude", "include"] = "exclude"
    exchange_status_interval_s: PositiveFloat = 30.0
    # keep a market subscribed this long past its REST close_time (whole seconds upstream)
    close_grace_s: Annotated[int, Range(0, 3600)] = 5


#: Per-second token budgets (read, write) by tier: docs.kalshi.com/getting_started/rate_limits.
TIER_BUDGETS: dict[str, tuple[int, int]] = {
    "basic": (200, 100), "advanced": (300, 300), "premier": (1_000, 1_000),
    "paragon": (2_000, 2_000), "prime": (4_000, 4_000),
}


@dataclasses.dataclass(frozen=True)
class EndpointCost:
    """Tokens one request to ``path`` (a template such as ``/markets/{ticker}``) costs; for a
    batch endpoint the cost of one item."""

    path: str
    cost: PositiveInt


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    """The key's REST token budget (docs.kalshi.com/getting_started/rate_limits).

    Every request costs tokens (``default_cost``, 10, unless ``endpoint_costs`` says otherwise);
    batch endpoints are billed per item; reads and writes have separate buckets refilled at the
    tier's budget up to the bucket's capacity. At start the gatherer reads its real budget from
    ``GET /account/limits`` (and costs from ``/account/endpoint_costs``) when ``discover`` is on;
    ``tier`` applies when it cannot. The explicit ``*_per_s``/``*_capacity`` replace the tier's
    numbers and can only lower a discovered budget (a key shared with another process).
    ``headroom`` is the share of the budget we allow ourselves, so clock drift between us and the
    exchange does not cost 429s.
    """

    tier: Literal["basic", "advanced", "premier", "paragon", "prime"] = "basic"
    discover: bool = True
    read_per_s: PositiveFloat | None = None  # tokens/s; overrides the tier
    read_capacity: PositiveFloat | None = None  # tokens; default one second of budget
    write_per_s: PositiveFloat | None = None
    write_capacity: PositiveFloat | None = None
    headroom: Annotated[float, Range(0.5, 1.0)] = 0.9
    default_cost: PositiveInt = 10
    endpoint_costs: tuple[EndpointCost, ...] = ()
    batch_endpoints: tuple[str, ...] = ("/markets/orderbooks", "/markets/candlesticks")

    def budget(self) -> tuple[float, float, float, float]:
        """(read/s, read capacity, write/s, write capacity) in tokens, before discovery."""
        r, w = TIER_BUDGETS[self.tier]
        read = self.read_per_s or float(r)
        write = self.write_per_s or float(w)
        write_s = 1.0 if self.tier == "basic" else 2.0  # OpenAPI 3.15.0 BucketLimit
        return (read, self.read_capacity or read, write, self.write_capacity or write * write_s)

    def costs(self) -> dict[str, int]:
        return {c.path: c.cost for c in self.endpoint_costs}


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """/health and /ready listener plus how health is judged."""

    host: str = "0.0.0.0"
    port: Port = 8080
    db_probe_interval_s: PositiveFloat = 5.0
    poller_stale_factor: PositiveFloat = 3.0


@dataclasses.dataclass(frozen=True)
class AdminConfig:
    """Admin API; disabled unless a token is configured."""

    host: str = "127.0.0.1"
    port: Port = 8081
    token: Secret | None = None


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    """Ack-aware partition retention and (TimescaleDB) compression; ``consumers`` lists the
    deduplicators that must acknowledge a partition or chunk before it is dropped or compressed."""

    enabled: bool = True
    interval_s: PositiveFloat = 3600.0
    consumers: tuple[str, ...] = ("deduplicator",)
    keep_days_deltas: PositiveInt = 7
    keep_days_other: PositiveInt = 30
    partitions_ahead_days: Annotated[int, Range(2, 60)] = 7
    compress: bool = True
    compress_after_days: PositiveInt = 1


@dataclasses.dataclass(frozen=True)
class RawLogConfig:
    enabled: bool = False
    directory: str = "/var/lib/kalshi/rawlog"
    flush_interval_s: PositiveFloat = 0.5
    max_bytes: PositiveInt = 256 * 1024 * 1024
    backups: PositiveInt = 20


@dataclasses.dataclass(frozen=True)
class GcConfig:
    """The garbage collector (shared/heap.py): every ``freeze_interval_s`` a full collection runs
    and what survives it is frozen out of later ones, so a gatherer holding a million markets does
    not stop its sockets for seconds per collection. ``freeze: false`` keeps CPython's default."""

    freeze: bool = True
    freeze_interval_s: PositiveFloat = 60.0


@dataclasses.dataclass(frozen=True)
class GathererConfig:
    gatherer_id: str
    kalshi: KalshiConfig
    database: DatabaseConfig
    connections: ConnectionsConfig = ConnectionsConfig()
    writer: WriterConfig = WriterConfig()
    poller: PollerConfig = PollerConfig()
    backfill: BackfillConfig = BackfillConfig()
    resync: ResyncConfig = ResyncConfig()
    spool: SpoolConfig = SpoolConfig()
    registry: RegistryConfig = RegistryConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    health: HealthConfig = HealthConfig()
    metrics: HttpEndpoint = HttpEndpoint(port=9090)
    admin: AdminConfig = AdminConfig()
    retention: RetentionConfig = RetentionConfig()
    raw_log: RawLogConfig = RawLogConfig()
    gc: GcConfig = GcConfig()
    logging: LoggingConfig = LoggingConfig()
