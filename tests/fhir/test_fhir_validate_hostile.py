"""Input on which fhir.resources fails otherwise than with a ValidationError
(AttributeError, KeyError, TypeError) is refused like any invalid resource:
422, naming the element, never a 500."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench.record import observation
from bridge.errors import FhirError
from bridge.fhir import validate
from bridge.fhir.validate import validate_resource
from tests.bodies import json_paths
from tests.fhir.test_fhir_validate import SEEDS

# JSON text that is not an object: fhir.resources parses a string given for an
# object, then its primitive-extension validator calls `.get` on what it got.
NOT_OBJECT_TEXT = ["1", "[]", "[1]", "null", "true", '"x"', "1e400"]
HOSTILE = [*NOT_OBJECT_TEXT, "{}", '{"extension": 1}', 1, "x", None, [], {}, [None]]


def _refusal(body: Any, rtype: str) -> tuple[int, str, list[str]]:
    with pytest.raises(FhirError) as caught:
        validate_resource(body, rtype)
    error = caught.value
    return error.status, error.diagnostics, error.expression


def test_validate_primitive_extension_that_is_not_an_object_is_422() -> None:
    body = {**observation("12345"), "_status": "1"}
    assert _refusal(body, "Observation") == (
        422,
        "The Observation is not valid FHIR R4 at: Observation._status.",
        ["Observation._status"],
    )


@pytest.mark.parametrize("text", NOT_OBJECT_TEXT)
@pytest.mark.parametrize(
    "where", [("_status",), ("meta", "_versionId"), ("code", "coding", 0, "_code")]
)
def test_validate_json_text_extension_anywhere_is_422(where: tuple[Any, ...], text: str) -> None:
    body = {**observation("12345"), "meta": {"versionId": "1"}}
    parent: Any = body
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = text
    status, diagnostics, expression = _refusal(body, "Observation")
    assert status == 422
    assert expression == [f"Observation.{where[0]}"]
    assert diagnostics == f"The Observation is not valid FHIR R4 at: Observation.{where[0]}."


@pytest.mark.parametrize("kind", ["x", "1", "", None, 1, [], {}, "Patient]"])
def test_validate_contained_resource_of_no_known_type_is_422(kind: Any) -> None:
    body = {**observation("12345"), "contained": [{"resourceType": kind, "id": "c"}]}
    status, diagnostics, _ = _refusal(body, "Observation")
    assert status == 422
    assert diagnostics.startswith("The Observation is not valid FHIR R4")


def test_validate_failure_the_element_alone_does_not_show_names_no_element(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Crashing:
        @staticmethod
        def model_validate(body: Any) -> None:
            if len(body) > 2:
                raise AttributeError("x")

    monkeypatch.setattr(validate, "_model", lambda rtype: Crashing)
    monkeypatch.setattr(validate, "_compiled", lambda rtype: None)
    assert _refusal(observation("12345"), "Observation") == (
        422,
        "The Observation is not valid FHIR R4.",
        [],
    )


def _status(body: Any, rtype: str) -> int | None:
    try:
        validate_resource(body, rtype)
    except FhirError as exc:
        return exc.status
    return None


def test_validate_never_fails_otherwise_than_with_a_fhir_error() -> None:
    # Every seed, every element (and its `_` twin) set to each hostile value.
    statuses: set[int | None] = set()
    for seed in SEEDS:
        rtype = seed["resourceType"]
        for path in json_paths(seed):
            *parent_path, last = path
            keys = [last]
            if isinstance(last, str) and not last.startswith("_"):
                keys.append(f"_{last}")
            for key in keys:
                for value in HOSTILE:
                    body = copy.deepcopy(seed)
                    parent: Any = body
                    for step in parent_path:
                        parent = parent[step]
                    parent[key] = copy.deepcopy(value)
                    statuses.add(_status(body, rtype))
    assert statuses == {None, 400, 422}
