"""Content negotiation: this server speaks FHIR R4 JSON only.

A media type may carry FHIR's `fhirVersion` parameter
(`application/fhir+json; fhirVersion=4.0`, http.html#version-parameter): 4.0
is this server's, any other version is not served (406; 415 for a body).
"""

from __future__ import annotations

import functools

from bridge.errors import NotAcceptable, UnsupportedMediaType

__all__ = ["FHIR_JSON", "check_acceptable", "check_body_version"]

FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
_ACCEPTABLE = {
    "*/*",
    "application/*",
    "application/json",
    "application/fhir+json",
    "application/json+fhir",
}
_FORMAT_ONLY_JSON = "_format must be json: this server answers in application/fhir+json only."


def check_acceptable(accept: str | None, fmt: str | None) -> None:
    """Raise NotAcceptable unless the client can take FHIR R4 JSON.

    `_format` wins over Accept, as FHIR says. A missing or empty Accept is fine.
    """
    if fmt is not None:
        refusal = _format_refusal(fmt)
        if refusal is not None:
            raise NotAcceptable(refusal)
        return
    if not accept:
        return
    refusal = _accept_refusal(accept)
    if refusal is not None:
        raise NotAcceptable(refusal or None)


def check_body_version(content_type: str) -> None:
    """415 for a body whose media type names a FHIR version other than 4.0."""
    for param in content_type.split(";")[1:]:
        version = _version_of(param.strip().lower())
        if version is not None and not _r4(version):
            raise UnsupportedMediaType(_version_refusal(version, "takes"))


def _version_of(param: str) -> str | None:
    name, sep, value = param.partition("=")
    return value.strip().strip('"') if sep and name.strip() == "fhirversion" else None


def _r4(version: str) -> bool:
    return version == "4.0" or version.startswith("4.0.")


def _version_refusal(version: str, verb: str) -> str:
    return f"This server {verb} FHIR R4 (fhirVersion=4.0) only, not fhirVersion={version}."


@functools.lru_cache(maxsize=64)
def _format_refusal(fmt: str) -> str | None:
    """Why `_format` cannot be served, or None. A `+` left unencoded in a URL reads
    as a space (`_format=application/fhir+json` arrives as "application/fhir json")."""
    media, *params = (p.strip().lower() for p in fmt.split(";"))
    if " ".join(media.split()).replace(" ", "+") not in _JSON_FORMATS:
        return _FORMAT_ONLY_JSON
    for param in params:
        version = _version_of(param)
        if version is not None and not _r4(version):
            return _version_refusal(version, "answers in")
    return None


@functools.lru_cache(maxsize=256)
def _accept_refusal(accept: str) -> str | None:
    """Why an Accept header does not admit FHIR R4 JSON ("" for the general reason), or
    None when it does (a client sends the same one each time)."""
    if not accept.strip():
        return None
    other_version = None
    for part in accept.split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        q = 1.0
        version = None
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
            else:
                version = _version_of(p) or version
        if q > 0 and media in _ACCEPTABLE:
            if version is None or _r4(version):
                return None
            other_version = version
    return _version_refusal(other_version, "answers in") if other_version else ""
