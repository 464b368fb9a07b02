"""The orchestrator: FHIR interactions in, SOAP calls out, through compiled mappings.

This is the only module that imports both `fhir/` and `soap/` (through
`mapping/`). It holds no per-client state: everything a later page needs
travels in its sealed paging token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bridge import __version__
from bridge.errors import (
    InvalidRequest,
    MappedFault,
    MappingError,
    MethodNotAllowed,
    NotFound,
    Problem,
    SessionLimitReached,
    UnknownResourceType,
    UnmappedFault,
)
from bridge.fhir.bundle import search_url, searchset
from bridge.fhir.capability import ResourceCapability, capability_statement
from bridge.fhir.paging import PageState, PageTokens
from bridge.fhir.search import SearchQuery, parse_search
from bridge.mapping.compiled import CompiledResource, CompiledSearch, CompiledSystem
from bridge.mapping.runner import BadValue, Criterion, NoMatch, build_resource, search_values
from bridge.soap.backend import Backend
from bridge.soap.envelope import EnvelopeValueError, Value
from bridge.soap.pool import Session, SessionPool
from bridge.soap.transport import AiohttpTransport, Transport
from bridge.soap.xml import SoapFault

__all__ = ["Gateway", "Served"]

log = logging.getLogger("bridge.gateway")
_FHIR_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class Served:
    """A resource type, the mapping that serves it and the backend it calls."""

    resource: CompiledResource
    system: CompiledSystem
    backend: Backend


@dataclass
class _Page:
    records: list[etree._Element]
    total: int | None
    more: bool
    hint: tuple[str, str, int] | None


def _default_transport(system: CompiledSystem) -> Transport:
    return AiohttpTransport(
        connect_timeout=system.connect_timeout, max_connections=system.max_connections
    )


class Gateway:
    def __init__(
        self,
        systems: Sequence[CompiledSystem],
        *,
        page_tokens: PageTokens,
        default_count: int = 20,
        max_count: int = 200,
        transport_factory: Callable[[CompiledSystem], Transport] = _default_transport,
        started: str = "",
    ) -> None:
        self.page_tokens = page_tokens
        self.default_count = default_count
        self.max_count = max_count
        self.started = started
        self.systems = list(systems)
        self.backends: dict[str, Backend] = {}
        self.served: dict[str, Served] = {}
        problems: list[Problem] = []
        for system in systems:
            backend = Backend(
                name=system.name,
                endpoint=system.endpoint,
                transport=transport_factory(system),
                pool=SessionPool(
                    max_size=system.max_sessions,
                    idle_timeout=system.idle_timeout,
                    wait_timeout=system.wait_timeout,
                ),
                style=system.session,
                fault_code_path=system.fault_code_path,
                timeout=system.timeout,
            )
            self.backends[system.name] = backend
            for rtype, resource in system.resources.items():
                other = self.served.get(rtype)
                if other is not None:
                    problems.append(
                        Problem(
                            resource.file,
                            1,
                            1,
                            f"resource '{rtype}' is already served by system "
                            f"'{other.system.name}' ({other.resource.file}); "
                            "a gateway serves each resource type from one system",
                        )
                    )
                    continue
                self.served[rtype] = Served(resource, system, backend)
        if problems:
            raise MappingError(problems)

    # -- lookup and errors ---------------------------------------------------

    def _served(self, rtype: str) -> Served:
        served = self.served.get(rtype)
        if served is None:
            raise UnknownResourceType(f"This server does not serve '{rtype}' resources.")
        return served

    @asynccontextmanager
    async def _faults(self, served: Served) -> AsyncIterator[None]:
        """Translate legacy faults through the system's declared fault table."""
        try:
            yield
        except SoapFault as fault:
            rule = served.system.faults.get(fault.vendor_code or "")
            if rule is not None:
                diagnostics = rule.diagnostics or f"The legacy system reported {fault.vendor_code}."
                raise MappedFault(
                    rule.status, rule.issue, diagnostics, retry_after=rule.retry_after
                ) from None
            if fault.vendor_code in served.system.session.limit_codes:
                raise SessionLimitReached() from None
            log.warning(
                "unmapped fault from %s.%s: code=%s vendor=%s",
                served.system.name,
                fault.operation,
                fault.fault_code,
                fault.vendor_code,
            )
            raise UnmappedFault() from None
        except EnvelopeValueError as exc:
            raise InvalidRequest("A value contains characters XML cannot carry.") from exc

    # -- metadata --------------------------------------------------------------

    def capability(self, base: str, security: dict[str, Any] | None = None) -> dict[str, Any]:
        caps = []
        for rtype, served in self.served.items():
            r = served.resource
            interactions = []
            if r.read is not None:
                interactions.append("read")
            params: tuple[tuple[str, str, str], ...] = ()
            if r.search is not None:
                interactions.append("search-type")
                params = tuple((p.name, p.type, p.description) for p in r.search.params.values())
            caps.append(
                ResourceCapability(
                    type=rtype,
                    interactions=tuple(interactions),
                    search_params=params,
                    profiles=r.profiles,
                    documentation=r.description,
                )
            )
        return capability_statement(
            base, caps, version=__version__, date=self.started, security=security
        )

    # -- read ------------------------------------------------------------------

    async def read(self, rtype: str, rid: str) -> dict[str, Any]:
        served = self._served(rtype)
        read = served.resource.read
        if read is None:
            raise MethodNotAllowed(f"'{rtype}' resources cannot be read by id here.")
        if not rid or len(rid) > 64 or not set(rid) <= _FHIR_ID_CHARS:
            raise InvalidRequest("A resource id is 1-64 letters, digits, '-' or '.'.")
        if read.id_pattern is not None and not read.id_pattern.search(rid):
            raise NotFound(f"{rtype}/{rid} is not known.")
        values = read.call.request({"id": rid})
        backend = served.backend

        async def work(session: Session) -> etree._Element:
            return await backend.call(session, read.call.template, values)

        async with self._faults(served):
            reply = await backend.run(work)
        record = reply.find(read.record)
        if record is None:
            raise NotFound(f"{rtype}/{rid} is not known.")
        return build_resource(served.resource, record)

    # -- search ----------------------------------------------------------------

    def _declared(self, search: CompiledSearch) -> dict[str, str]:
        return {name: p.type for name, p in search.params.items()}

    def _search_spec(self, rtype: str) -> tuple[Served, CompiledSearch]:
        served = self._served(rtype)
        if served.resource.search is None:
            raise MethodNotAllowed(f"'{rtype}' resources cannot be searched here.")
        return served, served.resource.search

    async def search(
        self, rtype: str, items: Sequence[tuple[str, str]], base: str, *, strict: bool = False
    ) -> dict[str, Any]:
        served, search = self._search_spec(rtype)
        default = search.paging.page_size or self.default_count
        query = parse_search(
            items,
            self._declared(search),
            strict=strict,
            default_count=min(default, self.max_count),
            max_count=self.max_count,
        )
        state = PageState(rtype, query.canonical, 0, query.count)
        return await self._page(served, search, query, state, base)

    async def next_page(self, rtype: str, token: str, base: str) -> dict[str, Any]:
        state = self.page_tokens.open(token)
        if state.resource != rtype:
            raise InvalidRequest("The paging link belongs to another resource type.")
        served, search = self._search_spec(rtype)
        query = parse_search(
            state.params,
            self._declared(search),
            strict=True,
            default_count=state.count,
            max_count=self.max_count,
        )
        query.count = state.count
        return await self._page(served, search, query, state, base, token=token)

    async def _page(
        self,
        served: Served,
        search: CompiledSearch,
        query: SearchQuery,
        state: PageState,
        base: str,
        token: str | None = None,
    ) -> dict[str, Any]:
        rtype = served.resource.type
        params = list(query.canonical)
        self_params = [*params, ("_count", str(query.count))]
        self_url = (
            f"{base}/{rtype}?_page={token}" if token else search_url(base, rtype, self_params)
        )
        criteria = {name: Criterion(name, v.value, v.system) for name, v in query.values.items()}
        try:
            values = search_values(search, criteria)
        except NoMatch:
            return searchset(base, [], total=0, self_url=self_url, next_url=None)
        except BadValue as exc:
            raise InvalidRequest(str(exc)) from None
        if query.count == 0:
            # _count=0: only the total is wanted; the first page carries it.
            page = await self._fetch(served, search, values, 0, 1, None)
            return searchset(base, [], total=page.total, self_url=self_url, next_url=None)
        page = await self._fetch(served, search, values, state.offset, query.count, state.hint)
        resources = [build_resource(served.resource, r) for r in page.records]
        next_url = None
        if page.more:
            nxt = PageState(rtype, params, state.offset + query.count, query.count, page.hint)
            next_url = f"{base}/{rtype}?_page={self.page_tokens.seal(nxt)}"
        return searchset(base, resources, total=page.total, self_url=self_url, next_url=next_url)

    async def _fetch(
        self,
        served: Served,
        search: CompiledSearch,
        values: dict[str, Value],
        offset: int,
        count: int,
        hint: tuple[str, str, int] | None,
    ) -> _Page:
        backend = served.backend
        paging = search.paging

        async def first(session: Session) -> tuple[etree._Element, int]:
            return await backend.call(session, search.call.template, values), 0

        async def resume(session: Session) -> tuple[etree._Element, int] | None:
            # Continue a legacy cursor this session still holds at the right place.
            if hint is None or paging.next is None or session.key != hint[0]:
                return None
            if session.cursors.get(hint[1]) != offset or hint[2] != offset:
                return None
            session.cursors.pop(hint[1], None)
            try:
                reply = await backend.call(
                    session, paging.next.template, paging.next.request({"cursor": hint[1]})
                )
            except SoapFault as fault:
                if fault.vendor_code in paging.invalid_cursor_codes:
                    return None
                raise
            return reply, offset

        async def work(session: Session) -> _Page:
            started = await resume(session) or await first(session)
            reply, position = started
            collected: list[etree._Element] = []
            total: int | None = None
            cursor: str | None = None
            while True:
                records = reply.findall(search.records)
                if search.total is not None:
                    text = reply.findtext(search.total)
                    if text and text.strip().isdigit():
                        total = int(text)
                if paging.style == "cursor" and paging.cursor is not None:
                    cursor = (reply.findtext(paging.cursor) or "").strip() or None
                start = max(offset - position, 0)
                collected.extend(records[start : start + count - len(collected)])
                position += len(records)
                if len(collected) >= count or cursor is None or not records:
                    break
                assert paging.next is not None
                reply = await backend.call(
                    session, paging.next.template, paging.next.request({"cursor": cursor})
                )
            end = offset + count
            if total is not None:
                more = end < total
            else:
                more = position > end or cursor is not None
            next_hint = None
            if cursor is not None:
                session.remember_cursor(cursor, position)
                next_hint = (session.key, cursor, position)
            return _Page(collected, total, more, next_hint)

        # With paging style "none" the first answer holds every match and the
        # slicing above pages it; with cursors, only what the page needs is fetched.
        async with self._faults(served):
            return await backend.run(work, prefer=hint[0] if hint else None)

    # -- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
