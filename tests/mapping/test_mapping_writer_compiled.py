"""The compiled legacy record writer gives what the interpreted one (`_write`)
gives, for every mapping of mappings/ and every resource thrown at it: the
same tree (same keys in the same order, same types) or the same error."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from bench.record import observation
from bridge.mapping import writer
from bridge.mapping.compiled import CompiledField, CompiledResource, CompiledWhen
from bridge.mapping.compiler import compile_system
from bridge.mapping.fhirmodel import PathStep
from bridge.mapping.transforms import Pipeline, build_transform
from bridge.mapping.writer import legacy_record
from tests.bodies import changed, claim, json_paths
from tests.props import repeatable

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
LEGACY_SAMPLES = [
    "12345",
    "11/20/2026 08:30:00",
    "2026-11-20T08:30:00",
    "2026-11-20T08:30",
    "11/20/2026",
    "2026-11-20",
    "20261120",
    "70.5",
    "3",
    "Y",
    "true",
    "Doe^Jane^Q",
    "Doe, Jane",
    "x",
]
ODD = [None, "", " ", "x", 0, -1, 1.5, True, False, [], {}, [None], [{}], {"value": 1}]


def _resources() -> list[CompiledResource]:
    found = []
    for folder in sorted(p for p in MAPPINGS.iterdir() if (p / "system.yaml").exists()):
        system = compile_system(folder, {})
        found += [system.resources[name] for name in sorted(system.resources)]
    return found


RESOURCES = _resources()


def _sample(f: CompiledField) -> Any:
    """A FHIR value the field's transforms make from a legacy value (what they read)."""
    steps = f.pipeline.steps
    if not steps:
        return "v-1"
    candidates = list(LEGACY_SAMPLES)
    for step in steps:
        table = getattr(step, "table", None)
        if table is not None:
            candidates = sorted(table.by_local) + candidates
    for legacy in candidates:
        try:
            value = f.pipeline.to_fhir(legacy)
        except Exception:
            continue
        if value is not None:
            return value
    return "v-1"


def _place(node: dict[str, Any], steps: tuple[PathStep, ...], value: Any) -> None:
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step.index is None:
            if last:
                node.setdefault(step.name, value)
                return
            child = node.setdefault(step.name, {})
            if not isinstance(child, dict):
                return
            node = child
            continue
        items = node.setdefault(step.name, [])
        if not isinstance(items, list):
            return
        size = step.index + 1 if step.index >= 0 else 2  # -1, -2: every item
        while len(items) < size:
            items.append(copy.deepcopy(value) if last else {})
        if last:
            return
        child = items[size - 1]
        if not isinstance(child, dict):
            return
        node = child


def _full(fields: tuple[CompiledField, ...]) -> dict[str, Any]:
    """A resource with a value at every path the fields write from."""
    out: dict[str, Any] = {}
    for f in fields:
        if not f.steps or not f.steps[0].name:
            continue
        if f.is_group:
            _place(out, f.steps, _full(f.children))
        elif f.writes:
            _place(out, f.steps, _sample(f))
    return out


def _seeds(resource: CompiledResource) -> list[dict[str, Any]]:
    seeds = [{"resourceType": resource.type, **_full(resource.fields)}]
    files = sorted(MAPPINGS.glob("*/tests/*.request.json"))
    files += sorted(MAPPINGS.glob("*/tests/*.expected.json"))
    for path in files:
        body = json.loads(path.read_text())
        seeds += body if isinstance(body, list) else [body]
    seeds += [observation("12345", 7), claim("12345", "2026-11-20")]
    return [s for s in seeds if s.get("resourceType") == resource.type]


