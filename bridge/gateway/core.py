"""The orchestrator: FHIR interactions in, SOAP calls out, through compiled mappings.

The gateway package is the only code that sees both `fhir/` and `soap/`
(through `mapping/`). It holds no per-client state: everything a later page
needs travels in its sealed paging token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

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
from bridge.fhir.capability import ResourceCapability, capability_statement
from bridge.fhir.ids import is_fhir_id
from bridge.fhir.paging import PageTokens
from bridge.gateway.steps import run_steps
from bridge.mapping.compiled import CompiledResource, CompiledSystem, RunContext
from bridge.mapping.runner import build_resource
from bridge.soap.backend import Backend
from bridge.soap.breaker import CircuitBreaker
from bridge.soap.envelope import EnvelopeValueError
from bridge.soap.http import HttpTransport
from bridge.soap.pool import Session, SessionPool
from bridge.soap.retry import RetryPolicy
from bridge.soap.tls import client_context
from bridge.soap.transport import Transport
from bridge.soap.xml import SoapFault

__all__ = ["FAULTS", "INTERACTIONS", "GatewayCore", "Served"]

# What a legacy call can raise that `GatewayCore.faulted` translates for the client.
FAULTS = (SoapFault, EnvelopeValueError)

log = logging.getLogger("bridge.gateway")
INTERACTIONS = ("read", "search", "create", "update", "delete")


@dataclass(frozen=True)
class Served:
    """One interaction on a resource type, the mapping that serves it and its backend."""

    resource: CompiledResource
    system: CompiledSystem
    backend: Backend


def _default_transport(system: CompiledSystem) -> Transport:
    return HttpTransport(
        connect_timeout=system.connect_timeout,
        max_connections=system.max_connections,
        ssl_context=client_context(system.tls) if system.tls is not None else None,
    )


def _has(resource: CompiledResource, interaction: str) -> bool:
    return {
        "read": resource.read is not None,
        "search": resource.search is not None,
        "create": resource.create is not None,
        "update": bool(resource.update),
        "delete": resource.delete is not None,
    }[interaction]


class GatewayCore:
    def __init__(
        self,
        systems: Sequence[CompiledSystem],
        *,
        page_tokens: PageTokens,
        default_count: int = 20,
        max_count: int = 200,
        transport_factory: Callable[[CompiledSystem], Transport] = _default_transport,
        started: str = "",
        reuse: Mapping[str, Backend] | None = None,
    ) -> None:
        self.page_tokens = page_tokens
        self.default_count = default_count
        self.max_count = max_count
        self.started = started
        self.systems = list(systems)
        self.backends: dict[str, Backend] = {}
        # resource type -> interaction -> what serves it. Each (type, interaction)
        # has one owner: a hospital may read lab results from the lab system and
        # write device readings to the EHR, but never one interaction from two.
        self.routes: dict[str, dict[str, Served]] = {}
        problems: list[Problem] = []
        for system in systems:
            kept = (reuse or {}).get(system.name)
            if kept is not None and kept.fingerprint == system.fingerprint:
                self.backends[system.name] = kept
                self._route(system, kept, problems)
                continue
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
                body_errors=system.body_errors,
                breaker=CircuitBreaker(
                    failures=system.breaker_failures, cooldown=system.breaker_cooldown
                ),
                policy=RetryPolicy(
                    retries=system.retries,
                    backoff_base=system.backoff_base,
                    backoff_cap=system.backoff_cap,
                    deadline=system.deadline,
                ),
            )
            backend.fingerprint = system.fingerprint
            self.backends[system.name] = backend
            self._route(system, backend, problems)
        if problems:
            raise MappingError(problems)

    def _route(self, system: CompiledSystem, backend: Backend, problems: list[Problem]) -> None:
        for rtype, resource in system.resources.items():
            routes = self.routes.setdefault(rtype, {})
            for interaction in INTERACTIONS:
                if not _has(resource, interaction):
                    continue
                other = routes.get(interaction)
                if other is not None:
                    problems.append(
                        Problem(
                            resource.file,
                            1,
                            1,
                            f"resource '{rtype}' {interaction} is already served by system "
                            f"'{other.system.name}' ({other.resource.file}); a gateway serves "
                            "each interaction of a resource type from one system",
                        )
                    )
                    continue
                routes[interaction] = Served(resource, system, backend)
            for name in resource.operations:
                key = f"${name}"
                taken = routes.get(key)
                if taken is not None:
                    problems.append(
                        Problem(
                            resource.file,
                            1,
                            1,
                            f"operation {rtype}/${name} is already served by system "
                            f"'{taken.system.name}' ({taken.resource.file})",
                        )
                    )
                    continue
                routes[key] = Served(resource, system, backend)

    # -- lookup and errors ---------------------------------------------------

    @property
    def served(self) -> dict[str, Served]:
        """One entry per resource type (its first interaction), for listings."""
        return {rtype: next(iter(r.values())) for rtype, r in self.routes.items() if r}

    def route(self, rtype: str, interaction: str) -> Served:
        routes = self.routes.get(rtype)
        if not routes:
            raise UnknownResourceType(f"This server does not serve '{rtype}' resources.")
        served = routes.get(interaction)
        if served is None:
            verb = {"search": "searched", "read": "read by id"}.get(interaction, interaction + "d")
            raise MethodNotAllowed(f"'{rtype}' resources cannot be {verb} here.")
        return served

    def builder(self, rtype: str) -> CompiledResource | None:
        """The mapping that builds `rtype` resources from legacy records."""
        routes = self.routes.get(rtype, {})
        for interaction in ("search", "read", "create", "update"):
            if interaction in routes:
                return routes[interaction].resource
        return None

    def faulted(self, served: Served, error: SoapFault | EnvelopeValueError) -> NoReturn:
        """Raise what a legacy fault (or a value no envelope can carry) means to the
        client, through the system's declared fault table. Called in an `except
        FAULTS` clause around a legacy call: a plain `try` costs nothing until a fault
        comes, where a context manager costs ~1 µs a request."""
        if isinstance(error, EnvelopeValueError):
            raise InvalidRequest("A value contains characters XML cannot carry.") from error
        rule = served.system.faults.get(error.vendor_code or "")
        if rule is not None:
            diagnostics = rule.diagnostics or f"The legacy system reported {error.vendor_code}."
            raise MappedFault(
                rule.status,
                rule.issue,
                diagnostics,
                retry_after=rule.retry_after,
                empty_search=rule.empty_search,
            ) from None
        if error.vendor_code in served.system.session.limit_codes:
            raise SessionLimitReached() from None
        log.warning(
            "unmapped fault from %s.%s: code=%s vendor=%s",
            served.system.name,
            error.operation,
            error.fault_code,
            error.vendor_code,
        )
        raise UnmappedFault() from None

    # -- metadata --------------------------------------------------------------

    def capability(self, base: str, security: dict[str, Any] | None = None) -> dict[str, Any]:
        caps = []
        for rtype, routes in self.routes.items():
            interactions: list[str] = []
            params: tuple[tuple[str, str, str], ...] = ()
            profiles: tuple[str, ...] = ()
            documentation = ""
            includes: list[str] = []
            for interaction in INTERACTIONS:
                served = routes.get(interaction)
                if served is None:
                    continue
                r = served.resource
                profiles = profiles or r.profiles
                documentation = documentation or r.description
                code = "search-type" if interaction == "search" else interaction
                interactions.append(code)
                if interaction == "search" and r.search is not None:
                    params = tuple(
                        (p.name, p.type, p.description) for p in r.search.params.values()
                    )
                    includes = [f"{rtype}:{name}" for name in r.search.include]
            revincludes = self.revinclude_targets(rtype) if "search" in routes else []
            create = routes["create"].resource.create if "create" in routes else None
            operations = [
                {"name": key[1:], "definition": f"{base}/OperationDefinition/{rtype}-{key[1:]}"}
                for key in routes
                if key.startswith("$")
            ]
            caps.append(
                ResourceCapability(
                    type=rtype,
                    interactions=tuple(interactions),
                    search_params=params,
                    profiles=profiles,
                    documentation=documentation,
                    extra={
                        **({"searchInclude": includes} if includes else {}),
                        **({"searchRevInclude": revincludes} if revincludes else {}),
                        **({"operation": operations} if operations else {}),
                        # If-None-Exist is honoured where the mapping names its parameters.
                        **(
                            {"conditionalCreate": bool(create.conditional)}
                            if create is not None
                            else {}
                        ),
                    },
                )
            )
        return capability_statement(
            base, caps, version=__version__, date=self.started, security=security
        )

    def revinclude_targets(self, rtype: str) -> list[str]:
        """`Type:param` values `_revinclude` accepts for `rtype`."""
        out = []
        for other, routes in sorted(self.routes.items()):
            served = routes.get("search")
            if served is None or served.resource.search is None:
                continue
            for name, p in served.resource.search.params.items():
                if p.type == "reference" and p.target == rtype:
                    out.append(f"{other}:{name}")
        return out

    # -- read ------------------------------------------------------------------

    def check_id(self, rid: str) -> None:
        if not is_fhir_id(rid):
            raise InvalidRequest("A resource id is 1-64 letters, digits, '-' or '.'.")

    async def read(self, rtype: str, rid: str) -> dict[str, Any]:
        served = self.route(rtype, "read")
        read = served.resource.read
        assert read is not None
        self.check_id(rid)
        if read.id_pattern is not None and not read.id_pattern.search(rid):
            raise NotFound(f"{rtype}/{rid} is not known.")
        backend = served.backend
        ctx = RunContext(values={"id": rid})

        async def work(session: Session) -> etree._Element | None:
            ctx.steps.clear()
            replies = await run_steps(backend, session, read.steps, ctx)
            for reply in replies:
                if read.match is None:
                    record = reply.find(read.record)
                    if record is not None:
                        return record
                    continue
                for record in reply.iterfind(read.record):
                    if (record.findtext(read.match) or "").strip() == rid:
                        return record
            return None

        try:
            record = await backend.run(work)
        except FAULTS as error:
            self.faulted(served, error)
        if record is None:
            raise NotFound(f"{rtype}/{rid} is not known.")
        return build_resource(served.resource, record, ctx)

    # -- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
