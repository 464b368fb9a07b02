"""The scope and compartment matrix: every interaction the gateway serves, under every token.

The interactions are those of the gateway's own CapabilityStatement (a test
fails when one has no row here), each with a request that works for a
clinician, its ids and parameters taken from the mock hospital's side door.
Each runs under a table of tokens: none (401), a scope for another type (403),
SMART v1 and v2 `user/`, `system/` and `patient/` scopes, and scopes the
gateway does not understand (401, never widened). Then a token confined to
patient A tries to reach patient B through reads, searches, `_include`,
`_revinclude`, batch and transaction Bundles, Consent and AuditEvent: each
attempt is refused or filtered, and no answer carries B's MRN.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import claim as a_claim
from tests.support import Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REPORT_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"
CLIENT_ID = "urn:ietf:params:oauth:client-id"
# The app the test Consents deny data to: no token is ever minted for it, so
# the Consents change nothing the tests read.
NOBODY = "access-matrix-nobody"
CANCEL = b'[{"op": "replace", "path": "/status", "value": "cancelled"}]'


# -- the hospital's data -----------------------------------------------------------------


@dataclass
class Person:
    """A patient with data of every kind the gateway serves, and its ids."""

    mrn: str
    family: str
    claim: str
    report: str  # a lab accession: a DiagnosticReport id
    appointment: dict[str, Any]  # a booked (future) appointment, as the side door has it
    consent: str = ""  # a Consent in the gateway's store, made by the `world` fixture
    audit_event: str = ""  # an AuditEvent about this patient alone


@dataclass
class World:
    gateway: Gateway
    hospital: MockHospital
    office: httpx.Client  # a clinician's client (user/*.cruds)
    a: Person
    b: Person
    provider: str  # an active provider with free slots
    slot: str  # one of them
    slot_day: str
    today: str
    started: str  # when the module started: its AuditEvents are the ones after this
    http: httpx.Client  # no token of its own: each request brings one
    made: list[str] = field(default_factory=list)  # Consents a test made, deleted after it

    def fresh_consent(self, person: Person) -> str:
        reply = self.office.post("/Consent", json=consent(person.mrn), headers=_JSON)
        assert reply.status_code == 201, reply.text
        self.made.append(reply.json()["id"])
        return str(reply.json()["id"])

    def token(self, scope: str, patient: str | None = None) -> dict[str, str]:
        minted = self.gateway.issuer.mint(scope=scope, client_id="test-app", patient=patient)
        return {"Authorization": f"Bearer {minted}"}


_JSON = {"Content-Type": FHIR_JSON}


def _person(hospital: MockHospital, mrn: str, family: str) -> Person | None:
    """The patient, or None when one kind of data is missing from the chart."""
    for view in ("/ehr/allergies", "/ehr/problems", "/pharmacy/prescriptions"):
        if not hospital.get(view, mrn=mrn):
            return None
    labs = hospital.get("/lab/results", mrn=mrn)
    claims = hospital.get("/billing/claims", mrn=mrn)
    booked = [
        a for a in hospital.get("/scheduling/appointments", mrn=mrn) if a["Status"] == "BOOKED"
    ]
    if not labs or not claims or not booked:
        return None
    return Person(mrn, family, claims[0]["ClaimNumber"], labs[0]["AccessionNumber"], booked[0])


def _two_of_a_family(hospital: MockHospital) -> tuple[Person, Person]:
    """Two living patients with full charts who share a family name: a search by that name
    finds both, and a token confined to one must see the other filtered out."""
    families: dict[str, list[str]] = {}
    for record in hospital.sample_patients(400):
        if record["DeceasedFlag"] == "N":
            families.setdefault(record["Name"].split("^")[0], []).append(record["MRN"])
    for family, mrns in families.items():
        found = [p for mrn in mrns if (p := _person(hospital, mrn, family)) is not None]
        if len(found) >= 2:
            return found[0], found[1]
    raise AssertionError("no two living patients of one family have full charts")


def _free_slot(hospital: MockHospital) -> tuple[str, str, str]:
    for provider in hospital.get("/scheduling/providers"):
        if provider["Active"]:
            free = hospital.get("/scheduling/slots", provider=provider["ProviderId"], status="FREE")
            if free:
                return provider["ProviderId"], free[0]["SlotId"], free[0]["Start"][:10]
    raise AssertionError("no active provider has a free slot")


def _request_id(event: dict[str, Any]) -> str | None:
    for extension in event.get("extension", []):
        if extension["url"] == "urn:bridge:request-id":
            return str(extension["valueString"])
    return None


def _audit_event_about(world: World, person: Person) -> str:
    """The AuditEvent of a clinician's read of `person` (about that patient alone)."""
    rid = f"matrix-{secrets.token_hex(6)}"
    read = world.office.get(f"/Patient/{person.mrn}", headers={"X-Request-ID": rid})
    assert read.status_code == 200, read.text
    events = world.office.get(
        "/AuditEvent", params={"patient": person.mrn, "date": f"ge{world.started}"}
    )
    assert events.status_code == 200, events.text
    (event,) = [e["resource"] for e in events.json()["entry"] if _request_id(e["resource"]) == rid]
    return str(event["id"])


