"""Reading a running fleet's ``fleet.json`` (written by ``kalshi-data demo``), for ``verify``,
``gaps`` and tests: the DSNs of its databases and its URLs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kalshi_data.fleet.errors import FleetError


def load_fleet_file(path: str | Path) -> dict[str, Any]:
    """The parsed ``fleet.json``; FleetError with one line when missing or not a fleet file."""
    p = Path(path)
    if p.is_dir():
        p = p / "fleet.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(str(p), "not found (is the fleet running? `kalshi-data demo --workdir DIR` writes it)") from None
    except (OSError, ValueError) as exc:
        raise FleetError(str(p), f"not readable as JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("databases"), dict):
        raise FleetError(str(p), "not a fleet.json (no \"databases\")")
    return doc


def database_dsns(doc: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(production DSN, {gatherer id: DSN}) from a fleet.json document."""
    dbs = doc["databases"]
    if "production" not in dbs:
        raise FleetError("fleet.json", "no production database")
    gatherers = {name: str(d["dsn"]) for name, d in sorted(dbs.items()) if name != "production"}
    return str(dbs["production"]["dsn"]), gatherers
