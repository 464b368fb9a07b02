"""The HTTP side of asynchronous writes: the 202, the status URL, cancelling.

    POST [base]/Observation            Prefer: respond-async
    202 Accepted                       Content-Location: [base]/_async/{id}

    GET [base]/_async/{id}             202 + Retry-After + X-Progress while pending,
                                       then 200 + Bundle (batch-response) holding the
                                       write's result: response.status, location,
                                       resource or outcome
    DELETE [base]/_async/{id}          202: cancelled (nothing was sent);
                                       409 once a delivery attempt has begun

Only the caller that made the request (the token's client, user and patient
context: `owner_of`) sees its status URL; to anyone else, another user or
another patient launch of the same app included, it does not exist (404).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.asyncwrites.intake import lanes, write_entries
from bridge.asyncwrites.queue import Job, JobQueue
from bridge.asyncwrites.worker import Deliveries
from bridge.auth.tokens import Principal
from bridge.errors import FhirError, NotFound
from bridge.fhir.negotiate import check_acceptable
from bridge.fhir.outcome import operation_outcome
from bridge.fhir.response import FhirResponse
from bridge.idempotency import owner_of

__all__ = ["STATUS_PATH", "AsyncWrites", "async_routes"]

STATUS_PATH = "_async"


class JobConflict(FhirError):
    status = 409
    code = "conflict"


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def _client_id(request: Request) -> str | None:
    principal = _principal(request)
    return principal.client_id if principal is not None else None


class AsyncWrites:
    """The queue of this gateway's asynchronous writes and the loops delivering them."""

    def __init__(self, queue: JobQueue, deliveries: Deliveries) -> None:
        self.queue = queue
        self.deliveries = deliveries

    async def accept(
        self,
        request: Request,
        kind: str,
        rtype: str | None,
        rid: str | None,
        body: Any,
        base: str,
    ) -> Response:
        """Store the checked, authorized write durably; 202 with its status URL."""
        if kind == "bundle":
            items = [(e.rtype, e.rid, e.resource) for e in write_entries(body)]
        else:
            assert rtype is not None
            items = [(rtype, rid, body)]
        job = {
            "kind": kind,
            "type": rtype,
            "id": rid,
            "body": body,
            "base": base,
            "if_match": request.headers.get("if-match") if kind == "update" else None,
            "if_none_exist": request.headers.get("if-none-exist") if kind == "create" else None,
            # The column client_id stays the bare client (the audit trail names it).
            "owner": owner_of(_principal(request)),
        }
        job_id = await self.queue.add(
            client_id=_client_id(request), lanes=lanes(items), request=job
        )
        self.deliveries.wake()
        outcome = operation_outcome(
            "informational",
            "Accepted for delivery to the legacy system; poll Content-Location for the result.",
            severity="information",
        )
        return FhirResponse(
            outcome,
            202,
            {
                "Content-Location": f"{base}/{STATUS_PATH}/{job_id}",
                "Preference-Applied": "respond-async",
            },
        )

    async def status(self, request: Request) -> Response:
        job = await self._job(request)
        if job.state == "cancelled":
            raise NotFound("This asynchronous request was cancelled.")
        if job.pending:
            return self._pending(job)
        assert job.result is not None
        bundle = {
            "resourceType": "Bundle",
            "id": job.id,
            "type": "batch-response",
            "entry": [job.result],
        }
        return FhirResponse(bundle, 200)

    def _pending(self, job: Job) -> Response:
        now = time.time()
        if job.state == "running" and (job.lease_until or 0) >= now:
            progress = f"delivering (attempt {job.attempts})"
        elif job.state == "queued" and job.attempts == 0:
            progress = "queued"
        elif job.state == "queued":
            progress = (
                f"waiting to retry: the legacy system was unavailable (attempt {job.attempts})"
            )
        else:
            progress = "checking whether an interrupted delivery was applied"
        wait = max(1, min(30, round(job.not_before - now))) if job.not_before > now else 1
        outcome = operation_outcome(
            "informational", f"Not delivered yet: {progress}.", severity="information"
        )
        return FhirResponse(outcome, 202, {"Retry-After": str(wait), "X-Progress": progress})

    async def cancel(self, request: Request) -> Response:
        job = await self._job(request)
        state = await self.queue.cancel(job.id, job.client_id)
        if state is None:
            raise NotFound("There is no asynchronous request at this address.")
        if state == "cancelled":
            outcome = operation_outcome(
                "informational",
                "Cancelled: nothing of this write was sent to the legacy system.",
                severity="information",
            )
            return FhirResponse(outcome, 202)
        if state in ("done", "failed"):
            raise JobConflict("This write has already been delivered; see its result.")
        raise JobConflict(
            "A delivery of this write has begun; it can no longer be cancelled. "
            "Poll this address for its result."
        )

    async def _job(self, request: Request) -> Job:
        check_acceptable(request.headers.get("accept"), request.query_params.get("_format"))
        job = await self.queue.get(request.path_params["jid"], _client_id(request))
        # A job queued before owners were kept is its client's, as it was then.
        owner = job.request.get("owner") if job is not None else None
        if job is None or (owner is not None and owner != owner_of(_principal(request))):
            raise NotFound("There is no asynchronous request at this address.")
        return job


def async_routes(writes: Callable[[], AsyncWrites | None]) -> list[Route]:
    """The status URL's routes (`/fhir/_async/{jid}`), before `/fhir/{type}/{id}`."""

    def current() -> AsyncWrites:
        found = writes()
        if found is None:
            raise NotFound("There is no asynchronous request at this address.")
        return found

    async def status(request: Request) -> Response:
        return await current().status(request)

    async def cancel(request: Request) -> Response:
        return await current().cancel(request)

    path = f"/fhir/{STATUS_PATH}/{{jid}}"
    return [
        Route(path, status, methods=["GET"]),
        Route(path, cancel, methods=["DELETE"]),
    ]
