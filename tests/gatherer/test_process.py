"""The gatherer as a process: local database outage, kill -9 and restart, SIGTERM flush, and the
command's start-up errors. The database-outage test runs in-process on a private cluster; the
others run ``python -m gatherer`` (the ``kalshi-gatherer`` entry point) as a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from shared.migrate import apply_migrations, apply_roles
from tests.fix_db import ROLE_PASSWORDS
from tests.gatherer import _harness as h

ROOT = Path(__file__).resolve().parents[2]


def _spawn(cfg_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "gatherer", "--config", str(cfg_path)], cwd=ROOT,
                            stdout=log, stderr=log, env=h.env_without_pg())


async def _ready(port: int, timeout: float = 20) -> None:
    async def ok() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as c:
                return (await c.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
        except httpx.HTTPError:
            return False
    await h.wait_for(ok, timeout, "gatherer /ready", step=0.2)


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def test_local_db_down_then_back_loses_nothing(own_cluster: Any, gsim: Any, key_files: Any,
                                                     pw_file: Path, run_app: Any) -> None:
    dsn = own_cluster.create_database("gdb")
    apply_migrations(dsn, "gatherer")
    apply_roles(dsn, ROLE_PASSWORDS)
    doc = h.config_dict(gsim, key_files[0], key_files[1], dsn, pw_file,
                        writer={"batch_size": 50, "queue_max_rows": 150, "retry_max_s": 0.3})
    app = await run_app(doc)
    await h.wait_for(lambda: app.health.ready()[0], 10, "gatherer ready")
    gsim.set_rate(400.0)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_cluster.stop, "immediate")
    await h.wait_for(lambda: app.health.doc()["status"] == "unhealthy", 5, "/health unhealthy")
    doc_down = app.health.doc()
    assert doc_down["components"]["database"]["writable"] is False
    assert app.health.ready() == (False, "local database not writable")
    await asyncio.sleep(3.0)
    db_doc = app.health.doc()["components"]["database"]
    # at least one writer filled its bound and spills to disk: the sockets are still read
    assert db_doc["queue_rows"] >= 150 and db_doc["spool_rows"] > 0, db_doc
    msgs = h.metric_sum(app, "ws_client_messages_received_total")
    await asyncio.sleep(1.0)
    assert h.metric_sum(app, "ws_client_messages_received_total") > msgs
    await asyncio.to_thread(own_cluster.start)
    await h.wait_for(lambda: app.health.doc()["status"] == "healthy", 15, "/health healthy again")
    await h.assert_complete(gsim, dsn)
    assert h.metric_sum(app, "writer_backpressure_seconds_total") == 0
    assert h.metric_sum(app, "writer_spool_replayed_rows_total") > 0
    assert h.metric_sum(app, "writer_errors_total", type="connection") >= 1
    assert h.metric_sum(app, "writer_rejected_rows_total") == 0
    assert h.metric_sum(app, "conn_manager_subscribe_errors_total") == 0  # no slow-consumer error


async def test_kill9_then_restart_backfills_the_hole(gsim: Any, gconf: Any, gatherer_dsn: str,
                                                     tmp_path: Path) -> None:
    doc = gconf()
    cfg = h.write_config(tmp_path / "g.yaml", doc)
    log = tmp_path / "g.log"
    proc = _spawn(cfg, log)
    try:
        await _ready(doc["health"]["port"])
        await asyncio.sleep(2.0)
        before = (await h.aquery(gatherer_dsn, "SELECT count(*) FROM trades"))[0][0]
        assert before > 0
        proc.kill()  # SIGKILL: no flush, no goodbye
        assert await _wait_exit(proc, 10) == -signal.SIGKILL
        n_truth_dead = len(gsim.truth.trades())
        await asyncio.sleep(3.0)  # trades happen while nobody listens
        assert len(gsim.truth.trades()) > n_truth_dead
        proc = _spawn(cfg, log)
        await _ready(doc["health"]["port"])
        await h.assert_complete(gsim, gatherer_dsn)
        down = await h.aquery(gatherer_dsn, "SELECT window_start, window_end FROM coverage_events "
                                            "WHERE kind = 'process_down'")
        assert len(down) == 1 and down[0][1] > down[0][0]
        startup = await h.aquery(gatherer_dsn, "SELECT count(*) FROM coverage_events WHERE kind = "
                                               "'trade_backfill' AND detail->>'reason' = 'startup' AND recovered")
        assert startup[0][0] == 2  # one per process start
        proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(proc, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_flushes_everything_accepted_and_exits_0(gsim: Any, gconf: Any, gatherer_dsn: str,
                                                               tmp_path: Path) -> None:
    # Writers that never flush on their own: only the shutdown flush can store the rows.
    doc = gconf(writer={"batch_size": 100_000, "queue_max_rows": 200_000, "flush_interval_ms": 600_000,
                        "flush_deadline_s": 15.0})
    cfg = h.write_config(tmp_path / "g.yaml", doc)
    log = tmp_path / "g.log"
    proc = _spawn(cfg, log)
    try:
        await _ready(doc["health"]["port"])
        await asyncio.sleep(3.0)
        assert (await h.aquery(gatherer_dsn, "SELECT count(*) FROM trades"))[0][0] == 0
        gsim.set_rate(0.0)
        await asyncio.sleep(1.0)  # everything the exchange sent has been read
        truth = h.truth_trade_ids(gsim)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(proc, 30) == 0
        assert time.monotonic() - t0 < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ids, n = await asyncio.to_thread(h.db_trade_ids, gatherer_dsn)
    assert truth and ids == truth and n == len(truth)
    deltas = (await h.aquery(gatherer_dsn, "SELECT count(*) FROM orderbook_deltas"))[0][0]
    assert deltas > 0
    text = log.read_text()
    assert "every accepted row is in the database" in text


def _run_cmd(cfg: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatherer", "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=h.env_without_pg())


async def test_command_start_errors_exit_2_with_one_line(gsim: Any, gconf: Any, key_files: Any,
                                                         tmp_path: Path) -> None:
    key_id, key_path = key_files
    pem = key_path.read_text()
    secret_line = pem.splitlines()[1]

    async def run(doc: dict[str, Any]) -> str:
        cfg = h.write_config(tmp_path / f"{uuid.uuid4().hex}.yaml", doc)
        res = await asyncio.to_thread(_run_cmd, cfg)
        assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr  # one line, no traceback
        assert secret_line not in res.stderr
        return lines[0]

    docs = []
    doc = gconf()  # unknown key in the file
    doc["kalshi"]["bogus"] = 1
    docs.append(doc)
    doc = gconf()  # the PEM file does not exist
    doc["kalshi"]["private_key_file"] = str(tmp_path / "missing.key")
    docs.append(doc)
    bad = tmp_path / "bad.key"  # the PEM file is not a key
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    doc = gconf()
    doc["kalshi"]["private_key_file"] = str(bad)
    docs.append(doc)
    other = str(uuid.uuid4())  # a key id the exchange does not know: the simulator says 401
    doc = gconf()
    doc["kalshi"]["api_key_id"] = other
    docs.append(doc)
    unknown, missing, garbage, rejected = await asyncio.gather(*(run(d) for d in docs))
    assert "kalshi.bogus" in unknown and "unknown key" in unknown
    assert key_id in missing and "not found" in missing
    assert key_id in garbage and "PEM" in garbage
    assert other in rejected and "rejected" in rejected and "401" in rejected


def test_env_is_not_read_by_the_gatherer_package() -> None:
    """Style rule: only shared/config.py reads the environment."""
    for p in (ROOT / "gatherer").glob("*.py"):
        text = p.read_text()
        assert "os.environ" not in text and "getenv" not in text, p.name

