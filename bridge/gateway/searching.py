"""The search interaction: parameters, filters, includes, Bundle and paging links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lxml import etree

from bridge.errors import InvalidRequest, MappedFault
from bridge.fhir.bundle import search_url, searchset
from bridge.fhir.filter import matches
from bridge.fhir.paging import PageState
from bridge.fhir.search import ParamSpec, SearchQuery, parse_search
from bridge.gateway.core import FAULTS, GatewayCore, Served
from bridge.gateway.search import fetch_page
from bridge.mapping.compiled import CompiledSearch, RunContext
from bridge.mapping.runner import BadValue, Criterion, NoMatch, build_resource, search_values

__all__ = ["SearchInteractions"]

_RESULT_PARAMS = ("_include", "_revinclude")


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

    async def search(
        self, rtype: str, items: Sequence[tuple[str, str]], base: str, *, strict: bool = False
    ) -> dict[str, Any]:
        served = self.route(rtype, "search")
        search = served.resource.search
        assert search is not None
        query, includes = self._query(search, items, strict=strict)
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
        state = PageState(rtype, [*query.canonical, *extra], 0, query.count)
        return await self._page(served, search, query, includes, state, base)

    async def next_page(self, rtype: str, token: str, base: str) -> dict[str, Any]:
        state = self.page_tokens.open(token)
        if state.resource != rtype:
            raise InvalidRequest("The paging link belongs to another resource type.")
        served = self.route(rtype, "search")
        search = served.resource.search
        assert search is not None
        query, _ = self._query(search, state.params, strict=True)
        query.count = state.count
        return await self._page(served, search, query, [], state, base, token=token)

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
    ) -> dict[str, Any]:
        rtype = served.resource.type
        params = list(state.params)
        self_params = [*params, ("_count", str(query.count))]
        self_url = (
            f"{base}/{rtype}?_page={token}" if token else search_url(base, rtype, self_params)
        )
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
            return resource

        count = max(query.count, 1)
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
                    filtered=bool(filters),
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
        if page.next_position is not None and query.count > 0:
            nxt = PageState(rtype, params, page.next_position, query.count, page.hint)
            next_url = f"{base}/{rtype}?_page={self.page_tokens.seal(nxt)}"
        return searchset(
            base,
            resources,
            total=page.total,
            self_url=self_url,
            next_url=next_url,
            included=included,
        )

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
