"""FHIR values never reach XML or XPath unescaped.

A recording proxy sits between a real gateway and the real mock hospital and
keeps every SOAP envelope the gateway sent. For each hostile value, every
envelope must be well-formed XML that holds the value as the text of the
element it maps to, and the gateway must answer a 4xx or a correct result,
never a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from lxml import etree

from bridge.mock import MockHospital
from tests.security.loopback import RecordingProxy, operation_of
from tests.support import Gateway, start_gateway

pytestmark = pytest.mark.e2e

HOSTILE = [
    "</LastName><x>",
    "</tns:LastName><tns:MRN>100001</tns:MRN><tns:LastName>",
    "&",
    "&amp;",
    "&lt;x&gt;",
    "&xxe;",
    "]]>",
    "<![CDATA[x]]>",
    "' or '1'='1",
    "') or ('1'='1",
    '"',
    "'\"",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    "{id}",
    "{{username}}",
    "\\",
    "%00",
    "Müller😀",
    "\u202eevil",
    "\u00a0\u2028",
    "x" * 3000,
]
CONTROL = ["a\x00b", "a\x1bb", "\x7f\x01", "a\x0bb", "\ufffe"]

_STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass
class Rig:
    gateway: Gateway
    proxy: RecordingProxy
    mock: MockHospital

    def sent(self, operation: str) -> list[etree._Element]:
        """Every envelope sent for `operation` since the last reset, parsed strictly."""
        found = []
        for body in self.proxy.envelopes():
            root = etree.fromstring(body, parser=_STRICT)  # well-formed, or this fails
            assert root.getroottree().docinfo.doctype == ""
            if operation_of(body) == operation:
                found.append(root)
        return found

    def reset(self) -> None:
        self.proxy.seen.clear()


@pytest.fixture(scope="module")
def rig(
    mock_hospital_server: MockHospital, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    with (
        RecordingProxy(mock_hospital_server.url).running() as proxy,
        start_gateway(tmp_path_factory.mktemp("inject"), proxy.url + "/ehr") as gateway,
    ):
        assert isinstance(proxy, RecordingProxy)
        yield Rig(gateway, proxy, mock_hospital_server)


def _texts(root: etree._Element, local: str) -> list[str]:
    return [
        e.text or ""
        for e in root.iter()
        if isinstance(e.tag, str) and etree.QName(e).localname == local
    ]


def _no_5xx(reply: httpx.Response, fhir: Any) -> dict[str, Any]:
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert reply.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = fhir(reply.json())
    if reply.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
    return body


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_patient_search_values_arrive_as_text(rig: Rig, fhir: Any, value: str) -> None:
    rig.reset()
    reply = rig.gateway.client().get("/Patient", params={"family": value, "given": value})
    bundle = _no_5xx(reply, fhir)
    if reply.status_code == 200:
        # Nobody in the hospital is called that: the value was not read as markup or a query.
        assert bundle.get("total", 0) == 0, value
        (envelope,) = rig.sent("FindPatients")
        assert _texts(envelope, "LastName") == [value]
        assert _texts(envelope, "FirstName") == [value]
        assert _texts(envelope, "MRN") in ([], [""])


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_practitioner_search_values_arrive_as_text(rig: Rig, fhir: Any, value: str) -> None:
    # Scheduling: SOAP 1.2 with a WS-Security header, and a filter the gateway applies.
    rig.reset()
    reply = rig.gateway.client().get("/Practitioner", params={"name": value})
    bundle = _no_5xx(reply, fhir)
    if reply.status_code == 200:
        assert bundle.get("total", len(bundle.get("entry", []))) == 0, value
    rig.sent("GetProviders")  # every envelope well-formed


@pytest.mark.parametrize("value", HOSTILE[:14], ids=range(14))
def test_token_and_reference_values_arrive_as_text(rig: Rig, fhir: Any, value: str) -> None:
    rig.reset()
    client = rig.gateway.client()
    for path, params in [
        ("/Patient", {"identifier": f"urn:oid:2.16.840.1.113883.3.7777.1|{value}"}),
        ("/Patient", {"_id": value}),
        ("/MedicationRequest", {"patient": value}),
        ("/Observation", {"patient": f"Patient/{value}", "category": "laboratory"}),
        ("/Appointment", {"patient": value}),
    ]:
        _no_5xx(client.get(path, params=params), fhir)
    # Whatever was sent carried the value as text, never as markup.
    for body in rig.proxy.envelopes():
        root = etree.fromstring(body, parser=_STRICT)
        assert all(
            isinstance(e.tag, str) and etree.QName(e).localname != "x" for e in root.iter()
        ), body[:300]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_read_ids_are_checked_or_escaped(rig: Rig, fhir: Any, value: str) -> None:
    rig.reset()
    client = rig.gateway.client()
    for rtype in ("Patient", "Claim", "DiagnosticReport", "Practitioner"):
        reply = client.get(f"/{rtype}/{httpx.URL(value).raw_path.decode()}")
        _no_5xx(reply, fhir)
    rig.sent("GetPatient")  # parses every envelope


@pytest.mark.parametrize("value", CONTROL, ids=range(len(CONTROL)))
def test_control_characters_are_400_and_never_sent(rig: Rig, fhir: Any, value: str) -> None:
    rig.reset()
    reply = rig.gateway.client().get("/Patient", params={"family": value})
    assert reply.status_code == 400, reply.text
    fhir(reply.json())
    assert rig.sent("FindPatients") == []


def _free_slots(mock: MockHospital, n: int) -> list[str]:
    rows = mock.get("/_mock/scheduling/slots", status="FREE", limit=str(n + 40))
    slots = [row["SlotId"] for row in rows]
    assert len(slots) >= n
    return slots


WRITE_VALUES = [v for v in HOSTILE if len(v) < 1000] + ["y" * 600]


def test_write_values_arrive_as_text_and_round_trip(rig: Rig, fhir: Any) -> None:
    client = rig.gateway.client("user/*.cruds")
    patient = rig.mock.sample_patients(1, offset=77)[0]["MRN"]
    slots = iter(_free_slots(rig.mock, len(WRITE_VALUES) * 2)[::-1])
    booked = 0
    for value in WRITE_VALUES:
        rig.reset()
        appointment = {
            "resourceType": "Appointment",
            "status": "booked",
            "description": value,
            "slot": [{"reference": f"Slot/{next(slots)}"}],
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
        }
        reply = client.post(
            "/Appointment", json=appointment, headers={"Content-Type": "application/fhir+json"}
        )
        created = _no_5xx(reply, fhir)
        envelopes = rig.sent("BookAppointment")
        if envelopes:
            assert _texts(envelopes[0], "Reason") == [value], value
        if reply.status_code == 201:
            booked += 1
            # The legacy system stored the text; reading it back gives the same value.
            assert created.get("description") == value, value
    assert booked >= len(WRITE_VALUES) // 2  # the test exercised real bookings


def test_claim_codes_arrive_as_text(rig: Rig, fhir: Any) -> None:
    client = rig.gateway.client("user/*.cruds")
    patient = rig.mock.sample_patients(1, offset=78)[0]["MRN"]
    for value in HOSTILE[:14]:
        rig.reset()
        claim = {
            "resourceType": "Claim",
            "status": "active",
            "type": {"coding": [{"code": "professional"}]},
            "use": "claim",
            "patient": {"reference": f"Patient/{patient}"},
            "created": "2026-11-20",
            "provider": {"display": "x"},
            "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "c"}}],
            "billablePeriod": {"start": "2026-11-20"},
            "diagnosis": [
                {"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"code": value}]}}
            ],
            "item": [{"sequence": 1, "productOrService": {"coding": [{"code": "99213"}]}}],
            "total": {"value": 100, "currency": "USD"},
        }
        reply = client.post("/Claim", json=claim, headers={"Content-Type": "application/fhir+json"})
        _no_5xx(reply, fhir)
        for envelope in rig.sent("SubmitClaim"):
            assert value in _texts(envelope, "Code"), value
