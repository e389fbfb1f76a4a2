"""What a benchmark returns (``Row``) and what it is given (``Context``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._harness import Stat

__all__ = ["Context", "Row"]


@dataclass
class Row:
    """One line of the results table.

    ``raw`` is the raw limit measured in the same run (None for rows performance.md gives no raw
    limit for); ``ours`` our figure in ``unit``. ``target_ratio``: the row meets its target when
    ``ours.median / raw.median >= target_ratio``. Rows without a ratio target set ``ok`` and put
    their figures in ``extra`` (seconds, bytes, percentiles).
    """

    group: str  # the row of performance.md's table ("decode", "local write", ...)
    name: str  # this measurement ("decode fp2026", "write deltas", ...)
    unit: str
    raw: Stat | None = None
    ours: Stat | None = None
    target: str = ""
    target_ratio: float | None = None
    ok: bool | None = None
    peak_rss: int | None = None  # bytes; of the process doing "ours"
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.raw is None or self.ours is None or not self.raw.median:
            return None
        return self.ours.median / self.raw.median

    @property
    def met(self) -> bool | None:
        if self.ok is not None:
            return self.ok
        r = self.ratio
        if r is None or self.target_ratio is None:
            return None
        return r >= self.target_ratio

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "unit": self.unit,
            "raw": self.raw.as_dict() if self.raw else None,
            "ours": self.ours.as_dict() if self.ours else None,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "met": self.met,
            "peak_rss_bytes": self.peak_rss,
            "extra": self.extra,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        def stat(s: dict[str, Any] | None) -> Stat | None:
            if s is None:
                return None
            s = dict(s)
            s.pop("spread_pct", None)
            return Stat(**s)

        return cls(
            group=d["group"],
            name=d["name"],
            unit=d["unit"],
            raw=stat(d["raw"]),
            ours=stat(d["ours"]),
            target=d.get("target", ""),
            target_ratio=None,
            ok=d.get("met"),
            peak_rss=d.get("peak_rss_bytes"),
            extra=d.get("extra") or {},
            note=d.get("note", ""),
        )


@dataclass(frozen=True)
class Context:
    """Run-wide settings and shared resources, handed to each benchmark child as JSON."""

    quick: bool
    reps: int
    workdir: str  # a temp dir removed at the end of the run
    pg_dsn: str  # superuser DSN of the run's cluster ("postgres" database)
    frames_dir: str  # recorded simulator frames (bench.frames)
    soak_minutes: float = 0.0  # bench.soak's run length (--soak-minutes)
    soak_preset: str = "xl"  # bench.soak's simulator preset (--soak-preset)

    @property
    def frames(self) -> Path:
        return Path(self.frames_dir)

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str) -> Context:
        return cls(**json.loads(text))
