"""A real ``GathererApp`` for benchmarks: config against a ``SimProcess`` and a bench database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from gatherer.app import GathererApp
from gatherer.config import GathererConfig
from shared.config import Environment, parse_config
from shared.pgcluster import free_port

from ._db import ROLE_PASSWORDS
from ._simproc import SimProcess

__all__ = ["config", "make_app", "metric"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config(sim: SimProcess, dsn: str, workdir: Path, **overrides: Any) -> dict[str, Any]:
    """Production-like settings (every feature on: poller, backfill, registry, NOTIFY) scaled to
    a ``medium`` simulator on one machine."""
    d = conninfo_to_dict(dsn)
    pw = workdir / "gatherer.pw"
    pw.write_text(ROLE_PASSWORDS["gatherer"])
    base: dict[str, Any] = {
        "gatherer_id": "gatherer-bench",
        "kalshi": {"env": "sim", "rest_url": sim.rest_url, "ws_url": sim.ws_url,
                   "api_key_id": sim.key_id, "private_key_file": str(sim.key_file),
                   "request_timeout_s": 30.0},
        "database": {"host": d.get("host", "127.0.0.1"), "port": int(str(d.get("port", 5432))),
                     "dbname": d["dbname"], "user": "gatherer", "password_file": str(pw),
                     "sslmode": "disable", "connect_timeout_s": 5.0},
        "connections": {"ticker": 1, "trade": 1, "lifecycle": 1, "orderbook": 4,
                        "markets_per_connection": 5000, "stagger_s": 0.05,
                        "ping_interval_s": 10.0, "ping_timeout_s": 60.0, "silent_role_s": 600.0},
        "poller": {"enabled": True, "interval_s": 60.0},
        # the REST budget is what the simulator's /account/limits reports (its tier)
        "health": {"host": "127.0.0.1", "port": free_port(), "db_probe_interval_s": 2.0},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "spool": {"directory": str(workdir / "spool")},
        "logging": {"level": "ERROR", "format": "text"},
    }
    return _merge(base, overrides)


def make_app(doc: dict[str, Any]) -> GathererApp:
    cfg = parse_config(yaml.safe_dump(doc), GathererConfig, Environment(env={}))
    return GathererApp(cfg, CollectorRegistry())


def metric(app: GathererApp, name: str, **labels: str) -> float:
    v = app.prom.get_sample_value(name, labels or None)
    return 0.0 if v is None else float(v)
