"""The demo's live status view: what each process says about itself, polled once a second.

Everything shown comes from the same public surfaces an operator uses: each gatherer's
``/health`` (connections, markets, queue, status) and ``/metrics``
(``ws_client_messages_received_total``, turned into a rate), the deduplicator's ``/health``
(lag per gatherer), ``count(*)`` on production, the simulator's fault counters and, when the
fleet runs its monitoring stack, Prometheus' ``/api/v1/alerts`` (pending and firing alerts). It
reads only a ``fleet.json``-shaped description, so it can watch any fleet.

``StatusPoller.poll()`` gathers one :class:`StatusSnapshot`; ``render()`` turns it into rich
renderables. They are separate so the view can be tested without a terminal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

PRODUCTION_TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "markets",
                     "coverage_events")
SHORT = {"orderbook_deltas": "deltas", "orderbook_snapshots": "snapshots", "coverage_events": "coverage"}
MSG_METRIC = "ws_client_messages_received_total"
STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "down": "red",
                "unreachable": "red", "exited": "bold red", "starting": "cyan",
                "firing": "bold red", "pending": "yellow"}
MAX_ALERT_ROWS = 10


@dataclass
class GathererStatus:
    name: str
    status: str = "unreachable"
    connections: int | None = None
    healthy_connections: int | None = None
    markets: int | None = None
    subscribed: int | None = None
    msgs_per_s: float | None = None
    queue_rows: int | None = None
    dedup_status: str | None = None
    lag_s: float | None = None


@dataclass
class AlertStatus:
    """One alert as Prometheus' /api/v1/alerts reports it."""

    name: str
    state: str  # pending | firing
    severity: str
    where: str  # instance / gatherer / table labels, as far as the alert has them
    active_at: str


@dataclass
class StatusSnapshot:
    at: float
    gatherers: list[GathererStatus]
    dedup_status: str = "unreachable"
    dedup_max_lag_s: float | None = None
    counts: dict[str, int | None] = field(default_factory=dict)
    recent_faults: list[str] = field(default_factory=list)
    faults_total: int = 0
    simulator: str = "unreachable"
    alerts: list[AlertStatus] | None = None  # None: no Prometheus (or unreachable)


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def sum_metric(text: str, name: str) -> float | None:
    """Sum of every sample called ``name`` in a Prometheus text page (None if absent)."""
    total, seen = 0.0, False
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name:
                    total += s.value
                    seen = True
    except ValueError:
        return None
    return total if seen else None


