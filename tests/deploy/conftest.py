"""Fixtures for the deployment files in docker/ (helpers in support.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.deploy.support import (
    DOCKER,
    K8S,
    ROOT,
    Dockerfile,
    SystemVariables,
    load_documents,
    load_yaml,
    parse_dockerfile,
)


@pytest.fixture(scope="session")
def gateway_dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKER / "Dockerfile")


@pytest.fixture(scope="session")
def mock_dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKER / "Dockerfile.mock")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DOCKER / "compose.yaml")
    return data


@pytest.fixture(scope="session")
def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects in docker/k8s/*.yaml by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_documents(path):
            assert doc["kind"] not in found, f"{path}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="session")
def system_variables() -> SystemVariables:
    endpoints: set[str] = set()
    credentials: set[str] = set()
    for path in sorted((ROOT / "mappings").glob("*/system.yaml")):
        connection = load_yaml(path).get("connection", {})
        for key, value in connection.items():
            if isinstance(value, dict) and "env" in value:
                (endpoints if key == "endpoint" else credentials).add(value["env"])
    assert endpoints and credentials
    return SystemVariables(frozenset(endpoints), frozenset(credentials))


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No BRIDGE_* variables from the test run leak into settings under test."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch
