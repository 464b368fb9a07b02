"""Content negotiation: this server speaks FHIR JSON only."""

from __future__ import annotations

import functools

from bridge.errors import NotAcceptable

__all__ = ["FHIR_JSON", "check_acceptable"]

FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
_ACCEPTABLE = {
    "*/*",
    "application/*",
    "application/json",
    "application/fhir+json",
    "application/json+fhir",
}


def check_acceptable(accept: str | None, fmt: str | None) -> None:
    """Raise NotAcceptable unless the client can take FHIR JSON.

    `_format` wins over Accept, as FHIR says. A missing or empty Accept is fine.
    """
    if fmt is not None:
        if fmt.strip().lower() not in _JSON_FORMATS:
            raise NotAcceptable(
                "_format must be json: this server answers in application/fhir+json only."
            )
        return
    if not accept or _takes_json(accept):
        return
    raise NotAcceptable()


@functools.lru_cache(maxsize=256)
def _takes_json(accept: str) -> bool:
    """Whether an Accept header admits FHIR JSON (a client sends the same one each time)."""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and media in _ACCEPTABLE:
            return True
    return False
