"""The JSON depth check reads the body's brackets: it gives the verdict a walk
of the parsed value gives, whatever the strings hold, and the same 400."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from bench.record import batch
from bridge.errors import InvalidRequest
from bridge.fhir import jsondepth
from bridge.fhir.jsondepth import check_json_depth
from bridge.fhir.outcome import operation_outcome
from tests.props import repeatable


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _verdict(value: Any, raw: bytes, limit: int) -> str | None:
    try:
        check_json_depth(value, raw, limit)
    except InvalidRequest as exc:
        return exc.diagnostics
    return None


def _nested(depth: int, leaf: Any = "leaf") -> Any:
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


# Strings that look like structure: brackets, quotes, escapes, in keys and values.
_TRICKY = st.sampled_from(
    ["]", "[", "}", "{", "]]]]", "[[[[", '"', '\\"]', "\\", "\\\\", '"}', "", "a\nb", "ü]"]
)
_TEXT = _TRICKY | st.text(alphabet='[]{}"\\ab\n', max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=40,
)


@repeatable(1000, allow=[HealthCheck.too_slow])
@given(value=_JSON, limit=st.integers(1, 8), pretty=st.booleans())
def test_json_depth_verdict_is_the_walks(value: Any, limit: int, pretty: bool) -> None:
    raw = orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
    deep = _depth(value) > limit
    assert _verdict(value, raw, limit) == (
        f"The JSON body nests deeper than {limit} levels." if deep else None
    )
    if not deep:  # the brackets alone said so: the value was not walked
        assert jsondepth._bracket_depth(raw, limit) <= limit


@given(value=_JSON)
@repeatable(300)
def test_json_depth_brackets_count_the_levels(value: Any) -> None:
    depth = _depth(value)
    raw = json.dumps(value, ensure_ascii=False).encode()  # escapes as json writes them
    found = jsondepth._bracket_depth(raw, 1000)
    assert found == depth or (found == 0 and raw.count(b"[") + raw.count(b"{") <= 1000)


@pytest.mark.parametrize("depth", [65, 100, 250])
def test_json_depth_deep_bodies_are_refused_with_the_same_outcome(depth: int) -> None:
    value = _nested(depth)
    with pytest.raises(InvalidRequest) as caught:
        check_json_depth(value, orjson.dumps(value), 64)
    error = caught.value
    assert (error.status, error.code) == (400, "invalid")
    assert operation_outcome(error.code, error.diagnostics) == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "The JSON body nests deeper than 64 levels.",
            }
        ],
    }


def test_json_depth_brackets_in_strings_do_not_hide_levels() -> None:
    # A string closing what it does not open, and one opening again: the
    # nesting between them still counts.
    value = ["]", [[[["x"]]]], "["]
    raw = orjson.dumps(value)
    assert _verdict(value, raw, 5) is None
    assert _verdict(value, raw, 4) == "The JSON body nests deeper than 4 levels."


def test_json_depth_escaped_quotes_do_not_end_strings() -> None:
    value = {'a"]]]]': [[['\\"[[[[', "\\"]]], "b": '\\\\"'}
    raw = json.dumps(value).encode()
    assert jsondepth._bracket_depth(raw, 5) == 4
    assert _verdict(value, raw, 3) == "The JSON body nests deeper than 3 levels."


def test_json_depth_duplicate_keys_judge_the_parsed_value() -> None:
    raw = b'{"a": [[[[[[1]]]]]], "a": 1}'
    value = orjson.loads(raw)  # the last one wins: depth 1
    assert jsondepth._bracket_depth(raw, 3) == 4  # past the limit: the walk decides
    assert _verdict(value, raw, 3) is None


def test_json_depth_a_batch_of_readings_is_read_without_a_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = batch("12345", 100)
    raw = orjson.dumps(value)

    def walked(value: Any, limit: int) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(jsondepth, "_walk", walked)
    assert jsondepth._bracket_depth(raw, 64) == _depth(value) == 8
    check_json_depth(value, raw, 64)
