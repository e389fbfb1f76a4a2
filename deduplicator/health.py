"""The deduplicator's /health document and /ready decision (observability.md), from live state.

Status rules: ``unhealthy`` when production is unreachable or no gatherer is reachable (the
process cannot do its job); ``degraded`` when a gatherer is down, refused or not yet reached, or
the worst lag exceeds ``sync.lag_warning_s``; otherwise ``healthy``. Nothing here reads a
secret: databases appear only as ``DatabaseConfig.display_name()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deduplicator.production import Production
from deduplicator.sources import Source
from deduplicator.sync import TableSync


def _r(x: float) -> float:
    return round(x, 3)


def build_health(*, version: str, uptime_s: float, sources: Sequence[Source], loops: Sequence[TableSync],
                 production: Production, lag_warning_s: float) -> dict[str, Any]:
    gatherers: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for src in sources:
        mine = [lp for lp in loops if lp.source is src]
        lags = {lp.table: lp.lag_seconds() for lp in mine}
        g: dict[str, Any] = {"status": src.state, "lag_seconds": _r(max(lags.values(), default=0.0)),
                             "database": src.display_name, "db_uuid": src.db_uuid, "schema_version": src.schema,
                             "tables": {lp.table: {"lag_seconds": _r(lags[lp.table]), "rows_merged": lp.rows_merged,
                                                   "rows_duplicate": lp.rows_duplicate} for lp in mine}}
        if src.error is not None:
            g["error"] = src.error
        gatherers[src.id] = g
        for lp in mine:
            t = tables.setdefault(lp.table, {"lag_seconds": 0.0, "rows_merged": 0, "rows_duplicate": 0})
            t["lag_seconds"] = _r(max(t["lag_seconds"], lags[lp.table]))
            t["rows_merged"] += lp.rows_merged
            t["rows_duplicate"] += lp.rows_duplicate
    max_lag = _r(max((t["lag_seconds"] for t in tables.values()), default=0.0))
    prod: dict[str, Any] = {"status": "healthy" if production.connected else "down",
                            "database": production.display_name}
    if production.error is not None and not production.connected:
        prod["error"] = production.error
    reachable = sum(1 for s in sources if s.healthy)
    if not production.connected or reachable == 0:
        status = "unhealthy"
    elif reachable < len(sources) or max_lag > lag_warning_s:
        status = "degraded"
    else:
        status = "healthy"
    return {
        "status": status, "version": version, "uptime_s": round(uptime_s, 1),
        "gatherers": gatherers,
        "components": {
            "production": prod,
            "sync": {"status": "healthy" if max_lag <= lag_warning_s else "degraded",
                     "max_lag_seconds": max_lag, "tables": tables},
        },
    }


def readiness(sources: Sequence[Source], production: Production) -> tuple[bool, str]:
    """Ready once production is reachable and at least one gatherer is."""
    if not production.connected:
        return False, "production unreachable"
    if not any(s.healthy for s in sources):
        return False, "no gatherer reachable"
    return True, "ok"
