"""A depth limit for JSON request bodies (400 past it).

orjson parses up to a depth of 1,024 on its own; nothing in FHIR needs that
much, and deep trees make every later recursive walk (validation, mapping,
compartment checks) costlier. The check reads the body's brackets, in C: its
strings taken out, what is left is a nest of brackets whose depth bounds the
parsed value's (duplicate keys can only drop subtrees). Only a body whose
brackets nest deeper than the limit (or that is not the text of the value)
gets the exact answer from a walk of the value, level by level.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import InvalidRequest

__all__ = ["check_json_depth"]

_STRUCTURE = b'{}[]"'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_ONE_KIND = bytes.maketrans(b"[]", b"{}")


def check_json_depth(value: Any, raw: bytes, limit: int) -> None:
    """Raise InvalidRequest if `value` (parsed from `raw`) nests deeper than `limit`.

    The outermost object or array is depth 1.

        check_json_depth(orjson.loads(body), body, 64)
    """
    if _bracket_depth(raw, limit) > limit:
        _walk(value, limit)


def _bracket_depth(raw: bytes, limit: int) -> int:
    """How deep the brackets of `raw` (outside its strings) nest: at least the
    depth of what it parses to. Past `limit`, or unknown, it is `limit + 1`."""
    if b"\\" in raw:
        # Escaped backslashes, then escaped quotes: neither ends a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(None, _NOT_STRUCTURE)  # brackets and quotes
    if marks.count(b"{") + marks.count(b"[") <= limit:
        return 0  # no more brackets than the limit: no deeper than it either
    # Quotes alternate opening and closing. When every string is bracket-free,
    # each one is `""` here; else strings are what lies between odd and even quotes.
    brackets = marks.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(marks.split(b'"')[::2])
    brackets = brackets.translate(_ONE_KIND)  # valid JSON pairs them: one kind will do
    # Each pass takes out the innermost pairs, one level: as many passes as levels.
    depth = 0
    while brackets:
        inner = brackets.replace(b"{}", b"")
        depth += 1
        if len(inner) == len(brackets) or depth > limit:
            return limit + 1  # unpaired (not the value's text), or too deep
        brackets = inner
    return depth


def _walk(value: Any, limit: int) -> None:
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
