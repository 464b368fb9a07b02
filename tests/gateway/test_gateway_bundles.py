"""Merging the legacy records of a batch's creates into one legacy call."""

from __future__ import annotations

from functools import reduce
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bridge.gateway.bundles import _merge
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
