"""Simulator configuration: one frozen dataclass, built by the CLI or by tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    """Every knob of one simulator run.

    ``clock_speed`` is virtual ms per real ms (1.0 = real time, 50.0 = 50x fast-forward);
    0 means manual: virtual time moves only through ``Simulator.advance``, which is what the
    determinism tests use. ``start_ms`` None = wall clock at start (rounded to the second),
    so exchange timestamps look current; pass a fixed value for byte-identical truth logs.
    """

    preset: str = "tiny"
    profile: str = "fp2026"
    seed: int = 0
    rate: float | None = None  # engine msgs per virtual second; None = preset default
    churn_per_s: float | None = None  # lifecycle actions per virtual second
    clock_speed: float = 1.0
    step_ms: int = 10
    start_ms: int | None = None
    host: str = "127.0.0.1"
    port: int = 0  # REST + WS; 0 = pick a free port
    control_port: int = 0
    # WebSocket
    ping_interval_s: float = 10.0
    pong_timeout_s: float = 20.0
    ws_require_auth: bool = True
    ws_auth_reject_status: int = 401  # 401 or 403 (text body) at the upgrade
    ws_max_buffer: int = 200_000  # queued frames per connection before error 25
    ws_max_markets: int = 0  # markets per subscription before error 26; 0 = unlimited
    ws_cmd_rate: int = 0  # commands per second per connection before error 27; 0 = off
    # Auth / rate limits
    auth_skew_ms: int = 10_000
    tier: str | None = "basic"  # default tier of registered keys; None = no limit
    anon_tier: str | None = "basic"  # per-IP tier for unsigned requests; None = no limit
    rate_limit_burst_s: float = 1.0
    retry_after_header: bool = False
    go_style_429: bool = False
    # Data
    rest_trade_skew_us: int = 0  # REST created_time = WS ts + this (hardening rule 1)
    rest_book_lag_ms: int = 0  # REST orderbooks show the book this long ago (virtual ms)
    new_market_404_ms: int = 0  # REST 404s a created market for this long (virtual ms)
    truth_path: str | None = None
    truth_tickers: bool = True
    key_dir: str | None = None
