"""Exactness of unit conversions, for both wire profiles; rejects; round-trip properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.kalshi.units import (
    UnitError,
    cents,
    count_fp,
    count_int,
    dollars,
    legacy_ts_to_us,
    rfc3339_to_us,
    to_ms_precision,
    ts_ms_to_us,
    whole_int,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.5600", 5600),
        ("0.96", 9600),
        ("0.960", 9600),
        ("1.0000", 10000),
        ("0", 0),
        ("1", 10000),
        ("0.0001", 1),
        ("0.010000", 100),
        ("12.3456", 123456),
        ("-0.5000", -5000),
        (1, 10000),
        (0.62, 6200),
        (0.0001, 1),
    ],
)
def test_dollars_exact(raw: object, expected: int) -> None:
    assert dollars(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0.56001", "too_precise"),
        ("0.000011", "too_precise"),
        ("", "bad_value"),
        ("abc", "bad_value"),
        ("0.5.6", "bad_value"),
        ("1e-3", "bad_value"),
        (" 0.56", "bad_value"),
        ("0,56", "bad_value"),
        ("+0.56", "bad_value"),
        (".56", "bad_value"),
        ("1_0.00", "bad_value"),
        ("０.56", "bad_value"),
        (True, "bad_type"),
        (None, "bad_type"),
        ([1], "bad_type"),
        (1e-05, "bad_value"),
    ],
)
def test_dollars_rejects(raw: object, reason: str) -> None:
    with pytest.raises(UnitError) as ei:
        dollars(raw)
    assert ei.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.00", 1200),
        ("-45.50", -4550),
        ("74.77", 7477),
        ("0.5", 50),
        ("3", 300),
        ("10.000", 1000),
        (12, 1200),
        (-1, -100),
        ("-0.01", -1),
    ],
)
def test_count_fp_exact(raw: object, expected: int) -> None:
    assert count_fp(raw) == expected


@pytest.mark.parametrize("raw", ["1.005", "0.001", "-.50", "--1.00", "1.-5", "1.2.00", "", "x"])
def test_count_fp_rejects(raw: str) -> None:
    with pytest.raises(UnitError):
        count_fp(raw)


def test_legacy_integers() -> None:
    assert cents(56) == 5600
    assert cents("56") == 5600
    assert count_int(12) == 1200
    assert whole_int(5301) == 5301
    for bad in (56.0, True, "5.6", None):
        with pytest.raises(UnitError):
            cents(bad)


def test_timestamps() -> None:
    assert ts_ms_to_us(1778774531204) == 1778774531204000
    assert legacy_ts_to_us(1778774531) == 1778774531000000
    assert legacy_ts_to_us("1778774531") == 1778774531000000
    # nanosecond fraction truncated to µs
    assert rfc3339_to_us("2025-08-12T21:00:32.539836022Z") == 1755032432539836
    assert rfc3339_to_us("2026-05-14T16:02:11Z") == 1778774531000000
    assert rfc3339_to_us("2026-05-14T16:02:11.5Z") == 1778774531500000
    assert rfc3339_to_us("2026-05-14T18:02:11.204811+02:00") == 1778774531204811
    assert rfc3339_to_us("1969-12-31T23:59:59.999999Z") == -1
    assert to_ms_precision(1778774531204811) == 1778774531204000
    assert to_ms_precision(-1) == -1000


@pytest.mark.parametrize(
    "raw",
    [
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-05-14T24:00:00Z",
        "2026-05-14T16:02:11",
        "2026-05-14T16:02:11.Z",
        "2026-05-14 16:02",
        "yesterday",
        "",
        17,
    ],
)
def test_rfc3339_rejects(raw: object) -> None:
    with pytest.raises(UnitError):
        rfc3339_to_us(raw)


@given(st.integers(min_value=0, max_value=10_000))
def test_dollars_round_trip(p: int) -> None:
    assert dollars(f"{p // 10000}.{p % 10000:04d}") == p
    assert dollars(f"{p // 10000}.{p % 10000:04d}00") == p


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_count_round_trip(c: int) -> None:
    sign = "-" if c < 0 else ""
    a = abs(c)
    assert count_fp(f"{sign}{a // 100}.{a % 100:02d}") == c


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=0, max_value=999),
)
def test_rfc3339_matches_datetime(dt: datetime, ns: int) -> None:
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}{ns:03d}Z"
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = (dt - epoch) // timedelta(microseconds=1)
    assert rfc3339_to_us(text) == expected
