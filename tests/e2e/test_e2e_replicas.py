"""Several gateway processes on one store: together within the legacy session cap.

Each process takes a slot of the store's session budget before it logs a
session in; a process waiting for a slot makes the others give idle ones back.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, start_gateway

pytestmark = pytest.mark.e2e


def _burst(gateways: list[Gateway], count: int) -> list[int]:
    tokens = []
    for gw in gateways:
        gw.issuer.audience = gw.base  # the replicas share one issuer; each is its own audience
        tokens.append(gw.token("user/Patient.rs"))

    def read(i: int) -> int:
        gw = gateways[i % len(gateways)]
        headers = {"Authorization": f"Bearer {tokens[i % len(gateways)]}"}
        return httpx.get(
            f"{gw.base}/Patient/{100001 + i % 400}", headers=headers, timeout=30
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        return list(pool.map(read, range(count)))


def _replicas(tmp_path: Path, store_url: str) -> None:
    extra = {"store": {"url": store_url, "session_lease_ttl": 30}}
    with (
        # The mock allows the 4 sessions the hospital mapping declares (max_sessions).
        MockHospital.start(max_sessions=4, patients=500) as hospital,
        start_gateway(tmp_path / "a", hospital.ehr_url, extra=extra) as first,
        start_gateway(tmp_path / "b", hospital.ehr_url, extra=extra, issuer=first.issuer) as second,
    ):
        hospital.inject_faults(latency_ms=40)
        statuses = _burst([first, second], 120)
        stats = hospital.stats()["ehr"]
        assert statuses == [200] * 120
        assert stats["peak_sessions"] <= 4
        assert stats["faults"].get("EHR-SESSION-LIMIT", 0) == 0
        # Then one replica alone takes the whole load: the other gives its idle
        # sessions back when asked, and the cap still holds.
        statuses = _burst([second], 60)
        assert statuses == [200] * 60
        stats = hospital.stats()["ehr"]
        assert stats["peak_sessions"] <= 4
        assert stats["faults"].get("EHR-SESSION-LIMIT", 0) == 0


def test_two_replicas_on_one_sqlite_store_share_the_session_cap(
    tmp_path: Path,
) -> None:
    _replicas(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


def test_two_replicas_on_postgresql_share_the_session_cap(
    tmp_path: Path, postgres_url: str
) -> None:
    _replicas(tmp_path, postgres_url)


def test_a_replica_whose_sessions_are_never_idle_still_gives_back_its_share(
    tmp_path: Path,
) -> None:
    """Eight clients keep every session of one replica leased (none is ever idle when
    its sweep looks); a request to the other replica is still served within about a
    sweep, not after its deadline, and the cap holds."""
    extra = {"store": {"url": f"sqlite:///{tmp_path / 'shared.db'}", "session_lease_ttl": 30}}
    with (
        MockHospital.start(max_sessions=4, patients=500) as hospital,
        start_gateway(tmp_path / "a", hospital.ehr_url, extra=extra) as busy,
        start_gateway(tmp_path / "b", hospital.ehr_url, extra=extra, issuer=busy.issuer) as other,
    ):
        hospital.inject_faults(latency_ms=20)
        tokens = []
        for gw in (busy, other):
            gw.issuer.audience = gw.base
            tokens.append({"Authorization": f"Bearer {gw.token('user/Patient.rs')}"})
        stop = threading.Event()

        def hammer(i: int) -> list[int]:
            statuses = []
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    url = f"{busy.base}/Patient/{100001 + i}"
                    statuses.append(client.get(url, headers=tokens[0]).status_code)
            return statuses

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            loads = [pool.submit(hammer, i) for i in range(8)]
            try:
                time.sleep(1.5)  # `busy` holds every slot by now
                started = time.monotonic()
                answer = httpx.get(f"{other.base}/Patient/100001", headers=tokens[1], timeout=60)
                waited = time.monotonic() - started
            finally:
                stop.set()
            statuses = [status for load in loads for status in load.result()]
        stats = hospital.stats()["ehr"]

    assert answer.status_code == 200, answer.text
    assert waited < 4, waited  # a sweep a second asks for slots back; the deadline is 10 s
    assert statuses and set(statuses) == {200}
    assert stats["peak_sessions"] <= 4
    assert stats["faults"].get("EHR-SESSION-LIMIT", 0) == 0
