"""pytest fixtures for the mock hospital (loaded through the ``pytest11`` entry point).

``mock_hospital_server`` starts one mock per test session in a child
process; ``mock_hospital`` hands the same one to a test after a reset, so
every test starts with no sessions, no faults and zeroed stats::

    def test_login_is_counted(mock_hospital):
        soap_login(mock_hospital.ehr_url, mock_hospital.username, mock_hospital.password)
        assert mock_hospital.stats()["ehr"]["logins"] == 1

Override ``mock_hospital_options`` in a ``conftest.py`` to change how the
session's mock starts; use ``MockHospital.start(**options)`` for a one-off.

This module imports nothing from spyne: it is loaded into every pytest run
of the project, and the mock runs in its own process anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.mock.hospital import MockHospital

__all__ = ["mock_hospital", "mock_hospital_options", "mock_hospital_server"]


@pytest.fixture(scope="session")
def mock_hospital_options() -> dict[str, Any]:
    """Options for the session's mock hospital; ``{}`` means ``bridge mock``'s defaults."""
    return {}


@pytest.fixture(scope="session")
def mock_hospital_server(mock_hospital_options: dict[str, Any]) -> Iterator[MockHospital]:
    """One mock hospital for the whole test session, stopped at the end."""
    with MockHospital.start(**mock_hospital_options) as hospital:
        yield hospital


@pytest.fixture
def mock_hospital(mock_hospital_server: MockHospital) -> MockHospital:
    """The session's mock hospital, reset (sessions, cursors, stats, faults) for this test."""
    mock_hospital_server.reset()
    return mock_hospital_server
