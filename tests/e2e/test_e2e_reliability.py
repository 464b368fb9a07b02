"""Timeouts, safe retries and writes whose answer was lost, against the real mock.

One private mock hospital and one gateway whose systems have short timeouts
(read timeout 1 s; the EHR's whole-interaction deadline 2.5 s). The mock's side
door drops connections (`drop_calls`), slows calls (`latency_ms`) and loses the
answers of writes (`write_fault`); the legacy state is then checked through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import claim as a_claim
from tests.bodies import heart_rate
from tests.support import Gateway, copy_mappings, start_gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
MRN = "100007"
SCOPES = "user/Patient.rs user/Observation.crs user/Appointment.crus user/Claim.crs"
FAST = "  timeout: 1\n  connect_timeout: 1\n"


def _tighten(folder: Path, settings: str) -> None:
    system = folder / "system.yaml"
    text = system.read_text()
    if "  timeout: 10\n  connect_timeout: 3\n" in text:
        text = text.replace("  timeout: 10\n  connect_timeout: 3\n", settings)
    else:
        text = text.replace("\n\nsession:\n", "\n" + settings + "\nsession:\n", 1)
    system.write_text(text)


@pytest.fixture(scope="module")
def hospital() -> Iterator[MockHospital]:
    with MockHospital.start(patients=300) as mock:
        yield mock


@pytest.fixture(scope="module")
def gateway(hospital: MockHospital, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("reliability")
    folders = {name: copy_mappings(tmp, name) for name in ("hospital", "scheduling", "billing")}
    _tighten(
        folders["hospital"],
        FAST + "  deadline: 2.5\n  retries: 4\n  backoff_base: 0.05\n  backoff_cap: 0.2\n",
    )
    hospital_yaml = folders["hospital"] / "system.yaml"
    hospital_yaml.write_text(
        hospital_yaml.read_text().replace("  wait_timeout: 5\n", "  wait_timeout: 2\n")
    )
    for name in ("scheduling", "billing"):
        _tighten(folders[name], FAST + "  deadline: 8\n")
    origin = hospital.url
    systems = [{"path": str(f), "origin": origin} for f in folders.values()]
    with start_gateway(tmp, hospital.ehr_url, extra={"systems": systems}) as gw:
        yield gw


@pytest.fixture
def mock(hospital: MockHospital) -> MockHospital:
    hospital.reset()
    return hospital


@pytest.fixture
def app(gateway: Gateway, mock: MockHospital) -> httpx.Client:
    client = gateway.client(SCOPES)
    # The reset dropped the gateway's EHR session: a first read logs in again.
    assert client.get(f"/Patient/{MRN}").status_code == 200
    return client


def _metrics(gateway: Gateway) -> str:
    return httpx.get(gateway.base.removesuffix("/fhir") + "/metrics", timeout=10).text


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _reading(value: float, device: str) -> dict[str, Any]:
    return heart_rate(MRN, value, device)


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, json=body, headers={"Content-Type": FHIR_JSON})


def _stored(mock: MockHospital, device: str) -> list[dict[str, Any]]:
    return [r for r in mock.get("/ehr/vitals", mrn=MRN) if r.get("DeviceId") == device]


def _outcome(reply: httpx.Response, fhir: Any) -> tuple[str, str]:
    issue = fhir(reply.json())["issue"][0]
    return issue["code"], issue["diagnostics"]


# -- reads ------------------------------------------------------------------------


def test_read_is_retried_after_a_dropped_connection(
    app: httpx.Client, gateway: Gateway, mock: MockHospital, fhir: Any
) -> None:
    before = _value(_metrics(gateway), "bridge_legacy_retries_total", system="hospital")
    mock.inject_faults(system="ehr", drop_calls=1)
    reply = app.get("/Patient/100002")
    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["id"] == "100002"
    stats = mock.stats()["ehr"]
    assert stats["dropped"] == 1
    assert stats["calls"]["GetPatient"] == 2  # the warm-up read and the retry
    after = _value(_metrics(gateway), "bridge_legacy_retries_total", system="hospital")
    assert after == before + 1


def test_search_is_retried_too(app: httpx.Client, mock: MockHospital, fhir: Any) -> None:
    mock.inject_faults(system="ehr", drop_calls=2)
    reply = app.get("/Patient", params={"family": "Smith", "_count": 3})
    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["resourceType"] == "Bundle"
    assert mock.stats()["ehr"]["dropped"] == 2


def test_slow_system_is_504_naming_the_system_once_the_deadline_is_spent(
    app: httpx.Client, gateway: Gateway, mock: MockHospital, fhir: Any
) -> None:
    labels = {"system": "hospital", "operation": "GetPatient", "outcome": "timeout"}
    timeouts = _value(_metrics(gateway), "bridge_legacy_call_seconds_count", **labels)
    deadlines = _value(
        _metrics(gateway), "bridge_legacy_deadlines_exceeded_total", system="hospital"
    )
    mock.inject_faults(system="ehr", latency_ms=1500)
    reply = app.get("/Patient/100003")
    assert reply.status_code == 504
    code, diagnostics = _outcome(reply, fhir)
    assert code == "timeout"
    assert diagnostics == (
        "The legacy system 'hospital' did not answer within the 2.5 s the gateway allows "
        "one interaction; retry later."
    )
    after = _metrics(gateway)
    # A 1 s read timeout in a 2.5 s deadline: at least two attempts, then no time left.
    assert _value(after, "bridge_legacy_call_seconds_count", **labels) >= timeouts + 2
    assert (
        _value(after, "bridge_legacy_deadlines_exceeded_total", system="hospital") == deadlines + 1
    )


# -- writes whose answer is lost -------------------------------------------------


@pytest.mark.parametrize("fault", ["apply-then-delay", "apply-then-drop"])
def test_lost_create_answer_is_resolved_by_the_lookup(
    app: httpx.Client, gateway: Gateway, mock: MockHospital, fhir: Any, fault: str
) -> None:
    device = f"BAND-{fault}"
    mock.inject_faults(system="ehr", write_fault=fault, write_delay_ms=2000)
    reply = _post(app, "/Observation", _reading(71, device))
    assert reply.status_code == 201, reply.text
    stored = _stored(mock, device)
    assert len(stored) == 1  # applied exactly once: never retried
    assert reply.headers["location"] == f"{gateway.base}/Observation/{stored[0]['ReadingId']}"
    assert fhir(reply.json())["id"] == stored[0]["ReadingId"]
    stats = mock.stats()["ehr"]
    assert stats["write_faults"] == 1
    assert stats["calls"]["RecordVitals"] == 1
    assert (
        _value(
            _metrics(gateway), "bridge_ambiguous_writes_total", system="hospital", outcome="applied"
        )
        >= 1
    )


def test_write_lost_before_it_was_applied_is_503_safe_to_retry(
    app: httpx.Client, mock: MockHospital, fhir: Any
) -> None:
    mock.inject_faults(system="ehr", write_fault="drop-before-apply")
    reply = _post(app, "/Observation", _reading(72, "BAND-LOST"))
    assert reply.status_code == 503
    assert int(reply.headers["retry-after"]) >= 1
    code, diagnostics = _outcome(reply, fhir)
    assert code == "transient"
    assert "did not apply" in diagnostics and "safe to retry" in diagnostics
    assert _stored(mock, "BAND-LOST") == []
    assert mock.stats()["ehr"]["write_faults"] == 1  # sent once, not retried

    mock.clear_faults()
    assert _post(app, "/Observation", _reading(72, "BAND-LOST")).status_code == 201
    assert len(_stored(mock, "BAND-LOST")) == 1


def test_lost_booking_answers_the_appointment_found(
    app: httpx.Client, mock: MockHospital, fhir: Any
) -> None:
    today = date.fromisoformat(mock.info()["today"])
    provider = next(p for p in mock.get("/scheduling/providers") if p["Active"])["ProviderId"]
    day = (today + timedelta(days=7)).isoformat()
    slots = mock.get("/scheduling/slots", provider=provider, status="FREE", **{"from": day})
    slot = slots[0]["SlotId"]
    mock.inject_faults(system="scheduling", write_fault="apply-then-drop")
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": f"Slot/{slot}"}],
        "participant": [{"actor": {"reference": f"Patient/{MRN}"}, "status": "accepted"}],
    }
    reply = _post(app, "/Appointment", body)
    assert reply.status_code == 201, reply.text
    appointment = fhir(reply.json())
    booked = [a for a in mock.get("/scheduling/appointments", mrn=MRN) if a["SlotId"] == slot]
    assert len(booked) == 1
    assert appointment["id"] == booked[0]["ConfirmationNumber"]
    assert "start" in appointment  # built from the record the lookup found


def test_lost_write_without_a_lookup_is_504_telling_how_to_check(
    app: httpx.Client, mock: MockHospital, fhir: Any
) -> None:
    encounter = (date.fromisoformat(mock.info()["today"]) - timedelta(days=3)).isoformat()
    claim = a_claim(MRN, encounter, amount=90.0)
    before = mock.get("/billing/claims", mrn=MRN)
    mock.inject_faults(system="billing", write_fault="apply-then-drop")
    reply = _post(app, "/Claim", claim)
    assert reply.status_code == 504, reply.text
    code, diagnostics = _outcome(reply, fhir)
    assert code == "timeout"
    assert diagnostics == (
        "The legacy system 'billing' may or may not have applied this Claim create: its "
        "answer was lost and the mapping declares no way to check. Check in the legacy "
        "system 'billing' whether it is there before retrying. Retrying without checking "
        "may apply it twice."
    )
    assert MRN not in diagnostics
    after = mock.get("/billing/claims", mrn=MRN)
    assert len(after) == len(before) + 1  # applied once, never retried
    assert mock.stats()["billing"]["calls"]["SubmitClaim"] == 1


# -- metrics ---------------------------------------------------------------------


def test_metrics_show_requests_latency_sessions_breakers_retries_and_lost_writes(
    app: httpx.Client, gateway: Gateway
) -> None:
    text = _metrics(gateway)
    for name, labels in [
        ("bridge_requests_total", {"resource": "Patient", "interaction": "read"}),
        ("bridge_request_seconds_bucket", {"resource": "Patient", "interaction": "read"}),
        ("bridge_legacy_call_seconds_bucket", {"system": "hospital", "operation": "GetPatient"}),
        ("bridge_legacy_sessions", {"system": "hospital"}),
        ("bridge_legacy_sessions_in_use", {"system": "hospital"}),
        ("bridge_legacy_session_waits_total", {"system": "hospital"}),
        ("bridge_legacy_logins_total", {"system": "hospital"}),
        ("bridge_legacy_relogins_total", {"system": "hospital"}),
        ("bridge_legacy_breaker_state", {"system": "hospital"}),
        ("bridge_legacy_retries_total", {"system": "hospital", "reason": "transport"}),
        ("bridge_legacy_deadlines_exceeded_total", {"system": "hospital"}),
        ("bridge_ambiguous_writes_total", {"system": "billing", "outcome": "unknown"}),
    ]:
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        assert any(
            line.startswith(name + "{") and all(w in line for w in wanted)
            for line in text.splitlines()
        ), f"{name} {labels} missing"
