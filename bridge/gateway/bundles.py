"""batch and transaction Bundles (`POST [base]`).

A batch runs each entry on its own: one failing entry does not sink the
others. A transaction is all-or-nothing as far as the legacy systems allow:
every entry is validated and converted before anything is sent; creates that
one legacy call can carry together (a repeating record, like many device
readings for one patient) go in that one call, which the legacy system applies
whole or not at all; anything else runs call by call, and the answer says
plainly that it was not atomic, and after a failure, which entries were applied
and cannot be undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bridge.errors import BackendError, FhirError, InvalidRequest, UnprocessableEntity
from bridge.fhir.outcome import operation_outcome
from bridge.fhir.validate import validate_resource
from bridge.gateway.core import FAULTS
from bridge.gateway.lookups import LOST, OutcomeUnknown, WriteNotApplied, found_records
from bridge.gateway.searching import SearchScope
from bridge.gateway.steps import run_steps
from bridge.gateway.writes import WriteInteractions
from bridge.mapping.compiled import CompiledWrite, RunContext
from bridge.mapping.runner import BadValue
from bridge.mapping.writer import legacy_record
from bridge.soap.pool import Session
from bridge.soap.retry import Deadline
from bridge.soap.wsdl import ElementInfo

__all__ = ["BundleEntry", "BundleInteractions", "parse_entry"]

MAX_ENTRIES = 500

# The caller's authorization of one entry, as if it came alone (403 else): type,
# interaction ("if-none-exist" for a conditional create's search), resource, id;
# and what it may see of a search on a type.
Permit = Callable[[str, str, Any, str | None], Awaitable[None]]
Scopes = Callable[[str], SearchScope | None]
# A read entry of a transaction with writes, authorized on what it reads before any
# write runs (its type and id); raises the error that refuses the transaction.
Vet = Callable[[str, str], Awaitable[None]]
_STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
}


@dataclass
class BundleEntry:
    """One entry of a batch or transaction: what it asks, and what it writes."""

    index: int
    method: str
    rtype: str
    rid: str | None
    query: list[tuple[str, str]]
    resource: Any
    headers: dict[str, str] = field(default_factory=dict)
    interaction: str = ""
    # Once validated and converted (each once): the legacy record written, and
    # what a create writes (the resource without id and meta).
    tree: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    # A search's or a conditional create's: what the caller may see of its search.
    scope: SearchScope | None = None

    def __post_init__(self) -> None:
        self.interaction = _interaction(self.method, self.rid)


def _status(code: int) -> str:
    return _STATUS_TEXT.get(code, str(code))


def _error_entry(error: FhirError) -> dict[str, Any]:
    return {
        "response": {
            "status": str(error.status),
            "outcome": operation_outcome(error.code, error.diagnostics),
        }
    }


def parse_entry(index: int, raw: Any) -> BundleEntry:
    """What `Bundle.entry[index]` asks, its shape checked (InvalidRequest, 400, else).

    The one reading of an entry's request: whoever needs an entry's type or
    interaction (the gateway, the route that confines what entries answer)
    gets it here."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Bundle.entry[{index}] is not an object.")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest(
            f"Bundle.entry[{index}].request is required in a batch or transaction."
        )
    method = str(request.get("method", "")).upper()
    url = str(request.get("url", ""))
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE") or not url:
        raise InvalidRequest(f"Bundle.entry[{index}].request needs a method and a url.")
    headers = {}
    if request.get("ifNoneExist"):
        headers["if-none-exist"] = str(request["ifNoneExist"])
    if request.get("ifMatch"):
        headers["if-match"] = str(request["ifMatch"])
    if url.isalpha() and url != "fhir" and not headers:
        # A bare type, as every entry of a batch of readings has: what urlsplit makes of it.
        entry = BundleEntry(index, method, url, None, [], raw.get("resource"))
    else:
        try:
            split = urlsplit(url)
            query = parse_qsl(split.query, keep_blank_values=True)
        except ValueError:
            raise InvalidRequest(
                f"Bundle.entry[{index}].request.url is not a URL; send one relative to the "
                "base, like Observation?patient=123 or Patient/123."
            ) from None
        parts = [p for p in split.path.split("/") if p]
        if "fhir" in parts:  # an absolute or base-relative url: keep what follows the base
            parts = parts[parts.index("fhir") + 1 :]
        if not parts:
            raise InvalidRequest(f"Bundle.entry[{index}].request.url names no resource type.")
        entry = BundleEntry(
            index=index,
            method=method,
            rtype=parts[0],
            rid=parts[1] if len(parts) > 1 else None,
            query=query,
            resource=raw.get("resource"),
            headers=headers,
        )
    if method in ("PUT", "PATCH", "DELETE") and entry.rid is None:
        raise InvalidRequest(
            f"Bundle.entry[{index}].request.url needs an id for {method}: {entry.rtype}/[id]."
        )
    if entry.interaction in ("create", "update") and method != "PATCH":
        if not isinstance(entry.resource, dict):
            raise InvalidRequest(
                f"Bundle.entry[{index}].resource is required for {method}: the "
                f"{entry.rtype} to write, a JSON object."
            )
    elif method == "PATCH" and not isinstance(entry.resource, list):
        raise InvalidRequest(
            f"Bundle.entry[{index}].resource is required for PATCH: a JSON Patch, "
            "a list of operations."
        )
    return entry


