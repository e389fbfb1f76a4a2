"""The deduplicator's config schema (``/etc/kalshi/deduplicator.yaml``; every key is documented
in ``examples/deduplicator.yaml``). Adding a gatherer is adding an entry to ``gatherers``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from shared.config import (
    DatabaseConfig,
    HttpEndpoint,
    LoggingConfig,
    NonEmpty,
    PositiveFloat,
    PositiveInt,
    Range,
)
from shared.errors import ConfigError

ALL_TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "coverage_events",
              "markets", "events", "series")


@dataclasses.dataclass(frozen=True)
class GathererSource:
    """One gatherer database, read as ``dedup_reader``."""

    id: str
    database: DatabaseConfig


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    page_size: Annotated[int, Range(1, 1_000_000)] = 10_000
    poll_interval_ms: PositiveInt = 100
    tables: tuple[str, ...] = ALL_TABLES
    listen: bool = True
    max_concurrency: PositiveInt = 8
    lag_warning_s: PositiveFloat = 30.0
    retry_max_s: PositiveFloat = 30.0

    def validate(self, path: str) -> None:
        for i, t in enumerate(self.tables):
            if t not in ALL_TABLES:
                raise ConfigError(f"{path}.tables[{i}]", f"unknown table \"{t}\"; expected one of {', '.join(ALL_TABLES)}")


@dataclasses.dataclass(frozen=True)
class DeduplicatorConfig:
    gatherers: Annotated[tuple[GathererSource, ...], NonEmpty()]
    production: DatabaseConfig
    consumer_id: str = "deduplicator"
    sync: SyncConfig = dataclasses.field(default_factory=SyncConfig)
    health: HttpEndpoint = dataclasses.field(default_factory=lambda: HttpEndpoint(port=8080))
    metrics: HttpEndpoint = dataclasses.field(default_factory=lambda: HttpEndpoint(port=9090))
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)

    def validate(self, path: str) -> None:
        seen: set[str] = set()
        for i, g in enumerate(self.gatherers):
            if g.id in seen:
                raise ConfigError(f"gatherers[{i}].id", f"duplicate gatherer id \"{g.id}\"")
            seen.add(g.id)
