"""What a FHIR R4 client relies on (http.html, search.html), through the real gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import heart_rate
from tests.support import Gateway, conditional_scheduling, start_gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
MRN = "100001"


def _outcome(reply: httpx.Response, fhir: Any, status: int, code: str) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    issue = fhir(reply.json())["issue"][0]
    assert issue["code"] == code, issue
    return str(issue["diagnostics"])


# -- formats and the fhirVersion parameter --------------------------------------------


@pytest.mark.parametrize(
    "path", ["/metadata", f"/Patient/{MRN}", f"/Patient?_id={MRN}", "/Patient/NOPE-1", "/patient"]
)
def test_every_answer_says_its_charset_is_utf8(gateway: Gateway, path: str) -> None:
    # http.html: HTTP's default charset is not UTF-8, so FHIR answers SHALL name it.
    reply = gateway.client().get(path)
    assert reply.headers["content-type"] == f"{FHIR_JSON}; charset=utf-8"


@pytest.mark.parametrize(
    "query",
    [
        "_format=application%2Ffhir%2Bjson%3B%20fhirVersion%3D4.0",
        "_format=application/fhir%2Bjson;fhirVersion=4.0",
        # A `+` left unencoded reads as a space: still FHIR JSON.
        "_format=application/fhir+json",
        "_format=application/fhir+json;fhirVersion=4.0",
    ],
)
def test_format_with_a_media_type_and_its_fhir_version_is_json(
    gateway: Gateway, fhir: Any, query: str
) -> None:
    reply = gateway.client().get(f"/Patient/{MRN}?{query}")
    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["id"] == MRN


def test_another_fhir_version_is_not_acceptable(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client("user/*.*")
    expected = "This server answers in FHIR R4 (fhirVersion=4.0) only, not fhirVersion=3.0."
    by_accept = client.get(
        f"/Patient/{MRN}", headers={"Accept": "application/fhir+json; fhirVersion=3.0"}
    )
    assert _outcome(by_accept, fhir, 406, "not-supported") == expected
    by_format = client.get(
        f"/Patient/{MRN}", params={"_format": "application/fhir+json; fhirVersion=3.0"}
    )
    assert _outcome(by_format, fhir, 406, "not-supported") == expected
    # Another choice in the same Accept that this server serves is taken.
    either = "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0"
    assert client.get(f"/Patient/{MRN}", headers={"Accept": either}).status_code == 200
    body = client.post(
        "/Observation",
        json=heart_rate("100007", 72),
        headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"},
    )
    assert _outcome(body, fhir, 415, "not-supported") == (
        "This server takes FHIR R4 (fhirVersion=4.0) only, not fhirVersion=3.0."
    )


# -- search result parameters -----------------------------------------------------------


def test_summary_count_answers_the_total_only(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    counted = client.get("/Patient", params={"family": "Jones", "_summary": "count"})
    assert counted.status_code == 200, counted.text
    bundle = fhir(counted.json())
    assert "entry" not in bundle
    assert (
        bundle["total"] == fhir(client.get("/Patient", params={"family": "Jones"}).json())["total"]
    )
    assert bundle["total"] > 0
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    assert bundle["link"][0]["url"] == f"{gateway.base}/Patient?family=Jones&_count=0"
    strict = client.get(
        "/Patient",
        params={"family": "Jones", "_summary": "count"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 200, strict.text
    assert "entry" not in strict.json()


def test_summary_that_would_leave_elements_out_is_ignored_or_refused(
    gateway: Gateway, fhir: Any
) -> None:
    client = gateway.client()
    lenient = client.get("/Patient", params={"_id": MRN, "_summary": "true"})
    assert lenient.status_code == 200, lenient.text
    bundle = fhir(lenient.json())
    assert bundle["entry"][0]["resource"]["id"] == MRN
    assert "_summary" not in bundle["link"][0]["url"]
    strict = client.get(
        "/Patient",
        params={"_id": MRN, "_summary": "true"},
        headers={"Prefer": "handling=strict"},
    )
    assert _outcome(strict, fhir, 400, "invalid") == (
        "_summary=true is not supported; this server supports _summary=count and _summary=false."
    )


# -- Prefer: return ---------------------------------------------------------------------


def test_prefer_return_minimal_answers_without_a_body(gateway: Gateway) -> None:
    reply = gateway.client("user/*.*").post(
        "/Observation",
        json=heart_rate("100007", 72),
        headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.content == b""
    assert reply.headers["location"].startswith(f"{gateway.base}/Observation/")
    assert reply.headers["preference-applied"] == "return=minimal"


def test_prefer_return_operation_outcome_answers_one(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client("user/*.*").post(
        "/Observation",
        json=heart_rate("100007", 72),
        headers={"Content-Type": FHIR_JSON, "Prefer": "return=OperationOutcome"},
    )
    created = reply.headers["location"].removeprefix(f"{gateway.base}/")
    assert _outcome(reply, fhir, 201, "informational") == f"{created} was created."
    assert reply.json()["issue"][0]["severity"] == "information"


def test_prefer_return_representation_answers_the_resource(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client("user/*.*").post(
        "/Observation",
        json=heart_rate("100007", 72),
        headers={"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
    )
    assert reply.status_code == 201, reply.text
    assert fhir(reply.json())["resourceType"] == "Observation"
    assert "preference-applied" not in reply.headers


# -- the CapabilityStatement ------------------------------------------------------------


def test_capability_statement_lists_patch_and_bundles(gateway: Gateway, fhir: Any) -> None:
    cap = fhir(gateway.anonymous().get("/metadata").json())
    rest = cap["rest"][0]
    assert rest["interaction"] == [{"code": "transaction"}, {"code": "batch"}]
    assert cap["patchFormat"] == ["application/json-patch+json"]
    by_type = {r["type"]: r for r in rest["resource"]}
    codes = [i["code"] for i in by_type["Appointment"]["interaction"]]
    assert codes == ["search-type", "create", "update", "patch"]
    # The shipped mappings name no If-None-Exist parameters.
    assert by_type["Observation"]["conditionalCreate"] is False
    assert "conditionalCreate" not in by_type["Patient"]


def test_capability_statement_says_what_a_mapping_adds(
    tmp_path: Path, mock_hospital: MockHospital, fhir: Any
) -> None:
    folder = conditional_scheduling(tmp_path)
    origin = "https://app.example"
    extra = {"cors_origins": [origin]}
    with start_gateway(tmp_path, mock_hospital.ehr_url, mappings=folder, extra=extra) as gw:
        cap = fhir(gw.anonymous().get("/metadata").json())
        appointment = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Appointment")
        assert appointment["conditionalCreate"] is True
        assert cap["rest"][0]["security"]["cors"] is True
        # A browser app can read why it was refused.
        refused = gw.anonymous().get("/Patient/1", headers={"Origin": origin})
        assert refused.status_code == 401
        exposed = refused.headers["access-control-expose-headers"].lower()
        assert "www-authenticate" in exposed
        assert "preference-applied" in exposed
        assert "allow" in exposed.split(", ")
        preflight = gw.anonymous().options(
            "/Patient/1",
            headers={"Origin": origin, "Access-Control-Request-Method": "HEAD"},
        )
        assert preflight.status_code == 200, preflight.text


# -- addresses ----------------------------------------------------------------------------


def test_a_trailing_slash_is_the_same_address(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    read = client.get(f"/Patient/{MRN}/")
    assert read.status_code == 200, read.text
    assert fhir(read.json()) == client.get(f"/Patient/{MRN}").json()
    search = client.get("/Patient/", params={"_id": MRN})
    assert search.status_code == 200, search.text
    assert fhir(search.json())["entry"][0]["resource"]["id"] == MRN
    missing = client.get(f"/Patient/{MRN}/nothing/here/")
    _outcome(missing, fhir, 404, "not-found")


def test_a_405_names_the_methods_its_address_takes(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client("user/*.*")
    delete = client.delete(f"/Patient/{MRN}")
    assert _outcome(delete, fhir, 405, "not-supported") == (
        "'Patient' resources cannot be deleted here."
    )
    assert delete.headers["allow"] == "GET, HEAD"
    create = client.post("/Patient", json={"resourceType": "Patient"})
    _outcome(create, fhir, 405, "not-supported")
    assert create.headers["allow"] == "GET, HEAD"
    base = client.get(gateway.base)
    assert _outcome(base, fhir, 405, "not-supported") == (
        "GET is not supported at this address; it takes POST."
    )
    assert base.headers["allow"] == "POST"
    options = client.options(f"/Patient/{MRN}")
    _outcome(options, fhir, 405, "not-supported")
    assert options.headers["allow"] == "DELETE, GET, HEAD, PATCH, POST, PUT"


@pytest.mark.parametrize(
    ("path", "diagnostics"),
    [
        (
            f"/Patient/{MRN}/_history/1",
            "This server keeps no versions of resources: history and version reads "
            f"(_history) are not supported; read Patient/{MRN} for its current state.",
        ),
        (
            f"/Patient/{MRN}/_history",
            "This server keeps no versions of resources: history and version reads "
            f"(_history) are not supported; read Patient/{MRN} for its current state.",
        ),
        (
            "/Patient/_history",
            "This server keeps no versions of resources: history and version reads "
            "(_history) are not supported.",
        ),
        (
            "/_history",
            "This server keeps no versions of resources: history and version reads "
            "(_history) are not supported.",
        ),
    ],
)
def test_history_and_version_reads_say_no_versions_are_kept(
    gateway: Gateway, fhir: Any, path: str, diagnostics: str
) -> None:
    reply = gateway.client().get(gateway.base + path)
    assert _outcome(reply, fhir, 404, "not-supported") == diagnostics


def test_a_resource_type_in_the_wrong_case_is_named(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    for path in (f"/patient/{MRN}", "/PATIENT", "/auditevent/1"):
        reply = client.get(path)
        meant = "Patient" if "atient" in path.lower() else "AuditEvent"
        assert _outcome(reply, fhir, 404, "not-supported") == (
            f"This server does not serve '{path.split('/')[1]}' resources; resource type "
            f"names are case-sensitive: did you mean '{meant}'?"
        )
    unknown = client.get("/Foo/1")
    served = [r["type"] for r in fhir(client.get("/metadata").json())["rest"][0]["resource"]]
    assert _outcome(unknown, fhir, 404, "not-supported") == (
        f"This server does not serve 'Foo' resources; it serves {', '.join(sorted(served))} "
        "([base]/metadata says what each allows)."
    )


def test_get_on_search_says_it_takes_post(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get("/Patient/_search")
    assert reply.headers["allow"] == "POST"
    assert "_search takes POST" in _outcome(reply, fhir, 405, "not-supported")


def test_every_405_names_what_its_address_takes(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client("user/*.*")
    posted = client.post(f"/Patient/{MRN}", json={}, headers={"Content-Type": FHIR_JSON})
    _outcome(posted, fhir, 405, "not-supported")
    assert posted.headers["allow"] == "GET, HEAD"  # Patient is read and searched only
    for path in ("/Claim/$teleport", "/Claim/CLM-2026-000001/$teleport", "/Claim/$status"):
        refused = client.get(path)
        _outcome(refused, fhir, 405, "not-supported")
        assert refused.headers["allow"] == ""  # nothing is served there
    assert "Claim has no operation $teleport; its operations: $status." in _outcome(
        client.get("/Claim/$teleport"), fhir, 405, "not-supported"
    )
    # A transaction refused for one entry: the answer is the Bundle's address's.
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Patient/{MRN}"}}],
    }
    bundle = client.post("/", json=transaction, headers={"Content-Type": FHIR_JSON})
    _outcome(bundle, fhir, 405, "not-supported")
    assert bundle.headers["allow"] == "POST"


def test_a_trailing_slash_on_an_open_address_stays_open(gateway: Gateway, fhir: Any) -> None:
    anonymous = gateway.anonymous()
    assert anonymous.get("/metadata/").status_code == 200
    root = gateway.base.removesuffix("/fhir")
    assert httpx.get(f"{root}/healthz/").status_code == 200
    # One slash written as a slash: an encoded one, or two, is no address.
    client = gateway.client()
    assert client.get(f"/Patient/{MRN}%2F").status_code == 404
    assert client.get("/Patient//").status_code == 404
