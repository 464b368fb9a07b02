"""Validation of resources clients send, with the fhir.resources R4B models.

Diagnostics name the elements at fault, never their values.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError

from bridge.errors import InvalidRequest, UnprocessableEntity

__all__ = ["validate_resource"]


@functools.cache
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def validate_resource(body: Any, rtype: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a FHIR resource (a JSON object).")
    if body.get("resourceType") != rtype:
        raise InvalidRequest(f"The body must be a {rtype} resource.")
    try:
        _model(rtype).model_validate(body)
    except ValidationError as exc:
        paths = []
        for error in exc.errors()[:10]:
            loc = [str(p) for p in error["loc"] if not str(p)[:1].isupper()]
            paths.append(f"{rtype}." + ".".join(loc) if loc else rtype)
        where = ", ".join(dict.fromkeys(paths))
        raise UnprocessableEntity(
            f"The {rtype} is not valid FHIR R4 at: {where}.", expression=list(dict.fromkeys(paths))
        ) from None
    return body
