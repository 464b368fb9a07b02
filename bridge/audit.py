"""The audit trail: one FHIR AuditEvent per request, committed before the response.

`AuditMiddleware` opens an `AuditContext` for every /fhir and /admin request;
handlers add the patients the request touched, the backends add the legacy
operations it caused, and when the response starts the middleware hands the
request's facts to the store and waits for the commit (`bridge.auditevent`
renders the AuditEvent, IHE Basic Audit Log Patterns, from them when it is
read). Commits are grouped: requests arriving together share one transaction.
If the store cannot commit, the client gets a 503 instead of the data, so no
answer leaves without its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import Select, select, union_all
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.auditevent import AuditContext, facts, stored_event
from bridge.errors import FhirError, ServiceUnavailable
from bridge.fhir.compartment import patient_compartment
from bridge.store import Store, StoreUnavailable
from bridge.store.appender import SqliteAppender
from bridge.store.tables import audit_events, audit_patients, audit_patients_pending

__all__ = [
    "AuditContext",
    "AuditMiddleware",
    "AuditTrail",
    "DeliveryAudit",
    "note_legacy",
    "note_patients",
]

log = logging.getLogger("bridge.audit")
_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "bridge_audit", default=None
)
_MAX_BATCH = 500


def note_patients(request_state: dict[str, Any], resources: Iterable[Any]) -> None:
    """Record which patients' data the request read or wrote."""
    context = request_state.get("audit")
    if not isinstance(context, AuditContext):
        return
    compartment = patient_compartment()
    for resource in resources:
        if isinstance(resource, dict):
            context.patients.update(compartment.owners(resource))


def note_withheld(request_state: dict[str, Any], consent_id: str) -> None:
    context = request_state.get("audit")
    if isinstance(context, AuditContext):
        context.withheld[consent_id] = context.withheld.get(consent_id, 0) + 1


@contextlib.contextmanager
def not_coming(trail: Any, request_state: dict[str, Any]) -> Iterator[None]:
    """While the request waits for something that may take long (a Bundle's turn),
    its AuditEvent is not on its way: other requests' commits do not wait for it."""
    context = request_state.get("audit")
    if not isinstance(trail, AuditTrail) or not isinstance(context, AuditContext):
        yield
        return
    if context.handed:
        yield
        return
    trail.opened -= 1
    try:
        yield
    finally:
        trail.opened += 1


def note_legacy(system: str, operation: str) -> None:
    """Called by the backends for every legacy call (in the request's context)."""
    context = _current.get()
    if context is not None:
        context.legacy.append(f"{system}:{operation}")


