"""The compiled validator never accepts what fhir.resources refuses, and the
client gets the same verdict and diagnostics as from fhir.resources alone."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from bridge.errors import FhirError
from bridge.fhir import validate
from bridge.fhir.validate import validate_resource
from tests.bodies import changed, claim, json_paths
from tests.props import repeatable

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
EXTENSION = {"url": "http://example.org/why", "valueCode": "unknown"}


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "2", "lastUpdated": "2026-11-20T08:00:00Z"},
        "extension": [{"url": "http://example.org/a", "extension": [EXTENSION]}],
        "status": "final",
        "_status": {"extension": [EXTENSION]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "BP"},
        "subject": {"reference": "Patient/12345", "display": "Pat"},
        "effectiveDateTime": "2026-11-20T08:00:03-05:00",
        "issued": "2026-11-20T08:00:04.123Z",
        "performer": [{"identifier": {"system": "urn:x", "value": "nurse-1"}}],
        "interpretation": [{"text": "normal"}],
        "note": [{"text": "seated", "time": "2026-11-20"}],
        "referenceRange": [{"low": {"value": 60, "unit": "mm[Hg]"}, "text": "60-90"}],
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120.5, "unit": "mm[Hg]", "comparator": "<"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueString": "eighty",
            },
        ],
        "contained": [{"resourceType": "Device", "id": "d1", "lotNumber": "7"}],
        "device": {"reference": "#d1"},
    }


def _patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "100003"}],
        "active": True,
        "name": [{"family": "Green", "given": ["Cynthia", "M"], "_given": [None, {"id": "g"}]}],
        "gender": "female",
        "birthDate": "1970-02",
        "deceasedBoolean": False,
        "address": [{"line": ["1 Main St"], "postalCode": "02134", "period": {"end": "2030"}}],
        "multipleBirthInteger": 2,
        "photo": [{"contentType": "image/png", "data": "aGVsbG8="}],
        "communication": [{"language": {"text": "en"}, "preferred": True}],
        "link": [{"other": {"reference": "Patient/9"}, "type": "seealso"}],
    }


def _seeds() -> list[dict[str, Any]]:
    from bench.record import observation

    seeds = [_observation(), _patient(), observation("12345", 7), claim("12345", "2026-11-20")]
    for name in ("hospital/tests/patient_deceased_date.expected.json", "*/tests/*.request.json"):
        seeds += [json.loads(p.read_text()) for p in sorted(MAPPINGS.glob(name))]
    found = json.loads((MAPPINGS / "hospital/tests/find_patients_obrien.expected.json").read_text())
    # Elements of any resource type (Bundle.entry.resource) keep fhir.resources' validator.
    entries = [{"fullUrl": f"Patient/{p['id']}", "resource": p} for p in found[:2]]
    seeds.append({"resourceType": "Bundle", "type": "searchset", "entry": entries})
    return seeds


SEEDS = _seeds()
ODD = [
    None,
    "",
    " x",
    "x",
    0,
    -1,
    1.5,
    True,
    [],
    {},
    [None],
    [{}],
    {"bogus": 1},
    {"extension": []},
    "2026-13-45",
    "2026-11-20T25:00:00Z",
    "1e400",
    '{"text": "json text"}',
]
ODD_KEYS = ["bogus", "resourceType", "resource_type", "fhir_comments", "id", "extension"]


def _mutations(seed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The seed with one thing wrong (or oddly right), at every place it has."""
    for path in json_paths(seed):
        for change in ("delete", "wrap", "unwrap", "json", "rename", "twin", *range(len(ODD))):
            body = changed(seed, path, change, ODD)
            if body is not None:
                yield body
    for path in [(), *json_paths(seed)]:
        for key in ODD_KEYS:
            for extra in ([], {"text": "x"}, "x", None):
                body = copy.deepcopy(seed)
                node = body
                for step in path:
                    node = node[step]
                if isinstance(node, dict):
                    node[key] = extra
                    yield body


def _verdict(body: dict[str, Any], rtype: str) -> tuple[Any, ...]:
    try:
        validate_resource(body, rtype)
    except FhirError as error:
        return (type(error).__name__, error.status, error.diagnostics, error.expression)
    except Exception as error:  # fhir.resources has its own bugs: keep them the same
        return (type(error).__name__,)
    return ("valid",)


def _reference(body: dict[str, Any], rtype: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patched:
        patched.setattr(validate, "_compiled", lambda rtype: None)
        return _verdict(body, rtype)


def _compiled_accepts(body: dict[str, Any], rtype: str) -> bool:
    """Does the compiled validator accept it (where validate_resource would ask it)?"""
    compiled = validate._compiled(rtype)
    assert compiled is not None
    if body.get("resourceType") != rtype:
        return False
    try:
        compiled.validate_python(body)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("seed", SEEDS, ids=[s["resourceType"] for s in SEEDS])
def test_validate_compiled_accepts_valid_resources(seed: dict[str, Any]) -> None:
    assert _compiled_accepts(seed, seed["resourceType"])
    assert _verdict(seed, seed["resourceType"]) == ("valid",)


@pytest.mark.parametrize("seed", SEEDS, ids=[s["resourceType"] for s in SEEDS])
def test_validate_compiled_never_accepts_what_fhir_resources_refuses(
    seed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rtype = seed["resourceType"]
    model = validate._model(rtype)
    fast = refused = 0
    for body in _mutations(seed):
        reference = _reference(body, rtype, monkeypatch)
        assert _verdict(body, rtype) == reference, body
        if _compiled_accepts(body, rtype):
            fast += 1
            model.model_validate(body)  # would raise if fhir.resources refused it
        if reference != ("valid",):
            refused += 1
    assert fast and refused  # both paths were taken


@repeatable(300, allow=[HealthCheck.too_slow])
@given(st.data())
def test_validate_agrees_with_fhir_resources_on_several_changes(data: st.DataObject) -> None:
    body = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    rtype = body["resourceType"]
    for _ in range(data.draw(st.integers(1, 4))):
        paths = list(json_paths(body))
        if not paths:
            break
        *parent_path, last = data.draw(st.sampled_from(paths))
        parent = body
        for step in parent_path:
            parent = parent[step]
        parent[last] = copy.deepcopy(data.draw(st.sampled_from([*ODD, EXTENSION, [EXTENSION]])))
    with pytest.MonkeyPatch.context() as monkeypatch:
        reference = _reference(body, rtype, monkeypatch)
    assert _verdict(body, rtype) == reference
    if _compiled_accepts(body, rtype):
        assert reference == ("valid",)


@pytest.mark.parametrize(
    "rtype",
    sorted({p.stem for p in MAPPINGS.glob("*/*.yaml")} - {"system", "demo-requests"} | {"Bundle"}),
)
def test_validate_compiles_every_mapped_type(rtype: str) -> None:
    assert validate._compiled(rtype) is not None


def test_validate_diagnostics_name_the_elements() -> None:
    body = {**_observation(), "status": None, "valueQuantity": {"value": "high"}}
    body["code"]["coding"].append(None)
    with pytest.raises(FhirError) as caught:
        validate_resource(body, "Observation")
    assert caught.value.status == 422
    assert caught.value.diagnostics == (
        "The Observation is not valid FHIR R4 at: Observation.code.coding, "
        "Observation.valueQuantity.value."
    )
