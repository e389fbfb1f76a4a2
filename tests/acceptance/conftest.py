"""Fixtures for whole-fleet runs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A work directory the unprivileged PostgreSQL account can reach (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="kalshi-acceptance-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