class StatusPoller:
    """Polls one fleet; keeps the previous counters to turn them into rates and fault news."""

    def __init__(self, info: dict[str, Any], exited: Callable[[str], int | None] | None = None,
                 timeout: float = 0.8) -> None:
        self.info = info
        self.exited = exited or (lambda _name: None)
        self.client = httpx.Client(timeout=timeout)
        self._prev_msgs: dict[str, tuple[float, float]] = {}
        self._prev_faults: dict[str, int] | None = None
        self._recent: deque[str] = deque(maxlen=8)
        self._conn: psycopg.Connection[Any] | None = None
        self._counts: dict[str, int | None] = {}
        self._counts_at = 0.0

    def close(self) -> None:
        self.client.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _json(self, url: str) -> dict[str, Any] | None:
        try:
            doc = self.client.get(url).json()
        except (httpx.HTTPError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _text(self, url: str) -> str | None:
        try:
            r = self.client.get(url)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def poll(self) -> StatusSnapshot:
        now = time.monotonic()
        procs = self.info["processes"]
        dedup = self._json(procs["deduplicator"]["health_url"])
        snap = StatusSnapshot(at=now, gatherers=[])
        if self.exited("deduplicator") is not None:
            snap.dedup_status = "exited"
        elif dedup is not None:
            snap.dedup_status = str(dedup.get("status"))
            lag = _get(dedup, "components", "sync", "max_lag_seconds")
            snap.dedup_max_lag_s = float(lag) if isinstance(lag, int | float) else None
        for name in sorted(n for n in procs if n.startswith("gatherer-")):
            snap.gatherers.append(self._gatherer(name, procs[name], dedup, now))
        snap.counts = self._production_counts(now)
        self._faults(snap)
        snap.alerts = self._alerts()
        return snap

    def _alerts(self) -> list[AlertStatus] | None:
        mon = self.info.get("monitoring")
        if not mon:
            return None
        doc = self._json(f"{mon['prometheus_url']}/api/v1/alerts")
        if doc is None or doc.get("status") != "success":
            return None
        out = []
        for a in _get(doc, "data", "alerts") or []:
            labels = a.get("labels") or {}
            where = " ".join(str(labels[k]) for k in ("instance", "gatherer", "role", "writer", "table", "database")
                             if k in labels)
            out.append(AlertStatus(str(labels.get("alertname")), str(a.get("state")),
                                   str(labels.get("severity", "")), where, str(a.get("activeAt", ""))[11:19]))
        order = {"firing": 0, "pending": 1}
        return sorted(out, key=lambda x: (order.get(x.state, 2), x.severity != "critical", x.name, x.where))

    def _gatherer(self, name: str, proc: dict[str, Any], dedup: dict[str, Any] | None, now: float) -> GathererStatus:
        g = GathererStatus(name)
        health = self._json(proc["health_url"])
        if self.exited(name) is not None:
            g.status = "exited"
        elif health is not None:
            g.status = str(health.get("status"))
            comp = health.get("components") or {}
            g.connections = _get(comp, "websocket", "connections")
            g.healthy_connections = _get(comp, "websocket", "healthy")
            g.subscribed = _get(comp, "websocket", "subscribed_markets")
            g.markets = _get(comp, "registry", "markets")
            g.queue_rows = _get(comp, "database", "queue_rows")
        text = self._text(proc["metrics_url"]) if health is not None else None
        msgs = sum_metric(text, MSG_METRIC) if text else None
        if msgs is not None:
            prev = self._prev_msgs.get(name)
            if prev is not None and now > prev[0] and msgs >= prev[1]:
                g.msgs_per_s = (msgs - prev[1]) / (now - prev[0])
            self._prev_msgs[name] = (now, msgs)
        entry = _get(dedup, "gatherers", name)
        if isinstance(entry, dict):
            g.dedup_status = str(entry.get("status"))
            lag = entry.get("lag_seconds")
            g.lag_s = float(lag) if isinstance(lag, int | float) else None
        return g

    def _production_counts(self, now: float) -> dict[str, int | None]:
        # count(*) grows with the data; every 2 s is plenty for a human and bounded by a timeout.
        if now - self._counts_at < 2.0 and self._counts:
            return self._counts
        self._counts_at = now
        counts: dict[str, int | None] = {}
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.info["databases"]["production"]["dsn"], autocommit=True,
                                             connect_timeout=2, options="-c statement_timeout=1500")
            for t in PRODUCTION_TABLES:
                row = self._conn.execute(f"SELECT count(*) FROM {t}").fetchone()
                counts[t] = int(row[0]) if row else None
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            counts = {t: self._counts.get(t) for t in PRODUCTION_TABLES} if self._counts else {}
        self._counts = counts
        return counts

    def _faults(self, snap: StatusSnapshot) -> None:
        sim = self.info.get("simulator")
        if not sim:  # pointed at Kalshi itself: no simulator, no injected faults
            snap.simulator = "none"
            return
        doc = self._json(f"{sim['control_url']}/faults")
        if self.exited("simulator") is not None:
            snap.simulator = "exited"
        if doc is None:
            snap.recent_faults = list(self._recent)
            return
        if snap.simulator != "exited":
            snap.simulator = "healthy"
        counts = {str(k): int(v) for k, v in (doc.get("counts") or {}).items()}
        if self._prev_faults is not None:
            stamp = time.strftime("%H:%M:%S")
            for kind, n in sorted(counts.items()):
                d = n - self._prev_faults.get(kind, 0)
                if d > 0 and kind != "chaos":
                    self._recent.appendleft(f"{stamp}  {kind}" + (f" x{d}" if d > 1 else ""))
        self._prev_faults = counts
        snap.faults_total = sum(v for k, v in counts.items() if k != "chaos")
        snap.recent_faults = list(self._recent)


