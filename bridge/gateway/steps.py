"""Running an interaction's SOAP calls, in order, on one leased session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from bridge.mapping.compiled import CompiledStep, RunContext
from bridge.soap.backend import Backend
from bridge.soap.pool import Session

__all__ = ["run_steps"]


async def run_steps(
    backend: Backend,
    session: Session,
    steps: tuple[CompiledStep, ...],
    ctx: RunContext,
    record: tuple[str | None, Any] | None = None,
) -> list[etree._Element]:
    """Run every step; return the answers of the last one (one per `for_each` item).

    `record` is (path, tree): a legacy record to write into the first step's
    request, at `path` (or merged into the request when path is None).
    """
    last: list[etree._Element] = []
    for i, step in enumerate(steps):
        extra: Mapping[str, Any] = {}
        if i == 0 and record is not None:
            path, tree = record
            extra = {path: tree} if path else tree
        replies: list[etree._Element] = []
        if step.for_each is not None:
            source, item_path = step.for_each
            items = [el for reply in ctx.steps.get(source, []) for el in reply.iterfind(item_path)]
            # Values (not records) are visited once each: several results of
            # one accession ask for its report once.
            seen: set[str] = set()
            unique = []
            for el in items:
                key = (el.text or "").strip() if len(el) == 0 else ""
                if key and key in seen:
                    continue
                seen.add(key)
                unique.append(el)
            items = unique
            for item in items:
                ctx.item = item
                values = {**extra, **step.call.request(ctx)}
                replies.append(await backend.call(session, step.call.template, values))
            ctx.item = None
        else:
            values = {**extra, **step.call.request(ctx)}
            replies.append(await backend.call(session, step.call.template, values))
        if step.name is not None:
            ctx.steps[step.name] = replies
        last = replies
    return last
