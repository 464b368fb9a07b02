"""Read a YAML file into a strict model, with `file:line:col` on every problem."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, StreamMark
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from bridge.errors import MappingError, Problem

__all__ = ["Document", "load_document", "load_model", "read_utf8"]

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """A parsed YAML file that still knows where each value came from."""

    path: Path
    display: str
    root: Any

    def position(self, loc: Loc) -> tuple[int, int]:
        """(line, column), 1-based, of the deepest part of `loc` found in the file."""
        node = self.root
        line, col = 1, 1
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                kline, kcol = node.lc.key(part)
                line, col = kline + 1, kcol + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                iline, icol = node.lc.item(part)
                line, col = iline + 1, icol + 1
                node = node[part]
            else:
                continue
        return line, col

    def problem(self, loc: Loc, message: str) -> Problem:
        line, col = self.position(loc)
        return Problem(self.display, line, col, message)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_utf8(path: Path, display: str, what: str = "file") -> str:
    """The text of a file that must be UTF-8, with universal newlines, as `read_text` gives.

    A leading byte-order mark is dropped (Excel's "CSV UTF-8" writes one). Raises
    MappingError at the line and column of the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError([Problem(display, 1, 1, f"cannot read {what}: {exc.strerror}")]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MappingError([_not_utf8(display, exc)]) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _not_utf8(display: str, exc: UnicodeDecodeError) -> Problem:
    raw = exc.object
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return Problem(display, 1, 1, "the file must be UTF-8, but it is UTF-16; save it as UTF-8")
    # All before the bad byte is UTF-8: its lines and characters place the byte.
    before = bytes(raw[: exc.start]).decode("utf-8")
    lines = before.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    message = f"the file must be UTF-8, but byte 0x{raw[exc.start]:02x} is not; save it as UTF-8"
    return Problem(display, len(lines), len(lines[-1]) + 1, message)


# Deeper than any mapping or config needs (the deepest real one is 10): a bound on
# the recursion of the composer, of `_plain` and of validation.
_MAX_DEPTH = 50


class _Refused(Exception):
    def __init__(self, mark: StreamMark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _Composer(Composer):
    """ruamel's composer, refusing anchors and aliases.

    No mapping uses them (named transforms and code tables are how a mapping
    reuses things), and one alias can stand for exponentially much data when
    expanded (a 1 KB "billion laughs" file)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused(
                event.start_mark,
                f"YAML aliases are not supported (found '*{event.anchor}'); "
                "write the value out where it is used",
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                event.start_mark,
                f"YAML anchors are not supported (found '&{event.anchor}'); "
                "remove it and write the value out where it is used",
            )
        return super().compose_node(parent, index)


class _Constructor(RoundTripConstructor):
    """ruamel's, with YAML 1.1 timestamps read as the text they are.

    A date in a mapping is FHIR text (`value: 2024-02-01`), and an impossible one
    (`2024-02-30`) made ruamel raise a ValueError with no line."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def load_document(path: Path, *, anchors: bool = False) -> Document:
    """The YAML document at `path`. Anchors and aliases are refused unless `anchors`
    (the gateway's own config, which its operator writes, may use them)."""
    display = _display(path)
    text = read_utf8(path, display)
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    if not anchors:
        yaml.Composer = _Composer
    yaml.max_depth = _MAX_DEPTH
    try:
        root = yaml.load(text)
    except _Refused as exc:
        line, col = exc.mark.line + 1, exc.mark.column + 1
        raise MappingError([Problem(display, line, col, exc.message)]) from exc
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"values nested more than {_MAX_DEPTH} levels deep; nest them less deeply"
        raise MappingError([Problem(display, line, col, message)]) from exc
    except ReaderError as exc:
        # Raised before any token is read, with the offset of the character in `text`.
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - before.rfind("\n")
        message = f"not valid YAML: character U+{exc.character:04X} is not allowed; remove it"
        raise MappingError([Problem(display, line, col, message)]) from exc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"not valid YAML: {exc.problem}"
        raise MappingError([Problem(display, line, col, message)]) from exc
    if not isinstance(root, CommentedMap):
        raise MappingError([Problem(display, 1, 1, "expected a mapping of keys at the top")])
    return Document(path, display, root)


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    return node


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) or origin is not None:
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
        return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys a model accepts at `loc` (the location of the unknown key's parent)."""
    current: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            for name, info in m.model_fields.items():
                if part in (name, info.alias):
                    nxt.extend(_models_in(info.annotation))
        if nxt:
            current = nxt
    keys: list[str] = []
    for m in current:
        keys.extend(info.alias or name for name, info in m.model_fields.items())
    return sorted(set(keys))


def _describe(model: type[BaseModel], error: Any, loc: Loc) -> str:
    where = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(model, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        fix = f"; did you mean '{hint[0]}'? known:" if hint else "; known:"
        return f"unknown key '{key}'{fix} {', '.join(known)}"
    if kind == "missing":
        return f"'{where}' is required"
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}{shown}" if where else f"{message}{shown}"


def _split_loc(raw: Loc, data: Any, kind: str) -> tuple[Loc, int | None, str | None]:
    """The file's own keys in `raw`, and where pydantic named a union branch in it.

    pydantic adds the names of union members (`str`, `EnvValue`) to `loc`;
    they are not keys of the file. Returns (keys, position of the branch in
    keys or None, the branch's name).
    """
    kept: list[str | int] = []
    branch_at: int | None = None
    branch: str | None = None
    node = data
    for i, part in enumerate(raw):
        in_map = isinstance(node, dict) and part in node
        in_seq = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_map or in_seq:
            node = node[part]
            kept.append(part)
        elif i == len(raw) - 1 and kind == "missing":
            kept.append(part)  # a missing key names the problem
        elif branch_at is None:
            branch_at, branch = len(kept), str(part)
    return tuple(kept), branch_at, branch


_BRANCHES = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def load_model(doc: Document, model: type[M]) -> M:
    data = _plain(doc.root)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(e, *_split_loc(tuple(e["loc"]), data, e["type"])) for e in exc.errors()]
        # A value that fits no member of a union: when one member matched its
        # shape (a mapping with a wrong key), only that member's errors count;
        # otherwise the members' complaints merge into one "expected ..." line.
        deep = {loc[:at] for _, loc, at, _ in errors if at is not None and len(loc) > at}
        merged: dict[Loc, list[str]] = {}
        problems = []
        seen: set[tuple[Loc, str]] = set()
        for error, loc, at, branch in errors:
            if at is not None and len(loc) == at:
                if loc not in deep:
                    merged.setdefault(loc, []).append(_BRANCHES.get(branch or "", "a mapping"))
                continue
            message = _describe(model, error, loc)
            if (loc, message) not in seen:
                seen.add((loc, message))
                problems.append(doc.problem(loc, message))
        for loc, kinds in merged.items():
            where = ".".join(str(p) for p in loc)
            expected = " or ".join(dict.fromkeys(kinds))
            problems.append(doc.problem(loc, f"{where}: expected {expected}"))
        problems.sort(key=lambda p: (p.line, p.column))
        raise MappingError(problems) from exc
