"""The copied column lists and types agree with both migrated schemas (binary COPY trusts them)."""

from __future__ import annotations

from deduplicator.tables import SPECS
from tests.deduplicator._fleet import fetch

LOCAL_ONLY = {"ingest_xid", "ingest_seq", "sid"}  # gatherer-only columns (data-model.md)
PRODUCTION_ONLY = {"gatherer_id", "merged_at"}


async def _columns(dsn: str, table: str) -> dict[str, str]:
    rows = await fetch(dsn, "SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name = %s", (table,))
    return {str(c): str(t) for c, t in rows}


async def test_specs_match_gatherer_and_production_schemas(gatherer_dsn: str, production_dsn: str) -> None:
    for spec in SPECS.values():
        want = dict(spec.columns)
        g = await _columns(gatherer_dsn, spec.name)
        p = await _columns(production_dsn, spec.name)
        assert {c: g[c] for c in want} == want, spec.name
        assert {c: p[c] for c in want} == want, spec.name
        assert set(g) - LOCAL_ONLY == set(want), f"{spec.name}: gatherer column not copied"
        assert set(p) - PRODUCTION_ONLY - set(want) == set(), f"{spec.name}: production column never filled"
        assert set(spec.key) <= set(p)
