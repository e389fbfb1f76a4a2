"""A production database filled from a short run of the real simulator, shared by the read-side
command tests and docs/analysts.md's test (built once per session: ~10-30 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.pgcluster import PgCluster
from tests.fix_db import fresh_database
from tests.kalshi_data.simdata import SimProduction, build


@pytest.fixture(scope="session")
def sim_production(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProduction]:
    dsn = fresh_database(pg_cluster, "production", prefix="simprod")
    yield build(dsn, minutes=8, truth_path=str(tmp_path_factory.mktemp("simprod") / "truth.jsonl"))
