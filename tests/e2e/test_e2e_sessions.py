"""Legacy sessions as the mock EHR counts them: lazy login, reuse, caps, expiry, logout."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, copy_mappings, start_gateway

pytestmark = pytest.mark.e2e


def test_sequential_reads_share_one_login(gateway: Gateway, mock_hospital: MockHospital) -> None:
    client = gateway.client()
    for i in range(200):
        reply = client.get(f"/Patient/{100001 + i % 50}")
        assert reply.status_code == 200
    stats = mock_hospital.stats()["ehr"]
    assert stats["logins"] == 1
    # The reset before this test dropped the gateway's session: its first call
    # may be refused once (EHR-SESSION-INVALID) and retried after the login.
    refused = stats["faults"].get("EHR-SESSION-INVALID", 0)
    assert refused <= 1
    assert stats["calls"]["GetPatient"] == 200 + refused


def test_concurrent_reads_never_exceed_the_session_cap(tmp_path: Path) -> None:
    with (
        MockHospital.start(max_sessions=4, patients=500) as hospital,
        start_gateway(tmp_path, hospital.ehr_url) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.token()}"}
        hospital.inject_faults(latency_ms=50)  # keep sessions busy so requests overlap

        def read(i: int) -> int:
            url = f"{gw.base}/Patient/{100001 + i}"
            return httpx.get(url, headers=headers, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(read, range(50)))
        stats = hospital.stats()["ehr"]
    assert statuses == [200] * 50
    assert stats["logins"] <= 4
    assert stats["peak_sessions"] <= 4
    assert stats["faults"].get("EHR-SESSION-LIMIT", 0) == 0


def test_expired_sessions_cost_one_relogin(gateway: Gateway, mock_hospital: MockHospital) -> None:
    client = gateway.client()
    assert client.get("/Patient/100001").status_code == 200
    mock_hospital.expire_sessions()
    reply = client.get("/Patient/100002")
    assert reply.status_code == 200
    stats = mock_hospital.stats()["ehr"]
    assert stats["logins"] == 2
    assert stats["faults"]["EHR-SESSION-EXPIRED"] == 1


def test_expiry_in_the_middle_of_paging_still_walks_every_match(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    client = gateway.client()
    bundle = fhir(client.get("/Patient", params={"family": "Johnson", "_count": 20}).json())
    total = bundle["total"]
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    pages = 0
    while next_url := next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None):
        pages += 1
        if pages == 2:
            mock_hospital.expire_sessions()  # the legacy cursor dies with its session
        bundle = fhir(client.get(next_url).json())
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert len(ids) == total == len(set(ids))


def test_legacy_outage_is_503_with_retry_after(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    mock_hospital.inject_faults(refuse_seconds=5)
    reply = gateway.client().get("/Patient/100001")
    assert reply.status_code == 503
    assert int(reply.headers["retry-after"]) > 0
    assert fhir(reply.json())["issue"][0]["code"] == "transient"


def test_legacy_internal_fault_is_502(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    assert gateway.client().get("/Patient/100001").status_code == 200
    mock_hospital.inject_faults(fault_rate=1.0)
    reply = gateway.client().get("/Patient/100002")
    assert reply.status_code == 502
    assert fhir(reply.json())["issue"][0]["code"] == "exception"


def test_slow_legacy_system_is_504(tmp_path: Path, fhir: Any) -> None:
    folder = copy_mappings(tmp_path)
    system = folder / "system.yaml"
    # No retries: one read timeout is the whole answer (retries have their own tests).
    system.write_text(
        system.read_text().replace("  timeout: 10\n", "  timeout: 0.5\n  retries: 0\n")
    )
    with (
        MockHospital.start(patients=200) as hospital,
        start_gateway(tmp_path, hospital.ehr_url, mappings=folder) as gw,
    ):
        client = gw.client()
        assert client.get("/Patient/100001").status_code == 200
        hospital.inject_faults(latency_ms=1500)
        started = time.monotonic()
        reply = client.get("/Patient/100002")
        elapsed = time.monotonic() - started
    assert reply.status_code == 504
    assert fhir(reply.json())["issue"][0]["code"] == "timeout"
    assert elapsed < 1.4


def test_unreachable_legacy_system_is_503(tmp_path: Path, fhir: Any) -> None:
    with start_gateway(tmp_path, "http://127.0.0.1:9/ehr") as gw:
        reply = gw.client().get("/Patient/100001")
    assert reply.status_code == 503
    assert "retry-after" in reply.headers
    fhir(reply.json())


def test_waiters_time_out_into_503_when_every_session_is_busy(tmp_path: Path, fhir: Any) -> None:
    folder = copy_mappings(tmp_path)
    system = folder / "system.yaml"
    text = system.read_text().replace("max_sessions: 4", "max_sessions: 1")
    system.write_text(text.replace("wait_timeout: 5", "wait_timeout: 0.3"))
    with (
        MockHospital.start(patients=200) as hospital,
        start_gateway(tmp_path, hospital.ehr_url, mappings=folder) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.token()}"}
        hospital.inject_faults(latency_ms=1000)

        def read(i: int) -> httpx.Response:
            return httpx.get(f"{gw.base}/Patient/{100001 + i}", headers=headers, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            replies = list(pool.map(read, range(3)))
        stats = hospital.stats()["ehr"]
    statuses = sorted(r.status_code for r in replies)
    assert statuses[0] == 200
    assert 503 in statuses
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    fhir(busy.json())
    assert stats["peak_sessions"] == 1


def test_shutdown_logs_every_session_out(tmp_path: Path) -> None:
    with MockHospital.start(patients=200) as hospital:
        with start_gateway(tmp_path, hospital.ehr_url) as gw:
            headers = {"Authorization": f"Bearer {gw.token()}"}
            hospital.inject_faults(latency_ms=100)
            with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
                list(
                    pool.map(
                        lambda i: httpx.get(
                            f"{gw.base}/Patient/{100001 + i}", headers=headers, timeout=30
                        ),
                        range(3),
                    )
                )
            opened = hospital.stats()["ehr"]["logins"]
            assert opened >= 2
        stats = hospital.stats()["ehr"]
    assert stats["logouts"] == opened
    assert stats["active_sessions"] == 0


def test_two_workers_share_the_session_cap(tmp_path: Path) -> None:
    with (
        MockHospital.start(max_sessions=4, patients=500) as hospital,
        start_gateway(tmp_path, hospital.ehr_url, extra={"workers": 2}) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.token()}"}
        hospital.inject_faults(latency_ms=50)

        def read(i: int) -> int:
            return httpx.get(
                f"{gw.base}/Patient/{100001 + i}", headers=headers, timeout=30
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(read, range(100)))
        stats = hospital.stats()["ehr"]
    assert statuses == [200] * 100
    assert stats["peak_sessions"] <= 4
    assert stats["faults"].get("EHR-SESSION-LIMIT", 0) == 0


def test_breaker_stops_calling_a_dead_system_and_recovers(tmp_path: Path, fhir: Any) -> None:
    folder = copy_mappings(tmp_path)
    system = folder / "system.yaml"
    system.write_text(
        system.read_text().replace(
            "  connect_timeout: 3\n",
            "  connect_timeout: 3\n  breaker_failures: 3\n  breaker_cooldown: 1\n",
        )
    )
    with (
        MockHospital.start(patients=200) as hospital,
        start_gateway(tmp_path, hospital.ehr_url, mappings=folder) as gw,
    ):
        client = gw.client()
        assert client.get("/Patient/100001").status_code == 200
        hospital.inject_faults(refuse_seconds=3)
        statuses = [client.get("/Patient/100002").status_code for _ in range(6)]
        refused = hospital.stats()["ehr"]["refused"]
        assert statuses == [503] * 6
        assert refused == 3  # then the breaker answered without calling
        ready = httpx.get(gw.base.removesuffix("/fhir") + "/readyz", timeout=5).json()
        assert ready["breakers"]["hospital"] == "open"
        time.sleep(3.2)  # the outage ends; the cooldown is over
        reply = client.get("/Patient/100002")
        assert reply.status_code == 200, reply.text
        ready = httpx.get(gw.base.removesuffix("/fhir") + "/readyz", timeout=5).json()
        assert ready["breakers"]["hospital"] == "closed"
