"""Reading a Bundle's entries, and merging the legacy records of its creates into one call."""

from __future__ import annotations

from functools import reduce
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InvalidRequest
from bridge.gateway.bundles import _merge, parse_entry
from bridge.soap.wsdl import ElementInfo
from tests.props import repeatable


def _element(name: str, repeats: bool, *children: ElementInfo) -> ElementInfo:
    return ElementInfo(name, name, 0, None if repeats else 1, "t", children, bool(children))


REQUEST = _element(
    "Request",
    False,
    _element("Header", False, _element("Site", False), _element("Tag", True)),
    _element("Reading", True, _element("Value", False)),
    _element("Note", False),
)


def _pairwise(a: Any, b: Any, element: ElementInfo | None) -> Any:
    """Two trees at a time, as the merge was first written: the reference."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            child = element.child(key) if element is not None else None
            if key not in out:
                out[key] = value
                continue
            if child is not None and child.repeats:
                left = out[key] if isinstance(out[key], list) else [out[key]]
                right = value if isinstance(value, list) else [value]
                out[key] = left + right
                continue
            merged = _pairwise(out[key], value, child)
            if merged is None:
                return None
            out[key] = merged
        return out
    return a if a == b else None


def _fold(trees: list[Any]) -> Any:
    return reduce(lambda a, b: None if a is None else _pairwise(a, b, REQUEST), trees)


LEAF = st.sampled_from(["a", "b", "1", None, 7])
TREE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(
            st.sampled_from(["Header", "Site", "Tag", "Reading", "Value", "Note"]), inner
        )
    ),
    max_leaves=8,
)


def test_merge_puts_repeating_records_together() -> None:
    trees = [{"Header": {"Site": "S"}, "Reading": [{"Value": str(i)}]} for i in range(3)]
    assert _merge(trees, REQUEST) == {
        "Header": {"Site": "S"},
        "Reading": [{"Value": "0"}, {"Value": "1"}, {"Value": "2"}],
    }
    trees[2]["Header"] = {"Site": "T"}
    assert _merge(trees, REQUEST) is None


@repeatable(400)
@given(st.lists(TREE, min_size=1, max_size=5))
def test_merge_agrees_with_merging_two_at_a_time(trees: list[Any]) -> None:
    assert _merge(trees, REQUEST) == _fold(trees)


@pytest.mark.parametrize(
    ("url", "rtype", "rid", "query"),
    [
        ("Observation", "Observation", None, []),
        ("fhir/Patient?_id=100002", "Patient", None, [("_id", "100002")]),
        ("/fhir/Patient/100002", "Patient", "100002", []),
        (
            "http://gw.test/fhir/Condition?patient=1&_count=2",
            "Condition",
            None,
            [
                ("patient", "1"),
                ("_count", "2"),
            ],
        ),
    ],
)
def test_parse_entry_reads_the_type_after_the_base(
    url: str, rtype: str, rid: str | None, query: list[tuple[str, str]]
) -> None:
    entry = parse_entry(0, {"request": {"method": "GET", "url": url}})

    assert (entry.rtype, entry.rid, entry.query) == (rtype, rid, query)
    assert entry.interaction == ("read" if rid else "search")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "Bundle.entry[3] is not an object."),
        ([], "Bundle.entry[3] is not an object."),
        ({"resource": {}}, "Bundle.entry[3].request is required in a batch or transaction."),
        (
            {"request": {"method": "GET", "url": "http://[::1"}},
            "Bundle.entry[3].request.url is not a URL; send one relative to the base, "
            "like Observation?patient=123 or Patient/123.",
        ),
        (
            {"request": {"method": "POST", "url": "Observation"}},
            "Bundle.entry[3].resource is required for POST: the Observation to write, "
            "a JSON object.",
        ),
        (
            {"request": {"method": "PUT", "url": "Observation/1"}, "resource": "x"},
            "Bundle.entry[3].resource is required for PUT: the Observation to write, "
            "a JSON object.",
        ),
        (
            {"request": {"method": "PATCH", "url": "Appointment/1"}, "resource": {}},
            "Bundle.entry[3].resource is required for PATCH: a JSON Patch, a list of operations.",
        ),
        (
            {"request": {"method": "DELETE", "url": "Observation?code=1"}},
            "Bundle.entry[3].request.url needs an id for DELETE: Observation/[id].",
        ),
    ],
)
def test_parse_entry_refuses_a_malformed_entry_with_400(raw: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_entry(3, raw)

    assert caught.value.status == 400
    assert caught.value.diagnostics == message
