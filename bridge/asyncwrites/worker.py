"""Delivering queued writes: through the gateway, as a synchronous write would go.

Each gateway process runs `async_writes.workers` delivery loops. A loop leases
the oldest job that may go (see `queue.py`), renews the lease while it works,
and records the result:

    delivered, or refused for good (4xx, a mapped fault)   final result
    the legacy system is down (503, 504 before sending,    back to the queue,
      breaker open, session cap)                           tried again with backoff
    the answer was lost and nothing can tell (504)         failed, with that outcome
    an unexpected error (a bug, not the network):
      before any call of the write went out                failed (500): it never can
      after one did                                        unsure once (below), then
                                                           failed (504) if it recurs
      while checking an unsure job                         failed (504): cannot tell

A job that an attempt may have reached the legacy system with (its worker
died or was stopped mid-delivery, or the write went through and what came
after it failed) is *unsure*: before it is sent again, the mapping's lookup
(the one behind lost answers, `gateway/lookups.py`) says whether each create
is already there. What cannot be checked is failed with an outcome that says
so; it is never sent twice blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.asyncwrites.intake import write_entries
from bridge.asyncwrites.queue import Job, JobQueue
from bridge.audit import DeliveryAudit
from bridge.errors import (
    BackendTimeout,
    BackendUnavailable,
    FhirError,
    MappedFault,
    ServiceUnavailable,
)
from bridge.fhir.outcome import operation_outcome
from bridge.gateway import Gateway
from bridge.gateway.lookups import OutcomeUnknown, found_records
from bridge.mapping.compiled import CompiledWrite, RunContext
from bridge.mapping.runner import BadValue
from bridge.mapping.writer import legacy_record
from bridge.settings import AsyncWriteSettings
from bridge.soap.xml import SoapFault
from bridge.store import StoreUnavailable

__all__ = ["Deliveries", "note_attempt_call"]

log = logging.getLogger("bridge.asyncwrites")

# The legacy calls of the delivery attempt running in this context: (operation, outcome).
# The status an attempt ended with (for its AuditEvent), set by `_final`.
_outcome: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "bridge_delivery_outcome", default=None
)
_calls: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "bridge_delivery_calls", default=None
)
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def note_attempt_call(operation: str, outcome: str) -> None:
    """Called for every legacy call (the backends' observer); kept during deliveries."""
    calls = _calls.get()
    if calls is not None:
        calls.append((operation, outcome))


def _status_text(code: int) -> str:
    return _STATUS_TEXT.get(code, str(code))


def error_entry(error: FhirError) -> dict[str, Any]:
    return {
        "response": {
            "status": str(error.status),
            "outcome": operation_outcome(
                error.code, error.diagnostics, expression=error.expression
            ),
        }
    }


def _transient(error: FhirError) -> bool:
    """The write did not happen and may be tried again later."""
    if isinstance(error, OutcomeUnknown) or error.code == "incomplete":
        return False
    if isinstance(error, (BackendUnavailable, ServiceUnavailable, BackendTimeout)):
        return True
    return isinstance(error, MappedFault) and error.status in (429, 503)


def _unknown(what: str = "this write", *, why: str | None = None) -> OutcomeUnknown:
    why = why or (
        f"The gateway was interrupted while delivering {what}; it may or may not have been "
        "applied, and the mapping declares no way to check."
    )
    return OutcomeUnknown(
        f"{why} Check the legacy system before sending it again; sending it blindly may "
        "apply it twice."
    )


# Unexpected failures (a bug, never a transport failure): outcomes without PHI.
_NOT_APPLIED = (
    "The server met an unexpected condition delivering this write; the legacy system "
    "did not receive it."
)
_CHECK_FAILED = (
    "The server met an unexpected condition checking whether an interrupted delivery "
    "of this write was applied; it may or may not have been."
)
_AFTER_SENDING = (
    "The server met an unexpected condition after this write reached the legacy "
    "system; it may or may not have been applied."
)


@dataclass
class _Attempt:
    """How far one delivery attempt got, for what an unexpected error means."""

    phase: str = "starting"  # then "checking" (an unsure job), "sending", "sent"
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, outcome)


