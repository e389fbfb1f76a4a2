"""Harness for deduplicator tests: configs pointing at test databases, a running App, polling waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from deduplicator.app import App
from deduplicator.config import DeduplicatorConfig
from shared.config import load_config
from shared.pgcluster import free_port
from tests.fix_db import ROLE_PASSWORDS, role_dsn


def db_section(dsn: str, role: str, tmp: Path) -> dict[str, Any]:
    d = conninfo_to_dict(dsn)
    pw = tmp / f"{role}.pw"
    if not pw.exists():
        pw.write_text(ROLE_PASSWORDS[role] + "\n")
    return {"host": d["host"], "port": int(d["port"]), "dbname": d["dbname"], "user": role,
            "password_file": str(pw), "sslmode": "disable", "connect_timeout_s": 2, "statement_timeout_ms": 30000}


def write_config(tmp: Path, gatherers: dict[str, str], production: str, name: str = "dedup.yaml",
                 **sync: Any) -> Path:
    """A deduplicator YAML for these databases (superuser DSNs; roles are substituted)."""
    doc = {
        "gatherers": [{"id": gid, "database": db_section(dsn, "dedup_reader", tmp)} for gid, dsn in gatherers.items()],
        "production": db_section(production, "deduplicator", tmp),
        "sync": {"page_size": 500, "poll_interval_ms": 50, "retry_max_s": 0.5, **sync},
        "health": {"host": "127.0.0.1", "port": free_port()},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "INFO", "format": "json"},
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


def load(path: Path) -> DeduplicatorConfig:
    return load_config(path, DeduplicatorConfig)


async def start_app(path: Path, seed: int = 1) -> App:
    import random
    app = App(load(path), CollectorRegistry(), rng=random.Random(seed))
    await app.start()
    return app


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def fetch(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


async def scalar(dsn: str, query: str, params: Any = None) -> Any:
    return (await fetch(dsn, query, params))[0][0]


async def caught_up(app: App) -> bool:
    """Every loop probed and found nothing pending (lag exactly 0)."""
    return all(lp.source.healthy and lp.lag_seconds() == 0.0 for lp in app.loops)


def gatherer_role(dsn: str) -> str:
    return role_dsn(dsn, "gatherer")
