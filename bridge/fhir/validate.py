"""Validation of resources clients send, with the fhir.resources R4B models.

Diagnostics name the elements at fault, never their values.

fhir.resources checks every element in Python: each nested element is
`Model.model_validate`d by a function the models' schemas call, then scanned
for nulls in lists and for required primitives and choice types; ~70 µs for
a wearable's small Observation, most of what a batch of readings costs. So
each resource type also gets a validator compiled once from those same
models' pydantic-core schemas, run in Rust but for the primitive types'
own validators:

- every primitive element keeps fhir.resources' schema as it is (patterns,
  dates, decimals and their validators);
- a nested element refers to its model's compiled schema, which takes a JSON
  object only (the models also take JSON text, a model or a null there);
- a model becomes a typed dict (no instance) and its after-validator the
  same checks on that dict (`_Checks`); its null-in-list scan is left out
  where every list it scans takes objects only;
- anything else (an element of any resource type, like `contained`; a model
  shaped otherwise) keeps fhir.resources' own validator node, behind a check
  that the value is an object.

Each step only narrows what is accepted, so a resource the compiled
validator accepts is one fhir.resources accepts. What it does not accept goes
to fhir.resources, which gives the verdict and the errors the client gets;
`tests/fhir/test_fhir_validate.py` checks the two agree.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from typing import Any, cast

from pydantic import ValidationError
from pydantic_core import CoreSchema, SchemaValidator

from bridge.errors import InvalidRequest, UnprocessableEntity

__all__ = ["prepare", "validate_resource"]

log = logging.getLogger("bridge.fhir.validate")
_NESTED = "FhirBase.__get_pydantic_core_schema__.<locals>._validate"
_OBJECT: dict[str, Any] = {"type": "dict"}


@functools.cache
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


@functools.cache
def _compiled(rtype: str) -> SchemaValidator | None:
    """The compiled validator of a resource type; None where it cannot be made."""
    model = _model(rtype)
    try:
        return _Compiler.validator(model)
    except Exception:  # a schema shaped otherwise than expected: fhir.resources alone
        log.warning("no compiled validator for %s; fhir.resources validates it", rtype)
        return None


def prepare(rtypes: Iterable[str]) -> None:
    """Build the validators of these types now (at start-up), not on their first write:
    ~3-120 ms each, which would stall every request in flight then."""
    for rtype in rtypes:
        _compiled(rtype)


def validate_resource(body: Any, rtype: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a FHIR resource (a JSON object).")
    if body.get("resourceType") != rtype:
        raise InvalidRequest(f"The body must be a {rtype} resource.")
    compiled = _compiled(rtype)
    if compiled is not None:
        # Any failure, of any kind, is for fhir.resources to judge.
        with contextlib.suppress(Exception):
            compiled.validate_python(body)
            return body
    model = _model(rtype)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        paths = [_path(rtype, error["loc"]) for error in exc.errors()[:10]]
        raise _invalid(rtype, paths) from None
    except Exception as exc:
        # fhir.resources fails otherwise on some input: a JSON-text string where
        # an object belongs (`"_status": "1"`: AttributeError), a contained
        # resource of no known type (KeyError, TypeError). Still the client's.
        log.info("fhir.resources refused a %s with %s", rtype, type(exc).__name__)
        raise _invalid(rtype, _crashing(model, body)) from None
    return body


def _path(rtype: str, loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not str(p)[:1].isupper()]
    return f"{rtype}." + ".".join(parts) if parts else rtype


def _invalid(rtype: str, paths: list[str]) -> UnprocessableEntity:
    where = list(dict.fromkeys(paths))
    if not where:
        return UnprocessableEntity(f"The {rtype} is not valid FHIR R4.")
    return UnprocessableEntity(
        f"The {rtype} is not valid FHIR R4 at: {', '.join(where)}.", expression=where
    )


def _crashing(model: Any, body: dict[str, Any]) -> list[str]:
    """The elements fhir.resources fails on when each is validated alone (the
    failure is then about the element's own value, as with the ones above)."""
    rtype = body["resourceType"]
    found = []
    for key, value in body.items():
        if key == "resourceType":
            continue
        try:
            model.model_validate({"resourceType": rtype, key: value})
        except ValidationError:
            continue
        except Exception:
            found.append(f"{rtype}.{key}")
    return found


class _Unsupported(Exception):
    """A model the compiler keeps fhir.resources' own validator for."""


class _Retry(Exception):
    """A model turned out unsupported after others referred to it: compile again."""


class _Checks:
    """`FHIRAbstractModel.validate_after_model_construction` on a compiled model's
    dict: each required primitive has a value or an extension saying why not, and
    each choice element ([x]) has at most one type (one if it is required)."""

    def __init__(self, required: list[tuple[str, str | None]], choices: list[Any]) -> None:
        self.required = required
        self.choices = choices

    @classmethod
    def of(cls, model: Any) -> _Checks | None:
        """The checks of a model; None when it has none (_Unsupported: not provably)."""
        from fhir_core.fhirabstractmodel import FHIRAbstractModel as Base

        if (
            model._validate_required_primitive_elements
            is not Base._validate_required_primitive_elements
            or model._validate_one_of_many is not Base._validate_one_of_many
        ):
            raise _Unsupported
        try:
            # Called without an instance, which proves they do not depend on one.
            required = model.get_required_fields(None)
            choices = model.get_one_of_many_fields(None)
            aliases = model.get_alias_mapping()
            fields = [(aliases[name], ext) for name, ext in required]
            groups = []
            for prefix, names in choices.items():
                extra = model.model_fields[names[0]].json_schema_extra
                if extra["one_of_many"] != prefix:
                    raise _Unsupported  # fhir.resources fails an assertion: its call
                groups.append((frozenset(names), extra["one_of_many_required"] is True))
        except (AttributeError, KeyError, TypeError, IndexError):
            raise _Unsupported from None
        return cls(fields, groups) if fields or groups else None

    def __call__(self, value: dict[str, Any]) -> dict[str, Any]:
        for name, ext in self.required:
            if value.get(name) is None:
                why = value.get(ext) if ext is not None else None
                if isinstance(why, dict):
                    extensions = why.get("extension")
                else:
                    extensions = getattr(why, "extension", None)
                if not extensions:
                    raise ValueError(f"{name} is required")
        for names, required in self.choices:
            present = value.keys() & names
            if len(present) > 1 or required:  # else at most one, and none is allowed
                found = sum(value[name] is not None for name in present)
                if found > 1 or (required and not found):
                    raise ValueError(f"one of {sorted(names)}")
        return value


class _Compiler:
    """Compiles a model and the models it nests into one pydantic-core schema."""

    @classmethod
    def validator(cls, model: Any) -> SchemaValidator | None:
        unsupported: set[Any] = set()
        while True:
            compiler = cls(unsupported)
            try:
                root = compiler.ref(model)
            except _Retry:
                continue
            except _Unsupported:
                return None
            if "resourceType" not in model.model_fields:
                # What the model's __init__ takes out and compares before validating.
                name = root["schema_ref"]
                root = _typed(next(d for d in compiler.defs if d["ref"] == name), model)
            schema = {"type": "definitions", "schema": root, "definitions": compiler.defs}
            return SchemaValidator(cast(CoreSchema, schema))

    def __init__(self, unsupported: set[Any]) -> None:
        self.unsupported = unsupported
        self.names: dict[Any, str] = {}
        self.defs: list[dict[str, Any]] = []
        self.plain: set[str] = set()  # compiled to a typed dict that takes objects only

    def ref(self, model: Any) -> dict[str, Any]:
        if model in self.unsupported:
            raise _Unsupported
        name = self.names.get(model)
        if name is None:
            name = self.names[model] = f"{model.__module__}.{model.__qualname__}"
            try:
                self.defs.append({**self.model(model, name), "ref": name})
            except _Unsupported:
                self.unsupported.add(model)
                raise _Retry from None
        return {"type": "definition-ref", "schema_ref": name}

    def model(self, model: Any, name: str) -> dict[str, Any]:
        from fhir_core.fhirabstractmodel import FHIRAbstractModel
        from fhir_core.utils import is_list_type, is_primitive_type

        after = model.__pydantic_core_schema__
        node = after["schema"]
        if (
            after["type"] != "function-after"
            or after["function"]["function"]
            is not FHIRAbstractModel.validate_after_model_construction
            or node["type"] != "model"
            or node["cls"] is not model
            or node.get("post_init")
            or node["config"].get("extra_fields_behavior") != "forbid"
        ):
            raise _Unsupported
        befores = []  # model validators on the raw object, outermost first
        fields = node["schema"]
        while fields["type"] == "function-before":
            befores.append(fields["function"])
            fields = fields["schema"]
        if fields["type"] != "model-fields" or fields.get("computed_fields"):
            raise _Unsupported
        scan = FHIRAbstractModel.reject_null_complex_elements.__func__
        if not befores or getattr(befores[-1]["function"], "__func__", None) is not scan:
            raise _Unsupported
        if len(befores) == 1:  # a null is refused, not turned into an object first
            self.plain.add(name)
        out: dict[str, Any] = {}
        scanned_take_objects = True
        for key, field in fields["fields"].items():
            schema = field["schema"]
            required = True
            if (
                schema["type"] == "default"
                and schema.get("default", ...) is None
                and set(schema) == {"type", "schema", "default"}
            ):
                # A default only fills the output: an absent element is None.
                required = False
                schema = schema["schema"]
            schema = self.walk(schema)
            info = model.model_fields[key]
            if is_list_type(info) and not is_primitive_type(info) and not key.endswith("__ext"):
                scanned_take_objects = scanned_take_objects and self._takes_objects(schema)
            out[key] = {"type": "typed-dict-field", "schema": schema, "required": required}
            if "validation_alias" in field:
                out[key]["validation_alias"] = field["validation_alias"]
        result: dict[str, Any] = {
            "type": "typed-dict",
            "fields": out,
            "extra_behavior": "forbid",
            "config": node["config"],
        }
        if scanned_take_objects:
            befores.pop()  # the lists refuse a null item themselves
        checks = _Checks.of(model)
        if checks is not None:
            result = {
                "type": "function-after",
                "function": {"type": "no-info", "function": checks},
                "schema": result,
            }
        for function in reversed(befores):
            result = {"type": "function-before", "function": function, "schema": result}
        return result

    def walk(self, node: dict[str, Any]) -> dict[str, Any]:
        """An element's schema, its nested models compiled."""
        kind = node["type"]
        if kind in ("nullable", "default"):
            return {**node, "schema": self.walk(node["schema"])}
        if kind == "list":
            return {**node, "items_schema": self.walk(node["items_schema"])}
        if kind == "function-wrap" and _nested_name(node):
            model = _nested_model(node)
            if model is not None and node["schema"] == {"type": "any"}:
                with contextlib.suppress(_Unsupported):
                    return self.ref(model)
            # fhir.resources' own validator, on an object only (never a null).
            return {"type": "chain", "steps": [_OBJECT, node]}
        return node  # fhir.resources' own, as it is

    def _takes_objects(self, schema: dict[str, Any]) -> bool:
        """Does this list element refuse a null item (as the null-in-list scan does)?"""
        while schema["type"] in ("nullable", "default"):
            schema = schema["schema"]
        if schema["type"] != "list":
            return False
        items = schema["items_schema"]
        if items["type"] == "definition-ref":
            return items["schema_ref"] in self.plain
        return items["type"] == "chain" and items["steps"][0] is _OBJECT


def _typed(schema: dict[str, Any], model: Any) -> dict[str, Any]:
    """A compiled resource's schema that takes its `resourceType` too."""
    schema = {k: v for k, v in schema.items() if k != "ref"}
    if schema["type"] != "typed-dict":
        return {**schema, "schema": _typed(schema["schema"], model)}
    kind = {"type": "literal", "expected": [model.__resource_type__]}
    field = {"type": "typed-dict-field", "schema": kind, "required": True}
    return {**schema, "fields": {**schema["fields"], "resourceType": field}}


def _nested_name(node: dict[str, Any]) -> bool:
    return getattr(node["function"]["function"], "__qualname__", "") == _NESTED


def _nested_model(node: dict[str, Any]) -> Any:
    """The model a nested element's validator validates with; None when the
    element may be of more than one type (`contained`, `Bundle.entry.resource`)."""
    from fhir_core.types import FhirBase

    function = node["function"]["function"]
    cells = dict(
        zip(
            function.__code__.co_freevars,
            (cell.cell_contents for cell in function.__closure__ or ()),
            strict=True,
        )
    )
    kind, source = cells.get("cls"), cells.get("source_type")
    if kind is None or source is None or kind is not source:
        return None
    ours = getattr(kind.fhir_model_validator, "__func__", None)
    if ours is not getattr(FhirBase.fhir_model_validator, "__func__", ()):
        return None
    return source.get_model_klass()