def _mutations(seed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The seed as it is, then with one thing changed at every place it has."""
    yield seed
    for path in json_paths(seed):
        for change in ("delete", "wrap", "wrap-after-null", "unwrap", *range(len(ODD))):
            body = changed(seed, path, change, ODD)
            if body is not None:
                yield body


def _interpreted(resource: CompiledResource, fhir: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    writer._write(tree, resource.fields, fhir)
    finished: dict[str, Any] = writer._finish(tree)
    return finished


def _outcome(write: Any, resource: CompiledResource, fhir: Any) -> tuple[str, str]:
    """What a writer gives, as text that tells str from int and keeps key order."""
    try:
        return ("tree", repr(write(resource, fhir)))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _assert_same(resource: CompiledResource, fhir: Any) -> tuple[str, str]:
    expected = _outcome(_interpreted, resource, copy.deepcopy(fhir))
    assert _outcome(legacy_record, resource, fhir) == expected, (resource.file, fhir)
    return expected


WRITERS = [r for r in RESOURCES if any(f.writes or f.is_group for f in r.fields)]


def test_writer_compiled_covers_every_system() -> None:
    systems = {Path(r.file).parts[-2] for r in WRITERS if r.file}
    assert {"hospital", "billing", "lab", "pharmacy", "scheduling"} <= systems


@pytest.mark.parametrize("resource", WRITERS, ids=[r.file for r in WRITERS])
def test_writer_compiled_matches_interpreted_on_every_change(resource: CompiledResource) -> None:
    kinds: set[str] = set()
    for seed in _seeds(resource):
        for body in _mutations(seed):
            kinds.add(_assert_same(resource, body)[0])
    assert "tree" in kinds


@pytest.mark.parametrize("resource", WRITERS, ids=[r.file for r in WRITERS])
def test_writer_compiled_writes_the_full_resource(resource: CompiledResource) -> None:
    body = {"resourceType": resource.type, **_full(resource.fields)}
    kind, tree = _assert_same(resource, body)
    assert kind == "BadValue" or tree != "{}"


@pytest.mark.parametrize("fhir", [None, "x", [], {}, [{"id": "1"}]], ids=repr)
def test_writer_compiled_matches_interpreted_on_what_is_not_a_resource(fhir: Any) -> None:
    for resource in WRITERS:
        _assert_same(resource, fhir)


def test_writer_compiled_split_components_join_as_before() -> None:
    patient = next(r for r in RESOURCES if r.file.endswith("hospital/Patient.yaml"))
    body = {"resourceType": "Patient", "name": [{"given": ["Jane", "Q"]}, {"family": "Doe"}]}
    assert _assert_same(patient, body) == ("tree", repr({"Name": "^Jane^Q"}))


def test_writer_compiled_bad_value_names_the_element() -> None:
    vitals = next(r for r in RESOURCES if r.file.endswith("hospital/Observation.yaml"))
    body = {**observation("12345"), "effectiveDateTime": "yesterday"}
    kind, message = _assert_same(vitals, body)
    assert (kind, message) == (
        "BadValue",
        "effectiveDateTime: needs a FHIR dateTime like 2026-11-24T09:30:00-05:00",
    )


def _names(fields: tuple[CompiledField, ...]) -> set[str]:
    names = set()
    for f in fields:
        names |= {s.name for s in f.steps if s.name}
        names |= _names(f.children)
    return names


@repeatable(400, allow=[HealthCheck.too_slow])
@given(st.data())
def test_writer_compiled_matches_interpreted_on_generated_resources(data: st.DataObject) -> None:
    resource = data.draw(st.sampled_from(WRITERS))
    seeds = _seeds(resource)
    samples = [s for seed in seeds for s in _leaves(seed)]
    leaf = st.one_of(
        st.sampled_from([None, True, False, 0, 2.5, "", " ", *samples]),
        st.text(max_size=4),
        st.integers(-3, 300),
    )
    keys = st.sampled_from(sorted(_names(resource.fields) | {"system", "code", "value"}))
    tree = st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )
    body = copy.deepcopy(data.draw(st.sampled_from(seeds))) if seeds else {}
    for _ in range(data.draw(st.integers(0, 4))):
        paths = list(json_paths(body))
        if paths and data.draw(st.booleans()):
            *parent_path, last = data.draw(st.sampled_from(paths))
            parent: Any = body
            for step in parent_path:
                parent = parent[step]
            parent[last] = data.draw(tree)
        else:
            body[data.draw(keys)] = data.draw(tree)
    _assert_same(resource, body)


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


# -- shapes no shipped mapping has -----------------------------------------------------


def _field(path: str, **kw: Any) -> CompiledField:
    steps = tuple(
        PathStep(part.split("[")[0], int(part.split("[")[1][:-1]) if "[" in part else None)
        for part in path.split(".")
        if path
    )
    return CompiledField(steps, **{"writes": True, **kw})


def _synthetic(*fields: CompiledField) -> CompiledResource:
    return CompiledResource("Basic", "test", "", "", (), None, None, fields)


EQUALS_A = CompiledWhen("K", None, frozenset({"A"}))
ABSENT = CompiledWhen("K", False, None)
SPLIT = [build_transform({"split": {"separator": "^", "index": i}}, {}) for i in range(3)]
SYNTHETIC = [
    # A leaf under a `when` whose FHIR path is empty: it writes nothing.
    _synthetic(_field("", local="X", local_when="K", when=EQUALS_A)),
    _synthetic(_field("a", local="K"), _field("", local="X", local_when="K", when=ABSENT)),
    # A group on the resource itself, and groups in groups, with `when`s and lists.
    _synthetic(
        _field("", children=(_field("a", local="A"),)),
        _field(
            "b[1]",
            local_when="A",
            when=ABSENT,
            children=(
                _field("c.d", local="G/D"),
                _field(
                    "e[0]", children=(_field("f", local="G/F", local_when="G/D", when=EQUALS_A),)
                ),
            ),
        ),
    ),
    # Components of one element from a group and from the resource.
    _synthetic(
        _field("n[0]", children=(_field("g[1]", local="N", pipeline=Pipeline((SPLIT[2],))),)),
        _field("f", local="N", pipeline=Pipeline((SPLIT[0],))),
        _field("m", local="M/P", pipeline=Pipeline((SPLIT[1],))),
    ),
    # `each` in a group, its items' own text (`.`), then a leaf on the same path.
    _synthetic(
        _field(
            "x",
            children=(
                _field("y[-1]", each="Y", local_each="Ys/Y", children=(_field("v", local="."),)),
            ),
        ),
        _field("z", local="Ys/Y"),
        _field("w", local="Ys"),
    ),
    # A transform of several steps, and one that may refuse: `[0]` then any item.
    _synthetic(
        _field(
            "p[0].q",
            local="P",
            pipeline=Pipeline((build_transform({"template": "T/{}"}, {}), SPLIT[1])),
        ),
        _field(
            "r",
            local="R",
            pipeline=Pipeline((build_transform({"boolean": {"true": "Y", "false": "N"}}, {}),)),
        ),
    ),
]
# A `when` on what an earlier field wrote: the compiled writer tests it inline.
KEYED = _synthetic(
    _field("a", local="K"),
    _field("x", local="X", local_when="K", when=EQUALS_A),
    _field("y", local="Y", local_when="K", when=ABSENT),
)


@pytest.mark.parametrize("k", ["A", " A\t", "B", "a", "", " \n", None, 3])
def test_writer_compiled_tests_whens_as_interpreted(k: Any) -> None:
    _assert_same(KEYED, {"a": k, "x": "v", "y": "w"})


SYNTHETIC_VALUES = st.recursive(
    st.sampled_from([None, "A", " A\t", "B", "T/a^b", "x^y^z", "", True, False, 3, 1.5]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(list("abcdefgmnpqrvwxyz")), inner, max_size=4)
    ),
    max_leaves=15,
)


@repeatable(600)
@given(st.data())
def test_writer_compiled_matches_interpreted_on_synthetic_mappings(data: st.DataObject) -> None:
    resource = data.draw(st.sampled_from(SYNTHETIC))
    body = data.draw(st.dictionaries(st.sampled_from(list("abcdefgmnpqrvwxyz")), SYNTHETIC_VALUES))
    _assert_same(resource, body)