def classify(method: str, path: str) -> tuple[str, str | None, str | None]:
    """(interaction, resource type, id) from the request line."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "admin":
        return "admin", None, None
    parts = parts[1:]  # after "fhir"
    if not parts:
        return ("batch" if method == "POST" else "search-system"), None, None
    rtype = parts[0]
    if rtype == "metadata":
        return "capabilities", None, None
    if len(parts) == 1:
        return ("create" if method == "POST" else "search-type"), rtype, None
    rid = parts[1]
    if rid == "_search":
        return "search-type", rtype, None
    if rid.startswith("$") or (len(parts) > 2 and parts[2].startswith("$")):
        return "operation", rtype, None if rid.startswith("$") else rid
    interaction = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return interaction.get(method, "operation"), rtype, rid


class AuditTrail:
    """Appends AuditEvents to the store in grouped commits; searches them."""

    def __init__(
        self, store: Store, sink_url: str | None = None, *, group_commit: float = 0.003
    ) -> None:
        self.store = store
        self.sink_url = sink_url
        self.group_commit = group_commit
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._sink_queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
        self._sender: asyncio.Task[None] | None = None
        self.dropped = 0  # AuditEvents the sink did not get (the store has them all)
        self._appender: SqliteAppender | None = None
        self.written = 0
        # Requests under way whose AuditEvent is not handed to the writer yet.
        self.opened = 0

    def start(self) -> None:
        if self.store.sqlite and self.store.sqlite_path is not None:
            # SQLite: committed in the loop, or by a thread of its own when the database
            # is locked (see bridge/store/appender.py).
            self._appender = SqliteAppender(
                self.store.sqlite_path,
                max_batch=_MAX_BATCH,
                coming=lambda: self.opened > 0,
                linger=self.group_commit,
            )
            self._appender.start()
        self._writer = asyncio.create_task(self._write_loop(), name="audit-writer")
        if self.sink_url:
            self._sender = asyncio.create_task(self._sink_loop(), name="audit-sink")

    async def close(self) -> None:
        # Whatever is pending is written before the store closes.
        if self._appender is not None:
            self._appender.close_inline()
            await asyncio.to_thread(self._appender.stop)
        while self._pending:
            self._wake.set()
            await asyncio.sleep(0.01)
        for task in (self._writer, self._sender):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def record(self, row: dict[str, Any]) -> None:
        """Return once the event is committed; raise StoreUnavailable if it cannot be."""
        if self._appender is not None:
            if not self._appender.alive():
                raise StoreUnavailable("the audit writer is not running")
            await self._appender.append(row)
            self._forward(row)
            return
        if self._writer is None or self._writer.done():
            raise StoreUnavailable("the audit writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wake.set()
        await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                try:
                    await self._insert([row for row, _ in batch])
                except StoreUnavailable as exc:
                    log.error("audit events could not be written: %s", exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreUnavailable(str(exc)))
                    continue
                except Exception as exc:  # never leave a request waiting
                    log.error("audit writer failed: %s", type(exc).__name__)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreUnavailable("audit writer failed"))
                    continue
                self.written += len(batch)
                for row, future in batch:
                    if not future.done():
                        future.set_result(None)
                    self._forward(row)

    def _forward(self, row: dict[str, Any]) -> None:
        if self.sink_url:
            try:
                self._sink_queue.put_nowait(orjson.dumps(stored_event(row["body"])))
            except asyncio.QueueFull:
                self.dropped += 1

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self.store.write() as conn:
            events = [{k: v for k, v in row.items() if k != "patients"} for row in rows]
            result = await conn.execute(
                audit_events.insert().returning(audit_events.c.seq, sort_by_parameter_order=True),
                events,
            )
            seqs = [r[0] for r in result.all()]
            links = [
                {"patient": patient, "event_seq": seq, "recorded": row["recorded"]}
                for seq, row in zip(seqs, rows, strict=True)
                for patient in row["patients"]
            ]
            if links:
                await conn.execute(audit_patients.insert(), links)

    async def _sink_loop(self) -> None:
        import aiohttp

        assert self.sink_url is not None
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                body = await self._sink_queue.get()
                for attempt in range(3):
                    try:
                        async with session.post(
                            self.sink_url,
                            data=body,
                            headers={"Content-Type": "application/fhir+json"},
                        ) as answer:
                            if answer.status < 500:
                                break
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(0.5 * (attempt + 1))
                else:
                    self.dropped += 1
                    log.warning("an AuditEvent could not be forwarded to the audit sink")

    async def search(
        self,
        *,
        patient: str | None,
        since: float | None,
        until: float | None,
        count: int,
        before: int | None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Newest first: (sequence, AuditEvent)."""

        def period(query: Select[Any], recorded: Any) -> Select[Any]:
            if since is not None:
                query = query.where(recorded >= since)
            if until is not None:
                query = query.where(recorded < until)
            return query

        if patient is not None:
            # The links the SQLite appender has not moved yet are read too (see
            # bridge/store/appender.py); a link is in one table or the other.
            links = union_all(
                *(
                    period(select(t.c.event_seq).where(t.c.patient == patient), t.c.recorded)
                    for t in (audit_patients, audit_patients_pending)
                )
            ).subquery("links")
            query = select(audit_events.c.seq, audit_events.c.body).join(
                links, links.c.event_seq == audit_events.c.seq
            )
        else:
            query = period(select(audit_events.c.seq, audit_events.c.body), audit_events.c.recorded)
        if before is not None:
            query = query.where(audit_events.c.seq < before)
        query = query.order_by(audit_events.c.seq.desc()).limit(count)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(seq), stored_event(body)) for seq, body in rows]

    async def get(self, event_id: str) -> dict[str, Any] | None:
        async with self.store.read() as conn:
            body = (
                await conn.execute(select(audit_events.c.body).where(audit_events.c.id == event_id))
            ).scalar()
        return stored_event(body) if body is not None else None


class _Deliverer:
    """The principal of a queued write's delivery: the app that sent it, no token."""

    def __init__(self, client_id: str | None) -> None:
        self.client_id = client_id or "-"
        self.subject = "-"
        self.patient: str | None = None
        self.token_id: str | None = None


