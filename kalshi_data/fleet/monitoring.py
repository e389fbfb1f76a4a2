"""The monitoring stack beside a local fleet: Prometheus, Alertmanager and a node exporter.

Prometheus runs ``alerts/prometheus.yml`` and the rule files of ``alerts/`` (the files the
terraform monitoring host runs) and scrapes every gatherer, the deduplicator and the node exporter;
Alertmanager runs ``alerts/alertmanager.yml``'s routing tree and inhibitions. What differs from
production is written here and nowhere else:

* targets: the ``targets/*.json`` files (Prometheus file-based discovery) name this fleet's
  ports on 127.0.0.1, with ``instance`` = gatherer-1..N / deduplicator as on the real hosts;
* receivers: production's pager/chat integrations need secrets, so the demo's receivers send
  nowhere (firing alerts show in the live view, Prometheus' /alerts and Alertmanager's API) and
  a test's post every notification to ``webhook_url/<receiver name>``;
* ``time_factor`` (tests only): every ``for:`` of the rules and every route timing of
  Alertmanager is divided by it, nothing else (expressions, thresholds and rate() windows are
  exactly as shipped), plus the global scrape/evaluation intervals given in the plan;
* the node exporter runs only the collectors the rules and dashboards read (filesystem, and the
  textfile collector that carries ``kalshi-data export``'s metrics, as on the deduplicator host).

Layout of ``DIR/monitoring/``::

    prometheus/prometheus.yml  rules/*.yml  targets/*.json  data/
    alertmanager/alertmanager.yml  data/
    textfile/                  node exporter's textfile directory (export --metrics-file here)
    logs go to DIR/logs/{prometheus,alertmanager,node-exporter}.log like every other process
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kalshi_data.fleet.errors import FleetError

HOST = "127.0.0.1"
ALERTS_DIR = Path(__file__).resolve().parents[2] / "alerts"
PROMETHEUS_FILE = "prometheus.yml"
ALERTMANAGER_FILE = "alertmanager.yml"
CONFIG_FILES = (PROMETHEUS_FILE, ALERTMANAGER_FILE)
# Debian's names first (scripts/ensure-tools.sh installs those), then upstream's.
TOOLS: dict[str, tuple[str, ...]] = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "node-exporter": ("prometheus-node-exporter", "node_exporter"),
}
PROCESS_NAMES = tuple(TOOLS)
ROUTE_TIMINGS = ("group_wait", "group_interval", "repeat_interval")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration (``1h30m``, ``90s``, ``500ms``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """A Prometheus duration for ``seconds``, in whole milliseconds (at least 1 ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


def rule_files(alerts_dir: Path = ALERTS_DIR) -> list[Path]:
    """The Prometheus rule files of ``alerts/`` (not its two configuration files, not tests/)."""
    return sorted(f for f in alerts_dir.glob("*.yml") if f.name not in CONFIG_FILES)


def scaled_rules(path: Path, time_factor: float) -> dict[str, Any]:
    """One rule file with every ``for:`` divided by ``time_factor``; everything else as shipped."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    if time_factor != 1:
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = format_duration(parse_duration(str(rule["for"])) / time_factor)
    return doc


def alertmanager_document(time_factor: float = 1.0, webhook_url: str | None = None,
                          alerts_dir: Path = ALERTS_DIR) -> dict[str, Any]:
    """``alerts/alertmanager.yml`` with local receivers (see the module docstring): the route
    tree and inhibit rules are kept; route timings are divided by ``time_factor``."""
    doc: dict[str, Any] = yaml.safe_load((alerts_dir / ALERTMANAGER_FILE).read_text(encoding="utf-8"))
    receivers = []
    for r in doc["receivers"]:
        local: dict[str, Any] = {"name": r["name"]}
        if webhook_url is not None:
            local["webhook_configs"] = [{"url": f"{webhook_url.rstrip('/')}/{r['name']}", "send_resolved": True}]
        receivers.append(local)
    doc["receivers"] = receivers

    def scale(route: dict[str, Any]) -> None:
        for key in ROUTE_TIMINGS:
            if key in route and time_factor != 1:
                route[key] = format_duration(parse_duration(str(route[key])) / time_factor)
        for child in route.get("routes", []):
            scale(child)

    scale(doc["route"])
    return doc


def find_tool(role: str) -> str:
    """Path of the binary for ``role`` (prometheus, alertmanager, node-exporter)."""
    for name in TOOLS[role]:
        found = shutil.which(name)
        if found:
            return found
    raise FleetError(role, f"{' or '.join(TOOLS[role])} not on PATH; run scripts/ensure-tools.sh "
                           "(make setup does) or start the demo with --no-monitoring")


@dataclass(frozen=True)
class MonitoringPlan:
    """Ports, paths and timing of one fleet's monitoring stack."""

    directory: Path
    prometheus_port: int
    alertmanager_port: int
    node_exporter_port: int
    # None: the shipped global intervals of alerts/prometheus.yml.
    scrape_interval_s: float | None = None
    evaluation_interval_s: float | None = None
    time_factor: float = 1.0
    webhook_url: str | None = None

    @property
    def prometheus_dir(self) -> Path:
        return self.directory / "prometheus"

    @property
    def alertmanager_dir(self) -> Path:
        return self.directory / "alertmanager"

    @property
    def textfile_dir(self) -> Path:
        return self.directory / "textfile"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.alertmanager_port}"

    @property
    def node_exporter_url(self) -> str:
        return f"http://{HOST}:{self.node_exporter_port}"

    def ready_url(self, role: str) -> str:
        return {"prometheus": f"{self.prometheus_url}/-/ready",
                "alertmanager": f"{self.alertmanager_url}/-/ready",
                "node-exporter": f"{self.node_exporter_url}/metrics"}[role]

    def argv(self, role: str) -> list[str]:
        """The command line of one monitoring process (its binary found on PATH)."""
        exe = find_tool(role)
        if role == "prometheus":
            return [exe, f"--config.file={self.prometheus_dir / PROMETHEUS_FILE}",
                    f"--storage.tsdb.path={self.prometheus_dir / 'data'}",
                    f"--web.listen-address={HOST}:{self.prometheus_port}",
                    f"--web.external-url={self.prometheus_url}", "--log.level=warn"]
        if role == "alertmanager":
            return [exe, f"--config.file={self.alertmanager_dir / ALERTMANAGER_FILE}",
                    f"--storage.path={self.alertmanager_dir / 'data'}",
                    f"--web.listen-address={HOST}:{self.alertmanager_port}",
                    f"--web.external-url={self.alertmanager_url}",
                    "--cluster.listen-address=",  # one instance: no gossip port (default :9094)
                    "--log.level=warn"]
        return [exe, f"--web.listen-address={HOST}:{self.node_exporter_port}",
                "--collector.disable-defaults", "--collector.filesystem", "--collector.textfile",
                f"--collector.textfile.directory={self.textfile_dir}", "--log.level=warn"]

    def info(self) -> dict[str, Any]:
        """What fleet.json says about the stack."""
        return {"prometheus_url": self.prometheus_url, "alertmanager_url": self.alertmanager_url,
                "node_exporter_url": self.node_exporter_url, "textfile_dir": str(self.textfile_dir),
                "config_dir": str(self.directory), "time_factor": self.time_factor,
                "webhook_url": self.webhook_url}


