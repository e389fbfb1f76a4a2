"""Fleet planning as data: ports (free, fixed, consecutive, taken), paths, and config documents
that the services' own schemas accept."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deduplicator.config import DeduplicatorConfig
from gatherer.config import GathererConfig
from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.plan import (
    deduplicator_config,
    gatherer_config,
    make_plan,
    orderbook_pool,
    port_role_names,
    simulator_argv,
)
from shared.config import Environment, parse_config
from shared.pgcluster import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def test_every_port_is_distinct(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, preset="tiny")
    ports = plan.port_roles()
    assert set(ports) == set(port_role_names())
    assert len(set(ports.values())) == len(ports) == 17
    assert [g.name for g in plan.gatherers] == ["gatherer-1", "gatherer-2", "gatherer-3"]
    assert [d.name for d in plan.databases] == ["gatherer-1", "gatherer-2", "gatherer-3", "production"]


def test_fixed_and_base_ports(tmp_path: Path) -> None:
    # A free base port says nothing about base+1.. (other tests' sockets come and go): retry
    # with another base while make_plan refuses only because one of those is taken.
    for _ in range(50):
        base = free_port()
        if base > 60000:
            continue
        fixed = free_port()
        try:
            plan = make_plan(tmp_path, base_port=base, ports={"deduplicator-health": fixed})
            break
        except FleetError as exc:
            if "already in use" not in str(exc):
                raise
    else:
        pytest.fail("no free run of ports found in 50 tries")
    assert plan.sim_port == base and plan.sim_control_port == base + 1
    assert plan.database("gatherer-1").port == base + 2
    assert plan.deduplicator.health_port == fixed


def test_taken_port_is_one_line_naming_it(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(FleetError) as e:
        make_plan(tmp_path, ports={"gatherer-2-health": taken_port})
    assert str(e.value) == f"port {taken_port}: already in use on 127.0.0.1 (wanted for gatherer-2 health)"
    with pytest.raises(FleetError, match=r"--port gatherer-9-health: unknown role"):
        make_plan(tmp_path, ports={"gatherer-9-health": 1234})
    with pytest.raises(FleetError, match="given to both"):
        make_plan(tmp_path, ports={"simulator": 40001, "production-db": 40001})


def test_orderbook_pool_fits_the_preset() -> None:
    assert orderbook_pool("tiny") == (1, 5000)
    assert orderbook_pool("medium") == (4, 5000)
    conns, per = orderbook_pool("xl")
    assert conns == 144 and conns * per >= 1_000_000


def test_configs_validate_with_the_services_schemas(tmp_path: Path) -> None:
    plan = make_plan(tmp_path / "fleet", preset="tiny")
    for d in plan.databases:
        for role in d.roles:
            p = plan.password_file(d.name, role)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("pw")
    key = tmp_path / "k.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    env = Environment(env={})
    for g in plan.gatherers:
        plan.admin_token_file(g.name).write_text("token")
        doc = gatherer_config(plan, g, "key-id", key)
        conf = parse_config(yaml.safe_dump(doc), GathererConfig, env)
        assert conf.gatherer_id == g.name
        assert conf.health.port == g.health_port and conf.metrics.port == g.metrics_port
        assert conf.database.port == plan.database(g.name).port and conf.database.user == "gatherer"
        assert conf.kalshi.env == "sim" and conf.kalshi.rest_base == plan.sim_rest_url
    dconf = parse_config(yaml.safe_dump(deduplicator_config(plan)), DeduplicatorConfig, env)
    assert [g.id for g in dconf.gatherers] == ["gatherer-1", "gatherer-2", "gatherer-3"]
    assert {g.database.user for g in dconf.gatherers} == {"dedup_reader"}
    assert dconf.production.user == "deduplicator" and dconf.production.port == plan.production.port
    argv = simulator_argv(plan)
    assert argv[argv.index("--port") + 1] == str(plan.sim_port)
    assert argv[argv.index("--truth") + 1] == str(plan.truth_path)


def test_pointing_at_kalshi_is_a_config_change(tmp_path: Path) -> None:
    pem = tmp_path / "kalshi.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(FleetError, match=r"^--api-key: required with --kalshi demo"):
        make_plan(tmp_path / "f", kalshi_env="demo")
    with pytest.raises(FleetError, match="not available against Kalshi"):
        make_plan(tmp_path / "f", kalshi_env="demo", api_keys=(("k", pem),), chaos=True)
    with pytest.raises(FleetError, match=r"^--api-key k2: private key file .* not found"):
        make_plan(tmp_path / "f", kalshi_env="prod", api_keys=(("k1", pem), ("k2", tmp_path / "nope")))
    plan = make_plan(tmp_path / "f", kalshi_env="demo", api_keys=(("key-1", pem),))
    assert not plan.uses_simulator and [k for k, _p in plan.api_keys] == ["key-1"] * 3
    for d in plan.databases:
        for role in d.roles:
            plan.password_file(d.name, role).parent.mkdir(parents=True, exist_ok=True)
            plan.password_file(d.name, role).write_text("pw")
    g = plan.gatherers[0]
    plan.admin_token_file(g.name).write_text("token")
    doc = gatherer_config(plan, g, "key-1", pem)
    assert doc["kalshi"] == {"env": "demo", "api_key_id": "key-1", "private_key_file": str(pem)}
    assert "connections" not in doc  # production pool sizes
    conf = parse_config(yaml.safe_dump(doc), GathererConfig, Environment(env={}))
    assert conf.kalshi.rest_base == "https://external-api.demo.kalshi.co/trade-api/v2"
