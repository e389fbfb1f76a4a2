"""kalshi_data.books (and book_state()) against the simulator's truth at random instants, with the
helper the chaos acceptance run uses (tests/acceptance/_books.py), on production filled from a
real simulator run that includes a window where both gatherers' orderbook sockets were down."""

from __future__ import annotations

from tests.acceptance._books import compare_books
from tests.fix_db import role_dsn
from tests.kalshi_data.simdata import SimProduction


def test_random_instants_match_the_truth_or_are_flagged(sim_production: SimProduction) -> None:
    p = sim_production
    assert p.truth_path is not None
    stats = compare_books(role_dsn(p.dsn, "analyst"), p.truth_path, lo_us=p.start_us, hi_us=p.end_us,
                          instants=300)
    assert stats["instants"] == 300 and stats["inside_lossy_windows"] > 0
    assert stats["equal"] >= 250, stats  # the window is 20 s of 8 minutes
