"""A depth limit for JSON request bodies (400 past it).

orjson parses up to a depth of 1,024 on its own; nothing in FHIR needs that
much, and deep trees make every later recursive walk (validation, mapping,
compartment checks) costlier. The check is cheap for normal bodies: one count
of brackets in C, and a walk level by level only when there could be more
levels than allowed.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import InvalidRequest

__all__ = ["check_json_depth"]


def check_json_depth(value: Any, raw: bytes, limit: int) -> None:
    """Raise InvalidRequest if `value` (parsed from `raw`) nests deeper than `limit`.

    The outermost object or array is depth 1.

        check_json_depth(orjson.loads(body), body, 64)
    """
    # A body with no more brackets than the limit cannot nest deeper than it.
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise InvalidRequest(f"The JSON body nests deeper than {limit} levels.")
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
