"""`bridge explain`: the SOAP envelopes a FHIR request turns into.

The request runs through the real gateway code. By default the transport is a
dry run: nothing is sent, logins answer with a stand-in token, and every other
call answers with an empty response (so later steps that need earlier answers
show their placeholders as absent). With `--against URL` the envelopes go to
a live system and the FHIR result is printed too. Session tokens, passwords,
nonces and digests are always redacted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from lxml import etree

from bridge.errors import ConfigError, FhirError, InvalidRequest, Problem
from bridge.fhir.paging import PageTokens
from bridge.gateway import Gateway
from bridge.mapping.compiled import CompiledSystem
from bridge.soap.transport import AiohttpTransport, SoapRequest, SoapResponse, Transport

__all__ = ["Recorded", "explain"]

_REDACT = [
    (re.compile(rb"(<[\w:]*Password[^>]*>)[^<]*(</)"), rb"\1***\2"),
    (re.compile(rb"(<[\w:]*Nonce[^>]*>)[^<]*(</)"), rb"\1***\2"),
]


@dataclass
class Recorded:
    operation: str
    url: str
    envelope: bytes


@dataclass
class _Recorder:
    inner: Transport | None
    system: CompiledSystem
    calls: list[Recorded] = field(default_factory=list)

    async def send(self, request: SoapRequest) -> SoapResponse:
        self.calls.append(Recorded(request.operation, request.url, request.body))
        if self.inner is not None:
            return await self.inner.send(request)
        cookies = {self.system.session.cookie: "***"} if self.system.session.cookie else {}
        return SoapResponse(200, self._dry_answer(request.operation), cookies=cookies)

    def _dry_answer(self, operation: str) -> bytes:
        op = self.system.wsdl.operations[operation]
        env = op.envelope_ns
        root = etree.Element(f"{{{env}}}Envelope")
        body = etree.SubElement(root, f"{{{env}}}Body")
        answer = etree.SubElement(body, op.output.qname)
        style = self.system.session
        if style.login is not None and operation == style.login.operation.name and style.token_path:
            node = answer
            for step in style.token_path.split("/"):
                node = etree.SubElement(node, step)
            node.text = "***"
        return bytes(etree.tostring(root))

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


def _pretty(envelope: bytes, secrets: list[str]) -> str:
    for pattern, repl in _REDACT:
        envelope = pattern.sub(repl, envelope)
    for secret in secrets:
        if secret:
            envelope = envelope.replace(secret.encode(), b"***")
    try:
        tree = etree.fromstring(envelope, etree.XMLParser(remove_blank_text=True))
        return etree.tostring(tree, pretty_print=True, encoding="unicode")
    except etree.XMLSyntaxError:
        return envelope.decode(errors="replace")


async def _run(
    gateway: Gateway, method: str, path: str, query: str, body: Any, base: str
) -> tuple[int, Any]:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["fhir"]:
        parts = parts[1:]
    items = parse_qsl(query, keep_blank_values=True)
    if not parts:
        raise InvalidRequest("Give a path like /fhir/Patient/123 or /fhir/Patient?family=x.")
    rtype = parts[0]
    if parts[-1].startswith("$") and len(parts) in (2, 3):
        rid = parts[1] if len(parts) == 3 else None
        return 200, await gateway.operation(rtype, parts[-1][1:], rid, items, body)
    if method == "GET" and len(parts) == 1:
        return 200, await gateway.search(rtype, items, base)
    if method == "GET" and len(parts) == 2:
        return 200, await gateway.read(rtype, parts[1])
    if method == "POST" and len(parts) == 2 and parts[1] == "_search":
        return 200, await gateway.search(rtype, items, base)
    if method == "POST" and len(parts) == 1:
        result = await gateway.create(rtype, body, base)
        return result.status, result.resource
    if method == "PUT" and len(parts) == 2:
        result = await gateway.update(rtype, parts[1], body)
        return result.status, result.resource
    if method == "PATCH" and len(parts) == 2:
        result = await gateway.patch(rtype, parts[1], body)
        return result.status, result.resource
    if method == "DELETE" and len(parts) == 2:
        await gateway.delete(rtype, parts[1])
        return 204, None
    raise InvalidRequest(f"'{method} {path}' is not a FHIR interaction explain knows.")


def explain(
    request: str,
    systems: list[CompiledSystem],
    *,
    body: Any = None,
    against: str | None = None,
    base: str = "http://localhost/fhir",
) -> tuple[list[str], str | None]:
    """Return (one printable block per SOAP call, the FHIR result when live)."""
    method, _, target = request.strip().partition(" ")
    url = urlsplit(target.strip())
    recorders: dict[str, _Recorder] = {}

    def transport(system: CompiledSystem) -> Transport:
        inner = None
        if against is not None:
            inner = AiohttpTransport(connect_timeout=system.connect_timeout, max_connections=4)
        recorder = _Recorder(inner, system)
        recorders[system.name] = recorder
        return recorder

    if against is not None:
        systems = [_with_endpoint(s, against) for s in systems]
    else:
        # A dry run cannot pass a login check on an empty answer: skip it.
        import dataclasses

        systems = [
            dataclasses.replace(s, session=dataclasses.replace(s.session, login_check=None))
            for s in systems
        ]
    gateway = Gateway(systems, page_tokens=PageTokens(b"explain"), transport_factory=transport)
    result: str | None = None
    tokens: list[str] = []  # live session tokens, redacted from what is shown

    async def go() -> None:
        nonlocal result
        try:
            status, answer = await _run(gateway, method.upper(), url.path, url.query, body, base)
            if against is not None:
                result = (
                    f"HTTP {status}\n" + orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
                )
        except FhirError as exc:
            nothing_sent = not any(r.calls for r in recorders.values())
            if against is None and (isinstance(exc, InvalidRequest) or nothing_sent):
                raise  # the request itself is wrong: say so, like the gateway would
            if against is not None:
                result = f"HTTP {exc.status}: {exc.diagnostics}"
            else:
                result = (
                    f"(dry run stopped: {exc.diagnostics} Later calls need real answers: "
                    "use --against URL.)"
                )
        finally:
            count = {name: len(r.calls) for name, r in recorders.items()}
            for backend in gateway.backends.values():
                tokens.extend(s.token or "" for s in backend.pool._sessions.values())
            await gateway.close()
            for name, recorder in recorders.items():
                del recorder.calls[count[name] :]  # the shutdown's logouts are not the request's

    asyncio.run(go())
    blocks = []
    for name, recorder in recorders.items():
        backend = gateway.backends[name]
        secrets = [str(v) for v in backend.style.login_values.values()]
        if backend.style.credentials is not None:
            secrets += [backend.style.credentials[3]]
        secrets += tokens
        for call in recorder.calls:
            login = backend.style.login
            if login is not None and call.operation == login.operation.name:
                blocks.append(
                    f"# {name}: {call.operation} (opens the session; credentials redacted)"
                )
                continue
            text = _pretty(call.envelope, secrets)
            blocks.append(f"# {name}: {call.operation} -> {call.url}\n{text}")
    return blocks, result


def _with_endpoint(system: CompiledSystem, base: str) -> CompiledSystem:
    import dataclasses

    path = urlsplit(system.endpoint).path
    return dataclasses.replace(system, endpoint=base.rstrip("/") + path)


def load_body(path: Path | None) -> Mapping[str, Any] | list[Any] | None:
    """The JSON body given with `--body`; ConfigError names the file when it is not one."""
    if path is None:
        return None
    fix = "give --body a file holding the request body as FHIR JSON"
    try:
        data: Any = orjson.loads(path.read_bytes())
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            [Problem(str(path), 1, 1, f"cannot read file: {reason}; {fix}")]
        ) from None
    except orjson.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg}; {fix}"
        raise ConfigError([Problem(str(path), exc.lineno, exc.colno, message)]) from None
    return data  # type: ignore[no-any-return]