@pytest.fixture(scope="module")
def world(gateway_server: Gateway, mock_hospital_server: MockHospital) -> Iterator[World]:
    hospital = mock_hospital_server
    token = gateway_server.issuer.mint(scope="user/*.cruds", client_id="access-matrix-office")
    office = httpx.Client(
        base_url=gateway_server.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    http = httpx.Client(base_url=gateway_server.base, timeout=30)
    hospital.reset()  # no faults or writes left by an earlier module
    a, b = _two_of_a_family(hospital)
    provider, slot, slot_day = _free_slot(hospital)
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    built = World(
        gateway_server,
        hospital,
        office,
        a,
        b,
        provider,
        slot,
        slot_day,
        hospital.info()["today"],
        started.isoformat().replace("+00:00", "Z"),
        http,
    )
    for person in (a, b):
        person.consent = built.fresh_consent(person)
        person.audit_event = _audit_event_about(built, person)
    built.made.clear()
    yield built
    for person in (a, b):
        office.delete(f"/Consent/{person.consent}")
    office.close()
    http.close()


@pytest.fixture
def tidy(world: World) -> Iterator[World]:
    """The world, with the Consents a test made deleted after it (the gateway's store
    outlives the mock hospital's reset)."""
    yield world
    for cid in world.made:
        world.office.delete(f"/Consent/{cid}")
    world.made.clear()


# -- request bodies --------------------------------------------------------------------------


def consent(mrn: str, cid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{mrn}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"identifier": {"system": CLIENT_ID, "value": NOBODY}},
                }
            ],
            "provision": [{"type": "deny", "class": [{"code": "Observation"}]}],
        },
    }
    if cid is not None:
        body["id"] = cid
    return body


