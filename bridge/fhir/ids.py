"""FHIR resource ids: 1-64 letters, digits, '-' or '.' (R4 `id`)."""

from __future__ import annotations

__all__ = ["is_fhir_id"]

_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def is_fhir_id(text: str) -> bool:
    """Whether `text` may be a resource's id: what a URL, a token's `patient` claim
    or a Consent names before it reaches a search or a compartment check."""
    return 0 < len(text) <= 64 and set(text) <= _CHARS