def _styled(status: str | None) -> Text:
    s = status or "-"
    return Text(s, style=STATUS_STYLE.get(s, ""))


def _n(v: Any, fmt: str = "{:,}") -> str:
    return "-" if v is None else fmt.format(v)


def render(snap: StatusSnapshot, info: dict[str, Any], started: float) -> RenderableType:
    """The whole screen for one snapshot."""
    up = int(snap.at - started)
    head = Text.assemble(
        ("kalshi-data demo", "bold"),
        f"  preset {info.get('preset')}" if info.get("simulator") else f"  Kalshi {info.get('kalshi_env')}",
        ("  CHAOS" if info.get("chaos") else "", "bold magenta"),
        f"  up {up // 60}m{up % 60:02d}s  simulator ", _styled(snap.simulator),
        f"  workdir {info.get('workdir')}")
    g = Table(title="gatherers", expand=True)
    for col in ("gatherer", "health", "sockets", "markets", "msgs/s", "queue", "dedup", "lag s"):
        g.add_column(col, justify="left" if col in ("gatherer", "health", "dedup") else "right",
                     min_width={"gatherer": 10, "health": 7, "dedup": 7}.get(col, len(col)))
    for row in snap.gatherers:
        conns = "-" if row.connections is None else f"{_n(row.healthy_connections)}/{row.connections}"
        markets = _n(row.subscribed) + (f"/{row.markets:,}" if row.markets is not None else "")
        g.add_row(row.name, _styled(row.status), conns, markets, _n(row.msgs_per_s, "{:,.0f}"),
                  _n(row.queue_rows), _styled(row.dedup_status), _n(row.lag_s, "{:.1f}"))
    dd = Text.assemble("deduplicator ", _styled(snap.dedup_status),
                       f"   max lag {_n(snap.dedup_max_lag_s, '{:.1f}')} s")
    p = Table(title="production rows", expand=True)
    for t in PRODUCTION_TABLES:
        p.add_column(SHORT.get(t, t), justify="right")
    p.add_row(*(_n(snap.counts.get(t)) for t in PRODUCTION_TABLES))
    faults = Text("\n".join(snap.recent_faults) or "none yet")
    parts: list[RenderableType] = [head, g, dd, p]
    if info.get("monitoring"):
        parts.append(_alerts_panel(snap.alerts, info["monitoring"]))
    parts += [Panel(faults, title=f"recent simulator faults (total {snap.faults_total})", expand=True),
              Text("Ctrl-C stops everything", style="dim")]
    return Group(*parts)


def _alerts_panel(alerts: list[AlertStatus] | None, mon: dict[str, Any]) -> RenderableType:
    title = f"alerts (Prometheus {mon.get('prometheus_url')}, Alertmanager {mon.get('alertmanager_url')})"
    if alerts is None:
        return Panel(Text("Prometheus unreachable", style="red"), title=title, expand=True)
    if not alerts:
        return Panel(Text("none pending or firing", style="green"), title=title, expand=True)
    t = Table(expand=True, show_edge=False)
    for col in ("state", "alert", "severity", "where", "since"):
        t.add_column(col)
    for a in alerts[:MAX_ALERT_ROWS]:
        t.add_row(_styled(a.state), a.name, a.severity, a.where, a.active_at)
    if len(alerts) > MAX_ALERT_ROWS:
        t.add_row("", f"... and {len(alerts) - MAX_ALERT_ROWS} more", "", "", "")
    firing = sum(1 for a in alerts if a.state == "firing")
    return Panel(t, title=f"{title}: {firing} firing", expand=True)
