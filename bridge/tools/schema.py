"""The JSON Schema of the mapping format, generated from the strict models.

Editors use it to complete and check mapping files as they are typed (the
files name it in a `yaml-language-server: $schema=` comment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from bridge.mapping.schema import ResourceFile, SystemFile

__all__ = ["SCHEMAS", "render_schemas", "write_schemas"]

SCHEMAS: dict[str, type[BaseModel]] = {
    "mapping-system.schema.json": SystemFile,
    "mapping-resource.schema.json": ResourceFile,
}


def render_schemas() -> dict[str, bytes]:
    out = {}
    for name, model in SCHEMAS.items():
        schema: dict[str, Any] = model.model_json_schema(by_alias=True)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://bridge.example/schemas/{name}"
        out[name] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in render_schemas().items():
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written
