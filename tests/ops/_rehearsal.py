"""The road to production, rehearsed on one machine: the built wheel, terraform's rendered files
and docs/runbook.md bring up a healthy fleet (tests/ops/test_rehearsal.py, ``make rehearse``).

What runs is what a deployment runs:

* the wheel built from this checkout, installed with pip into a fresh virtualenv outside the
  repository (cloud-init's ``pip install``); every command comes from that virtualenv;
* every host file rendered by terraform (tests/ops/_host_files.py) from
  examples/prod.tfvars.example, three gatherers and a deduplicator;
* Secrets Manager and S3 (moto server), holding every secret under the name and in the format
  docs/runbook.md gives the operator; the Kalshi keys are uploaded by the runbook's own command;
* each host's bootstrap as far as it can run here: its SQL (roles, database) and its
  ``pg_hba.conf`` lines as written, its ``ALTER ROLE ... PASSWORD`` with the secret's value, its
  migrator password file;
* the migrator, gatherer, deduplicator and export ``ExecStart=`` lines exactly as written in
  systemd/*.service, expanded the way systemd expands them (tests/ops/_systemd.py), with the
  unit's ``EnvironmentFile=``;
* the simulator (``kalshi-sim`` from the wheel) in place of Kalshi, throwaway PostgreSQL clusters
  (shared/pgcluster.py) in place of the hosts' PostgreSQL and RDS, both with TLS on.

SUBSTITUTIONS: only what cannot exist on one machine, each listed here and nowhere else.

1. Paths: ``/opt/kalshi-data/.venv`` -> the fresh virtualenv; ``/etc/kalshi``,
   ``/etc/systemd/system``, ``/var/lib/kalshi``, ``/var/lib/prometheus/node-exporter`` -> a
   directory per host; ``/var/run/postgresql`` -> the host's cluster's socket directory.
2. Hosts and ports: PostgreSQL's 5432 -> each cluster's port; ``gatherer-N.internal`` and the
   RDS address -> 127.0.0.1; the services' 8080/9090/8081 -> free ports (four hosts share one
   machine); Kalshi's URLs -> the simulator's.
3. AWS: the instance profile -> static test credentials; AWS's endpoints -> the moto server
   (boto3's standard ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL_S3``, read in
   shared/config.py); the ``aws`` CLI in runbook commands gets ``--endpoint-url``.
4. The OS user ``kalshi``: the migrator's peer login over the socket becomes ``PGUSER=kalshi``
   (trusted on the socket, as peer authentication trusts that OS user on a host).
5. The calendar: the export unit archives yesterday (UTC), a day that must be closed and fully
   merged. So the fleet first runs "yesterday": the simulator and the gatherers start a day back
   in time (libfaketime, ``FAKETIME=-1d``; monotonic clocks untouched), capture, and stop as
   ``systemctl stop`` stops them; then they start again today, as after a maintenance window,
   and the deduplicator (real time throughout) merges both days.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import yaml
from psycopg import sql

from kalshi_data.fleet.processes import ManagedProcess, http_ready
from shared.pgcluster import PgCluster, free_port

from ._host_files import Rendered
from ._systemd import expand_exec, parse_environment_file
from ._tools import REPO, require_tool
from .test_systemd import parse_unit, values

HOST = "127.0.0.1"
GATHERERS = ("gatherer-1", "gatherer-2", "gatherer-3")
HOSTS = (*GATHERERS, "deduplicator")
BOOTSTRAP_DIR = REPO / "terraform" / "host-files" / "bootstrap"
VENV_PREFIX = "/opt/kalshi-data/.venv"
HOST_DIRS = ("/etc/kalshi", "/etc/systemd/system", "/var/lib/kalshi", "/var/lib/prometheus/node-exporter")
PG_SOCKET_DIR = "/var/run/postgresql"
# systemd's default PATH for services; LANG as on a Debian host.
SERVICE_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
AWS_STAND_IN = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
                "AWS_SESSION_TOKEN": "rehearsal"}
# 50 markets under the production pool of 144 orderbook sockets: most sockets stay idle, which
# is healthy (gatherer/connection.py), and two cores carry three gatherers easily.
SIM_PRESET = "tiny"
# Every table the export unit archives; coverage_events may be empty (--allow-empty in the unit).
EXPORT_TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "coverage_events")

Progress = Callable[[str], None]


class RehearsalError(AssertionError):
    """A step of the deployment failed; the text names the step and its output."""


# ------------------------------------------------------------------------------------------------
# Build and install
# ------------------------------------------------------------------------------------------------
def _run(argv: list[str], *, what: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if proc.returncode != 0:
        raise RehearsalError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def build_wheel(dest: Path) -> Path:
    """``pip wheel`` of this checkout's files (tracked and new, never ignored ones), built in a copy
    so the repository gets no build/ or egg-info."""
    src = dest / "src"
    listed = _run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  what="git ls-files").stdout.split("\0")
    for rel in filter(None, listed):
        path = REPO / rel
        if path.is_file():  # a deleted but still tracked file is skipped
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=True)
    out = dest / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], what="pip wheel")
    wheels = list(out.glob("kalshi_data-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def make_venv(dest: Path, wheel: Path) -> Path:
    """A fresh virtualenv with only the wheel (and its declared dependencies) installed."""
    venv = dest / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], what="python -m venv")
    _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
         what="pip install of the wheel", cwd=dest)
    return venv


# ------------------------------------------------------------------------------------------------
# Hosts: rendered files on disk, with the substitutions of the module docstring
# ------------------------------------------------------------------------------------------------
@dataclass
class Host:
    name: str
    root: Path
    files: dict[str, str]  # as rendered: host path -> content
    ports: dict[str, int] = field(default_factory=dict)  # health / metrics / admin here
    socket_dir: Path | None = None  # gatherers: the cluster's socket directory

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    def log(self, unit: str) -> Path:
        """What ``journalctl -u <unit>`` shows on this host."""
        return self.journal / f"{unit}.log"

    def local(self, host_path: str) -> Path:
        return Path(self.map_paths(host_path))

    def map_paths(self, text: str, venv: Path | None = None) -> str:
        """Substitution 1 (paths) applied to any text: a unit line, a DSN, a runbook command."""
        if venv is not None:
            text = text.replace(VENV_PREFIX, str(venv))
        for prefix in HOST_DIRS:
            text = text.replace(prefix, str(self.root) + prefix)
        if self.socket_dir is not None:
            text = text.replace(PG_SOCKET_DIR, str(self.socket_dir))
        return text


def set_yaml(text: str, edits: Mapping[tuple[Any, ...], tuple[Any, Any]]) -> str:
    """Apply ``{key path: (rendered value, substitute)}``; each rendered value is checked, and
    nothing but the listed keys changes."""
    doc = yaml.safe_load(text)
    before = _flatten(doc)
    for path, (old, new) in edits.items():
        node = doc
        for key in path[:-1]:
            node = node[key]
        assert node[path[-1]] == old, f"{path}: rendered {node[path[-1]]!r}, expected {old!r}"
        node[path[-1]] = new
    changed = {k for k, v in _flatten(doc).items() if before.get(k) != v}
    assert changed == set(edits), f"substituted more than listed: {changed ^ set(edits)}"
    return yaml.safe_dump(doc, sort_keys=False)


def _flatten(doc: Any, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(doc, dict):
        return {k: v for key, val in doc.items() for k, v in _flatten(val, (*prefix, key)).items()}
    if isinstance(doc, list):
        return {k: v for i, val in enumerate(doc) for k, v in _flatten(val, (*prefix, i)).items()}
    return {prefix: doc}


def set_env(text: str, edits: Mapping[str, tuple[str, str]]) -> str:
    """``{KEY: (rendered value, substitute)}`` on an environment file, each value checked."""
    env = parse_environment_file(text)
    lines = text.splitlines()
    for key, (old, new) in edits.items():
        assert env.get(key) == old, f"{key}: rendered {env.get(key)!r}, expected {old!r}"
        lines = [f"{key}={new}" if ln.startswith(f"{key}=") else ln for ln in lines]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# The fleet
# ------------------------------------------------------------------------------------------------
def _tls_pair() -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1, as the hosts' PostgreSQL and RDS serve TLS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kalshi-rehearsal")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=7)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _heredocs(script: Path, opener: str) -> list[str]:
    """The SQL heredocs a bootstrap script feeds to ``opener`` (e.g. ``psql_admin``)."""
    return re.findall(rf"{re.escape(opener)} <<'SQL'\n(.*?)\nSQL\n", script.read_text(), re.DOTALL)


def _hba_lines(script: Path) -> list[str]:
    """The pg_hba.conf lines the gatherer bootstrap writes, with the VPC CIDR as 127.0.0.1/32 and
    peer (the OS user kalshi) as trust on the socket (substitution 4)."""
    lines = re.findall(r'^\s*echo "((?:local|host|hostssl)\s+kalshi_ts\s.*)"$', script.read_text(), re.MULTILINE)
    assert len(lines) == 3, lines
    return [ln.replace("${DEDUP_READER_NETWORK}", f"{HOST}/32").replace(" peer", " trust") for ln in lines]


class Rehearsal:
    """The whole deployment on this machine; ``start()`` then checks, ``stop()`` always."""

    def __init__(self, workdir: Path, rendered: Rendered, aws_endpoint: str, region: str = "us-east-1",
                 progress: Progress | None = None) -> None:
        self.workdir = workdir
        self.rendered = rendered
        self.aws_endpoint = aws_endpoint
        self.region = region
        self.progress: Progress = progress or (lambda _m: None)
        self.venv: Path | None = None
        self.hosts = {name: Host(name, workdir / "hosts" / name, files) for name, files in rendered.hosts().items()}
        self.clusters: dict[str, PgCluster] = {}
        self.processes: dict[str, ManagedProcess] = {}
        self.exits: list[tuple[str, int, str]] = []  # (process, exit code, stderr/journal tail)
        self.secret_values: dict[str, str] = {}
        self.key_ids: dict[str, str] = {}
        self.sim_port = free_port()
        self.sim_control_port = free_port()
        self.timings: dict[str, float] = {}
        self._tls = _tls_pair()
        self.bucket = ""
        # what the run found, for the checks (tests/ops/test_rehearsal.py)
        self.day = ""  # yesterday, UTC, YYYY-MM-DD
        self.today_us = 0  # when the fleet started again "today"
        self.health_yesterday: dict[str, str] = {}
        self.rows_yesterday: dict[str, dict[str, int]] = {}
        self.stop_notes: list[str] = []
        self.health: dict[str, str] = {}
        self.merged: dict[str, int] = {}
        self.export: list[subprocess.CompletedProcess[str]] = []

    # --- secrets -----------------------------------------------------------------------------
    def aws_env(self) -> dict[str, str]:
        """What an instance gets from its profile and region, pointed at the moto server."""
        return {**AWS_STAND_IN, "AWS_DEFAULT_REGION": self.region,
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.aws_endpoint, "AWS_ENDPOINT_URL_S3": self.aws_endpoint}

    def _client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.aws_endpoint, region_name=self.region,
                            aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal",
                            aws_session_token="rehearsal")

    def create_cloud(self) -> None:
        """What `terraform apply` creates in Secrets Manager and S3 (secrets.tf, s3.tf)."""
        sm = self._client("secretsmanager")
        for short, name in self.rendered.secret_names.items():
            if short.startswith("kalshi-api-key-"):
                sm.create_secret(Name=name, Description="uploaded by an operator")  # created empty
                continue
            value = secrets.token_urlsafe(30)  # random_password: letters, digits and -_
            sm.create_secret(Name=name, SecretString=value)
            self.secret_values[short] = value
        bucket = yaml.safe_load(self.hosts["deduplicator"].files["/etc/kalshi/export.yaml"])["archive"]["bucket"]
        self._client("s3").create_bucket(Bucket=bucket)
        self.bucket = bucket

    def upload_kalshi_keys(self, runbook_block: str) -> None:
        """The operator's step after the first apply: one simulator key per gatherer, uploaded
        with the runbook's command (substitutions: its gatherer number, the endpoint)."""
        assert self.venv is not None
        keys = self.workdir / "keys"
        ops = self.workdir / "operator"
        ops.mkdir(exist_ok=True)
        for n, g in enumerate(GATHERERS, 1):
            out = _run([str(self.venv / "bin" / "kalshi-sim"), "keygen", "--key-dir", str(keys)],
                       what="kalshi-sim keygen", cwd=ops)
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            self.key_ids[g] = doc["key_id"]
            shutil.copy(doc["private_key"], ops / f"key{n}.pem")
            script = runbook_block.replace("kalshi-api-key-1", f"kalshi-api-key-{n}").replace("key1.pem", f"key{n}.pem")
            self.shell(script, cwd=ops, extra_env={"KEY_ID": doc["key_id"]}, what=f"upload of {g}'s Kalshi key")

    def shell(self, script: str, *, cwd: Path, extra_env: Mapping[str, str] | None = None,
              what: str) -> subprocess.CompletedProcess[str]:
        """Run an operator's shell command (``aws`` pointed at the moto server)."""
        script = re.sub(r"(?m)(^|\$\(|\|\s*)aws ", rf"\1aws --endpoint-url {self.aws_endpoint} ", script)
        env = {**os.environ, **self.aws_env(), **(extra_env or {})}
        require_tool("aws")
        require_tool("jq")
        return _run(["bash", "-euo", "pipefail", "-c", script], what=what, cwd=cwd, env=env, timeout=120)

    # --- databases ---------------------------------------------------------------------------
    def _cluster(self, name: str) -> PgCluster:
        """A cluster serving TLS, as Debian's PostgreSQL (ssl = on) and RDS (rds.force_ssl) do."""
        cluster = PgCluster.create(fast=True, name=f"rehearsal-{name}", start=False)
        cert, key = self._tls
        for fname, data in (("server.crt", cert), ("server.key", key)):
            path = cluster.data_dir / fname
            path.write_bytes(data)
            os.chmod(path, 0o600)
            if cluster.run_as is not None:
                pw = pwd.getpwnam(cluster.run_as)
                os.chown(path, pw.pw_uid, pw.pw_gid)
        cluster.settings.update({"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"})
        if name != "deduplicator":
            hba = ["local all postgres trust", f"host all postgres {HOST}/32 trust",
                   *_hba_lines(BOOTSTRAP_DIR / "gatherer.sh")]
            (cluster.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        cluster.start()
        return cluster

    def start_databases(self) -> None:
        names = list(HOSTS)
        results: dict[str, PgCluster | BaseException] = {}

        def one(n: str) -> None:
            try:
                results[n] = self._cluster(n)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                results[n] = exc

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in names:
            if isinstance(results[n], PgCluster):
                self.clusters[n] = results[n]  # type: ignore[assignment]
        for n in names:
            if isinstance(results[n], BaseException):
                raise results[n]  # type: ignore[misc]

    def psql(self, cluster: PgCluster, script: str, conninfo: str, env: Mapping[str, str] | None = None,
             what: str = "psql") -> str:
        psql = cluster.binaries.tool("psql")
        full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **(env or {})}
        return _run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", conninfo], what=what, input=script,
                    env=full_env, timeout=120).stdout

    def bootstrap_databases(self) -> None:
        """The bootstrap scripts' database steps (see the module docstring)."""
        for g in GATHERERS:
            c = self.clusters[g]
            for body in _heredocs(BOOTSTRAP_DIR / "gatherer.sh", "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q"):
                self.psql(c, body, c.dsn("postgres"), what=f"{g} bootstrap SQL")
            for role, short in (("gatherer", "gatherer-db-password"), ("dedup_reader", "dedup-reader-password")):
                self._set_password(c, c.dsn("postgres"), role, self.secret_values[short])
        # Production: what RDS creates from terraform's username/password/db_name, then the
        # deduplicator bootstrap as the master user.
        prod = self.clusters["deduplicator"]
        env = parse_environment_file(self.hosts["deduplicator"].local("/etc/kalshi/bootstrap.env").read_text())
        with psycopg.connect(prod.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
                sql.Identifier(env["RDS_ADMIN_USER"]), sql.Literal(self.secret_values["rds-master-password"])))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(env["RDS_DB"]), sql.Identifier(env["RDS_ADMIN_USER"])))
        pgpass = self.hosts["deduplicator"].local("/etc/kalshi/migrator.pgpass")
        master = self.secret_values["rds-master-password"].replace(":", "\\:")
        pgpass.write_text(f"{env['RDS_HOST']}:{env['RDS_PORT']}:{env['RDS_DB']}:{env['RDS_ADMIN_USER']}:{master}\n")
        os.chmod(pgpass, 0o600)
        admin = (f"host={env['RDS_HOST']} port={env['RDS_PORT']} dbname={env['RDS_DB']} "
                 f"user={env['RDS_ADMIN_USER']} sslmode=require")
        for body in _heredocs(BOOTSTRAP_DIR / "deduplicator.sh", "psql_admin"):
            self.psql(prod, body, admin, env={"PGPASSFILE": str(pgpass)}, what="deduplicator bootstrap SQL")
        for role, short in (("deduplicator", "deduplicator-db-password"), ("analyst", "analyst-password")):
            self._set_password(prod, admin + f" password={self.secret_values['rds-master-password']}", role,
                               self.secret_values[short])

    @staticmethod
    def _set_password(cluster: PgCluster, conninfo: str, role: str, password: str) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))

    # --- files ---------------------------------------------------------------------------------
    def write_host_files(self) -> None:
        """Every rendered file onto its host directory, with substitutions 2 and 3."""
        sim_rest = f"http://{HOST}:{self.sim_port}/trade-api/v2"
        sim_ws = f"ws://{HOST}:{self.sim_port}/trade-api/ws/v2"
        for host in self.hosts.values():
            host.ports = {"health": free_port(), "metrics": free_port()}
            if host.name != "deduplicator":
                host.ports["admin"] = free_port()
        prod_port = self.clusters["deduplicator"].port
        for g in GATHERERS:
            self.hosts[g].socket_dir = self.clusters[g].socket_dir
        for host in self.hosts.values():
            for path, content in host.files.items():
                out = self._substitute(host, path, content, sim_rest, sim_ws, prod_port)
                target = host.local(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(out)
            for d in ("/var/lib/kalshi", "/var/lib/prometheus/node-exporter"):
                host.local(d).mkdir(parents=True, exist_ok=True)
            host.journal.mkdir(parents=True, exist_ok=True)

    def _substitute(self, host: Host, path: str, content: str, sim_rest: str, sim_ws: str,
                    prod_port: int) -> str:
        name = Path(path).name
        rds = yaml.safe_load(self.hosts["deduplicator"].files["/etc/kalshi/deduplicator.yaml"])["production"]["host"]
        web = {("health", "port"): (8080, host.ports["health"]), ("metrics", "port"): (9090, host.ports["metrics"])}
        if name == "gatherer.yaml":
            c = self.clusters[host.name]
            return set_yaml(content, {
                ("kalshi", "rest_url"): ("https://external-api.kalshi.com/trade-api/v2", sim_rest),
                ("kalshi", "ws_url"): ("wss://external-api-ws.kalshi.com/trade-api/ws/v2", sim_ws),
                ("database", "host"): (PG_SOCKET_DIR, str(c.socket_dir)),
                ("database", "port"): (5432, c.port),
                ("admin", "port"): (8081, host.ports["admin"]),
                **web})
        if name == "deduplicator.yaml":
            edits: dict[tuple[Any, ...], tuple[Any, Any]] = {
                ("production", "host"): (rds, HOST), ("production", "port"): (5432, prod_port), **web}
            for i, g in enumerate(GATHERERS):
                edits[("gatherers", i, "database", "host")] = (f"{g}.internal", HOST)
                edits[("gatherers", i, "database", "port")] = (5432, self.clusters[g].port)
            return set_yaml(content, edits)
        if name == "export.yaml":
            return set_yaml(content, {("database", "host"): (rds, HOST), ("database", "port"): (5432, prod_port)})
        if name == "migrator.env" and host.name == "deduplicator":
            dsn = parse_environment_file(content)["KALSHI_MIGRATE_DSN"]
            out = set_env(content, {"KALSHI_MIGRATE_DSN": (dsn, dsn.replace(f"@{rds}:5432/", f"@{HOST}:{prod_port}/"))})
            return host.map_paths(out)
        if name == "migrator.env":
            dsn = parse_environment_file(content)["KALSHI_MIGRATE_DSN"]
            c = self.clusters[host.name]
            new = dsn.replace(f"host={PG_SOCKET_DIR}&port=5432", f"host={c.socket_dir}&port={c.port}")
            return set_env(content, {"KALSHI_MIGRATE_DSN": (dsn, new)})
        if name == "bootstrap.env" and host.name == "deduplicator":
            return set_env(content, {"RDS_HOST": (rds, HOST), "RDS_PORT": ("5432", str(prod_port))})
        return content

    # --- units ---------------------------------------------------------------------------------
    def unit_command(self, host: Host, unit: str) -> tuple[list[list[str]], dict[str, str], Path]:
        """(argv per ExecStart=, environment, working directory) as systemd would run ``unit``."""
        assert self.venv is not None
        parsed = parse_unit(host.local(f"/etc/systemd/system/{unit}"))
        env = dict(SERVICE_BASE_ENV)
        env["HOME"] = str(host.local("/var/lib/kalshi"))
        for ref in values(parsed, "Service", "EnvironmentFile"):
            optional = ref.startswith("-")
            path = host.local(ref.lstrip("-"))
            if path.exists():
                env.update(parse_environment_file(path.read_text()))
            else:
                assert optional, f"{unit}: EnvironmentFile {ref} missing"
        env.update(self.aws_env())  # substitution 3
        cwd_values = values(parsed, "Service", "WorkingDirectory")
        cwd = host.local(cwd_values[-1]) if cwd_values else host.local("/var/lib/kalshi")
        argvs = [expand_exec(host.map_paths(line, self.venv), env) for line in values(parsed, "Service", "ExecStart")]
        return argvs, env, cwd

    def run_oneshot(self, host: Host, unit: str, extra_env: Mapping[str, str] | None = None,
                    allowed: tuple[int, ...] = (0,)) -> list[subprocess.CompletedProcess[str]]:
        """A ``Type=oneshot`` unit: each ExecStart= in order, stopping at the first failure."""
        argvs, env, cwd = self.unit_command(host, unit)
        env.update(extra_env or {})
        done = []
        with open(host.log(unit.removesuffix(".service")), "a") as journal:
            for argv in argvs:
                proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                                      check=False)
                journal.write(proc.stdout + proc.stderr)
                self.exits.append((f"{host.name}/{unit}", proc.returncode, proc.stderr.strip()[-500:]))
                done.append(proc)
                if proc.returncode not in allowed:
                    raise RehearsalError(f"{host.name}: {unit}: {' '.join(argv[:4])} ... exited "
                                         f"{proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return done

    def migrate(self) -> None:
        """kalshi-migrator.service on every host (the gatherer's as the OS user kalshi)."""
        for name in HOSTS:
            extra = {} if name == "deduplicator" else {"PGUSER": "kalshi"}  # substitution 4
            self.run_oneshot(self.hosts[name], "kalshi-migrator.service", extra)

    def clock_env(self, day: str) -> dict[str, str]:
        """Substitution 5: ``yesterday`` runs a process a day back in time (libfaketime); its
        monotonic clock, which every timeout and interval uses, is left alone."""
        if day == "today":
            return {}
        lib = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
        if not lib:
            require_tool("faketime")  # scripts/ensure-tools.sh installs Debian's faketime package
            lib = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
        assert lib, "libfaketimeMT.so.1 not found (Debian package libfaketime)"
        return {"LD_PRELOAD": lib[0], "FAKETIME": "-1d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def start_simulator(self, day: str) -> None:
        """The exchange: ``kalshi-sim`` from the wheel, its clock on ``day``."""
        assert self.venv is not None
        # --churn 0: no market opens or closes during the run, so the market the runbook's
        # per-ticker commands use stays subscribed while they run
        argv = [str(self.venv / "bin" / "kalshi-sim"), "--preset", SIM_PRESET, "--seed", "13", "--churn", "0",
                "--host", HOST,
                "--port", str(self.sim_port), "--control-port", str(self.sim_control_port),
                "--key-dir", str(self.workdir / "keys")]
        proc = ManagedProcess(f"simulator@{day}", argv, {**os.environ, **self.clock_env(day)},
                              self.workdir / "simulator.log",
                              http_ready(f"http://{HOST}:{self.sim_control_port}/control/health"), self.workdir, 10)
        self.processes[proc.name] = proc
        proc.start()
        proc.wait_ready(time.monotonic() + 120)

    def start_service(self, host: Host, unit: str, day: str = "today") -> ManagedProcess:
        argvs, env, cwd = self.unit_command(host, unit)
        assert len(argvs) == 1, f"{unit}: one ExecStart for a long-running service"
        env.update(self.clock_env(day))
        proc = ManagedProcess(f"{host.name}/{unit}@{day}", argvs[0], env, host.log(unit.removesuffix(".service")),
                              http_ready(f"http://{HOST}:{host.ports['health']}/ready"), cwd, 60)
        self.processes[proc.name] = proc
        proc.start()
        return proc

    def start_fleet(self, day: str, deduplicator: bool, timeout: float = 240) -> None:
        """The simulator and the three gatherers on ``day`` (and the deduplicator, real time)."""
        self.start_simulator(day)
        procs = [self.start_service(self.hosts[g], "kalshi-gatherer.service", day) for g in GATHERERS]
        if deduplicator:
            procs.append(self.start_service(self.hosts["deduplicator"], "kalshi-deduplicator.service"))
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait_ready(deadline)

    def stop_gatherers_and_simulator(self) -> list[str]:
        """SIGTERM, as ``systemctl stop``: the gatherers flush everything accepted, then exit."""
        notes = []
        for name in [n for n in self.processes if "/kalshi-gatherer" in n] + [n for n in self.processes if n.startswith("simulator")]:
            notes += self._stop(name)
        return notes

    def _stop(self, name: str) -> list[str]:
        p = self.processes.pop(name)
        rc_before = p.returncode()
        note = p.stop()
        rc = p.returncode()
        if rc is not None:
            self.exits.append((name, rc if rc_before is None else rc_before, ""))
        return [note] if note else []

    def day_rows(self, host: str, day: str) -> dict[str, int]:
        """Rows per event table on a gatherer's database whose day (archive time column) is ``day``."""
        c = self.clusters[host]
        lo = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 1_000_000
        hi = lo + 86_400_000_000
        out = {}
        with psycopg.connect(c.dsn("kalshi_ts")) as conn:
            for table, col in (("trades", "exchange_ts"), ("orderbook_deltas", "exchange_ts"),
                               ("orderbook_snapshots", "snapshot_ts"), ("tickers", "exchange_ts")):
                q = sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {} < %s").format(
                    sql.Identifier(table), sql.Identifier(col), sql.Identifier(col))
                out[table] = int(conn.execute(q, (lo, hi)).fetchone()[0])  # type: ignore[index]
        return out

    def wait_day_rows(self, day: str, timeout: float = 120) -> dict[str, dict[str, int]]:
        """Until every gatherer holds rows of every event table on ``day``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            rows = {g: self.day_rows(g, day) for g in GATHERERS}
            if all(all(n > 0 for n in r.values()) for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise RehearsalError(f"gatherers hold no rows of {day} within {timeout:.0f} s: {rows}")
            time.sleep(1.0)

    def healthcheck(self, host: Host) -> subprocess.CompletedProcess[str]:
        """``kalshi-data healthcheck`` from the installed wheel (the runbook's first check)."""
        assert self.venv is not None
        return subprocess.run([str(self.venv / "bin" / "kalshi-data"), "healthcheck", "--url",
                               f"http://{HOST}:{host.ports['health']}"], capture_output=True, text=True,
                              timeout=60, check=False)

    def wait_healthy(self, names: tuple[str, ...] = HOSTS, timeout: float = 180) -> dict[str, str]:
        """Every named service healthy (exit 0); returns each one's summary line."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while True:
            self.check_alive()
            results = {n: self.healthcheck(self.hosts[n]) for n in names}
            last = {n: (r.stdout + r.stderr).strip() for n, r in results.items()}
            if all(r.returncode == 0 for r in results.values()):
                return last
            if time.monotonic() > deadline:
                raise RehearsalError(f"not healthy within {timeout:.0f} s: {last}")
            time.sleep(1.0)

    def production(self) -> str:
        """Superuser DSN of production (the checks' own access, not a service's)."""
        c = self.clusters["deduplicator"]
        env = parse_environment_file(self.hosts["deduplicator"].local("/etc/kalshi/bootstrap.env").read_text())
        return c.dsn(env["RDS_DB"])

    def wait_merged(self, past_us: int, timeout: float = 240) -> dict[str, int]:
        """Until the deduplicator has caught up and every gatherer's cursor of every event table
        is past ``past_us`` (what the export waits for); returns trades merged per gatherer."""
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.hosts['deduplicator'].ports['health']}/health"
        dense = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")
        while True:
            self.check_alive()
            with psycopg.connect(self.production()) as conn:
                rows = conn.execute("SELECT gatherer_id, table_name, rows_merged + rows_duplicate, merged_through "
                                    "FROM sync_cursors").fetchall()
            per = {g: int(n) for g, t, n, _ in rows if t == "trades"}
            behind = sorted(f"{g}/{t}" for g, t, _, m in rows if t in dense and (m or 0) < past_us)
            complete = {(g, t) for g, t, _, _ in rows if t in dense}
            lag = get_json(url).get("components", {}).get("sync", {}).get("max_lag_seconds")
            caught_up = lag is not None and lag < 5.0  # rows keep arriving: a few seconds is caught up
            if len(complete) == len(GATHERERS) * len(dense) and not behind and all(per.values()) and caught_up:
                return per
            if time.monotonic() > deadline:
                raise RehearsalError(f"not merged within {timeout:.0f} s: trades per gatherer {per}, "
                                     f"lag {lag}, cursors behind {behind}")
            time.sleep(1.0)

    def check_alive(self) -> None:
        for p in self.processes.values():
            p.check_alive()

    # --- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Everything down, in the fleet's order; one note per thing that did not stop cleanly."""
        notes = self.stop_gatherers_and_simulator()
        for name in list(self.processes):
            notes += self._stop(name)
        for name, c in self.clusters.items():
            try:
                c.destroy()
            except Exception as exc:  # noqa: BLE001 - report, keep tearing down
                notes.append(f"cluster {name}: {exc}")
        self.clusters.clear()
        return notes


@contextlib.contextmanager
def timed(timings: dict[str, float], what: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[what] = round(time.monotonic() - t0, 1)


def yesterday_utc() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


def wait_out_midnight(progress: Progress, margin_s: int = 720) -> None:
    """Yesterday and today must stay the same days from the first start to the export, and
    yesterday must have closed more than the export's 600 s sync margin ago: a run never starts
    between 23:50 and 00:12 UTC (it waits, at most 22 minutes, once in a while)."""
    now = datetime.now(UTC)
    since_midnight = now.hour * 3600 + now.minute * 60 + now.second
    if since_midnight >= 86400 - 600:
        wait = 86400 - since_midnight + margin_s
    elif since_midnight < margin_s:
        wait = margin_s - since_midnight
    else:
        return
    progress(f"rehearsal: waiting {wait} s for the UTC day to settle past midnight")
    time.sleep(wait)


def day_end_us(day: str) -> int:
    return (int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) + 86400) * 1_000_000


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=10).json()
