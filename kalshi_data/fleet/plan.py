"""The whole local fleet as data: every port, directory, command line and config file.

Nothing here starts a process. ``make_plan`` decides ports (fixed ones are checked now, so a
taken port fails before anything is started) and paths; ``gatherer_config`` /
``deduplicator_config`` render the YAML documents the services load with their own schemas;
``simulator_argv`` is the simulator's command line. ``fleet.Fleet`` then carries the plan out.

Layout of a work directory::

    DIR/fleet.json               what is running where (written once everything is ready)
    DIR/logs/<process>.log       stdout+stderr of each process
    DIR/config/<process>.yaml    gatherer-1..3.yaml, deduplicator.yaml
    DIR/keys/<id>.key|.pub.pem   one simulator API key per gatherer (kalshi-sim keygen)
    DIR/secrets/*.pw|*.token     role passwords and admin tokens, mode 600
    DIR/pg/<database>/           the four PostgreSQL clusters (data/, postgres.log)
    DIR/rawlog/<gatherer>/       each gatherer's raw frame log
    DIR/spool/<gatherer>/        each gatherer's on-disk spool (rows waiting for its database)
    DIR/truth.jsonl              the simulator's ground truth (kalshi-data verify --truth)
    DIR/monitoring/              Prometheus, Alertmanager, node exporter (monitoring.py), if planned
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.monitoring import MonitoringPlan
from shared.pgcluster import free_port, port_in_use

PRESETS = ("tiny", "medium", "large", "xl")
# Gatherer database engines: daily native partitions, or TimescaleDB hypertables (the clusters then
# preload the extension; shared/pgcluster.py finds a TimescaleDB-enabled PostgreSQL).
STORAGES = ("native", "timescaledb")
# Markets per preset (kalshi_sim/catalog.py); sizes the orderbook connection pool.
PRESET_MARKETS = {"tiny": 50, "medium": 20_000, "large": 300_000, "xl": 1_000_000}
# Kalshi caps one subscription at a few thousand markets; production runs 144 orderbook sockets.
MARKETS_PER_CONNECTION = 5_000
MAX_ORDERBOOK_CONNECTIONS = 144
HOST = "127.0.0.1"
DEDUP_CONSUMER = "deduplicator"
GATHERER_DB = "kalshi_ts"
PRODUCTION_DB = "kalshi_prod"


@dataclass(frozen=True)
class ServicePlan:
    """One gatherer or the deduplicator: its name, listening ports and files."""

    name: str
    health_port: int
    metrics_port: int
    admin_port: int | None
    config_path: Path
    log_path: Path

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.health_port}/health"

    @property
    def ready_url(self) -> str:
        return f"http://{HOST}:{self.health_port}/ready"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def admin_url(self) -> str | None:
        return None if self.admin_port is None else f"http://{HOST}:{self.admin_port}/admin"


@dataclass(frozen=True)
class DatabasePlan:
    """One throwaway PostgreSQL cluster holding one database."""

    name: str  # gatherer-1..3 or production
    port: int
    dbname: str
    target: str  # migrations target: gatherer | production
    base_dir: Path
    timescaledb: bool = False  # gatherer database on TimescaleDB (cluster preloads it)

    @property
    def storage(self) -> str:
        """The ``kalshi-data migrate --storage`` of this database."""
        return "timescaledb" if self.timescaledb else "native"

    @property
    def roles(self) -> tuple[str, ...]:
        """The service roles that log in to this database (their passwords are generated)."""
        return ("gatherer", "dedup_reader") if self.target == "gatherer" else ("deduplicator", "analyst")


@dataclass(frozen=True)
class FleetPlan:
    workdir: Path
    preset: str
    seed: int
    chaos: bool
    chaos_per_s: float
    fast_pg: bool
    sim_port: int
    sim_control_port: int
    gatherers: tuple[ServicePlan, ...]
    deduplicator: ServicePlan
    databases: tuple[DatabasePlan, ...]  # gatherer-1..N, then production
    extra_sim_args: tuple[str, ...] = field(default=())
    # "sim" runs the local simulator; "demo"/"prod" point the gatherers at Kalshi itself with
    # api_keys (key id, private key PEM path), one per gatherer, and start no simulator.
    kalshi_env: str = "sim"
    api_keys: tuple[tuple[str, Path], ...] = field(default=())
    storage: str = "native"  # the gatherers' database engine, one of STORAGES
    # Prometheus + Alertmanager + node exporter beside the fleet (None: not started).
    monitoring: MonitoringPlan | None = None
    # gatherer name -> config keys merged over gatherer_config()'s document (tests' fault setups).
    gatherer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def uses_simulator(self) -> bool:
        return self.kalshi_env == "sim"

    # --- paths ---------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    @property
    def secrets_dir(self) -> Path:
        return self.workdir / "secrets"

    @property
    def pg_dir(self) -> Path:
        return self.workdir / "pg"

    @property
    def truth_path(self) -> Path:
        return self.workdir / "truth.jsonl"

    @property
    def fleet_file(self) -> Path:
        return self.workdir / "fleet.json"

    @property
    def sim_ready_file(self) -> Path:
        return self.workdir / "simulator.ready.json"

    @property
    def sim_log(self) -> Path:
        return self.logs_dir / "simulator.log"

    def rawlog_dir(self, gatherer: str) -> Path:
        return self.workdir / "rawlog" / gatherer

    @property
    def spool_dir(self) -> Path:
        """Parent of every gatherer's spool (the gatherer adds its own id)."""
        return self.workdir / "spool"

    def password_file(self, database: str, role: str) -> Path:
        return self.secrets_dir / f"{database}-{role}.pw"

    def admin_token_file(self, gatherer: str) -> Path:
        return self.secrets_dir / f"{gatherer}-admin.token"

    def database(self, name: str) -> DatabasePlan:
        for d in self.databases:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def production(self) -> DatabasePlan:
        return self.database("production")

    # --- urls ------------------------------------------------------------------------------
    @property
    def sim_rest_url(self) -> str:
        return f"http://{HOST}:{self.sim_port}/trade-api/v2"

    @property
    def sim_ws_url(self) -> str:
        return f"ws://{HOST}:{self.sim_port}/trade-api/ws/v2"

    @property
    def sim_control_url(self) -> str:
        return f"http://{HOST}:{self.sim_control_port}/control"

    def port_roles(self) -> dict[str, int]:
        """Every port the fleet will listen on, by a name an operator recognises."""
        out = {"simulator": self.sim_port, "simulator-control": self.sim_control_port}
        for d in self.databases:
            out[f"{d.name}-db"] = d.port
        for s in (*self.gatherers, self.deduplicator):
            out[f"{s.name}-health"] = s.health_port
            out[f"{s.name}-metrics"] = s.metrics_port
            if s.admin_port is not None:
                out[f"{s.name}-admin"] = s.admin_port
        if self.monitoring is not None:
            out["prometheus"] = self.monitoring.prometheus_port
            out["alertmanager"] = self.monitoring.alertmanager_port
            out["node-exporter"] = self.monitoring.node_exporter_port
        return out