def reading(mrn: str, category: str = "vital-signs") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": "2026-11-24T14:30:00Z",
        "valueQuantity": {
            "value": 61,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def claim(mrn: str, today: str) -> dict[str, Any]:
    encounter = (date.fromisoformat(today) - timedelta(days=3)).isoformat()
    return a_claim(mrn, encounter)


def appointment(
    slot: str, mrn: str, provider: str, status: str = "booked", aid: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": status,
        "description": "Follow-up visit",
        "slot": [{"reference": f"Slot/{slot}"}],
        "participant": [
            {"actor": {"reference": f"Patient/{mrn}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{provider}"}, "status": "accepted"},
        ],
    }
    if aid is not None:
        body["id"] = aid
    return body


def cancellation(person: Person) -> dict[str, Any]:
    booked = person.appointment
    return appointment(
        booked["SlotId"],
        person.mrn,
        booked["ProviderId"],
        "cancelled",
        booked["ConfirmationNumber"],
    )


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    content_type: str = FHIR_JSON

    def send(self, client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        if self.method in ("POST", "PUT", "PATCH"):
            headers = {**headers, "Content-Type": self.content_type}
        return client.request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            content=self.content,
            headers=headers,
        )


def get(path: str, **params: Any) -> Call:
    return Call("GET", path, params)


@dataclass(frozen=True)
class Interaction:
    """One interaction of the CapabilityStatement, and a request for it on patient A's data."""

    rtype: str
    code: str  # read, search-type, create, update, patch, delete, or $operation
    letter: str  # the SMART permission it needs: one of c r u d s
    call: Callable[[World], Call]
    variant: str = ""  # a second request for the same interaction
    compartment: bool = True  # the data is patient A's; False: no patient's (Practitioner, Slot)

    @property
    def name(self) -> str:
        return f"{self.rtype}.{self.code}" + (f".{self.variant}" if self.variant else "")

    @property
    def success(self) -> int:
        return {"c": 201, "d": 204}.get(self.letter, 200)


# The searches by patient of what the legacy systems keep per patient.
BY_PATIENT = (
    "AllergyIntolerance",
    "Appointment",
    "Condition",
    "DiagnosticReport",
    "MedicationRequest",
    "Observation",
)


def _by(rtype: str, person: Callable[[World], Person], **params: Any) -> Callable[[World], Call]:
    return lambda w: get(f"/{rtype}", patient=person(w).mrn, **params)


def _a(w: World) -> Person:
    return w.a


def _b(w: World) -> Person:
    return w.b


INTERACTIONS = [
    *[Interaction(rtype, "search-type", "s", _by(rtype, _a)) for rtype in BY_PATIENT],
    Interaction(
        "Appointment",
        "create",
        "c",
        lambda w: Call("POST", "/Appointment", json=appointment(w.slot, w.a.mrn, w.provider)),
    ),
    Interaction(
        "Appointment",
        "update",
        "u",
        lambda w: Call(
            "PUT",
            f"/Appointment/{w.a.appointment['ConfirmationNumber']}",
            json=cancellation(w.a),
        ),
    ),
    Interaction(
        "Appointment",
        "patch",
        "u",
        lambda w: Call(
            "PATCH",
            f"/Appointment/{w.a.appointment['ConfirmationNumber']}",
            content=CANCEL,
            content_type="application/json-patch+json",
        ),
    ),
    Interaction("AuditEvent", "read", "r", lambda w: get(f"/AuditEvent/{w.a.audit_event}")),
    Interaction(
        "AuditEvent",
        "search-type",
        "s",
        lambda w: get("/AuditEvent", patient=w.a.mrn, date=f"ge{w.started}", _count=5),
    ),
    Interaction("Claim", "read", "r", lambda w: get(f"/Claim/{w.a.claim}")),
    Interaction(
        "Claim", "create", "c", lambda w: Call("POST", "/Claim", json=claim(w.a.mrn, w.today))
    ),
    Interaction("Claim", "$status", "r", lambda w: get(f"/Claim/{w.a.claim}/$status")),
    Interaction("Consent", "read", "r", lambda w: get(f"/Consent/{w.a.consent}")),
    Interaction("Consent", "search-type", "s", lambda w: get("/Consent", patient=w.a.mrn)),
    Interaction(
        "Consent", "create", "c", lambda w: Call("POST", "/Consent", json=consent(w.a.mrn))
    ),
    Interaction(
        "Consent",
        "update",
        "u",
        lambda w: Call("PUT", f"/Consent/{w.a.consent}", json=consent(w.a.mrn, w.a.consent)),
    ),
    Interaction(
        "Consent", "delete", "d", lambda w: Call("DELETE", f"/Consent/{w.fresh_consent(w.a)}")
    ),
    Interaction("DiagnosticReport", "read", "r", lambda w: get(f"/DiagnosticReport/{w.a.report}")),
    Interaction(
        "Observation", "create", "c", lambda w: Call("POST", "/Observation", json=reading(w.a.mrn))
    ),
    Interaction("Patient", "read", "r", lambda w: get(f"/Patient/{w.a.mrn}")),
    Interaction("Patient", "search-type", "s", lambda w: get("/Patient", _id=w.a.mrn)),
    Interaction(
        "Practitioner",
        "read",
        "r",
        lambda w: get(f"/Practitioner/{w.provider}"),
        compartment=False,
    ),
    Interaction(
        "Practitioner",
        "search-type",
        "s",
        lambda w: get("/Practitioner", _id=w.provider),
        compartment=False,
    ),
    Interaction(
        "Slot",
        "search-type",
        "s",
        lambda w: get(
            "/Slot",
            **{"schedule.actor": f"Practitioner/{w.provider}", "status": "free"},
            start=[
                f"ge{w.slot_day}",
                f"lt{(date.fromisoformat(w.slot_day) + timedelta(days=1)).isoformat()}",
            ],
        ),
        compartment=False,
    ),
]
# What the gateway can read back: a patient-scoped token changes nothing else,
# as the gateway cannot check whose it is.
READABLE = {i.rtype for i in INTERACTIONS if i.code == "read"}


def test_matrix_covers_every_interaction_the_gateway_serves(gateway: Gateway) -> None:
    statement = gateway.anonymous().get("/metadata").json()
    served = {
        (r["type"], code)
        for r in statement["rest"][0]["resource"]
        for code in [i["code"] for i in r.get("interaction", [])]
        + [f"${o['name']}" for o in r.get("operation", [])]
    }

    assert {(i.rtype, i.code) for i in INTERACTIONS} == served


# -- the matrix --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A kind of token: its scope (a template on {type} and {other}) and what it should get."""

    name: str
    scope: str | None  # None: no token at all
    letters: str = ""  # what the scope grants on the type
    patient: str | None = None  # "a": the data's own patient; "b": another
    refused: bool = False  # the token itself is refused (401)

    @property
    def confined(self) -> bool:
        return self.scope is not None and " patient/" in f" {self.scope}"

    def headers(self, world: World, interaction: Interaction) -> dict[str, str]:
        if self.scope is None:
            return {}
        other = "Practitioner" if interaction.rtype != "Practitioner" else "Patient"
        scope = self.scope.format(type=interaction.rtype, other=other)
        return world.token(scope, {"a": world.a.mrn, "b": world.b.mrn, None: None}[self.patient])

    def expect(self, interaction: Interaction) -> tuple[int, ...]:
        """The statuses allowed; a search of another patient's data is filtered (200 with
        no entries) or refused (403)."""
        if self.refused:
            return (401,)
        if interaction.letter not in self.letters:
            return (403,)
        if not self.confined:
            return (interaction.success,)
        if self.patient is None:
            return (403,)  # a patient scope needs a patient in the token
        if self.patient == "a" and interaction.compartment:
            if interaction.letter in "ud" and interaction.rtype not in READABLE:
                return (403,)
            return (interaction.success,)
        return (200, 403) if interaction.letter == "s" else (403,)


TOKENS = [
    Token("no-token", None, refused=True),
    Token("other-type", "user/{other}.cruds"),
    Token("v1-user-read", "user/{type}.read", "rs"),
    Token("v1-user-write", "user/{type}.write", "cud"),
    Token("v1-user-all", "user/*.*", "cruds"),
    Token("v2-user-rs", "user/{type}.rs", "rs"),
    Token("v2-user-cud", "user/{type}.cud", "cud"),
    Token("v2-user-cruds", "user/{type}.cruds", "cruds"),
    Token("v2-user-wildcard", "openid fhirUser user/*.cruds", "cruds"),
    Token("v2-system-rs", "system/{type}.rs", "rs"),
    Token("v2-system-cruds", "system/{type}.cruds", "cruds"),
    Token("v2-patient-own", "launch/patient patient/{type}.cruds", "cruds", "a"),
    Token("v1-patient-own-read", "patient/{type}.read", "rs", "a"),
    Token("v2-patient-wildcard-own", "patient/*.cruds", "cruds", "a"),
    Token("v2-patient-other", "patient/{type}.cruds", "cruds", "b"),
    Token("v1-patient-other-read", "patient/*.read", "rs", "b"),
    Token("patient-scope-without-patient", "patient/{type}.cruds", "cruds"),
    Token("unknown-permission", "patient/{type}.xyz", patient="a", refused=True),
    Token("unknown-form", "user/{type}", refused=True),
    Token("unknown-granular-parameter", "user/{type}.rs?colour=red", refused=True),
    Token("unknown-beside-a-good-one", "user/*.cruds patient/{type}.xyz", refused=True),
    # A word without a slash is an identity or custom scope of the issuer (OIDC's
    # `email`, say): it grants nothing, so the token can do nothing.
    Token("unknown-word", "foo"),
]

_MRN = r"(?<!\d){}(?!\d)"


def _without_links(node: Any) -> Any:
    """The body without Bundle links: they only echo the request's own parameters."""
    if isinstance(node, dict):
        return {k: _without_links(v) for k, v in node.items() if k != "link"}
    if isinstance(node, list):
        return [_without_links(v) for v in node]
    return node


def assert_no_trace(reply: httpx.Response, mrn: str) -> None:
    """No answer names `mrn` (raw text, links aside)."""
    text = reply.text
    if text and reply.headers.get("content-type", "").startswith(FHIR_JSON):
        text = str(_without_links(reply.json()))
    found = re.search(_MRN.format(mrn), text)
    assert found is None, f"{reply.request.method} {reply.request.url} names {mrn}: {reply.text}"


def assert_refused(reply: httpx.Response, status: int, fhir: Any) -> None:
    outcome = fhir(reply.json())
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    if status == 401:
        assert outcome["issue"][0]["code"] == "login"
        assert reply.headers["www-authenticate"].startswith("Bearer")
    else:
        assert outcome["issue"][0]["code"] == "forbidden"


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


# Rows of the matrix that wait for a fix, with the reason (none at present).
AWAITING_FIX: dict[tuple[str, str], str] = {}


def _rows() -> list[Any]:
    return [
        pytest.param(
            interaction,
            token,
            id=f"{interaction.name}-{token.name}",
            marks=[pytest.mark.skip(reason=reason)]
            if (reason := AWAITING_FIX.get((interaction.name, token.name)))
            else [],
        )
        for interaction in INTERACTIONS
        for token in TOKENS
    ]


@pytest.mark.parametrize(("interaction", "token"), _rows())
def test_scope_matrix(
    tidy: World, request: pytest.FixtureRequest, fhir: Any, interaction: Interaction, token: Token
) -> None:
    world = tidy
    expected = token.expect(interaction)
    if interaction.letter in "cud" and interaction.success in expected:
        # A write that goes through needs the hospital as seeded (the slot free, the
        # appointment still booked): the mock_hospital fixture resets it first.
        request.getfixturevalue("mock_hospital")
    call = interaction.call(world)

    reply = call.send(world.http, token.headers(world, interaction))

    if interaction.rtype == "Consent" and reply.status_code == 201:
        world.made.append(reply.json()["id"])
    assert reply.status_code in expected, (
        f"{token.scope!r} {call.method} {reply.request.url}: {reply.status_code} {reply.text[:500]}"
    )
    if reply.status_code >= 400:
        assert_refused(reply, reply.status_code, fhir)
    elif interaction.letter == "s":
        found = _entries(reply.json())
        if expected == (200, 403) or (token.confined and not interaction.compartment):
            assert found == [], "a patient scope sees nothing outside its patient's compartment"
        else:
            assert found, "the search finds the patient's data"
    if token.patient is not None:
        assert_no_trace(reply, world.b.mrn if token.patient == "a" else world.a.mrn)


# -- granular scopes ------------------------------------------------------------------------

LAB = f"category={OBS_CATEGORY}|laboratory"
VITALS = f"category={OBS_CATEGORY}|vital-signs"


@dataclass(frozen=True)
class Granular:
    name: str
    scope: str
    call: Callable[[World], Call]
    status: int
    category: str | None = None  # a search finds entries, all of this category; None: none


GRANULAR = [
    Granular(
        "lab-scope-searches-lab-results",
        f"patient/Observation.rs?{LAB}",
        lambda w: get("/Observation", patient=w.a.mrn),
        200,
        "laboratory",
    ),
    Granular(
        "vitals-scope-sees-no-lab-result",
        f"patient/Observation.rs?{VITALS}",
        lambda w: get("/Observation", patient=w.a.mrn),
        200,
    ),
    Granular(
        "lab-scope-searching-vital-signs-finds-none",
        f"patient/Observation.rs?{LAB}",
        lambda w: get("/Observation", patient=w.a.mrn, category="vital-signs"),
        200,
    ),
    Granular(
        "lab-scope-cannot-write-a-vital-signs-reading",
        f"patient/Observation.crs?{LAB}",
        lambda w: Call("POST", "/Observation", json=reading(w.a.mrn)),
        403,
    ),
    Granular(
        "vitals-scope-writes-a-vital-signs-reading",
        f"patient/Observation.crs?{VITALS}",
        lambda w: Call("POST", "/Observation", json=reading(w.a.mrn)),
        201,
    ),
    Granular(
        "read-only-lab-scope-cannot-write",
        f"patient/Observation.rs?{LAB}",
        lambda w: Call("POST", "/Observation", json=reading(w.a.mrn, "laboratory")),
        403,
    ),
    Granular(
        "lab-report-scope-reads-a-lab-report",
        f"patient/DiagnosticReport.rs?category={REPORT_CATEGORY}|LAB",
        lambda w: get(f"/DiagnosticReport/{w.a.report}"),
        200,
    ),
    Granular(
        "radiology-scope-cannot-read-a-lab-report",
        f"patient/DiagnosticReport.rs?category={REPORT_CATEGORY}|RAD",
        lambda w: get(f"/DiagnosticReport/{w.a.report}"),
        403,
    ),
    Granular(
        "radiology-and-vitals-scopes-see-no-lab-report-nor-its-results",
        f"patient/DiagnosticReport.rs?category={REPORT_CATEGORY}|RAD "
        f"patient/Observation.rs?{VITALS}",
        lambda w: get("/DiagnosticReport", patient=w.a.mrn, _include="DiagnosticReport:result"),
        200,
    ),
]


@pytest.mark.parametrize("case", GRANULAR, ids=[g.name for g in GRANULAR])
def test_granular_scope(
    world: World, mock_hospital: MockHospital, fhir: Any, case: Granular
) -> None:
    call = case.call(world)

    reply = call.send(world.http, world.token(case.scope, world.a.mrn))

    assert reply.status_code == case.status, reply.text
    if reply.status_code >= 400:
        assert_refused(reply, reply.status_code, fhir)
    elif call.method == "GET" and reply.json()["resourceType"] == "Bundle":
        found = _entries(reply.json())
        if case.category is None:
            assert found == []
        else:
            assert found
            assert {o["category"][0]["coding"][0]["code"] for o in found} == {case.category}
    assert_no_trace(reply, world.b.mrn)


# -- patient A reaching for patient B's data ----------------------------------------------------

# What a patient app for A holds: every permission, on A's compartment only.
PATIENT_APP = "launch/patient patient/*.cruds"


@dataclass(frozen=True)
class Attempt:
    name: str
    call: Callable[[World], Call]
    statuses: tuple[int, ...]  # 403, or a search's 200 with nothing in it (or 403)
    awaiting_fix: str | None = None


def appointment_with(world: World, *patients: str) -> dict[str, Any]:
    """A booking of the free slot whose participants are the patients, then the provider."""
    body = appointment(world.slot, patients[0], world.provider)
    body["participant"] += [
        {"actor": {"reference": f"Patient/{mrn}"}, "status": "accepted"} for mrn in patients[1:]
    ]
    return body


ATTEMPTS = [
    Attempt("read-Patient", lambda w: get(f"/Patient/{w.b.mrn}"), (403,)),
    Attempt(
        "status-of-B-Claim",
        lambda w: get(f"/Claim/{w.b.claim}/$status"),
        (403,),
    ),
    Attempt("read-DiagnosticReport", lambda w: get(f"/DiagnosticReport/{w.b.report}"), (403,)),
    Attempt("read-Claim", lambda w: get(f"/Claim/{w.b.claim}"), (403,)),
    Attempt("read-Consent", lambda w: get(f"/Consent/{w.b.consent}"), (403,)),
    Attempt("read-AuditEvent", lambda w: get(f"/AuditEvent/{w.b.audit_event}"), (403,)),
    # A search naming another patient is refused before any legacy call: an empty
    # answer would still page, and its links would tell what B has.
    *[Attempt(f"search-{rtype}-by-B", _by(rtype, _b), (403,)) for rtype in BY_PATIENT],
    Attempt(
        "search-Condition-by-B-reference",
        lambda w: get("/Condition", patient=f"Patient/{w.b.mrn}"),
        (403,),
    ),
    Attempt("search-Patient-by-B-id", lambda w: get("/Patient", _id=w.b.mrn), (403,)),
    Attempt(
        "search-Patient-by-B-MRN",
        lambda w: get("/Patient", identifier=f"urn:oid:2.16.840.1.113883.3.7777.1|{w.b.mrn}"),
        (403,),
    ),
    Attempt("search-Consent-by-B", _by("Consent", _b), (200, 403)),
    Attempt("search-AuditEvent-by-B", _by("AuditEvent", _b), (200, 403)),
    Attempt(
        "include-B-results",
        _by("DiagnosticReport", _b, _include="DiagnosticReport:result"),
        (403,),
    ),
    Attempt(
        "revinclude-B-data",
        lambda w: get(
            "/Patient",
            _id=w.b.mrn,
            _revinclude=[f"{t}:patient" for t in BY_PATIENT],
        ),
        (403,),
    ),
    Attempt(
        "create-Observation-for-B",
        lambda w: Call("POST", "/Observation", json=reading(w.b.mrn)),
        (403,),
    ),
    Attempt(
        "create-Claim-for-B",
        lambda w: Call("POST", "/Claim", json=claim(w.b.mrn, w.today)),
        (403,),
    ),
    Attempt(
        "create-Observation-for-B-with-A-as-performer",
        lambda w: Call(
            "POST",
            "/Observation",
            json={**reading(w.b.mrn), "performer": [{"reference": f"Patient/{w.a.mrn}"}]},
        ),
        (403,),
    ),
    Attempt(
        "create-Claim-for-B-paid-to-A",
        lambda w: Call(
            "POST",
            "/Claim",
            json={
                **claim(w.b.mrn, w.today),
                "payee": {
                    "type": {"coding": [{"code": "subscriber"}]},
                    "party": {"reference": f"Patient/{w.a.mrn}"},
                },
            },
        ),
        (403,),
    ),
    Attempt(
        "book-Appointment-for-B-with-A-as-second-participant",
        lambda w: Call(
            "POST",
            "/Appointment",
            json=appointment_with(w, w.b.mrn, w.a.mrn),
        ),
        (403,),
    ),
    Attempt(
        "book-Appointment-for-B",
        lambda w: Call("POST", "/Appointment", json=appointment(w.slot, w.b.mrn, w.provider)),
        (403,),
    ),
    Attempt(
        "cancel-B-Appointment",
        lambda w: Call(
            "PUT",
            f"/Appointment/{w.b.appointment['ConfirmationNumber']}",
            json=cancellation(w.b),
        ),
        (403,),
    ),
    Attempt(
        "cancel-B-Appointment-by-patch",
        lambda w: Call(
            "PATCH",
            f"/Appointment/{w.b.appointment['ConfirmationNumber']}",
            content=CANCEL,
            content_type="application/json-patch+json",
        ),
        (403,),
    ),
    Attempt(
        "cancel-B-Appointment-as-A",
        lambda w: Call(
            "PUT",
            f"/Appointment/{w.b.appointment['ConfirmationNumber']}",
            json={
                **cancellation(w.b),
                "participant": [{"actor": {"reference": f"Patient/{w.a.mrn}"}}],
            },
        ),
        (403,),
    ),
    Attempt(
        "create-Consent-for-B",
        lambda w: Call("POST", "/Consent", json=consent(w.b.mrn)),
        (403,),
    ),
    Attempt(
        "update-B-Consent",
        lambda w: Call("PUT", f"/Consent/{w.b.consent}", json=consent(w.b.mrn, w.b.consent)),
        (403,),
    ),
    Attempt(
        "take-over-B-Consent",
        lambda w: Call("PUT", f"/Consent/{w.b.consent}", json=consent(w.a.mrn, w.b.consent)),
        (403,),
    ),
    Attempt(
        "hand-own-Consent-to-B",
        lambda w: Call("PUT", f"/Consent/{w.a.consent}", json=consent(w.b.mrn, w.a.consent)),
        (403,),
    ),
    Attempt("delete-B-Consent", lambda w: Call("DELETE", f"/Consent/{w.b.consent}"), (403,)),
]


def _untouched(world: World, before: dict[str, Any]) -> None:
    """Nothing of B's changed in the hospital or in the gateway's store."""
    assert _state_of_b(world) == before


def _state_of_b(world: World) -> dict[str, Any]:
    hospital, b = world.hospital, world.b
    stats = hospital.stats()
    return {
        "writes": [
            stats["ehr"]["calls"].get("RecordVitals", 0),
            stats["scheduling"]["calls"].get("BookAppointment", 0),
            stats["scheduling"]["calls"].get("CancelAppointment", 0),
            stats["billing"]["calls"].get("SubmitClaim", 0),
        ],
        "appointment": hospital.get(
            f"/scheduling/appointments/{b.appointment['ConfirmationNumber']}"
        )["Status"],
        "consents": world.office.get("/Consent", params={"patient": b.mrn}).json().get("entry"),
    }


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(
            a,
            id=a.name,
            marks=[pytest.mark.skip(reason=a.awaiting_fix)] if a.awaiting_fix else [],
        )
        for a in ATTEMPTS
    ],
)
def test_patient_cannot_reach_another_patient(
    tidy: World, mock_hospital: MockHospital, fhir: Any, attempt: Attempt
) -> None:
    world = tidy
    before = _state_of_b(world)
    call = attempt.call(world)

    reply = call.send(world.http, world.token(PATIENT_APP, world.a.mrn))

    assert reply.status_code in attempt.statuses, reply.text
    if reply.status_code == 403:
        assert_refused(reply, 403, fhir)
    else:
        assert _entries(reply.json()) == []
    assert_no_trace(reply, world.b.mrn)
    _untouched(world, before)


