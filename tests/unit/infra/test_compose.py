"""infra/compose.yaml, parsed and checked: the production-like stack is what the docs say, and
every gpumeter variable in it is a real setting."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from kernel.settings import known_variables
from tests.unit.infra.conftest import INFRA

REQUIRED_SERVICES = {"kafka", "clickhouse", "worker", "grafana"}


@pytest.fixture(scope="module")
def compose(yaml_module: Any) -> dict[str, Any]:
    return yaml_module.safe_load((INFRA / "compose.yaml").read_text())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_the_stack_has_its_services_on_the_official_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= REQUIRED_SERVICES
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert (
        "build" in services["worker"]
        and services["worker"]["build"]["dockerfile"] == "infra/Dockerfile"
    )


def test_kafka_runs_in_kraft_mode_without_zookeeper(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("ZOOKEEPER" in key for key in env)
    assert "zookeeper" not in compose["services"]
    # the usage topic is the ledger's source of truth: kept long enough to rebuild a period
    assert int(env["KAFKA_LOG_RETENTION_HOURS"]) >= 32 * 24


def test_images_are_the_ones_the_docker_tests_start(compose: dict[str, Any]) -> None:
    from tests.integration.test_docker_stack import CLICKHOUSE_IMAGE, KAFKA_IMAGE

    assert compose["services"]["kafka"]["image"] == KAFKA_IMAGE
    assert compose["services"]["clickhouse"]["image"] == CLICKHOUSE_IMAGE


@pytest.mark.parametrize("name", ["kafka", "clickhouse", "grafana"])
def test_stateful_services_have_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    check = compose["services"][name].get("healthcheck")
    assert check and check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL")
    assert {"interval", "timeout", "retries"} <= set(check)


def test_dependencies_wait_for_health_where_a_healthcheck_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, rule in depends.items():
            assert target in services, (name, target)
            if target in ("kafka", "clickhouse"):
                assert rule["condition"] == "service_healthy", (name, target)
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (name, target)
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


def test_state_lives_on_declared_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
    mounts = {
        n: [m.split(":")[1] for m in s.get("volumes", [])] for n, s in compose["services"].items()
    }
    assert "/var/lib/kafka/data" in mounts["kafka"]
    assert "/var/lib/clickhouse" in mounts["clickhouse"]


def test_every_gpumeter_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = known_variables()
    seen = set()
    for name, service in compose["services"].items():
        for key in _environment(service):
            if key.startswith("GPUMETER_"):
                assert key in known, f"{name}: {key} is not a setting (gpumeter check --help)"
                seen.add(key)
    assert {
        "GPUMETER_KAFKA_BOOTSTRAP",
        "GPUMETER_CLICKHOUSE_DSN",
        "GPUMETER_CLICKHOUSE_PASSWORD",
    } <= seen


def test_the_gpumeter_settings_in_the_stack_validate(compose: dict[str, Any], monkeypatch) -> None:
    from kernel.settings import load_settings

    env = _environment(compose["services"]["worker"])
    for key, value in env.items():
        # compose interpolation (${VAR:?...}) is resolved by docker compose: use a stand-in
        monkeypatch.setenv(key, "stand-in" if "${" in value else value)
    settings = load_settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.clickhouse.host == "clickhouse" and settings.clickhouse.password is None


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert value.startswith("${"), f"{name}: {key} must come from the environment"


def test_gpumeter_commands_in_the_stack_parse(compose: dict[str, Any]) -> None:
    from gpumeter.cli import build_parser

    parser = build_parser()
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("gpumeter") or "build" in service:
            command = service["command"]
            args = shlex.split(command) if isinstance(command, str) else command
            try:
                parser.parse_args(args)
            except SystemExit:  # argparse's answer to an unknown command or flag
                pytest.fail(f"{name}: `gpumeter {' '.join(args)}` does not parse")