MONITORING_ROLES = ("prometheus", "alertmanager", "node-exporter")


def port_role_names(n_gatherers: int = 3, monitoring: bool = False) -> list[str]:
    """The names ``--port ROLE=N`` accepts, in ``--base-port`` order (the monitoring stack's come
    last, so the other ports do not move when it is switched on or off)."""
    names = ["simulator", "simulator-control"]
    names += [f"gatherer-{i}-db" for i in range(1, n_gatherers + 1)] + ["production-db"]
    for i in range(1, n_gatherers + 1):
        names += [f"gatherer-{i}-health", f"gatherer-{i}-metrics", f"gatherer-{i}-admin"]
    names += ["deduplicator-health", "deduplicator-metrics"]
    if monitoring:
        names += list(MONITORING_ROLES)
    return names


def _describe(role: str) -> str:
    if role == "simulator":
        return "simulator REST/WS"
    if role == "simulator-control":
        return "simulator control API"
    if role in MONITORING_ROLES:
        return role
    if role.endswith("-db"):
        return f"{role[:-3]} PostgreSQL"
    name, _, kind = role.rpartition("-")
    return f"{name} {kind}"


def allocate_ports(roles: list[str], fixed: dict[str, int], base_port: int | None) -> dict[str, int]:
    """A port per role: ``fixed`` first, then ``base_port + index`` or a free ephemeral port.

    Raises FleetError naming the port and its role when a fixed port is taken or invalid;
    free ports are only probed, so a race with another program is caught again at start.
    """
    unknown = sorted(set(fixed) - set(roles))
    if unknown:
        raise FleetError(f"--port {unknown[0]}", f"unknown role; one of {', '.join(roles)}")
    chosen: dict[str, int] = {}
    for i, role in enumerate(roles):
        if role in fixed:
            chosen[role] = fixed[role]
        elif base_port is not None:
            chosen[role] = base_port + i
    seen: dict[int, str] = {}
    for role, port in chosen.items():
        if not 1 <= port <= 65535:
            raise FleetError(f"port {port}", f"not a valid TCP port (wanted for {_describe(role)})")
        if port in seen:
            raise FleetError(f"port {port}", f"given to both {_describe(seen[port])} and {_describe(role)}")
        seen[port] = role
        if port_in_use(port, HOST):
            raise FleetError(f"port {port}", f"already in use on {HOST} (wanted for {_describe(role)})")
    for role in roles:
        if role not in chosen:
            port = free_port()
            while port in seen:
                port = free_port()
            chosen[role] = port
            seen[port] = role
    return chosen


