"""The acceptance fleet, run once per session and shared (``chaos_run``).

``chaos_run`` starts the whole fleet (tiny preset), runs every phase of ``_timeline.py``, lets it
settle (every gatherer sweeps past the end of the timeline, is stopped cleanly so it flushes, and
the deduplicator merges everything they hold), then hands the FINISHED run to every test that
asks: the fleet object (production is still up), the truth file, the DSNs, the timeline's span
and phases. Checks of their own (e.g. books rebuilt from production at random instants against
the truth) go in another module of tests/acceptance/ that takes this fixture: the fleet is
started once for all of them and stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kalshi_data.fleet import Fleet, FleetPlan, find_leftovers, make_plan
from shared.config import Environment
from tests.acceptance._timeline import (
    GATHERER_OVERRIDES,
    GATHERERS,
    US,
    Run,
    now_us,
    q,
    run_timeline,
    wait_for,
)


@dataclass
class FinishedRun:
    """A fleet after the whole fault timeline: gatherers stopped (flushed), everything merged,
    production and the simulator's truth ready to be checked."""

    run: Run
    fleet: Fleet
    plan: FleetPlan
    truth: Path  # the simulator's JSONL ground truth
    production: str  # production DSN (superuser)
    gatherers: dict[str, str]  # gatherer-N -> its database DSN (superuser)
    lo: int  # the timeline's span, exchange µs
    hi: int
    markets: dict[str, str]  # what the phases aimed at: dropped_deltas, withheld_delta
    fleet_seconds: float  # from the fleet's start to the end of the settling


def _settle(run: Run, hi: int) -> None:
    """Past the timeline: every gatherer sweeps beyond its end, then stops cleanly (it flushes
    on SIGTERM) and the deduplicator merges everything they hold."""
    wait_for(lambda: run.prod_count("SELECT count(*) FROM trades WHERE exchange_ts > %s", (hi + 5 * US,))
             and run.prod_count("SELECT count(*) FROM orderbook_deltas WHERE exchange_ts > %s", (hi + 5 * US,)),
             60, "production to hold data past the end of the timeline")

    def swept() -> bool:
        return all((r := q(run.gdb[g], "SELECT max(window_to) FROM backfill_queue WHERE reason = 'sweep' "
                                        "AND state = 'done'")[0][0]) is not None and r > hi for g in GATHERERS)

    wait_for(swept, 60, "every gatherer's sweep past the end of the timeline")
    run.check_alive()
    for g in GATHERERS:
        run.down.add(g)
        assert run.fleet.stop_process(g) is None, f"{g} did not stop cleanly"
    assert run.fleet.wait_merged(120), "the deduplicator did not merge everything the stopped gatherers hold"
    run.check_alive()


@pytest.fixture(scope="session")
def chaos_run() -> Iterator[FinishedRun]:
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kalshi-acceptance-"))
    os.chmod(workdir, 0o755)  # the unprivileged PostgreSQL account must reach its data directory
    markers: list[str] = [str(workdir)]
    try:
        plan = make_plan(workdir, preset="tiny", fast_pg=True, gatherer_overrides={g: GATHERER_OVERRIDES for g in GATHERERS})
        with Fleet(plan, Environment.from_os().env, ready_timeout=180) as fleet:
            info: dict[str, Any] = fleet.start()
            markers += fleet.markers()
            run = Run(fleet, info)
            wait_for(lambda: all(run.prod_count(f"SELECT count(*) FROM {t}") for t in
                                 ("trades", "orderbook_deltas", "orderbook_snapshots")), 120,
                     "production to hold trades, deltas and snapshots")
            lo = now_us()
            markets = run_timeline(run)
            hi = now_us()
            _settle(run, hi)
            print(f"[acceptance] timeline {(hi - lo) / US:.0f}s, fleet up {time.monotonic() - t0:.0f}s", flush=True)
            yield FinishedRun(run, fleet, plan, run.truth, run.prod, dict(run.gdb), lo, hi, markets,
                              time.monotonic() - t0)
            notes = fleet.stop()
            assert notes == [], notes
    finally:
        leftovers = find_leftovers(markers)
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"[acceptance] wall clock {time.monotonic() - t0:.0f}s", flush=True)
    assert leftovers == [], f"processes of {workdir} still running: {leftovers}"


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A work directory the unprivileged PostgreSQL account can reach (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="kalshi-acceptance-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
