"""shared/logging.py: one JSON object per line with the conventional upper-case level names."""

from __future__ import annotations

import logging
import re

import orjson
import pytest

from shared.config import LoggingConfig
from shared.logging import JsonFormatter, RateLimitedLog, setup_logging


def _record(level: int, msg: str = "something happened") -> logging.LogRecord:
    return logging.LogRecord("gatherer.writer", level, __file__, 1, msg, None, None)


@pytest.mark.parametrize(("level", "name"), [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"),
                                             (logging.WARNING, "WARNING"), (logging.ERROR, "ERROR"),
                                             (logging.CRITICAL, "CRITICAL")])
def test_json_level_is_upper_case(level: int, name: str) -> None:
    doc = orjson.loads(JsonFormatter({"gatherer_id": "gatherer-1"}).format(_record(level)))
    assert doc["level"] == name
    assert doc["component"] == "gatherer.writer" and doc["gatherer_id"] == "gatherer-1"


def test_runbook_grep_finds_warnings_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/runbook.md greps JSON logs with `grep -E '(ERROR|WARN)'`: both must match, INFO not."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging(LoggingConfig(level="INFO", format="json"), gatherer_id="gatherer-1")
        log = logging.getLogger("gatherer.test")
        log.info("all good")
        log.warning("clock skew")
        RateLimitedLog(log).log(logging.ERROR, "k", "database down")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    matched = [ln for ln in lines if re.search(r"(ERROR|WARN)", ln)]
    assert [orjson.loads(ln)["msg"] for ln in matched] == ["clock skew", "database down"]