class DeliveryAudit:
    """One AuditEvent per delivery attempt of a queued (`Prefer: respond-async`) write:
    what the worker sent to the legacy systems, on whose behalf, and how it ended."""

    def __init__(self, trail: Callable[[], AuditTrail | None]) -> None:
        self.trail = trail

    def begin(self, job_id: str, kind: str, rtype: str | None, rid: str | None, body: Any) -> Any:
        interaction = {"create": "create", "update": "update"}.get(kind)
        if interaction is None:
            bundle_type = body.get("type") if isinstance(body, dict) else None
            interaction = "transaction" if bundle_type == "transaction" else "batch"
        context = AuditContext(
            method="POST",
            path=f"/fhir/_async/{job_id}",
            query=b"",
            started=time.time(),
            interaction=interaction,
            resource_type=rtype,
            resource_id=rid,
        )
        resources = [body]
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            resources = [e.get("resource") for e in body.get("entry", []) if isinstance(e, dict)]
        note_patients({"audit": context}, resources)
        return context, _current.set(context)

    async def end(self, started: Any, status: int, client_id: str | None, job_id: str) -> None:
        context, token = started
        _current.reset(token)
        trail = self.trail()
        if trail is None:
            return
        state = {"principal": _Deliverer(client_id), "request_id": f"async-{job_id}"}
        row = facts(context, status, state, None)
        try:
            await trail.record(
                {
                    "id": row["id"],
                    "recorded": context.started,
                    "client_id": client_id,
                    "interaction": context.interaction,
                    "status": status,
                    "body": orjson.dumps(row).decode(),
                    "patients": row.get("patients", []),
                }
            )
        except StoreUnavailable:
            log.error("the AuditEvent of a delivery could not be written")


def _hand_over(trail: AuditTrail, context: AuditContext) -> None:
    """The request's event goes to the writer now (or never): it is no longer coming."""
    if not context.handed:
        context.handed = True
        trail.opened -= 1


class AuditMiddleware:
    """Wraps every /fhir and /admin request; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trail: Callable[[], AuditTrail | None],
        render: Callable[[FhirError], Any],
    ) -> None:
        self.app = app
        self.trail = trail
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        trail = self.trail()
        if (
            scope["type"] != "http"
            or trail is None
            or not (path.startswith("/fhir") or path.startswith("/admin"))
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        interaction, rtype, rid = classify(scope["method"], path)
        context = AuditContext(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b""),
            started=time.time(),
            interaction=interaction,
            resource_type=rtype,
            resource_id=rid,
        )
        state = scope.setdefault("state", {})
        state["audit"] = context
        token = _current.set(context)
        swallowed = False
        if isinstance(trail, AuditTrail):
            trail.opened += 1
        else:  # a stand-in trail (tests): nothing to count
            context.handed = True

        async def send_after_commit(message: Message) -> None:
            nonlocal swallowed
            if message["type"] == "http.response.start":
                principal = state.get("principal")
                if principal is not None and principal.patient:
                    context.patients.add(principal.patient)
                try:
                    await self._commit(trail, context, message["status"], state, scope)
                except StoreUnavailable:
                    swallowed = True
                    refusal = ServiceUnavailable(
                        "The audit trail cannot be written; the request was not answered. "
                        "Try again shortly.",
                        retry_after=5,
                    )
                    await self.render(refusal)(scope, receive, send)
                    return
            elif swallowed:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_after_commit)
        except Exception:
            # The error handler outside answers 500; the trail still gets its record.
            try:
                await self._commit(trail, context, 500, state, scope)
            except StoreUnavailable:
                log.error("an AuditEvent for a failed request could not be written")
            raise
        finally:
            _current.reset(token)
            _hand_over(trail, context)

    async def _commit(
        self,
        trail: AuditTrail,
        context: AuditContext,
        status: int,
        state: dict[str, Any],
        scope: Scope,
    ) -> None:
        _hand_over(trail, context)
        row = facts(context, status, state, scope.get("client"))
        await trail.record(
            {
                "id": row["id"],
                "recorded": context.started,
                "client_id": row.get("client_id"),
                "interaction": context.interaction,
                "status": status,
                "body": orjson.dumps(row).decode(),
                "patients": row.get("patients", []),
            }
        )
