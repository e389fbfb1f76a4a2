"""Process logging: one line per event, JSON by default, plus rate-limited repeat suppression.

Levels are the conventional upper-case names (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``,
``CRITICAL``) in both formats, so the runbook's ``grep -E '(ERROR|WARN)'`` finds them.

Every line carries ``component`` and the process's static fields (``gatherer_id``); callers add
``conn_id``/``ticker`` through ``extra``. Secrets never reach here: config objects print
``Secret(<source>)`` and DSNs are shown with ``DatabaseConfig.display_name()``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from shared.config import LoggingConfig

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any]) -> None:
        super().__init__()
        self._static = static

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "component": record.name,
            "msg": record.getMessage(),
        }
        out.update(self._static)
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._static = " ".join(f"{k}={v}" for k, v in static.items())

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return f"{line} [{self._static}]" if self._static else line


def setup_logging(cfg: LoggingConfig, **static: Any) -> None:
    """Configure the root logger once, at process start (app.py / __main__.py only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static) if cfg.format == "json" else TextFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    for noisy in ("websockets", "httpx", "httpcore", "aiohttp.access", "psycopg.pool", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RateLimitedLog:
    """Log each key at most once per ``interval_s``, reporting how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, now: float | None = None, **extra: Any) -> bool:
        t = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and t - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = t
        self._logger.log(level, msg, *args, extra={**extra, "suppressed": suppressed})
        return True