def _all_pages(world: World, headers: dict[str, str], path: str, **params: Any) -> list[Any]:
    replies = [world.http.get(path, params=params, headers=headers)]
    while True:
        assert replies[-1].status_code == 200, replies[-1].text
        links = {x["relation"]: x["url"] for x in replies[-1].json().get("link", [])}
        if "next" not in links:
            return replies
        assert len(replies) < 30
        replies.append(world.http.get(links["next"], headers=headers))


def test_patient_search_without_a_patient_sees_only_its_own(
    world: World, mock_hospital: MockHospital
) -> None:
    headers = world.token(PATIENT_APP, world.a.mrn)
    clinician = _all_pages(
        world, world.token("user/Patient.rs"), "/Patient", family=world.a.family, _count=200
    )
    everyone = {e["resource"]["id"] for r in clinician for e in r.json().get("entry", [])}
    assert {world.a.mrn, world.b.mrn} <= everyone  # the legacy search finds both

    pages = _all_pages(world, headers, "/Patient", family=world.a.family, _count=200)
    consents = world.http.get("/Consent", headers=headers)
    trail = world.http.get("/AuditEvent", params={"date": f"ge{world.started}"}, headers=headers)

    found = [e["resource"] for r in pages for e in r.json().get("entry", [])]
    assert [p["id"] for p in found] == [world.a.mrn]
    assert all("total" not in r.json() for r in pages)  # no count of anyone else
    assert world.a.consent in [c["id"] for c in _entries(consents.json())]
    assert {c["patient"]["reference"] for c in _entries(consents.json())} == {
        f"Patient/{world.a.mrn}"
    }
    assert _entries(trail.json())
    for event in _entries(trail.json()):
        patients = {e["what"].get("reference") for e in event["entity"] if "what" in e}
        assert f"Patient/{world.a.mrn}" in patients
    for reply in [*pages, consents]:
        assert_no_trace(reply, world.b.mrn)


