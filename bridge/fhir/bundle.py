"""searchset Bundles and their links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

__all__ = ["search_url", "searchset"]


def search_url(base: str, resource: str, params: Sequence[tuple[str, str]]) -> str:
    query = urlencode(list(params))
    return f"{base}/{resource}" + (f"?{query}" if query else "")


def searchset(
    base: str,
    resources: Sequence[dict[str, Any]],
    *,
    total: int | None,
    self_url: str,
    next_url: str | None,
    included: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle["link"] = links
    bundle["entry"] = [
        {
            "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ] + [
        {
            "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "include"},
        }
        for r in included
    ]
    if not bundle["entry"]:
        del bundle["entry"]
    return bundle
