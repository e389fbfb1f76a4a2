"""Exact unit conversions for Kalshi values (no floats, no rounding).

Our storage units (data-model.md):

- prices: integer dollars x 10,000 (``"0.5600"`` -> 5600, legacy cents ``56`` -> 5600);
- sizes/counts: integer contracts x 100 (``"12.00"`` -> 1200, legacy ``12`` -> 1200);
- times: integer microseconds since the Unix epoch.

A value carrying more precision than its scale (``"0.56001"``, ``"1.005"`` as a count) is a
validation error (:class:`UnitError` with reason ``too_precise``), never silently rounded. Trailing
zeros beyond the scale are fine (``"0.010000"`` -> 100).

These functions are the decoder's hot path: they split strings instead of building ``Decimal``
objects (a split is exact for decimal strings and ~5x cheaper).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "UnitError",
    "cents",
    "count_fp",
    "count_int",
    "dollars",
    "legacy_ts_to_us",
    "rfc3339_to_us",
    "to_ms_precision",
    "ts_ms_to_us",
    "whole_int",
]

# Reasons are a fixed vocabulary: they become metric label values (router_parse_errors_total).
BAD_TYPE = "bad_type"
BAD_VALUE = "bad_value"
TOO_PRECISE = "too_precise"

_POW10 = (1, 10, 100, 1000, 10000)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class UnitError(ValueError):
    """A value could not be converted exactly; raised inside the sans-I/O layer only.

    The decoder turns it into ``Rejected(reason)``; it never escapes ``Decoder.feed``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _scaled(v: Any, digits: int) -> int:
    """Parse a decimal (string, int, or float via its shortest repr) to int x 10**digits."""
    t = type(v)
    if t is str:
        s: str = v
    elif t is int:
        return v * _POW10[digits]  # type: ignore[no-any-return]
    elif t is float:
        # Some servers send numbers instead of strings (protocol §4.5). repr() is the shortest
        # decimal that round-trips, i.e. what the sender wrote; exponents are rejected below.
        s = repr(v)
    else:
        raise UnitError(BAD_TYPE, _short(v))
    whole, sep, frac = s.partition(".")
    neg = False
    if whole[:1] == "-":
        neg = True
        whole = whole[1:]
    if not (s.isascii() and whole.isdigit() and (frac.isdigit() if sep else True)):
        raise UnitError(BAD_VALUE, _short(v))
    n = len(frac)
    if n <= digits:
        r = int(whole) * _POW10[digits] + (int(frac) * _POW10[digits - n] if n else 0)
    else:
        if frac[digits:].strip("0"):
            raise UnitError(TOO_PRECISE, _short(v))
        r = int(whole) * _POW10[digits] + int(frac[:digits])
    return -r if neg else r


def dollars(v: Any) -> int:
    """``"0.5600"`` -> 5600 (dollars x 10,000). Accepts 0-4 significant decimals."""
    # Fast path for the wire's usual "D.DDDD": drop the point, one int(). Exact: the point's
    # position fixes the scale; anything but plain ASCII digits takes the strict parser.
    if type(v) is str and len(v) > 5 and v[-5] == ".":
        digits = v[:-5] + v[-4:]
        if digits.isdigit() and digits.isascii():
            return int(digits)
    return _scaled(v, 4)


def count_fp(v: Any) -> int:
    """``"12.00"`` -> 1200, ``"-45.50"`` -> -4550 (contracts x 100). Max 2 significant decimals."""
    if type(v) is str and len(v) > 3 and v[-3] == ".":  # fast path, as above
        if v[0] == "-":
            digits = v[1:-3] + v[-2:]
            if len(v) > 4 and digits.isdigit() and digits.isascii():
                return -int(digits)
        else:
            digits = v[:-3] + v[-2:]
            if digits.isdigit() and digits.isascii():
                return int(digits)
    return _scaled(v, 2)


def _strict_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v  # type: ignore[no-any-return]
    if t is str and v.isascii() and (v.isdigit() or (v[:1] == "-" and v[1:].isdigit())):
        return int(v)
    raise UnitError(BAD_TYPE if t is not str else BAD_VALUE, _short(v))


def cents(v: Any) -> int:
    """Legacy integer cents -> dollars x 10,000 (56 -> 5600)."""
    return _strict_int(v) * 100


def count_int(v: Any) -> int:
    """Legacy integer contract count -> contracts x 100 (12 -> 1200)."""
    return _strict_int(v) * 100


def whole_int(v: Any) -> int:
    """A plain integer field (``dollar_volume``: whole dollars); digit strings accepted."""
    return _strict_int(v)