class _Later(Exception):
    """Give the job back: try again after a pause."""

    def __init__(
        self, unsure: bool, error: FhirError | None = None, delay: float | None = None
    ) -> None:
        self.unsure = unsure
        self.error = error
        self.delay = delay


class Deliveries:
    """The delivery loops of one gateway process."""

    def __init__(
        self,
        queue: JobQueue,
        gateway: Callable[[], Gateway],
        settings: AsyncWriteSettings,
        observe_depth: Callable[[int, float | None], None] | None = None,
        audit: DeliveryAudit | None = None,
    ) -> None:
        self.audit = audit
        self.queue = queue
        self.gateway = gateway
        self.settings = settings
        self.observe_depth = observe_depth
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._chores: list[asyncio.Task[None]] = []
        self.delivered = 0

    def start(self) -> None:
        for n in range(self.settings.workers):
            self._loops.append(asyncio.create_task(self._loop(), name=f"delivery-{n}"))
        self._chores.append(asyncio.create_task(self._measure(), name="delivery-depth"))

    def wake(self) -> None:
        """A job was accepted here: look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        """Stop claiming; let deliveries finish within the grace; hand back the rest."""
        self._stopping = True
        self._wake.set()
        for chore in self._chores:
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        if not self._loops:
            return
        _, late = await asyncio.wait(self._loops, timeout=self.settings.shutdown_grace)
        for loop in late:
            loop.cancel()  # its delivery hands its job back (see _attempt)
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                job = await self.queue.claim()
            except StoreUnavailable as exc:
                log.error("the delivery worker cannot reach the store: %s", exc)
                job = None
            except Exception as exc:  # never let the loop die
                log.error("claiming a job failed: %s", type(exc).__name__)
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
                continue
            try:
                await self._attempt(job)
            except Exception as exc:  # recording the result failed: its lease will expire
                log.error(
                    "job %s: its attempt could not be recorded: %s", job.id, type(exc).__name__
                )

    async def _attempt(self, job: Job) -> None:
        # Each attempt leaves an AuditEvent: its legacy calls, and 503 if it was deferred.
        request = job.request
        audited = (
            self.audit.begin(
                job.id, request["kind"], request.get("type"), request.get("id"), request["body"]
            )
            if self.audit is not None
            else None
        )
        box = [503]  # deferred, unless the attempt stores a final result
        token = _outcome.set(box)
        try:
            await self._attempt_once(job)
        finally:
            _outcome.reset(token)
            if self.audit is not None:
                await self.audit.end(audited, box[0], job.client_id, job.id)

    async def _attempt_once(self, job: Job) -> None:
        renewer = asyncio.create_task(self._renew(job), name="delivery-lease")
        attempt = _Attempt()
        try:
            await self._deliver(job, attempt)
        except asyncio.CancelledError:
            # Stopped in the middle (shutdown past its grace): back to the queue at once,
            # unsure when a call may have gone out.
            sent = attempt.phase in ("sending", "sent")
            await asyncio.shield(self._give_back(job, 0.0, unsure=sent or job.suspect))
            raise
        except _Later as later:
            if time.time() - job.created <= self.settings.give_up_after:
                delay = later.delay if later.delay is not None else self._backoff(job.attempts)
                await self._give_back(job, delay, unsure=later.unsure)
            elif later.unsure:
                await self._final(job, "failed", 504, error_entry(_unknown("this write")))
            else:
                error = later.error or BackendUnavailable()
                await self._final(job, "failed", error.status, error_entry(error))
        except StoreUnavailable as exc:
            log.error("a delivery result could not be stored (%s); the lease will expire", exc)
        except Exception as exc:
            await self._unexpected(job, attempt, type(exc).__name__)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _unexpected(self, job: Job, attempt: _Attempt, error: str) -> None:
        """End a job an unexpected error stopped: such an error comes back on every
        attempt, so retrying would block the patient's later writes for good. Only a
        write that may have reached the legacy system is tried once more, and then
        only through the unsure check (the mapping's lookup), never blindly."""
        if attempt.phase == "checking":
            log.error("job %s: checking an interrupted delivery failed: %s", job.id, error)
            await self._final(job, "failed", 504, self._failure(job, _unknown(why=_CHECK_FAILED)))
            return
        if not self._reached(job, attempt):
            log.error("delivering job %s failed: %s; nothing was sent", job.id, error)
            await self._final(job, "failed", 500, self._failure(job, FhirError(_NOT_APPLIED)))
            return
        request = job.request
        if not request.get("unexpected") and (
            time.time() - job.created <= self.settings.give_up_after
        ):
            log.error("delivering job %s failed: %s; it will be checked", job.id, error)
            request["unexpected"] = True
            await self._give_back(job, self._backoff(job.attempts), unsure=True)
            return
        log.error("delivering job %s failed again: %s", job.id, error)
        await self._final(job, "failed", 504, self._failure(job, _unknown(why=_AFTER_SENDING)))

    def _reached(self, job: Job, attempt: _Attempt) -> bool:
        """Whether a call of the write itself may have reached the legacy system, in
        this attempt or an earlier one (a suspect job's, or one an unexpected error
        stopped after sending)."""
        if attempt.phase == "sent" or job.suspect or job.request.get("unexpected"):
            return True
        if attempt.phase != "sending":
            return False
        try:
            operations = self._operations(self.gateway(), job.request)
        except Exception:
            return True  # cannot tell: assume it may have
        return any(op in operations and outcome != "unsent" for op, outcome in attempt.calls)

    @staticmethod
    def _failure(job: Job, error: FhirError) -> dict[str, Any]:
        """A failed job's result; a batch keeps the answers its entries already have."""
        request = job.request
        answers = request.get("answers") if request["kind"] == "bundle" else None
        out = error_entry(error)
        if answers:
            body = request["body"]
            out["resource"] = {
                "resourceType": "Bundle",
                "type": "batch-response" if body.get("type") == "batch" else "transaction-response",
                "entry": [
                    answers.get(str(i)) or error_entry(error) for i in range(len(body["entry"]))
                ],
            }
        return out

    async def _give_back(self, job: Job, delay: float, *, unsure: bool) -> None:
        try:
            await self.queue.later(job, delay, unsure=unsure)
        except StoreUnavailable as exc:
            log.error("a job could not be handed back (%s); its lease will expire", exc)

    async def _final(self, job: Job, state: str, status: int, result: dict[str, Any]) -> None:
        box = _outcome.get()
        if box is not None:
            box[0] = status
        if await self.queue.finish(job, state, status, result):
            self.delivered += 1
        else:
            log.warning("job %s: the lease was lost before its result was stored", job.id)

    def _backoff(self, attempts: int) -> float:
        growth = 2.0 ** max(0, attempts - 1)
        ceiling = min(self.settings.retry_cap, self.settings.retry_base * growth)
        return float(ceiling / 2 + random.random() * ceiling / 2)

    async def _renew(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            try:
                if not await self.queue.renew(job):
                    log.warning("job %s: the lease was lost while delivering", job.id)
                    return
            except StoreUnavailable:
                pass

    async def _measure(self) -> None:
        while True:
            if self.observe_depth is not None:
                try:
                    count, oldest = await self.queue.depth()
                    self.observe_depth(count, oldest)
                except StoreUnavailable:
                    pass
            await asyncio.sleep(self.settings.measure_interval)

    # -- one attempt -------------------------------------------------------------

    async def _deliver(self, job: Job, attempt: _Attempt) -> None:
        gateway = self.gateway()
        request = job.request
        if job.suspect:
            attempt.phase = "checking"
            if not await self._check(gateway, job):
                return  # the check settled it
        calls = attempt.calls
        token = _calls.set(calls)
        try:
            attempt.phase = "sending"
            status, entry = await self._send(gateway, request)
        except FhirError as error:
            wrote = self._wrote(gateway, request, calls)
            if not _transient(error):
                await self._final(job, "failed", error.status, error_entry(error))
                return
            raise _Later(wrote, error) from None
        finally:
            _calls.reset(token)
        attempt.phase = "sent"
        if request["kind"] == "bundle" and self._retry_entries(job, entry):
            if time.time() - job.created <= self.settings.give_up_after:
                raise _Later(unsure=self._wrote(gateway, request, calls))
            entry = self._merged(job, entry)
        await self._final(job, "done", status, entry)

    async def _send(self, gateway: Gateway, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The write, through the gateway: (status, the batch-response entry)."""
        kind, base = request["kind"], request["base"]
        if kind == "create":
            result = await gateway.create(
                request["type"], request["body"], base, if_none_exist=request.get("if_none_exist")
            )
        elif kind == "update":
            result = await gateway.update(
                request["type"], request["id"], request["body"], if_match=request.get("if_match")
            )
        else:
            body = request["body"]
            if request.get("answers"):
                body = {**body, "entry": [body["entry"][i] for i in request["remaining"]]}

            async def allowed(rtype: str, interaction: str, resource: Any, rid: str | None) -> None:
                return None  # authorized when accepted

            bundle = await gateway.bundle(body, base, allowed)
            return 200, {"response": {"status": _status_text(200)}, "resource": bundle}
        out: dict[str, Any] = {"response": {"status": _status_text(result.status)}}
        if result.location:
            out["response"]["location"] = result.location
        if result.resource is not None:
            out["resource"] = result.resource
        return result.status, out

    @classmethod
    def _wrote(
        cls, gateway: Gateway, request: dict[str, Any], calls: list[tuple[str, str]]
    ) -> bool:
        """Did a call of the write itself get through in this attempt?"""
        operations = cls._operations(gateway, request)
        return any(op in operations and outcome == "ok" for op, outcome in calls)

    @staticmethod
    def _operations(gateway: Gateway, request: dict[str, Any]) -> set[str]:
        """The legacy operations the write's own calls use."""
        if request["kind"] == "bundle":
            pairs = [(e.rtype, e.interaction) for e in write_entries(request["body"])]
        else:
            pairs = [(request["type"], request["kind"])]
        operations: set[str] = set()
        for rtype, interaction in pairs:
            served = gateway.routes.get(rtype, {}).get(interaction)
            if served is None:
                continue
            resource = served.resource
            specs: list[CompiledWrite | None] = []
            if interaction == "create":
                specs = [resource.create]
            elif interaction == "update":
                specs = list(resource.update)
            elif interaction == "delete":
                specs = [resource.delete]
            for spec in specs:
                if spec is not None:
                    operations.update(step.call.operation for step in spec.steps)
        return operations

    # -- batches answered in part ------------------------------------------------

    def _retry_entries(self, job: Job, entry: dict[str, Any]) -> bool:
        """Keep a batch's final answers; True when some entries must be tried again."""
        bundle = entry["resource"]
        if bundle.get("type") != "batch-response":
            return False
        request = job.request
        indexes = request.get("remaining") or list(range(len(bundle.get("entry", []))))
        answers: dict[str, Any] = dict(request.get("answers") or {})
        remaining = []
        for index, answer in zip(indexes, bundle.get("entry", []), strict=True):
            answers[str(index)] = answer
            if str(answer.get("response", {}).get("status", "")).startswith("503"):
                remaining.append(index)
        request["answers"], request["remaining"] = answers, remaining
        if remaining:
            return True
        bundle["entry"] = [answers[str(i)] for i in range(len(request["body"]["entry"]))]
        return False

    def _merged(self, job: Job, entry: dict[str, Any]) -> dict[str, Any]:
        answers = job.request["answers"]
        entry["resource"]["entry"] = [
            answers[str(i)] for i in range(len(job.request["body"]["entry"]))
        ]
        return entry

    # -- unsure jobs ---------------------------------------------------------------

    async def _check(self, gateway: Gateway, job: Job) -> bool:
        """Settle what an interrupted attempt did; True when the job must still be sent."""
        request = job.request
        kind = request["kind"]
        # A call of the interrupted attempt may still be under way: let it land first.
        check_after = request.setdefault("check_after", job.touched + self.settings.unsure_delay)
        if check_after > time.time():
            raise _Later(True, delay=check_after - time.time())
        del request["check_after"]
        if kind == "create" and request.get("if_none_exist"):
            return True  # the condition finds a stored copy
        if kind == "update":
            await self._final(job, "failed", 504, error_entry(_unknown("this change")))
            return False
        items: list[tuple[int | None, str, Any]]
        if kind == "create":
            items = [(None, request["type"], request["body"])]
        else:
            entries = write_entries(request["body"])
            todo = request.get("remaining") or [e.index for e in entries]
            chosen = [e for e in entries if e.index in todo]
            if any(e.interaction != "create" or e.conditional for e in chosen):
                await self._final(job, "failed", 504, error_entry(_unknown("this Bundle")))
                return False
            items = [(e.index, e.rtype, e.resource) for e in chosen]
        try:
            found = [await self._lookup(gateway, rtype, body) for _, rtype, body in items]
        except SoapFault:
            # The legacy system faulted on the lookup: it cannot tell now; ask again later.
            raise _Later(True) from None
        except FhirError as error:
            if _transient(error):
                raise _Later(True, error) from None
            found = [None] * len(items)
        if kind == "create":
            return await self._settle_one(job, found[0])
        return await self._settle_bundle(job, items, found)

    async def _lookup(self, gateway: Gateway, rtype: str, body: Any) -> list[str] | None:
        """Ids of stored records matching the create (None: no way to tell)."""
        served = gateway.route(rtype, "create")
        spec = served.resource.create
        if (
            spec is None
            or spec.lookup is None
            or spec.lookup.id is None
            or not isinstance(body, dict)
        ):
            return None
        stripped = {k: v for k, v in body.items() if k not in ("id", "meta")}
        try:
            tree = legacy_record(served.resource, stripped)
        except BadValue:
            return []  # no legacy form: it was never sent (sending it again answers 422)
        records = await found_records(
            served, spec.lookup, RunContext(record=tree), served.backend.deadline()
        )
        path = spec.lookup.id
        return [(r.findtext(path) or "").strip() for r in records]

    async def _settle_one(self, job: Job, ids: list[str] | None) -> bool:
        request = job.request
        if ids is not None and not ids:
            return True  # not there: send it
        if ids is None or len(ids) != 1 or not ids[0]:
            await self._final(job, "failed", 504, error_entry(_unknown("this create")))
            return False
        rtype, base = request["type"], request["base"]
        resource = {k: v for k, v in request["body"].items() if k != "meta"}
        resource["id"] = ids[0]
        entry = {
            "response": {"status": _status_text(201), "location": f"{base}/{rtype}/{ids[0]}"},
            "resource": resource,
        }
        await self._final(job, "done", 201, entry)
        return False

    async def _settle_bundle(
        self,
        job: Job,
        items: list[tuple[int | None, str, Any]],
        found: list[list[str] | None],
    ) -> bool:
        request = job.request
        body = request["body"]
        batch = body.get("type") == "batch"
        answers: dict[str, Any] = dict(request.get("answers") or {})
        remaining: list[int] = []
        for (index, rtype, resource), ids in zip(items, found, strict=True):
            assert index is not None
            if ids is not None and not ids:
                remaining.append(index)
            elif ids is not None and len(ids) == 1 and ids[0]:
                stored = {k: v for k, v in resource.items() if k != "meta"}
                stored["id"] = ids[0]
                answers[str(index)] = {
                    "response": {"status": _status_text(201), "location": f"{rtype}/{ids[0]}"},
                    "resource": stored,
                }
            else:
                answers[str(index)] = error_entry(_unknown(f"Bundle.entry[{index}]"))
        if not batch and remaining and len(remaining) != len(items):
            await self._final(job, "failed", 504, error_entry(_unknown("this transaction")))
            return False
        if not batch and any(a["response"]["status"].startswith("504") for a in answers.values()):
            await self._final(job, "failed", 504, error_entry(_unknown("this transaction")))
            return False
        if remaining:
            if answers:
                request["answers"], request["remaining"] = answers, remaining
            return True
        kind = "batch-response" if batch else "transaction-response"
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [answers[str(i)] for i in range(len(body["entry"]))],
        }
        await self._final(job, "done", 200, {"response": {"status": "200 OK"}, "resource": bundle})
        return False
