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
    # --- WebSocket limits Kalshi enforces but does not publish (kalshi-protocol.md §8). The
    # defaults are documented guesses, on by default so every test meets them; 0 = off.
    ws_max_markets: int = 1_000  # markets per subscription; more -> error 26
    ws_cmd_rate: int = 20  # commands per second per connection; more -> error 27
    ws_max_connections: int = 150  # open sockets per API key; more -> handshake HTTP 429
    # A subscribe/add_markets naming an unknown, closed or multivariate ticker is refused whole
    # (error 11); the error names the refused tickers in msg.market_tickers unless this is off.
    ws_reject_closed: bool = True
    ws_reject_mve: bool = True
    ws_reject_names_tickers: bool = True
    # Which seq an ``ok`` / ``unsubscribed`` reply carries (undocumented): "last" = the last seq
    # sent on that sid, "next" = the seq the next frame will carry (it is not consumed).
    ws_ok_seq: str = "last"
    # ``use_yes_price`` (orderbook subscribe): NO side reported on the YES price scale. Kalshi
    # plans to flip the default, then remove the parameter: "accepted" honours it, "ignored"
    # takes it and applies the default, "rejected" refuses it with error 11.
    ws_use_yes_price_default: bool = False
    ws_use_yes_price_param: str = "accepted"
    # Share of orderbook deltas sent without ``ts``/``ts_ms`` (both are optional in the
    # AsyncAPI schema). 0 by default: Kalshi has not been seen omitting them.
    delta_no_ts_share: float = 0.0
    # --- REST limits model (docs.kalshi.com/getting_started/rate_limits, ratelimit.py) --------
    auth_skew_ms: int = 10_000
    tier: str | None = "basic"  # default tier of registered keys; None = no limit
    anon_tier: str | None = "basic"  # per-IP tier for unsigned requests; None = no limit
    default_cost: int = 10  # tokens per request
    endpoint_costs: tuple[tuple[str, int], ...] = ()  # (path template, cost) overrides
    batch_endpoints: tuple[str, ...] = ("/markets/orderbooks", "/markets/candlesticks")
    read_bucket_s: float = 1.0  # read bucket capacity, in seconds of budget
    write_bucket_s: float = 2.0  # write bucket capacity above Basic (Basic holds 1 s)
    retry_after_header: bool = False
    go_style_429: bool = False
    # --- Multivariate (combo) markets: listed by /markets unless mve_filter=exclude ------------
    mve_markets: int | None = None  # None = 1% of the preset's markets, at least 5
    # --- Historical cutoff (docs.kalshi.com/getting_started/historical_data): trades created,
    # and markets settled, before the cutoff are served only by /historical/*. The cutoff is
    # now - historical_window_ms, advanced in steps of historical_step_ms (virtual time).
    historical_window_ms: int = 90 * 86_400_000  # Kalshi's target: ~3 months of live data
    historical_step_ms: int = 86_400_000
    # Data
    rest_trade_skew_us: int = 0  # REST created_time = WS ts + this (hardening rule 1)
    rest_book_lag_ms: int = 0  # REST orderbooks show the book this long ago (virtual ms)
    new_market_404_ms: int = 0  # REST 404s a created market for this long (virtual ms)
    truth_path: str | None = None
    truth_tickers: bool = True
    key_dir: str | None = None
