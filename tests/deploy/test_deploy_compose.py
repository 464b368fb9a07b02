"""docker/compose.yaml: the mock hospital, two gateway replicas and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.settings import load_settings
from tests.deploy.support import DOCKER, ROOT, SystemVariables, interpolate, unknown_options

GATEWAYS = ["gateway-1", "gateway-2"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as the container sees it with an empty shell."""
    return {
        name: interpolate(str(value))
        for name, value in service["environment"].items()
        if value is not None
    }


def test_compose_has_the_mock_the_store_and_two_gateways(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mock", "postgres", *GATEWAYS}
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    build = compose["services"]["mock"]["build"]
    # Paths in a compose file are relative to its folder.
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]) == DOCKER / "Dockerfile.mock"
    for name in GATEWAYS:
        assert compose["services"][name]["build"]["dockerfile"] == "docker/Dockerfile"


def test_compose_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    tests = {name: s["healthcheck"]["test"] for name, s in compose["services"].items()}
    assert tests["postgres"] == ["CMD-SHELL", "pg_isready -U bridge -d bridge"]
    assert tests["mock"][-1] == "/_mock/info"
    for name in GATEWAYS:
        # Healthy means ready, so `docker compose up --wait` returns when it can serve.
        assert tests[name] == ["CMD", "python", "/usr/local/bin/bridge-healthcheck", "/readyz"]


def test_compose_gateways_start_after_healthy_store_and_mock(compose: dict[str, Any]) -> None:
    for name in GATEWAYS:
        assert compose["services"][name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "mock": {"condition": "service_healthy"},
        }


def test_compose_replicas_share_store_and_paging_key(compose: dict[str, Any]) -> None:
    first, second = (_environment(compose["services"][name]) for name in GATEWAYS)
    assert first == second
    store = urlsplit(first["BRIDGE_STORE__URL"])
    assert (store.scheme, store.hostname, store.port) == ("postgresql", "postgres", 5432)
    postgres = compose["services"]["postgres"]["environment"]
    assert store.username == postgres["POSTGRES_USER"]
    assert store.password == interpolate(postgres["POSTGRES_PASSWORD"])
    assert store.path == "/" + postgres["POSTGRES_DB"]
    assert first["BRIDGE_PAGING_KEY"]
    ports = [compose["services"][name]["ports"] for name in GATEWAYS]
    assert ports == [["8080:8080"], ["8090:8080"]]


def test_compose_gateways_reach_every_system_on_the_mock(
    compose: dict[str, Any], system_variables: SystemVariables
) -> None:
    environment = _environment(compose["services"]["gateway-1"])
    for name in system_variables.endpoints:
        assert urlsplit(environment[name]).netloc == "mock:8081", name
    for name in system_variables.credentials:
        assert name in environment, f"{name} (named by a mappings/*/system.yaml) is not set"


def test_compose_credentials_come_from_the_shell_or_env_file(
    compose: dict[str, Any], system_variables: SystemVariables
) -> None:
    raw = compose["services"]["gateway-1"]["environment"]
    for name in [*system_variables.credentials, "BRIDGE_PAGING_KEY"]:
        assert str(raw[name]).startswith("${"), name
    mock = compose["services"]["mock"]["command"]
    assert mock[mock.index("--password") + 1] == raw["BRIDGE_HOSPITAL_PASSWORD"]
    assert mock[mock.index("--username") + 1] == raw["BRIDGE_HOSPITAL_USERNAME"]
    # The documented env file names every variable the compose file asks the shell for.
    example = (DOCKER / "compose.env.example").read_text(encoding="utf-8")
    for name in ["POSTGRES_PASSWORD", "LEGACY_USERNAME", "LEGACY_PASSWORD", "BRIDGE_PAGING_KEY"]:
        assert f"\n{name}=" in example, name


def test_compose_mock_command_uses_real_mock_options(compose: dict[str, Any]) -> None:
    assert unknown_options(compose["services"]["mock"]["command"], "mock") == []


def test_compose_gateway_environment_is_valid_settings(
    compose: dict[str, Any], clean_environment: pytest.MonkeyPatch
) -> None:
    for name, value in _environment(compose["services"]["gateway-1"]).items():
        clean_environment.setenv(name, value)
    settings = load_settings(DOCKER / "gateway.yaml")
    assert settings.store.url.startswith("postgresql://")
    assert settings.paging_key is not None
    assert settings.auth.mode == "off"
    assert settings.base_url == "http://localhost:8080/fhir"


def test_compose_gateways_are_locked_down(compose: dict[str, Any]) -> None:
    for name in [*GATEWAYS, "mock"]:
        service = compose["services"][name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