def ts_ms_to_us(v: Any) -> int:
    """WS ``ts_ms`` (int milliseconds) -> microseconds."""
    return _strict_int(v) * 1000


def to_ms_precision(us: int) -> int:
    """Truncate microseconds to whole milliseconds (still in µs), the precision every source
    carries (WS ``ts_ms``, legacy ``ts``, REST ``created_time``), so every payload version, path
    and gatherer gives one event the same exchange_ts, hence the same identity key."""
    return us - us % 1000


def legacy_ts_to_us(v: Any) -> int:
    """Legacy ``ts``: int seconds, a digit string of seconds, or an RFC 3339 string -> µs."""
    t = type(v)
    if t is int:
        return v * 1_000_000  # type: ignore[no-any-return]
    if t is str:
        if v.isascii() and v.isdigit():
            return int(v) * 1_000_000
        return rfc3339_to_us(v)
    raise UnitError(BAD_TYPE, _short(v))


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The layout of the fast path, checked in C (ASCII digits only: ``[0-9]``, not ``\d``)
_FAST_Z = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z").fullmatch
#: (head "YYYY-MM-DDTHH:MM:SS", µs of that second) of the last fast-path parse. One tuple,
#: rebound whole and read once per call, so a thread never pairs one second's head with
#: another's base.
_SECOND: tuple[str, int] = ("", 0)
_ONE_US = timedelta(microseconds=1)


def rfc3339_to_us(v: Any) -> int:
    """RFC 3339 (``2025-08-12T21:00:32.539836022Z``, any fraction length, ``Z`` or ``±HH:MM``)
    -> µs since epoch. Fractions finer than 1 µs are truncated (ns are below our unit)."""
    global _SECOND
    # Fastest path: the same whole second as the previous call (a stream's consecutive frames
    # nearly always are): only the fraction is parsed. The cached head was validated in full.
    head, base = _SECOND
    if type(v) is str and v[:19] == head and v[-1:] == "Z":
        if len(v) == 20:
            return base
        frac = v[20:-1]
        if v[19] == "." and frac and frac.isdigit() and frac.isascii():
            return base + int(frac[:6].ljust(6, "0"))
    # Fast path for the usual "YYYY-MM-DDTHH:MM:SS[.f+]Z" (every legacy delta, every REST
    # market time): once the layout is checked here, the C parser does the rest (~4x cheaper;
    # bench/: the registry's 1 M-market load spent ~35% of its time in this function, legacy
    # deltas ~25%). fromisoformat also truncates to µs. Invalid field values fall through to
    # the general parser below, which produces the errors.
    if type(v) is str and _FAST_Z(v):
        try:
            us = (datetime.fromisoformat(v) - _EPOCH) // _ONE_US
        except ValueError:
            pass
        else:
            _SECOND = (v[:19], us - us % 1_000_000)  # "Z": seconds are whole multiples of 1e6 µs
            return us
    if type(v) is not str:
        raise UnitError(BAD_TYPE, _short(v))
    s: str = v
    try:
        if (
            len(s) < 20
            or not s.isascii()
            or s[4] != "-"
            or s[7] != "-"
            or s[10] not in "Tt "
            or s[13] != ":"
            or s[16] != ":"
        ):
            raise ValueError
        ys, mos, ds, hs, mis, ss = s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19]
        if not (ys + mos + ds + hs + mis + ss).isdigit():
            raise ValueError
        y, mo, d, h, mi, sec = int(ys), int(mos), int(ds), int(hs), int(mis), int(ss)
        if not (1 <= mo <= 12 and 1 <= d <= _DAYS_IN_MONTH[mo] and h < 24 and mi < 60 and sec < 60):
            raise ValueError
        if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
            raise ValueError
        i = 19
        frac_us = 0
        if s[i] == ".":
            j = i + 1
            n = len(s)
            while j < n and "0" <= s[j] <= "9":
                j += 1
            frac = s[i + 1 : j]
            if not frac:
                raise ValueError
            frac_us = int(frac[:6].ljust(6, "0"))
            i = j
        tz = s[i:]
        if tz in ("Z", "z"):
            off = 0
        elif len(tz) == 6 and tz[0] in "+-" and tz[3] == ":" and (tz[1:3] + tz[4:6]).isdigit():
            off = (int(tz[1:3]) * 60 + int(tz[4:6])) * 60
            if tz[0] == "-":
                off = -off
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise UnitError(BAD_VALUE, _short(v)) from None
    secs = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off
    return secs * 1_000_000 + frac_us
