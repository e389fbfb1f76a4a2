"""Fixtures of the operations kit shared by several modules (one render per session)."""

from __future__ import annotations

import pytest

from ._host_files import Rendered, render


@pytest.fixture(scope="session")
def host_files(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """Every host file of a three-gatherer deployment from examples/prod.tfvars.example,
    rendered offline by terraform (tests/ops/_host_files.py)."""
    return render(tmp_path_factory.mktemp("terraform-render"))
