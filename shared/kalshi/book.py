"""A reconstructed order book for one market: snapshot + signed deltas (sans-I/O).

Kalshi books are bids only on both sides: ``yes`` bids and ``no`` bids, price -> resting size.
A delta is a signed increment to (side, price); a level at or below zero is removed
(kalshi-protocol.md §4.5). A delta driving a level below zero means our book and the exchange's
disagree: ``apply_delta`` reports it so the caller can resync.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Level, SnapshotRow

__all__ = ["Book", "BookDiff"]


@dataclass(frozen=True, slots=True)
class BookDiff:
    """Where two books differ: ((side, price, ours, theirs), ...) with 0 for a missing level."""

    levels: tuple[tuple[str, int, int, int], ...]

    def __bool__(self) -> bool:
        return bool(self.levels)


class Book:
    """Mutable book of one market. ``last_delta_ts``/``last_delta_occurrence`` identify the last
    delta applied (hardening 6: a stored snapshot records them so production can rebuild)."""

    __slots__ = ("last_delta_occurrence", "last_delta_ts", "no", "seq", "yes")

    def __init__(self) -> None:
        self.yes: dict[int, int] = {}
        self.no: dict[int, int] = {}
        self.last_delta_ts: int | None = None
        self.last_delta_occurrence: int | None = None
        self.seq: int | None = None

    @classmethod
    def from_snapshot(cls, snap: SnapshotRow) -> Book:
        book = cls()
        book.apply_snapshot(snap)
        return book

    def apply_snapshot(self, snap: SnapshotRow) -> None:
        """Replace the whole book (levels with size <= 0 are ignored)."""
        self.yes = {p: s for p, s in snap.yes_levels if s > 0}
        self.no = {p: s for p, s in snap.no_levels if s > 0}
        self.seq = snap.seq
        if snap.last_delta_ts is not None:
            self.last_delta_ts = snap.last_delta_ts
            self.last_delta_occurrence = snap.last_delta_occurrence

    def apply_delta(
        self,
        side: str,
        price: int,
        delta: int,
        exchange_ts: int | None = None,
        occurrence: int | None = None,
    ) -> bool:
        """Add ``delta`` at (side, price). Returns False when the level went below zero (the book
        is inconsistent with the exchange; the level is removed anyway)."""
        levels = self.yes if side == "yes" else self.no
        size = levels.get(price, 0) + delta
        if size > 0:
            levels[price] = size
        else:
            levels.pop(price, None)
        if exchange_ts is not None:
            self.last_delta_ts = exchange_ts
            self.last_delta_occurrence = occurrence
        return size >= 0

    def levels(self, side: str) -> tuple[Level, ...]:
        """Levels of one side ascending by price (Kalshi's order: best bid last)."""
        return tuple(sorted((self.yes if side == "yes" else self.no).items()))

    def best_bid(self, side: str) -> int | None:
        levels = self.yes if side == "yes" else self.no
        return max(levels) if levels else None

    def to_snapshot(
        self,
        ticker: str,
        snapshot_ts: int,
        source: str,
        received_at: int,
        seq: int | None = None,
    ) -> SnapshotRow:
        """Export as a row, with last_delta_* of the last applied delta."""
        return SnapshotRow(
            ticker,
            snapshot_ts,
            source,
            self.levels("yes"),
            self.levels("no"),
            self.seq if seq is None else seq,
            self.last_delta_ts,
            self.last_delta_occurrence,
            received_at,
        )

    def diff(self, snap: SnapshotRow, depth: int | None = None) -> BookDiff:
        """Compare with a snapshot (e.g. a REST poll). ``depth`` limits the comparison to the N
        best levels of each side (REST ``depth`` keeps the best ones). Empty diff = same book."""
        out: list[tuple[str, int, int, int]] = []
        for side, ours, theirs_levels in (
            ("yes", self.yes, snap.yes_levels),
            ("no", self.no, snap.no_levels),
        ):
            theirs = {p: s for p, s in theirs_levels if s > 0}
            if depth is not None:  # best bid = highest price; keep the N best of each book
                ours = dict(sorted(ours.items())[-depth:]) if depth > 0 else {}
                theirs = dict(sorted(theirs.items())[-depth:]) if depth > 0 else {}
            for p in sorted(set(ours) | set(theirs)):
                a, b = ours.get(p, 0), theirs.get(p, 0)
                if a != b:
                    out.append((side, p, a, b))
        return BookDiff(tuple(out))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Book):
            return NotImplemented
        return self.yes == other.yes and self.no == other.no

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Book(yes={len(self.yes)} levels, no={len(self.no)} levels, seq={self.seq})"
