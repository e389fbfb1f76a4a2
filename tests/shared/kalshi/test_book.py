"""Book: snapshot + deltas, export, diff."""

from __future__ import annotations

from shared.kalshi.book import Book
from shared.kalshi.models import SnapshotRow


def snap(yes: tuple[tuple[int, int], ...], no: tuple[tuple[int, int], ...] = ()) -> SnapshotRow:
    return SnapshotRow("T", 1, "rest", yes, no, None, None, None, 1)


def test_apply_and_export() -> None:
    b = Book.from_snapshot(snap(((6100, 12000), (6300, 4550)), ((3400, 8000),)))
    assert b.apply_delta("yes", 6300, -4550, 10, 0)
    assert b.apply_delta("no", 3500, 100, 11, 1)
    assert b.apply_delta("yes", 6200, 250, 12, 0)
    out = b.to_snapshot("T", 99, "ws", 100)
    assert out.yes_levels == ((6100, 12000), (6200, 250))
    assert out.no_levels == ((3400, 8000), (3500, 100))
    assert (out.last_delta_ts, out.last_delta_occurrence) == (12, 0)
    assert b.best_bid("yes") == 6200 and b.best_bid("no") == 3500


def test_negative_level_is_reported_and_removed() -> None:
    b = Book.from_snapshot(snap(((5000, 100),)))
    assert not b.apply_delta("yes", 5000, -200)
    assert b.levels("yes") == ()
    assert not b.apply_delta("no", 4000, -1)


def test_diff() -> None:
    b = Book.from_snapshot(snap(((100, 1), (200, 2), (300, 3)), ((500, 5),)))
    assert not b.diff(snap(((100, 1), (200, 2), (300, 3)), ((500, 5),)))
    d = b.diff(snap(((100, 1), (200, 9)), ((500, 5),)))
    assert d.levels == (("yes", 200, 2, 9), ("yes", 300, 3, 0))
    # depth=1 compares only the best level of each side
    assert not b.diff(snap(((300, 3),), ((500, 5),)), depth=1)
    assert b == Book.from_snapshot(snap(((100, 1), (200, 2), (300, 3)), ((500, 5),)))
