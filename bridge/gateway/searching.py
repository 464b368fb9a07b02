"""The search interaction: parameters, filters, includes, Bundle and paging links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bridge.errors import Forbidden, InvalidRequest, MappedFault
from bridge.fhir.bundle import search_url, searchset
from bridge.fhir.compartment import patient_compartment
from bridge.fhir.filter import matches
from bridge.fhir.paging import PageState
from bridge.fhir.search import ParamSpec, SearchQuery, SearchValue, parse_search
from bridge.gateway.core import FAULTS, GatewayCore, Served
from bridge.gateway.search import fetch_page
from bridge.mapping.compiled import CompiledParam, CompiledSearch, RunContext
from bridge.mapping.runner import BadValue, Criterion, NoMatch, build_resource, search_values

__all__ = ["SearchInteractions", "SearchScope"]

_RESULT_PARAMS = ("_include", "_revinclude")


@dataclass(frozen=True)
class SearchScope:
    """What the caller may see of a search; the gateway applies it before it pages.

    `patient`: every result must be in this patient's compartment. A search that
    names another patient is refused (403) before any legacy call; one that names
    none is narrowed to this patient where the mapping has an optional parameter
    for it (a required one left out stays a 400).
    `keep`: whether one resource found may be answered. It is applied as records
    are read, so pages, `next` links and totals count only what it keeps.

        scope = SearchScope(patient=token_patient, keep=rules.allows)
        bundle = await gateway.search(rtype, items, base, scope=scope)
    """

    patient: str | None = None
    keep: Callable[[dict[str, Any]], bool] | None = None


def _about_patient(
    rtype: str, search: CompiledSearch, param: CompiledParam, value: SearchValue, own: str
) -> str | None:
    """Whether a search value names the patient `own` ("own"), another ("other"), or
    no patient although the parameter is about one ("none"); None: not about a patient.
    The patient is the owner of FHIR's patient compartment (its `code`, the type)."""
    owner = patient_compartment().code
    if param.type == "reference" and param.target == owner:
        head, _, tail = value.value.rpartition("/")
        if head and head.rsplit("/", 1)[-1] != owner:
            return "none"  # another type: the runner finds nothing (NoMatch)
        return "own" if tail == own else "other"
    if rtype != owner:
        return None
    if param.name == "_id":
        return "own" if value.value == own else "other"
    ids = search.params.get("_id")
    if ids is None or param.key != ids.key:
        return None
    # A parameter that sends the legacy system what `_id` sends (an MRN) names a
    # patient: the values sent say which.
    try:
        theirs = search_values(
            search, {param.name: [Criterion(param.name, value.value, value.system, value.prefix)]}
        )
    except NoMatch:
        return "none"  # another identifier system: the runner finds nothing
    except BadValue:
        return None  # the search itself answers 400
    try:
        mine = search_values(search, {ids.name: [Criterion(ids.name, own)]})
    except (NoMatch, BadValue):
        mine = {}
    return "own" if theirs == mine else "other"


def _specs(search: CompiledSearch) -> dict[str, ParamSpec]:
    specs = {}
    for name, p in search.params.items():
        prefixes = frozenset({"eq"})
        if p.type in ("date", "number"):
            prefixes = p.prefixes or frozenset({"eq"})
            if {"ge", "le"} <= prefixes:
                prefixes = prefixes | {"eq"}  # a day is both bounds of an inclusive range
            if p.fhir is not None:
                prefixes = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap"})
        specs[name] = ParamSpec(p.type, prefixes, full_date=p.pushed, filtered=p.fhir is not None)
    return specs


