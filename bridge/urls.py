"""Which addresses the gateway can send to."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["http_url"]


def http_url(value: str) -> bool:
    """Whether `value` is an http:// or https:// URL with a host (what a legacy
    system's endpoint must be once the gateway config's overrides apply)."""
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False
