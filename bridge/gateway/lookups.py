"""Writes whose answer was lost: find out whether they happened before answering.

A write that timed out after it was sent, or whose connection broke, may or
may not have been applied by the legacy system. Retrying it blindly could do
it twice; answering "failed" could lose it. The mapping's `lookup` (calls on
the same system, then a record holding the values the write sent) or, for a
conditional create, the `If-None-Exist` search, tells which:

    applied      the write is answered as if its answer had come (201/200)
    not applied  503: the write did not happen, retrying is safe
    unknown      504: no lookup, or the lookup failed too; the diagnostics say
                 how the client can check before it retries

Nothing here names a system or a resource: it all comes from the mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lxml import etree

from bridge.errors import BackendTimeout, BackendUnavailable, FhirError
from bridge.gateway.core import Served
from bridge.gateway.steps import run_steps
from bridge.mapping.compiled import CompiledLookup, CompiledWrite, RunContext
from bridge.mapping.runner import build_resource
from bridge.soap.pool import Session
from bridge.soap.retry import Deadline
from bridge.soap.transport import ConnectionLost, ReadTimeout

__all__ = ["LOST", "OutcomeUnknown", "WriteNotApplied", "found_records", "resolve_lost_write"]

log = logging.getLogger("bridge.gateway")

# The failures after which a write may or may not have been applied.
LOST = (ReadTimeout, ConnectionLost)

_VERBS = {"create": "create", "update": "change", "delete": "deletion"}


class WriteNotApplied(BackendUnavailable):
    """The write's answer was lost, and the legacy system shows it did not happen."""

    def __init__(self, diagnostics: str) -> None:
        super().__init__(diagnostics, retry_after=1)


class OutcomeUnknown(BackendTimeout):
    """The write's answer was lost, and nothing could tell whether it happened."""


async def found_records(
    served: Served,
    lookup: CompiledLookup,
    ctx: RunContext,
    deadline: Deadline,
) -> list[etree._Element]:
    """Run the lookup (a read: retried as reads are) and keep the records that match."""
    backend = served.backend
    look = RunContext(values=ctx.values, record=ctx.record)

    async def work(session: Session) -> list[etree._Element]:
        look.steps.clear()
        replies = await run_steps(backend, session, lookup.steps, look)
        return lookup.found(replies, look)

    return await backend.run(work, deadline=deadline)


async def resolve_lost_write(
    served: Served,
    rtype: str,
    interaction: str,
    spec: CompiledWrite,
    ctx: RunContext,
    rid: str | None,
    lost: FhirError,
    deadline: Deadline,
    routes: dict[str, Served],
    conditional: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """The id and answer of a write whose answer was lost, if it happened; else raise."""
    backend = served.backend
    system = served.system.name
    what = f"{rtype} {_VERBS.get(interaction, interaction)}"
    lookup = spec.lookup
    if lookup is None and conditional is None:
        backend.stats.ambiguous["unknown"] += 1
        log.warning("%s on %s lost its answer; no lookup is declared", what, system)
        raise OutcomeUnknown(
            f"The legacy system '{system}' may or may not have applied this {what}: its "
            f"answer was lost and the mapping declares no way to check. "
            f"{_how_to_check(rtype, interaction, rid, served, routes)}"
        )
    if lookup is not None and isinstance(lost, ReadTimeout) and lookup.settle > 0:
        # The system may still be working on it: give it a moment to land.
        await backend.pause(deadline.cap(lookup.settle))
    try:
        if lookup is not None:
            records = await found_records(served, lookup, ctx, deadline)
            matches: list[Any] = records
        else:
            assert conditional is not None
            existing = await conditional()
            matches = [existing] if existing is not None else []
    except FhirError as exc:
        backend.stats.ambiguous["unknown"] += 1
        log.warning(
            "%s on %s lost its answer; the lookup failed too (%s)",
            what,
            system,
            type(exc).__name__,
        )
        raise OutcomeUnknown(
            f"The legacy system '{system}' may or may not have applied this {what}: its "
            f"answer was lost and checking failed too. "
            f"{_how_to_check(rtype, interaction, rid, served, routes)}"
        ) from None
    if not matches:
        backend.stats.ambiguous["not-applied"] += 1
        log.warning("%s on %s lost its answer; the lookup shows it did not happen", what, system)
        raise WriteNotApplied(
            f"The legacy system '{system}' did not apply this {what}: its answer was lost, "
            "and the gateway checked that the change is not there. It is safe to retry."
        )
    if interaction == "create" and len(matches) > 1:
        backend.stats.ambiguous["unknown"] += 1
        log.warning("%s on %s lost its answer; the lookup found several matches", what, system)
        raise OutcomeUnknown(
            f"The legacy system '{system}' may or may not have applied this {what}: its "
            f"answer was lost and several stored records match it. "
            f"{_how_to_check(rtype, interaction, rid, served, routes)}"
        )
    backend.stats.ambiguous["applied"] += 1
    log.info("%s on %s lost its answer; the lookup shows it was applied", what, system)
    found = matches[0]
    if lookup is None:  # the If-None-Exist search answered a FHIR resource
        return str(found.get("id")) if interaction == "create" else rid, found
    if interaction != "create" or lookup.id is None:
        return rid, None
    new_id = (found.findtext(lookup.id) or "").strip() or None
    answer = None
    same_records = (
        spec.answer is not None
        and spec.answer[0] == lookup.records
        and spec.steps[-1].call.operation == lookup.steps[-1].call.operation
    )
    if spec.respond == "answer" and same_records:
        answer = build_resource(served.resource, found, ctx)
    return new_id, answer


def _how_to_check(
    rtype: str, interaction: str, rid: str | None, served: Served, routes: dict[str, Served]
) -> str:
    """How a client can find out itself: through an interaction the same system serves."""
    blind = "Retrying without checking may apply it twice."
    system = served.system.name
    it = "it is" if interaction == "create" else "the change is"
    read = routes.get("read")
    if rid is not None and read is not None and read.system.name == system:
        return f"Read {rtype}/{rid} to see whether {it} there before retrying. {blind}"
    search = routes.get("search")
    if search is not None and search.system.name == system and search.resource.search:
        params = search.resource.search.params
        named = [n for n, p in params.items() if p.required] or sorted(params)[:2]
        with_ = " and ".join(named)
        return f"Search {rtype} with {with_} to see whether {it} there before retrying. {blind}"
    return f"Check in the legacy system '{system}' whether {it} there before retrying. {blind}"