def make_plan(workdir: str | Path, *, preset: str = "medium", seed: int = 1, chaos: bool = False,
              chaos_per_s: float = 0.2, n_gatherers: int = 3, ports: dict[str, int] | None = None,
              base_port: int | None = None, fast_pg: bool = False,
              extra_sim_args: tuple[str, ...] = (), kalshi_env: str = "sim",
              api_keys: tuple[tuple[str, Path], ...] = (), storage: str = "native",
              monitoring: bool = False,
              gatherer_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> FleetPlan:
    """Decide every port and path of a fleet in ``workdir`` (nothing is created yet).

    ``kalshi_env`` demo/prod: the gatherers talk to Kalshi's own API with ``api_keys`` (one per
    gatherer in order; a single key is shared, which Kalshi's per-key rate limit makes slower).
    ``storage``: the gatherers' database engine (production is always native partitions, as RDS).
    ``monitoring`` adds Prometheus, Alertmanager and a node exporter (monitoring.py) with the
    shipped intervals; a test replaces ``plan.monitoring`` to shorten them.
    ``gatherer_overrides`` maps a gatherer's name to config keys merged over its document."""
    if storage not in STORAGES:
        raise FleetError("--storage", f"unknown storage {storage!r}; one of {', '.join(STORAGES)}")
    if kalshi_env not in ("sim", "demo", "prod"):
        raise FleetError("--kalshi", f"unknown environment {kalshi_env!r}; one of sim, demo, prod")
    if kalshi_env != "sim":
        if not api_keys:
            raise FleetError("--api-key", f"required with --kalshi {kalshi_env}: KEY_ID=PRIVATE_KEY_PEM "
                             "(one per gatherer, repeatable)")
        if chaos:
            raise FleetError("--chaos", "injects faults through the simulator; not available against Kalshi")
        for key_id, pem in api_keys:
            if not Path(pem).is_file():
                raise FleetError(f"--api-key {key_id}", f"private key file {pem} not found")
        if len(api_keys) not in (1, n_gatherers):
            raise FleetError("--api-key", f"give 1 or {n_gatherers} keys, got {len(api_keys)}")
    if preset not in PRESETS:
        raise FleetError("--preset", f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    if not 1 <= n_gatherers <= 9:
        raise FleetError("--gatherers", "expected 1..9 gatherers")
    wd = Path(workdir).resolve()
    roles = port_role_names(n_gatherers, monitoring)
    p = allocate_ports(roles, dict(ports or {}), base_port)
    gatherers = tuple(
        ServicePlan(name, p[f"{name}-health"], p[f"{name}-metrics"], p[f"{name}-admin"],
                    wd / "config" / f"{name}.yaml", wd / "logs" / f"{name}.log")
        for name in (f"gatherer-{i}" for i in range(1, n_gatherers + 1)))
    dedup = ServicePlan("deduplicator", p["deduplicator-health"], p["deduplicator-metrics"], None,
                        wd / "config" / "deduplicator.yaml", wd / "logs" / "deduplicator.log")
    dbs = tuple(DatabasePlan(g.name, p[f"{g.name}-db"], GATHERER_DB, "gatherer", wd / "pg" / g.name,
                             timescaledb=storage == "timescaledb")
                for g in gatherers)
    dbs += (DatabasePlan("production", p["production-db"], PRODUCTION_DB, "production", wd / "pg" / "production"),)
    keys = tuple((k, Path(pem).resolve()) for k, pem in api_keys)
    if len(keys) == 1:
        keys = keys * n_gatherers
    mon = (MonitoringPlan(wd / "monitoring", p["prometheus"], p["alertmanager"], p["node-exporter"])
           if monitoring else None)
    return FleetPlan(wd, preset, seed, chaos, chaos_per_s, fast_pg, p["simulator"], p["simulator-control"],
                     gatherers, dedup, dbs, tuple(extra_sim_args), kalshi_env, keys, storage, mon,
                     {g: dict(o) for g, o in (gatherer_overrides or {}).items()})


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
_MODULES = {"kalshi-sim": "kalshi_sim", "kalshi-gatherer": "gatherer",
            "kalshi-deduplicator": "deduplicator"}


def command(script: str) -> list[str]:
    """argv prefix for one of our console scripts: the one beside this interpreter (the venv's),
    else ``python -m <module>`` with this interpreter, so a fleet never picks up another install."""
    beside = Path(sys.executable).parent / script
    if beside.exists():
        return [str(beside)]
    found = shutil.which(script)
    if found and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", _MODULES[script]]


def simulator_argv(plan: FleetPlan) -> list[str]:
    """The simulator's command line: real-time clock, keys from DIR/keys, truth to DIR/truth.jsonl."""
    return [*command("kalshi-sim"), "--preset", plan.preset, "--seed", str(plan.seed),
            "--host", HOST, "--port", str(plan.sim_port), "--control-port", str(plan.sim_control_port),
            "--key-dir", str(plan.keys_dir), "--truth", str(plan.truth_path),
            "--ready-file", str(plan.sim_ready_file), *plan.extra_sim_args]


def keygen_argv(plan: FleetPlan) -> list[str]:
    return [*command("kalshi-sim"), "keygen", "--key-dir", str(plan.keys_dir)]


def service_argv(script: str, svc: ServicePlan) -> list[str]:
    return [*command(script), "--config", str(svc.config_path)]


# --------------------------------------------------------------------------------------------
# Config documents
# --------------------------------------------------------------------------------------------
def _db_section(plan: FleetPlan, db: DatabasePlan, role: str, app: str) -> dict[str, Any]:
    return {"host": HOST, "port": db.port, "dbname": db.dbname, "user": role,
            "password_file": str(plan.password_file(db.name, role)), "sslmode": "disable",
            "application_name": app}


def orderbook_pool(preset: str) -> tuple[int, int]:
    """(orderbook connections, markets per connection) sized for the preset's market count."""
    markets = PRESET_MARKETS[preset]
    per_conn = max(MARKETS_PER_CONNECTION, math.ceil(markets / MAX_ORDERBOOK_CONNECTIONS))
    return max(1, min(MAX_ORDERBOOK_CONNECTIONS, math.ceil(markets / per_conn))), per_conn


def poll_interval(preset: str) -> float:
    """A snapshot-poll interval the simulator's Basic-tier key can keep: every open market costs
    10 tokens of a 200 tokens/s budget the gatherer spends at 90 % (README "Kalshi's limits"),
    plus a fifth for everything else; at least a minute so the demo shows polls early."""
    return max(60.0, round(PRESET_MARKETS[preset] * 10 / (0.9 * 200) * 1.2))


def gatherer_config(plan: FleetPlan, svc: ServicePlan, api_key_id: str, private_key_file: Path) -> dict[str, Any]:
    """One gatherer's YAML document (gatherer/config.py schema), pointed at the simulator.

    Intervals are shortened from the production defaults so the demo shows reconciles and
    backfill sweeps within a minute; the snapshot poll interval is what the simulator's Basic-tier
    key can keep for the preset (``poll_interval``); everything else keeps its default.
    """
    orderbook, per_conn = orderbook_pool(plan.preset)
    kalshi: dict[str, Any] = {"env": plan.kalshi_env}
    if plan.uses_simulator:
        kalshi.update(rest_url=plan.sim_rest_url, ws_url=plan.sim_ws_url)
    kalshi.update(api_key_id=api_key_id, private_key_file=str(private_key_file))
    doc: dict[str, Any] = {
        "gatherer_id": svc.name,
        "kalshi": kalshi,
        "database": _db_section(plan, plan.database(svc.name), "gatherer", svc.name),
        # Against Kalshi itself the production pool sizes (the schema's defaults) apply.
        "connections": {"ticker": 1, "trade": 1, "lifecycle": 1, "orderbook": orderbook,
                        "markets_per_connection": per_conn},
        "poller": {"interval_s": poll_interval(plan.preset)},
        "backfill": {"sweep_interval_s": 15.0},
        "registry": {"reconcile_interval_s": 60.0},
        "health": {"host": HOST, "port": svc.health_port},
        "metrics": {"host": HOST, "port": svc.metrics_port},
        "admin": {"host": HOST, "port": svc.admin_port,
                  "token_file": str(plan.admin_token_file(svc.name))},
        "retention": {"consumers": [DEDUP_CONSUMER]},
        "raw_log": {"enabled": True, "directory": str(plan.rawlog_dir(svc.name))},
        "spool": {"directory": str(plan.spool_dir)},
        "logging": {"level": "INFO", "format": "json"},
    }
    if not plan.uses_simulator:
        del doc["connections"]
    return _merged(doc, plan.gatherer_overrides.get(svc.name, {}))


def _merged(doc: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``over`` merged in, nested mappings key by key."""
    out = dict(doc)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deduplicator_config(plan: FleetPlan) -> dict[str, Any]:
    """The deduplicator's YAML document (deduplicator/config.py schema)."""
    svc = plan.deduplicator
    return {
        "consumer_id": DEDUP_CONSUMER,
        "gatherers": [{"id": g.name, "database": _db_section(plan, plan.database(g.name), "dedup_reader",
                                                             "deduplicator")}
                      for g in plan.gatherers],
        "production": _db_section(plan, plan.production, "deduplicator", "deduplicator"),
        "health": {"host": HOST, "port": svc.health_port},
        "metrics": {"host": HOST, "port": svc.metrics_port},
        "logging": {"level": "INFO", "format": "json"},
    }