def _file_sd(targets: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"targets": [f"{HOST}:{port}"], "labels": {"instance": name}} for name, port in targets]


def write_configs(mp: MonitoringPlan, gatherers: Sequence[tuple[str, int]],
                  deduplicator: tuple[str, int], alerts_dir: Path = ALERTS_DIR) -> None:
    """Write every file the three processes read (idempotent; old rule copies are replaced)."""
    if not (alerts_dir / PROMETHEUS_FILE).is_file():
        raise FleetError(str(alerts_dir), "no prometheus.yml: the monitoring stack runs from a "
                                          "source checkout (or start the demo with --no-monitoring)")
    prom = yaml.safe_load((alerts_dir / PROMETHEUS_FILE).read_text(encoding="utf-8"))
    g = prom.setdefault("global", {})
    if mp.scrape_interval_s is not None:
        g["scrape_interval"] = format_duration(mp.scrape_interval_s)
        timeout = parse_duration(str(g.get("scrape_timeout", "10s")))
        g["scrape_timeout"] = format_duration(min(timeout, mp.scrape_interval_s))
    if mp.evaluation_interval_s is not None:
        g["evaluation_interval"] = format_duration(mp.evaluation_interval_s)
    rules = mp.prometheus_dir / "rules"
    targets = mp.prometheus_dir / "targets"
    shutil.rmtree(rules, ignore_errors=True)
    for d in (rules, targets, mp.prometheus_dir / "data", mp.alertmanager_dir / "data", mp.textfile_dir):
        d.mkdir(parents=True, exist_ok=True)
    (mp.prometheus_dir / PROMETHEUS_FILE).write_text(
        "# written by kalshi-data from alerts/prometheus.yml; regenerated on every start\n"
        + yaml.safe_dump(prom, sort_keys=False), encoding="utf-8")
    for f in rule_files(alerts_dir):
        (rules / f.name).write_text(yaml.safe_dump(scaled_rules(f, mp.time_factor), sort_keys=False),
                                    encoding="utf-8")
    files = {"kalshi-gatherer.json": _file_sd(gatherers), "kalshi-deduplicator.json": _file_sd([deduplicator]),
             "node.json": _file_sd([("localhost", mp.node_exporter_port)]),
             "alertmanager.json": [{"targets": [f"{HOST}:{mp.alertmanager_port}"]}]}
    for name, doc in files.items():
        (targets / name).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (mp.alertmanager_dir / ALERTMANAGER_FILE).write_text(
        "# written by kalshi-data from alerts/alertmanager.yml; receivers are local (see "
        "kalshi_data/fleet/monitoring.py)\n"
        + yaml.safe_dump(alertmanager_document(mp.time_factor, mp.webhook_url, alerts_dir), sort_keys=False),
        encoding="utf-8")
