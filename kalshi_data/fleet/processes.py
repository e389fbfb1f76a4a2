"""Child processes of the fleet: start, wait until ready, stop (SIGTERM, then SIGKILL), restart.

Each child runs in its own session (``start_new_session``), so a Ctrl-C in the terminal reaches
only ``kalshi-data demo``, which then stops the children in order: gatherers flush before the
deduplicator stops, and the deduplicator before the databases go. stdout and stderr go to
``DIR/logs/<name>.log`` (appended, so a restarted process keeps its history).

Readiness is the service's own ``GET /ready`` returning 200 (observability.md); a process that
exits first, or is not ready by the deadline, is reported with its last log line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from kalshi_data.fleet.errors import FleetError

ReadyProbe = Callable[[], bool]


def last_log_line(path: Path, limit: int = 240) -> str:
    """The last non-empty line of a log, shortened, for one-line error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def http_ready(url: str, timeout: float = 1.0) -> ReadyProbe:
    """A probe that is true once ``GET url`` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


class ManagedProcess:
    """One service process of the fleet (simulator, gatherer-N, deduplicator)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 ready: ReadyProbe, cwd: Path, stop_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.ready = ready
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        """Spawn the process (no-op when it runs already)."""
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                              start_new_session=True)
            except OSError as exc:
                raise FleetError(self.name, f"cannot run {self.argv[0]}: {exc.strerror}") from None

    def check_alive(self) -> None:
        """Raise FleetError (exit code, last log line) if the process has exited."""
        rc = self.returncode()
        if self._proc is not None and rc is not None:
            tail = last_log_line(self.log_path)
            raise FleetError(self.name, f"exited with code {rc}" + (f": {tail}" if tail else "")
                             + f" (log: {self.log_path})")

    def wait_ready(self, deadline: float) -> None:
        """Block until ready or raise FleetError; ``deadline`` is a ``time.monotonic()`` value."""
        while True:
            self.check_alive()
            if self.ready():
                return
            if time.monotonic() > deadline:
                tail = last_log_line(self.log_path)
                raise FleetError(self.name, "not ready in time" + (f"; last log line: {tail}" if tail else "")
                                 + f" (log: {self.log_path})")
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process's whole session group (it is its own group leader)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL now, as a crash would (for tests: ``kill -9`` a gatherer)."""
        self.signal(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float, hurry: Callable[[], bool] = lambda: False) -> str | None:
        """Wait for exit after ``terminate``; SIGKILL after ``timeout`` (or at once on ``hurry``).

        Returns a one-line note when it had to be killed or exited non-zero, else None.
        """
        if self._proc is None:
            return None
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and time.monotonic() < deadline and not hurry():
            time.sleep(0.05)
        if self._proc.poll() is None:
            self.kill()
            return f"{self.name}: did not stop within {timeout:g}s after SIGTERM; killed"
        rc = self._proc.returncode
        if rc not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            return f"{self.name}: exited with code {rc} on shutdown (log: {self.log_path})"
        return None

    def stop(self, timeout: float | None = None) -> str | None:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL."""
        self.terminate()
        return self.wait_stopped(self.stop_timeout if timeout is None else timeout)


def find_leftovers(markers: Sequence[str]) -> list[tuple[int, str]]:
    """Live processes whose command line mentions any of ``markers`` (paths of one fleet).

    Used after a stop to prove nothing was left behind, and by the tests.
    """
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and cmd and any(m in cmd for m in markers):
            out.append((int(entry), cmd))
    return out
