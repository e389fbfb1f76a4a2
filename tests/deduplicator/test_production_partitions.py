"""Production's partition state (days ahead, rows in DEFAULT partitions) is exported by the
deduplicator under the gatherers' metric names, labelled database="production", so the partition
alerts (alerts/infrastructure.yml) cover RDS too."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.deduplicator._fleet import start_app, wait_for, write_config

DAY_US = 86_400_000_000


async def test_production_partition_state_is_exported(gatherer_dsn: str, production_dsn: str,
                                                      tmp_path: Path) -> None:
    with psycopg.connect(production_dsn, autocommit=True) as conn:
        # a trade from a year ago: no daily partition, so it sits in trades_default
        conn.execute("INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, source, "
                     "received_at, gatherer_id, merged_at) VALUES (gen_random_uuid(), 'KX-A', now_us() - 365 * %s, "
                     "5000, 5000, 100, 'ws', 0, 'gatherer-1', 0)", (DAY_US,))
        conn.execute("DROP TABLE tickers_p" + conn.execute(
            "SELECT to_char((now() + interval '7 days') AT TIME ZONE 'UTC', 'YYYYMMDD')").fetchone()[0])  # type: ignore[index]
        expected = {t: (d, a) for t, d, a in conn.execute("SELECT * FROM partition_status()").fetchall()}
    app = await start_app(write_config(tmp_path, {"gatherer-1": gatherer_dsn}, production_dsn, tables=["trades"]))
    try:
        def value(name: str, table: str) -> float | None:
            return app.registry.get_sample_value(name, {"database": "production", "table": table})

        async def exported() -> bool:
            return value("db_default_partition_rows", "trades") is not None

        await wait_for(exported, 20, "production partition metrics")
        for table, (default_rows, days_ahead) in expected.items():
            assert value("db_default_partition_rows", table) == default_rows
            # ensure_partitions ran first at start, so days ahead are topped up again
            assert value("db_partitions_ahead_days", table) >= days_ahead >= 6
        assert value("db_default_partition_rows", "trades") == 1
    finally:
        await app.stop()
