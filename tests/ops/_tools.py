"""Locate the external tools the ops tests drive; install them via scripts/ensure-tools.sh.

A missing tool is a test FAILURE with the reason, never a skip: these tests exist to prove the
operations kit works with the real promtool, systemd-analyze and terraform.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENSURE_TOOLS = REPO / "scripts" / "ensure-tools.sh"


@functools.cache
def _run_ensure_tools() -> str:
    proc = subprocess.run(
        ["bash", str(ENSURE_TOOLS)], capture_output=True, text=True, timeout=300, check=False
    )
    return proc.stdout + proc.stderr


def require_tool(name: str) -> str:
    """Absolute path of `name` on PATH, running ensure-tools.sh once if it is missing."""
    found = shutil.which(name)
    if found:
        return found
    output = _run_ensure_tools()
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"required tool {name!r} is not on PATH and scripts/ensure-tools.sh could not "
            f"install it:\n{output}",
            pytrace=False,
        )
    return found


def run(
    cmd: list[str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
