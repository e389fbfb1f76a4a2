"""The gatherer's config schema (``/etc/kalshi/gatherer.yaml``; every key is documented in
``examples/gatherer.yaml``). Validation and secret resolution live in ``shared/config.py``.

Every interval, timeout and period is a value here so tests can run in seconds what production
runs in minutes.
"""

from __future__ import annotations

import dataclasses
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
from shared.errors import ConfigError

_HOSTS = {
    "prod": ("https://api.elections.kalshi.com/trade-api/v2", "wss://api.elections.kalshi.com/trade-api/ws/v2"),
    "demo": ("https://demo-api.kalshi.co/trade-api/v2", "wss://demo-api.kalshi.co/trade-api/ws/v2"),
}


@dataclasses.dataclass(frozen=True)
class KalshiConfig:
    """Which exchange to talk to and with which key. ``env: sim`` requires explicit URLs."""

    env: Literal["prod", "demo", "sim"] = "prod"
    rest_url: str | None = None
    ws_url: str | None = None
    api_key_id: str = ""
    private_key: Secret | None = None
    profile: Literal["auto", "fp2026", "legacy2025"] = "auto"
    request_timeout_s: Annotated[float, Range(0.1, 300)] = 10.0
    clock_skew_warn_s: PositiveFloat = 2.0
    auth_retry_s: PositiveFloat = 30.0

    def validate(self, path: str) -> None:
        if self.env == "sim" and (self.rest_url is None or self.ws_url is None):
            raise ConfigError(f"{path}.rest_url", "required when env is sim (with ws_url)")
        if not self.api_key_id:
            raise ConfigError(f"{path}.api_key_id", "required value missing")
        if self.private_key is None:
            raise ConfigError(f"{path}.private_key", "missing: give private_key_file, private_key_env "
                              "or private_key_secret")

    @property
    def rest_base(self) -> str:
        return (self.rest_url or _HOSTS[self.env][0]).rstrip("/")

    @property
    def ws_base(self) -> str:
        return self.ws_url or _HOSTS[self.env][1]


@dataclasses.dataclass(frozen=True)
class ConnectionsConfig:
    """The WebSocket pool by role (production: 2 ticker, 2 trade, 2 lifecycle, 144 orderbook)."""

    ticker: Annotated[int, Range(0, 64)] = 2
    trade: Annotated[int, Range(0, 64)] = 2
    lifecycle: Annotated[int, Range(0, 64)] = 2
    orderbook: Annotated[int, Range(0, 1024)] = 144
    markets_per_connection: PositiveInt = 5000
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
    batch_size: Annotated[int, Range(1, 1000)] = 100


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
    statuses: tuple[str, ...] = ("open",)
    exchange_status_interval_s: PositiveFloat = 30.0
    # keep a market subscribed this long past its REST close_time (whole seconds upstream)
    close_grace_s: Annotated[int, Range(0, 3600)] = 5


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    """Per-key REST token bucket (Kalshi Basic tier: 20 reads/s, 10 writes/s)."""

    read_per_s: PositiveFloat = 20.0
    write_per_s: PositiveFloat = 10.0
    burst: PositiveInt = 20


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
    """Ack-aware partition retention; ``consumers`` lists the deduplicators that must ack first."""

    enabled: bool = True
    interval_s: PositiveFloat = 3600.0
    consumers: tuple[str, ...] = ("deduplicator",)
    keep_days_deltas: PositiveInt = 7
    keep_days_other: PositiveInt = 30
    partitions_ahead_days: Annotated[int, Range(2, 60)] = 7


@dataclasses.dataclass(frozen=True)
class RawLogConfig:
    enabled: bool = False
    directory: str = "/var/lib/kalshi/rawlog"
    flush_interval_s: PositiveFloat = 0.5
    max_bytes: PositiveInt = 256 * 1024 * 1024
    backups: PositiveInt = 20


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
    logging: LoggingConfig = LoggingConfig()