def _converted(gateway: WriteInteractions, entry: BundleEntry) -> None:
    """Validate a create's or a PUT's resource and make its legacy record, once
    (BadValue on failure); `_one` then writes them as they are."""
    resource = validate_resource(entry.resource, entry.rtype)
    if entry.interaction == "create":
        body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        entry.tree = legacy_record(gateway.route(entry.rtype, "create").resource, body)
        entry.body = body
    else:
        entry.tree = legacy_record(gateway.route(entry.rtype, "update").resource, resource)


def _interaction(method: str, rid: str | None) -> str:
    if method == "GET":
        return "read" if rid else "search"
    if method == "POST":
        return "search" if rid == "_search" else "create"
    if method in ("PUT", "PATCH"):
        return "update"
    return "delete"


def _merge(trees: list[Any], element: ElementInfo | None) -> Any:
    """Merge legacy trees into one request; None when they disagree.

    Elements that repeat are put together in order, others must agree (objects
    element by element). One pass over all the trees, not one per tree."""
    first = trees[0]
    if len(trees) == 1:
        return first
    if not all(isinstance(tree, dict) for tree in trees):
        return first if all(tree == first for tree in trees[1:]) else None
    found: dict[str, list[Any]] = {}
    for tree in trees:
        for key, value in tree.items():
            found.setdefault(key, []).append(value)
    out = {}
    for key, values in found.items():
        if len(values) == 1:
            out[key] = values[0]
            continue
        child = element.child(key) if element is not None else None
        if child is not None and child.repeats:
            out[key] = [
                v for value in values for v in (value if isinstance(value, list) else [value])
            ]
            continue
        merged = _merge(values, child)
        if merged is None:
            return None
        out[key] = merged
    return out