def test_patient_includes_only_its_own_resources(world: World, mock_hospital: MockHospital) -> None:
    headers = world.token(PATIENT_APP, world.a.mrn)
    revincludes = [
        f"{t}:patient"
        for t in ("AllergyIntolerance", "Condition", "DiagnosticReport", "MedicationRequest")
    ]

    reports = world.http.get(
        "/DiagnosticReport",
        params={"patient": world.a.mrn, "_include": "DiagnosticReport:result"},
        headers=headers,
    )
    patient = world.http.get(
        "/Patient", params={"_id": world.a.mrn, "_revinclude": revincludes}, headers=headers
    )

    for reply in (reports, patient):
        assert reply.status_code == 200, reply.text
        included = [
            e["resource"] for e in reply.json()["entry"] if e["search"]["mode"] == "include"
        ]
        assert included
        assert all(world.a.mrn in str(r.get("subject", r.get("patient"))) for r in included)
        assert_no_trace(reply, world.b.mrn)


def test_patient_batch_answers_another_patients_entries_403(
    world: World, mock_hospital: MockHospital, fhir: Any
) -> None:
    a, b = world.a, world.b
    urls = [
        f"Patient/{b.mrn}",
        f"DiagnosticReport/{b.report}",
        f"Claim/{b.claim}",
        f"Observation?patient={b.mrn}",
        f"DiagnosticReport?patient={b.mrn}&_include=DiagnosticReport:result",
        f"Patient?_id={b.mrn}&_revinclude=Condition:patient",
        f"Patient/{a.mrn}",
    ]
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            *[{"request": {"method": "GET", "url": url}} for url in urls],
            {"resource": reading(b.mrn), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    before = _state_of_b(world)

    reply = Call("POST", "/", json=body).send(world.http, world.token(PATIENT_APP, a.mrn))

    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in bundle["entry"]]
    assert statuses == ["403", "403", "403", "403", "403", "403", "200", "403"]
    for entry in bundle["entry"]:
        if entry["response"]["status"] == "403":
            assert "resource" not in entry
            assert entry["response"]["outcome"]["issue"][0]["code"] == "forbidden"
    assert bundle["entry"][6]["resource"]["id"] == a.mrn
    assert_no_trace(reply, b.mrn)
    _untouched(world, before)


