"""Field extraction shared by the WS decoder and the REST object converters (private).

Everything here raises :class:`~shared.kalshi.units.UnitError` (reason ``bad_type``,
``bad_value``, ``too_precise``) or ``KeyError`` (missing field); callers turn those into
``Rejected``. Keys are read by presence: the fp2026 key first, the legacy one as fallback.
"""

from __future__ import annotations

from typing import Any

from .models import Level
from .units import BAD_TYPE, BAD_VALUE, UnitError, cents, count_fp, dollars

PRICE_MAX = 10_000  # $1.00 in dollars x 10,000
_SIDES = frozenset(("yes", "no"))
_UUID_DASHES = (8, 13, 18, 23)
_HEX = frozenset("0123456789abcdefABCDEF-")


def price_of(msg: dict[str, Any], fp_key: str, legacy_key: str) -> int:
    """A required price: ``fp_key`` (dollar string) or ``legacy_key`` (int cents), within 0..$1."""
    v = msg.get(fp_key)
    p = dollars(v) if v is not None else cents(msg[legacy_key])
    if not 0 <= p <= PRICE_MAX:
        raise UnitError(BAD_VALUE, f"{fp_key}={p}")
    return p


def opt_price(msg: dict[str, Any], fp_key: str, legacy_key: str) -> int | None:
    """An optional price; ``""``/null/absent -> None (never-traded markets send ``""``)."""
    v = msg.get(fp_key)
    if v is not None and v != "":
        return dollars(v)
    v = msg.get(legacy_key)
    if v is None or v == "":
        return None
    return cents(v)


def opt_count(msg: dict[str, Any], fp_key: str, legacy_key: str) -> int | None:
    """An optional size: ``fp_key`` (2-dp string) or ``legacy_key`` (int contracts)."""
    v = msg.get(fp_key)
    if v is None or v == "":
        v = msg.get(legacy_key)
        if v is None or v == "":
            return None
    return count_fp(v)  # count_fp(int) == int x 100, the legacy rule


def side_of(v: Any, key: str = "side") -> str:
    if v in _SIDES:
        return v  # type: ignore[no-any-return]
    if type(v) is not str:
        raise UnitError(BAD_TYPE, key)
    raise UnitError(BAD_VALUE, f"{key}={v[:20]!r}")


def opt_side(v: Any, key: str) -> str | None:
    return None if v is None else side_of(v, key)


def opt_str(v: Any, key: str) -> str | None:
    if v is None or type(v) is str:
        return v
    raise UnitError(BAD_TYPE, key)


def opt_bool(v: Any, key: str) -> bool | None:
    if v is None or type(v) is bool:
        return v
    raise UnitError(BAD_TYPE, key)


def req_str(v: Any, key: str) -> str:
    if type(v) is str and v:
        return v
    raise UnitError(BAD_TYPE if type(v) is not str else BAD_VALUE, key)


def uuid_str(v: Any, key: str = "trade_id") -> str:
    """Validate the canonical 8-4-4-4-12 UUID text cheaply (uuid.UUID() costs ~1.5 µs)."""
    if type(v) is not str:
        raise UnitError(BAD_TYPE, key)
    if (len(v) != 36 or v[8] != "-" or v[13] != "-" or v[18] != "-" or v[23] != "-"
            or not _HEX.issuperset(v)):
        raise UnitError(BAD_VALUE, key)
    return v.lower()


def levels(side: Any, price_is_cents: bool) -> tuple[Level, ...]:
    """``[[price, size], ...]`` -> ((price, size), ...) ascending by price. A null/absent side is
    empty. Prices are dollar strings, or int cents when ``price_is_cents`` (legacy ``yes``/``no``);
    sizes are 2-dp strings or int contracts."""
    if side is None:
        return ()
    if type(side) is not list:
        raise UnitError(BAD_TYPE, "levels")
    out: list[Level] = []
    conv = cents if price_is_cents else dollars
    for lvl in side:
        if type(lvl) is not list or len(lvl) != 2:
            raise UnitError(BAD_TYPE, "level")
        p = conv(lvl[0])
        if not 0 <= p <= PRICE_MAX:
            raise UnitError(BAD_VALUE, f"level price {p}")
        out.append((p, count_fp(lvl[1])))
    out.sort()
    return tuple(out)


def book_sides(
    ob: dict[str, Any], yes_fp: str, no_fp: str
) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    """Both sides of a book object, by key presence: ``yes_fp``/``no_fp`` (fp2026 names), else
    legacy ``yes_dollars``/``no_dollars`` (dollar strings), else legacy ``yes``/``no`` (cents)."""
    if yes_fp in ob or no_fp in ob:
        return levels(ob.get(yes_fp), False), levels(ob.get(no_fp), False)
    if "yes_dollars" in ob or "no_dollars" in ob:
        return levels(ob.get("yes_dollars"), False), levels(ob.get("no_dollars"), False)
    if "yes" in ob or "no" in ob:
        return levels(ob.get("yes"), True), levels(ob.get("no"), True)
    return (), ()  # both sides empty: keys are absent when a side is empty


def trade_fields(
    msg: dict[str, Any],
) -> tuple[str, int, int, int, str | None, str | None, str | None, bool | None]:
    """(trade_id, yes_price, no_price, count, taker_side, taker_outcome_side, taker_book_side,
    is_block_trade) of a WS or REST trade object."""
    trade_id = uuid_str(msg["trade_id"])
    yes = price_of(msg, "yes_price_dollars", "yes_price")
    if "no_price_dollars" in msg or "no_price" in msg:
        no = price_of(msg, "no_price_dollars", "no_price")
    else:
        no = PRICE_MAX - yes  # YES + NO = $1 for one trade
    v = msg.get("count_fp")
    count = count_fp(v) if v is not None else count_fp(msg["count"])
    if count <= 0:
        raise UnitError(BAD_VALUE, "count")
    return (
        trade_id,
        yes,
        no,
        count,
        opt_side(msg.get("taker_side"), "taker_side"),
        opt_str(msg.get("taker_outcome_side"), "taker_outcome_side"),
        opt_str(msg.get("taker_book_side"), "taker_book_side"),
        opt_bool(msg.get("is_block_trade"), "is_block_trade"),
    )