class SearchInteractions(GatewayCore):
    async def _revincluded(
        self, rtype: str, values: list[str], resources: list[dict[str, Any]], base: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for value in values:
            other, _, name = value.partition(":")
            for resource in resources:
                bundle = await self.search(other, [(name, f"{rtype}/{resource['id']}")], base)
                out.extend(e["resource"] for e in bundle.get("entry", []))
        return out

    def _query(
        self, search: CompiledSearch, items: Sequence[tuple[str, str]], *, strict: bool
    ) -> tuple[SearchQuery, list[str]]:
        includes = [v for k, v in items if k in ("_include", "_revinclude")]
        rest = [(k, v) for k, v in items if k not in _RESULT_PARAMS]
        default = search.paging.page_size or self.default_count
        query = parse_search(
            rest,
            _specs(search),
            strict=strict,
            default_count=min(default, self.max_count),
            max_count=self.max_count,
        )
        missing = [n for n, p in search.params.items() if p.required and n not in query.values]
        if missing:
            raise InvalidRequest(f"This search needs the parameter {', '.join(missing)}.")
        return query, includes

    def scoped_search(
        self, rtype: str, items: Sequence[tuple[str, str]], scope: SearchScope | None
    ) -> list[tuple[str, str]] | None:
        """The search as it will run for `scope`, checked before any legacy call.

        400 for a malformed search. With a patient in `scope`: 403 when the search
        names another patient (the answer must not tell what that patient has),
        and narrowed to the scope's patient where the mapping has an optional
        parameter for it. None: nothing of `rtype` can be in a patient's
        compartment, so there is nothing to search for.
        """
        served = self.route(rtype, "search")
        search = served.resource.search
        assert search is not None
        query, _ = self._query(search, items, strict=False)
        self._extras(rtype, search, items)
        if scope is None or scope.patient is None:
            return list(items)
        patient = scope.patient
        compartment = patient_compartment()
        if rtype not in compartment.members:
            return None
        named = [
            (name, about)
            for name, values in query.all.items()
            for value in values
            if (about := _about_patient(rtype, search, search.params[name], value, patient))
        ]
        others = [name for name, about in named if about == "other"]
        if others:
            raise Forbidden(
                f"{others[0]}: this access token may search its own patient's data only "
                f"({compartment.code}/{patient}), not another patient's."
            )
        if named:
            return list(items)
        for name, param in search.params.items():
            if param.required:
                continue
            if param.type == "reference" and param.target == compartment.code:
                return [*items, (name, f"{compartment.code}/{patient}")]
            if rtype == compartment.code and name == "_id":
                return [*items, (name, patient)]
        return list(items)  # no way to narrow it: `keep` leaves out the rest

    def _extras(
        self, rtype: str, search: CompiledSearch, items: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """The search's _include and _revinclude, each checked (400 else)."""
        extra = []
        for key, value in items:
            if key == "_include":
                self._include_target(rtype, search, value)
                extra.append((key, value))
            elif key == "_revinclude":
                known = self.revinclude_targets(rtype)
                if value not in known:
                    raise InvalidRequest(
                        f"_revinclude={value} is not supported; supported: "
                        f"{', '.join(known) or 'none'}."
                    )
                extra.append((key, value))
        return extra

    async def search(
        self,
        rtype: str,
        items: Sequence[tuple[str, str]],
        base: str,
        *,
        strict: bool = False,
        scope: SearchScope | None = None,
    ) -> dict[str, Any]:
        served = self.route(rtype, "search")
        search = served.resource.search
        assert search is not None
        nothing = False
        if scope is not None and scope.patient is not None:
            confined = self.scoped_search(rtype, items, scope)
            nothing = confined is None
            items = confined if confined is not None else items
        query, includes = self._query(search, items, strict=strict)
        extra = self._extras(rtype, search, items)
        state = PageState(rtype, [*query.canonical, *extra], 0, query.count)
        if nothing:
            return searchset(base, [], total=0, self_url=_self_url(base, state), next_url=None)
        keep = scope.keep if scope is not None else None
        return await self._page(served, search, query, includes, state, base, keep=keep)

    async def next_page(
        self, rtype: str, token: str, base: str, *, scope: SearchScope | None = None
    ) -> dict[str, Any]:
        state = self.page_tokens.open(token)
        if state.resource != rtype:
            raise InvalidRequest("The paging link belongs to another resource type.")
        served = self.route(rtype, "search")
        search = served.resource.search
        assert search is not None
        if scope is not None and scope.patient is not None:
            # Links are not tied to a token: one made for someone else's search is
            # checked as that search would be.
            confined = self.scoped_search(rtype, state.params, scope)
            if confined is None:
                self_url = f"{base}/{rtype}?_page={token}"
                return searchset(base, [], total=0, self_url=self_url, next_url=None)
            if confined != list(state.params):
                raise Forbidden(
                    "This paging link is for a search beyond the access token's own "
                    "patient; search again with this token."
                )
        query, _ = self._query(search, state.params, strict=True)
        query.count = state.count
        keep = scope.keep if scope is not None else None
        return await self._page(served, search, query, [], state, base, token=token, keep=keep)

    def _include_target(self, rtype: str, search: CompiledSearch, value: str) -> str:
        source, _, name = value.partition(":")
        inc = search.include.get(name)
        if source != rtype or inc is None:
            known = ", ".join(f"{rtype}:{n}" for n in search.include) or "none"
            raise InvalidRequest(f"_include={value} is not supported; supported: {known}.")
        return name

    async def _page(
        self,
        served: Served,
        search: CompiledSearch,
        query: SearchQuery,
        includes: list[str],
        state: PageState,
        base: str,
        token: str | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        rtype = served.resource.type
        params = list(state.params)
        self_url = f"{base}/{rtype}?_page={token}" if token else _self_url(base, state)
        criteria = {
            name: [Criterion(name, v.value, v.system, v.prefix) for v in values]
            for name, values in query.all.items()
        }
        try:
            values = search_values(search, criteria)
        except NoMatch:
            return searchset(base, [], total=0, self_url=self_url, next_url=None)
        except BadValue as exc:
            raise InvalidRequest(str(exc)) from None
        filters = [
            (p.fhir, p.type, v)
            for name, p in search.params.items()
            if p.fhir is not None
            for v in query.all.get(name, [])
        ]
        resource_map = served.resource
        seen_ctx: list[RunContext] = []

        seen_ids: set[str] = set()

        def accept(record: etree._Element, ctx: RunContext) -> dict[str, Any] | None:
            if not seen_ctx:
                seen_ctx.append(ctx)
            resource = build_resource(resource_map, record, ctx)
            rid = str(resource.get("id", ""))
            if rid and rid in seen_ids:
                return None  # a search never answers one resource twice
            seen_ids.add(rid)
            for path, kind, wanted in filters:
                if not matches(resource, [s.name for s in path], kind, wanted):
                    return None
            if keep is not None and not keep(resource):
                return None
            return resource

        count = max(query.count, 1)
        filtered = bool(filters) or keep is not None
        try:
            try:
                page = await fetch_page(
                    served.backend,
                    search,
                    values,
                    state.offset,
                    count,
                    state.hint,
                    accept,
                    filtered=filtered,
                )
                next_position, hint = page.next_position, page.hint
                if keep is not None and next_position is not None and query.count > 0:
                    next_position, hint = await self._kept_ahead(
                        served, search, values, next_position, hint, accept
                    )
            except FAULTS as error:
                self.faulted(served, error)
        except MappedFault as fault:
            if not fault.empty_search:
                raise
            return searchset(base, [], total=0, self_url=self_url, next_url=None)
        resources = page.resources if query.count > 0 else []
        ctx = seen_ctx[0] if seen_ctx else RunContext(values=values)
        forward = [v for k, v in state.params if k == "_include"]
        backward = [v for k, v in state.params if k == "_revinclude"]
        included = self._included(search, forward, page.records, ctx) if resources else []
        if backward and resources:
            included += await self._revincluded(rtype, backward, resources, base)
        next_url = None
        if next_position is not None and query.count > 0:
            nxt = PageState(rtype, params, next_position, query.count, hint)
            next_url = f"{base}/{rtype}?_page={self.page_tokens.seal(nxt)}"
        return searchset(
            base,
            resources,
            total=page.total,
            self_url=self_url,
            next_url=next_url,
            included=included,
        )

    async def _kept_ahead(
        self,
        served: Served,
        search: CompiledSearch,
        values: dict[str, str],
        position: int,
        hint: tuple[str, str, int] | None,
        accept: Callable[[etree._Element, RunContext], dict[str, Any] | None],
    ) -> tuple[int | None, tuple[str, str, int] | None]:
        """Where the next page starts, if anything past `position` is kept.

        The legacy system having more records says nothing the caller may know: a
        `next` link on that alone would tell that someone else's records follow.
        One record is looked for (within the scan limit of a page)."""
        if search.paging.style == "none":
            return position, hint  # one answer held every match: the position is a kept one
        ahead = await fetch_page(
            served.backend, search, values, position, 1, hint, accept, filtered=True
        )
        if ahead.resources:
            return position, None  # the look moved the legacy cursor on: the next page replays
        return ahead.next_position, ahead.hint

    def _included(
        self,
        search: CompiledSearch,
        includes: list[str],
        records: list[etree._Element],
        ctx: RunContext,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for value in includes:
            inc = search.include[value.partition(":")[2]]
            builder = self.builder(inc.resource)
            if builder is None:
                continue
            for record in records:
                for nested in record.iterfind(inc.each):
                    resource = build_resource(builder, nested, ctx)
                    key = (resource.get("resourceType", ""), str(resource.get("id", "")))
                    if key not in seen:
                        seen.add(key)
                        out.append(resource)
        return out


def _self_url(base: str, state: PageState) -> str:
    return search_url(base, state.resource, [*state.params, ("_count", str(state.count))])