def test_patient_transaction_writing_for_another_patient_is_refused(
    world: World, mock_hospital: MockHospital, fhir: Any
) -> None:
    body = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": reading(mrn), "request": {"method": "POST", "url": "Observation"}}
            for mrn in (world.a.mrn, world.b.mrn)
        ],
    }
    before = _state_of_b(world)

    reply = Call("POST", "/", json=body).send(world.http, world.token(PATIENT_APP, world.a.mrn))

    assert reply.status_code == 403, reply.text
    assert_refused(reply, 403, fhir)
    assert_no_trace(reply, world.b.mrn)
    _untouched(world, before)  # nor A's reading: a transaction is all or nothing


@pytest.mark.parametrize(
    "search_both",
    [
        pytest.param(False, id="clinician-reads-each"),
        pytest.param(True, id="clinician-search-finds-both"),
    ],
)
def test_patient_audit_trail_shows_its_own_patient_only(
    world: World, mock_hospital: MockHospital, search_both: bool
) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    office = world.token("user/*.rs")
    mine = f"matrix-{secrets.token_hex(6)}"
    other = f"matrix-{secrets.token_hex(6)}"
    for rid, mrn in ((mine, world.a.mrn), (other, world.b.mrn)):
        reply = world.http.get(f"/Patient/{mrn}", headers={**office, "X-Request-ID": rid})
        assert reply.status_code == 200
    both = f"matrix-{secrets.token_hex(6)}"
    if search_both:
        pages = _all_pages(
            world, {**office, "X-Request-ID": both}, "/Patient", family=world.a.family, _count=200
        )
        ids = {e["resource"]["id"] for r in pages for e in r.json().get("entry", [])}
        assert {world.a.mrn, world.b.mrn} <= ids
    date_from = since.isoformat().replace("+00:00", "Z")

    trail = world.http.get(
        "/AuditEvent",
        params={"date": f"ge{date_from}"},
        headers=world.token(PATIENT_APP, world.a.mrn),
    )

    assert trail.status_code == 200, trail.text
    events = {_request_id(e): e for e in _entries(trail.json())}
    assert mine in events
    assert other not in events
    shown = [mine, both] if search_both else [mine]
    for rid in shown:
        assert rid in events  # the trail of each request that found the patient
        found = re.search(_MRN.format(world.b.mrn), str(events[rid]))
        assert found is None, f"patient {world.a.mrn}'s trail names {world.b.mrn}: {events[rid]}"
