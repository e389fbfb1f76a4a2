"""Series / events / markets of the simulated exchange, derived from an index and the seed.

Why derived: the ``xl`` preset has 1,000,000 markets and must start in seconds within a few GB.
No per-market dict is stored for the initial population; every static attribute of market ``i``
(ticker, times, price grid, strike, market_id) is a pure function of ``(seed, i)``. Only markets
the engine later *creates* record their birth time here.

Ticker scheme (parseable, so a ticker maps back to its index without a lookup table)::

    series  KXSIM{s:04d}
    event   {series}-E{e:07d}          e = i // markets_per_event, s = e % n_series
    market  {event}-M{i:07d}

Market indexes only grow; listing in index order therefore keeps pagination stable while new
markets are created (they appear after every market that existed when paging started).

Multivariate (combo) markets live in their own small, static index space ``j`` (Kalshi lists
them in ``/markets`` unless ``mve_filter=exclude``; their events are not in ``/events``)::

    series  KXMVESIM        event  KXMVESIM-S{j:07d}        market  {event}-COMBO
"""

from __future__ import annotations

from dataclasses import dataclass

# Prices are integers in 1e-4 dollars ("0.5600" -> 5600); counts are integers in 1/100 contract.
ONE_DOLLAR = 10_000
HOT_SHARE = 0.98  # share of activity that goes to the hot set


@dataclass(frozen=True)
class Preset:
    """Size of one scale preset (numbers from kalshi-protocol.md §5)."""

    name: str
    n_series: int
    n_events: int
    n_markets: int
    rate: float  # default engine msgs/s of virtual time
    churn_per_s: float  # lifecycle actions (create/close/pause) per virtual second
    hot: int  # size of the hot set that gets HOT_SHARE of all activity (skewed within it)


PRESETS: dict[str, Preset] = {
    # ~1% of markets hot (kalshi-protocol.md §5: "1% hot"), the rest mostly dormant.
    "tiny": Preset("tiny", 3, 10, 50, 200.0, 0.5, 15),
    "medium": Preset("medium", 200, 2_000, 20_000, 200.0, 1.0, 200),
    "large": Preset("large", 2_000, 30_000, 300_000, 3_000.0, 3.0, 3_000),
    "xl": Preset("xl", 5_000, 100_000, 1_000_000, 5_000.0, 5.0, 10_000),
}

MVE_SERIES = "KXMVESIM"
MVE_COLLECTION = "KXMVESIMCOMBO"

LINEAR_CENT = [("0.0000", "1.0000", "0.0100")]
TAPERED_DECI_CENT = [
    ("0.0000", "0.1000", "0.0010"),
    ("0.1000", "0.9000", "0.0100"),
    ("0.9000", "1.0000", "0.0010"),
]


@dataclass(frozen=True, slots=True)
class MarketStatic:
    """Attributes of a market that never change after creation."""

    index: int
    ticker: str
    event_ticker: str
    series_ticker: str
    market_id: str
    created_ms: int
    open_ms: int
    close_ms: int
    structure: str  # price_level_structure
    fractional: bool
    floor_strike: int
    initial: bool  # part of the starting population (has a derived initial book)


_M64 = (1 << 64) - 1


class _Mix:
    """Tiny splitmix64 stream: one independent, reproducible stream per (seed, market,
    purpose). Seeding ``random.Random`` per market cost ~10x more, which dominated the large
    and xl presets where most activity touches a market for the first time."""

    __slots__ = ("x",)

    def __init__(self, seed: int, index: int, salt: int) -> None:
        self.x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9
                  + salt * 0x94D049BB133111EB) & _M64

    def next(self) -> int:
        self.x = z = (self.x + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)

    def randrange(self, a: int, b: int | None = None) -> int:
        if b is None:
            a, b = 0, a
        return a + self.next() % (b - a)

    def choice(self, seq: tuple[int, ...]) -> int:
        return seq[self.next() % len(seq)]

    def bits128(self) -> int:
        return (self.next() << 64) | self.next()


def _rng(seed: int, index: int, salt: int) -> _Mix:
    return _Mix(seed, index, salt)


