"""UTC day arithmetic for the archive: a day is ``[00:00, 24:00)`` UTC in µs since the epoch."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

DAY_US = 86_400_000_000


def day_range_us(day: date) -> tuple[int, int]:
    """``[lo, hi)`` in µs of the UTC day; the same bounds as the daily partitions."""
    lo = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
    return lo, lo + DAY_US


def parse_day(text: str, today: date) -> date:
    """``YYYY-MM-DD``, ``yesterday`` or ``today`` (UTC); raises ValueError with a clear text."""
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not a day: {text!r} (expected YYYY-MM-DD, yesterday or today)") from None


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def utc_today(now_s: float) -> date:
    return datetime.fromtimestamp(now_s, tz=UTC).date()
