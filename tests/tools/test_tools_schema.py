"""The mapping format's JSON Schemas: current, and accepting every real mapping file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from bridge.tools.schema import render_schemas
from tests.support import ROOT


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_schema_checked_in_is_current(name: str) -> None:
    checked_in = (ROOT / "docs" / name).read_bytes()
    assert checked_in == render_schemas()[name], "run: bridge schema --out docs"


def _files() -> list[Path]:
    return sorted(p for p in (ROOT / "mappings").glob("*/*.yaml"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_schema_accepts_every_mapping_file(path: Path) -> None:
    name = (
        "mapping-system.schema.json"
        if path.name == "system.yaml"
        else "mapping-resource.schema.json"
    )
    schema = json.loads(render_schemas()[name])
    data = YAML(typ="safe").load(path.read_text())
    jsonschema.Draft202012Validator(schema).validate(data)


def test_schema_rejects_an_unknown_key() -> None:
    schema = json.loads(render_schemas()["mapping-resource.schema.json"])
    errors = list(
        jsonschema.Draft202012Validator(schema).iter_errors(
            {"resource": "Patient", "fields": [], "feilds": []}
        )
    )
    assert any("feilds" in e.message for e in errors)
