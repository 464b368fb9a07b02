"""Bundles take turns: a few per worker at once, the others wait (bounded memory), and
one that waits too long is a 503 with Retry-After, never a lost or half-done write."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import heart_rate
from tests.support import Gateway, start_gateway

pytestmark = pytest.mark.e2e


def _batch(value: int) -> dict[str, Any]:
    reading = heart_rate("100004", value)
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": reading, "request": {"method": "POST", "url": "Observation"}}],
    }


def _one_at_a_time(tmp_path: Path, mock: MockHospital, wait: float) -> Any:
    mock.reset()
    limits = {"max_concurrent_bundles": 1, "bundle_wait": wait}
    return start_gateway(tmp_path, mock.ehr_url, extra={"limits": limits})


@pytest.fixture
def one_at_a_time(tmp_path: Path, mock_hospital: MockHospital) -> Iterator[Gateway]:
    with _one_at_a_time(tmp_path, mock_hospital, 0.5) as gw:
        yield gw


@pytest.fixture
def patient_queue(tmp_path: Path, mock_hospital: MockHospital) -> Iterator[Gateway]:
    with _one_at_a_time(tmp_path, mock_hospital, 20) as gw:
        yield gw


def _post_together(gateway: Gateway, values: list[int]) -> list[httpx.Response]:
    token = gateway.token("user/*.*")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def post(value: int) -> httpx.Response:
        return httpx.post(gateway.base, json=_batch(value), headers=headers, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(len(values)) as pool:
        return list(pool.map(post, values))


def test_a_bundle_that_waits_past_bundle_wait_is_503_and_stores_nothing(
    one_at_a_time: Gateway, mock_hospital: MockHospital
) -> None:
    assert one_at_a_time.client().get("/Patient/100004").status_code == 200  # logged in
    mock_hospital.inject_faults(system="ehr", latency_ms=1500)
    replies = _post_together(one_at_a_time, [61, 62])
    mock_hospital.clear_faults()
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 503], [r.text for r in replies]
    refused = next(r for r in replies if r.status_code == 503)
    assert refused.headers["Retry-After"] == "5"
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    stored = mock_hospital.get("/_mock/ehr/vitals", mrn="100004")
    values = sorted(float(r["Value"]) for r in stored if float(r["Value"]) in (61, 62))
    accepted = next(r for r in replies if r.status_code == 200)
    assert accepted.json()["entry"][0]["response"]["status"] == "201 Created"
    assert len(values) == 1  # the refused Bundle wrote nothing


def test_bundles_within_bundle_wait_all_get_their_turn(
    patient_queue: Gateway, mock_hospital: MockHospital
) -> None:
    assert patient_queue.client().get("/Patient/100004").status_code == 200
    mock_hospital.inject_faults(system="ehr", latency_ms=100)
    replies = _post_together(patient_queue, [71, 72, 73])
    mock_hospital.clear_faults()
    assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
    stored = mock_hospital.get("/_mock/ehr/vitals", mrn="100004")
    assert sorted(float(r["Value"]) for r in stored if 71 <= float(r["Value"]) <= 73) == [
        71,
        72,
        73,
    ]