class BundleInteractions(WriteInteractions):
    async def bundle(
        self,
        body: Any,
        base: str,
        permit: Permit,
        scopes: Scopes | None = None,
        vet: Vet | None = None,
    ) -> dict[str, Any]:
        """Run a batch or transaction. Every entry is checked (shape, `permit`, a
        search's `scopes`) before any entry runs; in a transaction with writes, each
        read entry is also `vet`ted on what it reads, as reads run last (FHIR's order)
        and a refusal then would come after the writes were applied."""
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise InvalidRequest("POST to the base takes a Bundle of type batch or transaction.")
        kind = body.get("type")
        if kind not in ("batch", "transaction"):
            raise InvalidRequest("The Bundle's type must be batch or transaction.")
        raw_entries = body.get("entry") or []
        if not isinstance(raw_entries, list):
            raise InvalidRequest("Bundle.entry must be a list.")
        if len(raw_entries) > MAX_ENTRIES:
            raise UnprocessableEntity(f"A Bundle may hold at most {MAX_ENTRIES} entries.")
        if kind == "batch":
            return await self._batch(raw_entries, base, permit, scopes)
        return await self._transaction(raw_entries, base, permit, scopes, vet)

    async def _checked(self, entry: BundleEntry, permit: Permit, scopes: Scopes | None) -> None:
        """Authorize an entry; a search is also checked and kept to what the caller may
        see, so that an entry refused never waits until others have run."""
        await permit(entry.rtype, entry.interaction, entry.resource, entry.rid)
        if entry.interaction == "search":
            entry.scope = scopes(entry.rtype) if scopes is not None else None
            entry.query = self.scoped_search(entry.rtype, entry.query, entry.scope) or entry.query
        elif entry.interaction == "create" and "if-none-exist" in entry.headers:
            # Its condition is a search, and what it finds is answered: the caller's.
            await permit(entry.rtype, "if-none-exist", None, None)
            entry.scope = scopes(entry.rtype) if scopes is not None else None
            self.conditional_search(entry.rtype, entry.headers["if-none-exist"], entry.scope)

    async def _one(self, entry: BundleEntry, base: str) -> dict[str, Any]:
        interaction = entry.interaction
        if interaction == "read":
            assert entry.rid is not None
            resource = await self.read(entry.rtype, entry.rid)
            return {"resource": resource, "response": {"status": _status(200)}}
        if interaction == "search":
            bundle = await self.search(entry.rtype, entry.query, base, scope=entry.scope)
            return {"resource": bundle, "response": {"status": _status(200)}}
        if interaction == "create" and entry.body is not None and not entry.headers:
            spec = self.route(entry.rtype, "create").resource.create
            assert spec is not None and entry.tree is not None
            result = await self._insert(entry.rtype, spec, entry.body, base, tree=entry.tree)
        elif interaction == "create":
            result = await self.create(
                entry.rtype,
                entry.resource,
                base,
                if_none_exist=entry.headers.get("if-none-exist"),
                scope=entry.scope,
            )
        elif interaction == "update":
            assert entry.rid is not None
            if entry.tree is not None:
                self.check_id(entry.rid)
                result = await self._replace(
                    entry.rtype,
                    entry.rid,
                    entry.resource,
                    entry.headers.get("if-match"),
                    entry.tree,
                )
            elif entry.method == "PATCH":
                result = await self.patch(
                    entry.rtype, entry.rid, entry.resource, if_match=entry.headers.get("if-match")
                )
            else:
                result = await self.update(
                    entry.rtype, entry.rid, entry.resource, if_match=entry.headers.get("if-match")
                )
        else:
            assert entry.rid is not None
            await self.delete(entry.rtype, entry.rid)
            return {"response": {"status": _status(204)}}
        out: dict[str, Any] = {"response": {"status": _status(result.status)}}
        if result.location:
            out["response"]["location"] = result.location.removeprefix(base + "/")
        if result.resource is not None:
            out["resource"] = result.resource
        return out

    async def _batch(
        self, raw: list[Any], base: str, permit: Permit, scopes: Scopes | None
    ) -> dict[str, Any]:
        answers: dict[int, dict[str, Any]] = {}
        parsed: list[BundleEntry] = []
        for index, item in enumerate(raw):
            try:
                entry = parse_entry(index, item)
                await self._checked(entry, permit, scopes)
                if entry.interaction == "create" and not entry.headers:
                    _converted(self, entry)
                parsed.append(entry)
            except BadValue as exc:
                answers[index] = _error_entry(UnprocessableEntity(f"{entry.rtype}.{exc}"))
            except FhirError as error:
                answers[index] = _error_entry(error)
        # Creates one legacy call can carry go together (a burst of readings);
        # if that call fails, each entry is tried alone, so one bad entry never
        # sinks the others.
        for group, merged in self._groups(parsed):
            if merged is not None:
                try:
                    for entry, answer in zip(
                        group, await self._create_together(group, merged, base), strict=True
                    ):
                        answers[entry.index] = answer
                    continue
                except OutcomeUnknown as error:
                    # Maybe applied: trying each entry alone could store it twice.
                    for entry in group:
                        answers[entry.index] = _error_entry(error)
                    continue
                except FhirError:
                    pass  # not applied (a fault, or checked): each entry alone
            for entry in group:
                try:
                    answers[entry.index] = await self._one(entry, base)
                except FhirError as error:
                    answers[entry.index] = _error_entry(error)
        for entry in parsed:
            if entry.index not in answers:
                try:
                    answers[entry.index] = await self._one(entry, base)
                except FhirError as error:
                    answers[entry.index] = _error_entry(error)
        entries = [answers[i] for i in range(len(raw))]
        return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}

    async def _transaction(
        self,
        raw: list[Any],
        base: str,
        permit: Permit,
        scopes: Scopes | None,
        vet: Vet | None = None,
    ) -> dict[str, Any]:
        entries = [parse_entry(i, item) for i, item in enumerate(raw)]
        for entry in entries:
            await self._checked(entry, permit, scopes)
            if entry.interaction in ("create", "update") and entry.method != "PATCH":
                try:
                    # Convert now: a value the legacy form cannot take fails the
                    # transaction before anything has been sent.
                    _converted(self, entry)
                except BadValue as exc:
                    raise UnprocessableEntity(
                        f"Bundle.entry[{entry.index}]: {entry.rtype}.{exc}"
                    ) from None
                except FhirError as error:
                    raise type(error)(f"Bundle.entry[{entry.index}]: {error.diagnostics}") from None
        writes = [e for e in entries if e.interaction not in ("read", "search")]
        if vet is not None and writes:
            for entry in entries:
                if entry.interaction == "read":
                    assert entry.rid is not None
                    try:
                        await vet(entry.rtype, entry.rid)
                    except FhirError as error:
                        raise type(error)(
                            f"Bundle.entry[{entry.index}]: {error.diagnostics}"
                        ) from None
        groups = self._groups(entries)
        answers: dict[int, dict[str, Any]] = {}
        applied: list[int] = []
        atomic = len(groups) == 1 and len(writes) == sum(len(g) for g, _ in groups)
        for group, merged in groups:
            try:
                if merged is not None:
                    results = await self._create_together(group, merged, base)
                    for entry, answer in zip(group, results, strict=True):
                        answers[entry.index] = answer
                else:
                    answers[group[0].index] = await self._one(group[0], base)
            except FhirError as error:
                return self._failed(error, entries, group, applied)
            applied.extend(e.index for e in group)
        for entry in entries:
            if entry.index not in answers:
                try:
                    answers[entry.index] = await self._one(entry, base)
                except FhirError as error:
                    return self._failed(error, entries, [entry], applied)
        out = []
        for entry in entries:
            answer = answers[entry.index]
            if writes and not atomic and entry.interaction not in ("read", "search"):
                answer["response"]["outcome"] = operation_outcome(
                    "informational",
                    "Applied by its own legacy call: the legacy systems could not apply this "
                    "transaction atomically.",
                    severity="warning",
                )
            out.append(answer)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}

    def _groups(
        self, entries: list[BundleEntry]
    ) -> list[tuple[list[BundleEntry], dict[str, Any] | None]]:
        """Writes in order, consecutive creates one legacy call can carry grouped together,
        each group with its merged legacy request (None for a group of one)."""
        groups: list[list[BundleEntry]] = []
        for entry in entries:
            if entry.interaction in ("read", "search"):
                continue
            last = groups[-1] if groups else None
            if (
                last is not None
                and entry.interaction == "create"
                and last[0].interaction == "create"
                and entry.rtype == last[0].rtype
                and entry.tree is not None
                and last[0].tree is not None
                and not entry.headers
                and not last[0].headers
                and self._groupable(entry.rtype)
            ):
                last.append(entry)
            else:
                groups.append([entry])
        # A group proves mergeable only with its trees; split those that are not.
        final: list[tuple[list[BundleEntry], dict[str, Any] | None]] = []
        for group in groups:
            merged = self._merged_tree(group) if len(group) > 1 else None
            if len(group) > 1 and merged is None:
                final.extend(([e], None) for e in group)
            else:
                final.append((group, merged))
        return final

    def _groupable(self, rtype: str) -> bool:
        served = self.routes.get(rtype, {}).get("create")
        if served is None:
            return False
        spec = served.resource.create
        return spec is not None and len(spec.steps) == 1 and spec.id is not None

    def _merged_tree(self, group: list[BundleEntry]) -> dict[str, Any] | None:
        served = self.route(group[0].rtype, "create")
        spec = served.resource.create
        assert spec is not None
        element = spec.steps[0].call.template.operation.input
        trees = [entry.tree for entry in group]
        if any(tree is None for tree in trees):
            return None
        if spec.record:
            trees = [{spec.record: [tree]} for tree in trees]
        result: dict[str, Any] | None = _merge(trees, element)
        return result

    async def _create_together(
        self, group: list[BundleEntry], tree: dict[str, Any], base: str
    ) -> list[dict[str, Any]]:
        served = self.route(group[0].rtype, "create")
        spec: CompiledWrite | None = served.resource.create
        assert spec is not None
        ctx = RunContext()

        async def work(session: Session) -> list[str]:
            ctx.steps.clear()
            replies = await run_steps(served.backend, session, spec.steps, ctx, (None, tree))
            assert spec.id is not None
            return [(el.text or "").strip() for reply in replies for el in reply.iterfind(spec.id)]

        deadline = served.backend.deadline()
        try:
            ids = await served.backend.run(work, idempotent=False, deadline=deadline)
        except FAULTS as error:
            self.faulted(served, error)
        except LOST as lost:
            ids = await self._lost_group(group, lost, deadline)
        if len(ids) != len(group):
            raise BackendError("The legacy system did not return one id per record written.")
        answers = []
        for entry, new_id in zip(group, ids, strict=True):
            resource = {k: v for k, v in entry.resource.items() if k != "meta"}
            resource["id"] = new_id
            answers.append(
                {
                    "resource": resource,
                    "response": {"status": _status(201), "location": f"{entry.rtype}/{new_id}"},
                }
            )
        return answers

    async def _lost_group(
        self, group: list[BundleEntry], lost: FhirError, deadline: Deadline
    ) -> list[str]:
        """The ids of a group of creates whose answer was lost, if each was stored."""
        served = self.route(group[0].rtype, "create")
        spec = served.resource.create
        assert spec is not None
        backend = served.backend
        system = served.system.name
        where = ", ".join(f"entry[{e.index}]" for e in group)
        lookup = spec.lookup
        if lookup is None or lookup.id is None:
            backend.stats.ambiguous["unknown"] += 1
            raise OutcomeUnknown(
                f"The legacy system '{system}' may or may not have stored {where}: its answer "
                "was lost and the mapping declares no way to check. Check the legacy system "
                "before retrying; retrying blindly may store them twice."
            )
        if lost.status == 504 and lookup.settle > 0:
            await backend.pause(deadline.cap(lookup.settle))
        found: list[list[Any]] = []
        try:
            for entry in group:
                found.append(
                    await found_records(served, lookup, RunContext(record=entry.tree), deadline)
                )
        except FhirError:
            found = []
        counts = [len(f) for f in found]
        if found and all(c == 0 for c in counts):
            backend.stats.ambiguous["not-applied"] += 1
            raise WriteNotApplied(
                f"The legacy system '{system}' did not store {where}: its answer was lost, and "
                "the gateway checked that they are not there. It is safe to retry."
            )
        if not found or any(c != 1 for c in counts):
            backend.stats.ambiguous["unknown"] += 1
            raise OutcomeUnknown(
                f"The legacy system '{system}' may or may not have stored {where}: its answer "
                "was lost and checking could not tell. Check the legacy system before "
                "retrying; retrying blindly may store them twice."
            )
        backend.stats.ambiguous["applied"] += 1
        return [(f[0].findtext(lookup.id) or "").strip() for f in found]

    def _failed(
        self,
        error: FhirError,
        entries: list[BundleEntry],
        group: list[BundleEntry],
        applied: list[int],
    ) -> dict[str, Any]:
        where = ", ".join(f"entry[{e.index}]" for e in group)
        if not applied:
            # The same error (class, status, issue code, Retry-After), with the entries
            # named: error classes differ in their constructors (MappedFault needs its
            # status and code), so rebuilding one from its message is not an option.
            error.diagnostics = f"The transaction failed at {where}: {error.diagnostics}"
            error.args = (error.diagnostics,)
            raise error from None
        done = ", ".join(f"entry[{i}]" for i in applied)
        raise _PartialTransaction(
            f"The transaction failed at {where}: {error.diagnostics} The legacy systems had "
            f"already applied {done}, which cannot be undone; check them before retrying.",
            status=error.status,
        )


class _PartialTransaction(FhirError):
    """A transaction that failed after part of it was applied."""

    code = "incomplete"

    def __init__(self, diagnostics: str, *, status: int) -> None:
        super().__init__(diagnostics)
        self.status = status
