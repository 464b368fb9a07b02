"""Shared fixtures: FHIR conformance checks and a real gateway in front of the mock.

End-to-end tests start the real mock hospital (the `bridge.mock` pytest
plugin) and the real gateway (`python -m bridge serve`) on free loopback
ports, and talk HTTP to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, check_fhir, start_gateway


@pytest.fixture(scope="session")
def fhir() -> Any:
    """Assert a resource is valid FHIR R4 (official JSON schema) and R4B (fhir.resources)."""
    return check_fhir


@pytest.fixture(scope="session")
def gateway_server(
    mock_hospital_server: MockHospital, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for the test session, in front of the session's mock hospital."""
    with start_gateway(tmp_path_factory.mktemp("gw"), mock_hospital_server.ehr_url) as gateway:
        yield gateway


@pytest.fixture
def gateway(gateway_server: Gateway, mock_hospital: MockHospital) -> Gateway:
    """The session's gateway, with the mock hospital reset for this test."""
    return gateway_server
