"""``--config`` file of ``kalshi-data export`` / ``import`` (YAML, validated by shared/config.py).

::

    database:                     # production (export) or the target (import)
      host: kalshi-prod.xxxx.rds.amazonaws.com
      dbname: kalshi_prod
      user: analyst               # export only reads; import needs INSERT (deduplicator/owner)
      password_secret: kalshi/prod/analyst-password
      sslmode: require
    archive:
      bucket: kalshi-prod-archive
      prefix: ""                  # optional key prefix inside the bucket
      endpoint_url: null          # set for S3-compatible stores (MinIO, ...)
      region: us-east-1
      max_rows_per_part: 5000000
      sync_margin_s: 600
      tmp_dir: null               # local spool for one part at a time (default: $TMPDIR)
      metrics_file: /var/lib/prometheus/node-exporter/kalshi_export.prom
    logging: {level: INFO, format: json}

Command-line flags override the file. AWS credentials never appear here: boto3 takes them
from the instance profile or the standard chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from kalshi_data.archive.export import DEFAULT_MAX_ROWS_PER_PART
from shared.config import DatabaseConfig, LoggingConfig, PositiveInt, Range


@dataclass(frozen=True)
class ArchiveSection:
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    max_rows_per_part: PositiveInt = DEFAULT_MAX_ROWS_PER_PART
    sync_margin_s: Annotated[int, Range(0, 7 * 86400)] = 600
    tmp_dir: str | None = None
    metrics_file: str | None = None


@dataclass(frozen=True)
class ArchiveConfig:
    database: DatabaseConfig = field(default_factory=lambda: DatabaseConfig(
        dbname="kalshi_prod", user="analyst", statement_timeout_ms=0))
    archive: ArchiveSection = field(default_factory=ArchiveSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
