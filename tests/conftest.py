"""Shared fixtures: FHIR conformance checks and a real gateway in front of the mock.

End-to-end tests start the real mock hospital (the `bridge.mock` pytest
plugin) and the real gateway (`python -m bridge serve`) on free loopback
ports, and talk HTTP to them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, check_fhir, start_gateway

_WSDL_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # The WSDLs this run compiles are cached in a folder of its own (the gateways it
    # starts inherit it), never in the user's cache.
    if "BRIDGE_WSDL_CACHE_DIR" not in os.environ:
        os.environ["BRIDGE_WSDL_CACHE_DIR"] = tempfile.mkdtemp(prefix="bridge-wsdl-cache-")
        config.stash[_WSDL_CACHE] = os.environ["BRIDGE_WSDL_CACHE_DIR"]


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_WSDL_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("BRIDGE_WSDL_CACHE_DIR", None)


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


def _postgres_admin_url() -> str | None:
    """A PostgreSQL server to test against: BRIDGE_TEST_POSTGRES_URL, or one on 127.0.0.1:5432."""
    import os
    import socket

    url = os.environ.get("BRIDGE_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError:
        return None
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it."""
    import asyncio
    import secrets

    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip(
            "no PostgreSQL server: set BRIDGE_TEST_POSTGRES_URL=postgresql://USER:PASSWORD@HOST"
            ":PORT/DB (a user that may create databases) or run one on 127.0.0.1:5432"
        )
    import asyncpg

    name = f"bridge_test_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(run(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"the PostgreSQL server at {admin.split('@')[-1]} refused: {exc}")
    base, _, _ = admin.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
