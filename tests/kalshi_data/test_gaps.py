"""``kalshi-data gaps``: per-minute trade counts (zero minutes shown) and the coverage history of
one market, read from a real production database."""

from __future__ import annotations

import uuid

import pytest

from kalshi_data.__main__ import main
from kalshi_data.verify import fmt_us
from shared.pgcluster import PgCluster, free_port
from tests.fix_db import fresh_database
from tests.kalshi_data.rows import US, Data

MINUTE = 60 * US


@pytest.fixture
def prod(pg_cluster: PgCluster) -> Data:
    return Data(fresh_database(pg_cluster, "production"), {})


def test_minutes_and_coverage(prod: Data, capsys: pytest.CaptureFixture[str]) -> None:
    m0 = (prod.t0 // MINUTE) * MINUTE
    for i in range(3):
        prod.trade("production", str(uuid.uuid4()), "KX-G", m0 + i * US, count=150)
    prod.trade("production", str(uuid.uuid4()), "KX-G", m0 + 2 * MINUTE + 5 * US)
    prod.trade("production", str(uuid.uuid4()), "KX-OTHER", m0 + MINUTE)
    prod.delta("production", "KX-G", m0 + 2 * MINUTE, "yes", 5000, 10)
    prod.coverage("production", "gatherer-2", "KX-G", "seq_gap", m0 + MINUTE, m0 + MINUTE + 2 * US, False)
    prod.coverage("production", "gatherer-1", None, "ws_down", m0 + 70 * US, m0 + 80 * US, True, scope="connection")
    prod.coverage("production", "gatherer-1", "KX-OTHER", "resync", m0 + 70 * US, m0 + 80 * US, True)
    prod.snapshot("production", "KX-G", m0 + 2 * MINUTE, [[5000, 10]], [], None)
    rc = main(["gaps", "--ticker", "KX-G", "--dsn", prod.production, "--since", str(m0), "--until", str(m0 + 3 * MINUTE)])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("KX-G: 4 trade(s) in 3 minute(s)") and out[0].endswith("1 minute(s) without a trade")
    rows = [ln.split() for ln in out[2:5]]
    assert rows[0] == [fmt_us(m0)[:16] + "Z", "3", "4.50", "0"]
    assert rows[1][1:] == ["0", "0.00", "0"]  # the empty minute is shown
    assert rows[2][1:] == ["1", "1.00", "1"]
    assert out[5] == "coverage history (2 event(s)):"
    assert "gatherer-2 seq_gap NOT RECOVERED" in out[6] and "(2.0s)" in out[6]
    assert "gatherer-1 ws_down [connection-wide] recovered" in out[7]
    assert out[8] == "reconcile: no run for these days (kalshi-data reconcile)"
    assert out[9].startswith("orderbook snapshots: ws x1")


def test_unknown_ticker_and_bad_input(prod: Data, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--ticker", "KX-NOPE", "--dsn", prod.production]) == 1
    assert capsys.readouterr().err.strip() == (
        "kalshi-data gaps: ticker KX-NOPE not found (no market row, trade, delta or coverage event)")
    assert main(["gaps", "--ticker", "KX-G", "--dsn", f"host=127.0.0.1 port={free_port()} dbname=x user=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kalshi-data gaps: cannot read the database")
    assert main(["gaps", "--ticker", "KX-G", "--dsn", prod.production, "--since", "soon"]) == 2
    assert "not a time" in capsys.readouterr().err