# uuid.UUID(int=..., version=4): clear the variant and version fields, then set them.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def uuid4_text(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))`` without building a UUID object."""
    h = f"{(bits & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Catalog:
    """Index <-> ticker mapping and static market attributes for one simulator run.

    ``start_ms`` is the virtual time at which the run starts; initial markets were created
    before it, markets created by the engine record their own birth via :meth:`add_market`.
    """

    def __init__(self, preset: Preset, seed: int, start_ms: int, profile: str,
                 n_mve: int | None = None) -> None:
        self.preset = preset
        self.seed = seed
        self.start_ms = start_ms
        self.profile = profile
        self.n_series = preset.n_series
        self.mpe = max(1, preset.n_markets // preset.n_events)
        self.n_initial = preset.n_markets
        self.count = preset.n_markets
        self._born: dict[int, tuple[int, int, int]] = {}  # index -> (created, open, close) ms
        self._last: MarketStatic | None = None  # the last static() (immutable; one entry)
        self.n_mve = max(5, preset.n_markets // 100) if n_mve is None else n_mve

    # --- naming -------------------------------------------------------------------------
    def series_ticker(self, s: int) -> str:
        return f"KXSIM{s:04d}"

    def event_ticker(self, e: int) -> str:
        return f"{self.series_ticker(e % self.n_series)}-E{e:07d}"

    def market_ticker(self, i: int) -> str:
        return f"{self.event_ticker(i // self.mpe)}-M{i:07d}"

    def n_events(self) -> int:
        return (self.count + self.mpe - 1) // self.mpe

    def parse_market(self, ticker: str) -> int | None:
        """Index of an existing market, or None (unknown or malformed ticker)."""
        _, sep, tail = ticker.rpartition("-M")
        if not sep or not tail.isdigit() or len(tail) != 7:
            return None
        i = int(tail)
        if i >= self.count or self.market_ticker(i) != ticker:
            return None
        return i

    def parse_event(self, ticker: str) -> int | None:
        _, sep, tail = ticker.rpartition("-E")
        if not sep or not tail.isdigit() or len(tail) != 7:
            return None
        e = int(tail)
        if e >= self.n_events() or self.event_ticker(e) != ticker:
            return None
        return e

    def parse_series(self, ticker: str) -> int | None:
        if not ticker.startswith("KXSIM") or not ticker[5:].isdigit() or len(ticker) != 9:
            return None
        s = int(ticker[5:])
        return s if s < self.n_series else None

    # --- multivariate (combo) markets ---------------------------------------------------------
    def mve_event_ticker(self, j: int) -> str:
        return f"{MVE_SERIES}-S{j:07d}"

    def mve_ticker(self, j: int) -> str:
        return f"{self.mve_event_ticker(j)}-COMBO"

    def parse_mve(self, ticker: str) -> int | None:
        """Index of a multivariate market, or None."""
        if not ticker.startswith(MVE_SERIES + "-S") or not ticker.endswith("-COMBO"):
            return None
        tail = ticker[len(MVE_SERIES) + 2:-len("-COMBO")]
        if len(tail) != 7 or not tail.isdigit() or int(tail) >= self.n_mve:
            return None
        return int(tail)

    def mve_static(self, j: int) -> MarketStatic:
        """A combo market: open for the whole run, never traded by the engine (its book is
        empty); the legs it combines are two ordinary markets (``mve_legs``)."""
        r = _rng(self.seed, j, 3)
        created = self.start_ms - r.randrange(3_600_000, 86_400_000)
        return MarketStatic(
            index=-1 - j, ticker=self.mve_ticker(j), event_ticker=self.mve_event_ticker(j),
            series_ticker=MVE_SERIES, market_id=uuid4_text(r.bits128()),
            created_ms=created, open_ms=created, close_ms=self.start_ms + 30 * 86_400_000,
            structure="linear_cent", fractional=False, floor_strike=0, initial=True)

    def mve_legs(self, j: int) -> tuple[int, int]:
        n = self.n_initial
        return (j * 7) % n, (j * 13 + 1) % n

    def event_markets(self, e: int) -> range:
        return range(e * self.mpe, min((e + 1) * self.mpe, self.count))

    # --- creation -------------------------------------------------------------------------
    def add_market(self, created_ms: int, open_delay_ms: int, life_ms: int) -> int:
        """Append a new market (engine churn); returns its index."""
        i = self.count
        self.count += 1
        # REST and lifecycle frames carry close_time in whole seconds and Kalshi closes a market
        # exactly then; a close at .255 s advertised as .000 would have clients stop listening
        # (scheduling "-> closed" from close_time) before the book-clearing deltas go out.
        close_ms = -(-(created_ms + life_ms) // 1000) * 1000
        self._born[i] = (created_ms, created_ms + open_delay_ms, close_ms)
        return i

    def _window(self, r: _Mix, i: int) -> tuple[int, int, int]:
        """(created, open, close) ms of market ``i``: the first draws of its static stream."""
        born = self._born.get(i)
        if born is not None:
            r.random()
            r.random()
            r.random()
            return born
        created = self.start_ms - r.randrange(3_600_000, 30 * 86_400_000)
        # ~5% of the starting population opens shortly after start (status initialized).
        if r.random() < 0.05:
            open_ms = self.start_ms + r.randrange(5_000, 600_000)
        else:
            open_ms = created + r.randrange(0, 3_600_000)
            r.random()
        return created, open_ms, self.start_ms + r.randrange(2 * 86_400_000, 60 * 86_400_000)

    def window(self, i: int) -> tuple[int, int]:
        """(open_ms, close_ms) of market ``i``: what a status needs, at a third of the cost of
        :meth:`static` (REST status filters scan every market of an xl catalog)."""
        _, open_ms, close_ms = self._window(_rng(self.seed, i, 1), i)
        return open_ms, close_ms

    def static(self, i: int) -> MarketStatic:
        last = self._last
        if last is not None and last.index == i:  # REST derives a market twice per listing
            return last
        r = _rng(self.seed, i, 1)
        created, open_ms, close_ms = self._window(r, i)
        fp = self.profile == "fp2026"
        structure = "tapered_deci_cent" if fp and r.random() < 0.15 else "linear_cent"
        fractional = fp and r.random() < 0.10
        e = i // self.mpe
        event = self.event_ticker(e)
        self._last = st = MarketStatic(
            index=i,
            ticker=f"{event}-M{i:07d}",
            event_ticker=event,
            series_ticker=self.series_ticker(e % self.n_series),
            market_id=uuid4_text(r.bits128()),
            created_ms=created,
            open_ms=open_ms,
            close_ms=close_ms,
            structure=structure,
            fractional=fractional,
            floor_strike=(i % self.mpe) * 10 + 50,
            initial=i not in self._born,
        )
        return st

    def initial_book(self, st: MarketStatic) -> tuple[dict[int, int], dict[int, int]]:
        """Derived starting book (yes bids, no bids) of a market; empty for created ones.

        Heavy-tailed: most markets rest a few levels, some none on one side.
        """
        if not st.initial:
            return {}, {}
        r = _rng(self.seed, st.index, 2)
        step = 100
        mid = r.randrange(5, 96) * 100  # YES fair value
        yes: dict[int, int] = {}
        no: dict[int, int] = {}
        n_yes = r.choice((0, 1, 2, 3, 4, 6, 8))
        n_no = r.choice((0, 1, 2, 3, 4, 6, 8))
        p = mid - step
        for _ in range(n_yes):
            if p < step:
                break
            yes[p] = r.randrange(1, 500) * 100 + (r.randrange(100) if st.fractional else 0)
            p -= step * r.randrange(1, 3)
        q = 10_000 - mid - step
        for _ in range(n_no):
            if q < step:
                break
            no[q] = r.randrange(1, 500) * 100 + (r.randrange(100) if st.fractional else 0)
            q -= step * r.randrange(1, 3)
        return yes, no


def price_ranges(structure: str) -> list[tuple[str, str, str]]:
    return TAPERED_DECI_CENT if structure == "tapered_deci_cent" else LINEAR_CENT


def tick_at(structure: str, price: int) -> int:
    """Grid step (1e-4 dollars) around ``price`` for a price-level structure."""
    if structure == "tapered_deci_cent" and (price < 1_000 or price >= 9_000):
        return 10
    return 100
