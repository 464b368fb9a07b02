"""SOAP envelopes rendered from the WSDL's element tree, without zeep per call.

`EnvelopeTemplate` is built once per operation at start-up; `render` fills it
with escaped values. Tests prove the result equals what zeep builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.soap.wsdl import ElementInfo, OperationInfo

__all__ = ["EnvelopeTemplate", "EnvelopeValueError", "HeaderTemplate", "Value", "escape_text"]

Value = str | Sequence[str] | None

# A bare \r would be normalised away by the receiving parser; &#13; keeps it.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


class EnvelopeValueError(ValueError):
    """A value that XML 1.0 cannot carry (control characters)."""


def _is_xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


def escape_text(value: str) -> str:
    if not value.isprintable() and not all(_is_xml_char(c) for c in value):
        raise EnvelopeValueError("value contains characters XML cannot carry")
    return value.translate(_ESCAPES)


class _Prefixes:
    def __init__(self) -> None:
        self.by_ns: dict[str, str] = {}

    def tag(self, qname: str) -> str:
        if not qname.startswith("{"):
            return qname
        ns, local = qname[1:].split("}", 1)
        prefix = self.by_ns.setdefault(ns, f"ns{len(self.by_ns)}")
        return f"{prefix}:{local}"

    def declarations(self) -> str:
        return "".join(f' xmlns:{p}="{ns}"' for ns, p in self.by_ns.items())


def _render(el: ElementInfo, values: Mapping[str, Value], prefix: str, px: _Prefixes) -> str:
    """Render `el` from values keyed by slash paths relative to the operation element."""
    parts: list[str] = []
    for child in el.children:
        key = f"{prefix}{child.name}"
        tag = px.tag(child.qname)
        if child.is_complex and child.children:
            inner = _render(child, values, key + "/", px)
            if inner:
                parts.append(f"<{tag}>{inner}</{tag}>")
            continue
        value = values.get(key)
        if value is None:
            continue
        items = [value] if isinstance(value, str) else list(value)
        for item in items:
            parts.append(f"<{tag}>{escape_text(item)}</{tag}>")
    return "".join(parts)


@dataclass(frozen=True)
class HeaderTemplate:
    """A SOAP header element whose one child path carries a session token."""

    element: ElementInfo
    token_path: str

    def render(self, token: str, px: _Prefixes) -> str:
        tag = px.tag(self.element.qname)
        return f"<{tag}>{_render(self.element, {self.token_path: token}, '', px)}</{tag}>"


class EnvelopeTemplate:
    def __init__(self, operation: OperationInfo) -> None:
        self.operation = operation
        self.content_type = (
            f'application/soap+xml; charset=utf-8; action="{operation.soap_action}"'
            if operation.soap_version == "1.2"
            else "text/xml; charset=utf-8"
        )
        self.http_headers = {"Content-Type": self.content_type}
        if operation.soap_version == "1.1":
            self.http_headers["SOAPAction"] = f'"{operation.soap_action}"'

    def render(
        self,
        values: Mapping[str, Value],
        header: HeaderTemplate | None = None,
        token: str | None = None,
    ) -> bytes:
        px = _Prefixes()
        env = px.tag("{" + self.operation.envelope_ns + "}Envelope").split(":")[0]
        body_tag = px.tag(self.operation.input.qname)
        body = _render(self.operation.input, values, "", px)
        head = ""
        if header is not None and token is not None:
            head = f"<{env}:Header>{header.render(token, px)}</{env}:Header>"
        inner = f"<{body_tag}>{body}</{body_tag}>" if body else f"<{body_tag}/>"
        return (
            f"<?xml version='1.0' encoding='utf-8'?>\n"
            f"<{env}:Envelope{px.declarations()}>{head}<{env}:Body>{inner}</{env}:Body>"
            f"</{env}:Envelope>"
        ).encode()
