"""Fixtures for the gatherer suite: a real simulator (tests/fix_sim.py) with a registered key,
a fresh migrated gatherer database, and a gatherer config pointing at both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gatherer.app import GathererApp
from tests.fix_db import ROLE_PASSWORDS
from tests.fix_sim import BASE_CONFIG
from tests.gatherer import _harness as h

#: Real-time simulator clock (exchange time = wall clock) with enough traffic to see every path.
SIM_OVERRIDES: dict[str, Any] = {"clock_speed": 1.0, "start_ms": None, "rate": 150.0,
                                 "churn_per_s": 0.0, "ping_interval_s": 1.0, "pong_timeout_s": 5.0}


def _dump_tasks() -> None:
    for t in asyncio.all_tasks():
        t.print_stack(limit=6)


@pytest.fixture
async def gsim(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A started tiny simulator on a real-time clock (stopped with a deadline at teardown).
    Kalshi's limits model is on; ``@pytest.mark.parametrize("gsim", [{knob: value}],
    indirect=True)`` changes knobs for one test."""
    from kalshi_sim import Simulator

    s = Simulator(BASE_CONFIG, **{**SIM_OVERRIDES, **getattr(request, "param", {})})
    await s.start()
    yield s
    try:
        await asyncio.wait_for(s.stop(), 20)
    except TimeoutError:
        _dump_tasks()
        raise


@pytest.fixture
def key_files(gsim: Any, tmp_path: Path) -> tuple[str, Path]:
    key_id, pem = gsim.keygen()
    p = tmp_path / "kalshi.key"
    p.write_text(pem)
    p.chmod(0o600)
    return key_id, p


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    p = tmp_path / "db.pw"
    p.write_text(ROLE_PASSWORDS["gatherer"])
    return p


@pytest.fixture
def gconf(gsim: Any, key_files: tuple[str, Path], gatherer_dsn: str, pw_file: Path
          ) -> Callable[..., dict[str, Any]]:
    """``gconf(**overrides)`` -> config dict for the simulator and the fresh database."""
    def make(**overrides: Any) -> dict[str, Any]:
        return h.config_dict(gsim, key_files[0], key_files[1], gatherer_dsn, pw_file, **overrides)
    return make


@pytest.fixture
async def run_app() -> AsyncIterator[Callable[..., Awaitable[GathererApp]]]:
    """``await run_app(doc)`` starts an in-process gatherer on the test loop (own registry)."""
    apps: list[GathererApp] = []

    async def start(doc: dict[str, Any]) -> GathererApp:
        app = GathererApp(h.load(doc), CollectorRegistry())
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        try:
            await asyncio.wait_for(app.stop(), 40)
        except TimeoutError:
            _dump_tasks()
            raise
