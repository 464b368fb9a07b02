"""What a WSDL says, read once at start-up with zeep.

zeep is the authority on the WSDL: operations, SOAP version and action, and
the element tree of every request and response. The per-request path never
touches zeep; it uses the plain `OperationInfo` records built here.

With a cache folder, what zeep read is kept there as JSON, with the SHA-256 of
every document zeep loaded for it (the WSDL and each schema it imports or
includes). A later start whose documents, zeep, lxml, Python and this module
are unchanged takes the records from the cache and never imports zeep: ~12 MB
less memory per process and ~0.1 s less start-up. It hashes every recorded
document again and follows each import and include as zeep would (symbolic
links included): a schema link pointed at a new release is read again. A WSDL
that loads anything over the network is never cached. Only this user's own
entries, in a folder nobody else may write to, are trusted. A cache that cannot
be read, written or decoded is passed over, never an error: the WSDL is then
read with zeep, as without a cache. A write drops the entries of WSDLs that are
gone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from bridge.errors import Problem

__all__ = ["ElementInfo", "OperationInfo", "ServiceDescription", "WsdlError", "load_wsdl"]

log = logging.getLogger(__name__)

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
_MAX_DEPTH = 12


@dataclass(frozen=True)
class ElementInfo:
    """One element of a message: its qualified name, cardinality and children."""

    name: str
    qname: str  # Clark notation: {namespace}local
    min_occurs: int
    max_occurs: int | None  # None: unbounded
    type_name: str
    children: tuple[ElementInfo, ...] = ()
    is_complex: bool = False

    @property
    def repeats(self) -> bool:
        return self.max_occurs is None or self.max_occurs > 1

    def child(self, name: str) -> ElementInfo | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class OperationInfo:
    name: str
    soap_action: str
    soap_version: str  # "1.1" or "1.2"
    input: ElementInfo
    output: ElementInfo
    headers: tuple[ElementInfo, ...] = ()

    @property
    def envelope_ns(self) -> str:
        return SOAP12_ENV if self.soap_version == "1.2" else SOAP11_ENV


@dataclass
class ServiceDescription:
    path: Path
    operations: dict[str, OperationInfo] = field(default_factory=dict)
    elements: dict[str, ElementInfo] = field(default_factory=dict)
    address: str | None = None


class WsdlError(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def _element(name: str, el: Any, depth: int) -> ElementInfo:
    qname = el.qname.text if el.qname is not None else name
    max_occurs = el.max_occurs
    typ = el.type
    children: tuple[ElementInfo, ...] = ()
    is_complex = hasattr(typ, "elements") and hasattr(typ, "attributes")
    if is_complex and depth < _MAX_DEPTH:
        children = tuple(_element(n, e, depth + 1) for n, e in typ.elements)
    type_name = getattr(getattr(typ, "qname", None), "localname", None) or type(typ).__name__
    return ElementInfo(
        name=name,
        qname=qname,
        min_occurs=int(el.min_occurs),
        max_occurs=None if max_occurs == "unbounded" else int(max_occurs),
        type_name=str(type_name),
        children=children,
        is_complex=is_complex,
    )


def load_wsdl(
    path: Path, display: str | None = None, cache_dir: Path | None = None
) -> ServiceDescription:
    """Read a WSDL from a local file. Raises WsdlError naming the file on failure.

    With `cache_dir`, a description cached there for the same documents is used
    instead of zeep, and a description read with zeep is cached there."""
    shown = display or str(path)
    if not path.is_file():
        raise WsdlError(Problem(shown, 1, 1, "WSDL file not found"))
    entry = _entry(cache_dir, path) if cache_dir is not None and _own(cache_dir) else None
    if entry is not None:
        cached = _from_cache(entry, path)
        if cached is not None:
            return cached
    desc, documents = _read(path, shown)
    if entry is not None and documents is not None:
        _to_cache(entry, desc, documents)
    return desc


def _read(path: Path, shown: str) -> tuple[ServiceDescription, list[tuple[str, bytes]] | None]:
    """The description as zeep reads it, and each local document zeep loaded for it:
    the location as zeep loaded it, and what it read (None when it loaded any over
    the network: such a description is not cached)."""
    import zeep  # imported here: start-up cost only for processes that read WSDLs
    from zeep.exceptions import Error as ZeepError
    from zeep.wsdl import Document

    documents: list[tuple[str, bytes]] | None = []
    first = True

    class _Recording(zeep.Transport):
        def load(self, url: str) -> bytes:
            nonlocal documents, first
            content: bytes = super().load(url)  # type: ignore[no-untyped-call]
            _check_document(url, content, is_wsdl=first)
            first = False
            if documents is not None and not urlsplit(url).scheme:
                documents.append((url, content))
            else:
                documents = None
            return content

    try:
        settings = zeep.Settings(strict=False, forbid_dtd=True)
        doc = Document(str(path.resolve()), _Recording(), settings=settings)  # type: ignore[no-untyped-call, arg-type]
    except _NotWsdl as exc:
        raise WsdlError(Problem(shown, 1, 1, str(exc))) from exc
    except (ZeepError, OSError, ValueError, NotImplementedError) as exc:
        # NotImplementedError: what zeep does not support, e.g. an include without a location
        raise WsdlError(Problem(shown, 1, 1, f"cannot read WSDL: {exc}")) from exc

    desc = ServiceDescription(path=path)
    for service in doc.services.values():
        for port in service.ports.values():
            binding = port.binding
            version = "1.2" if type(binding).__name__.startswith("Soap12") else "1.1"
            desc.address = desc.address or port.binding_options.get("address")
            for name, op in binding._operations.items():
                if name in desc.operations or op.input.body is None or op.output.body is None:
                    continue
                headers: tuple[ElementInfo, ...] = ()
                if op.input.header is not None:
                    headers = tuple(_element(n, e, 0) for n, e in op.input.header.type.elements)
                desc.operations[name] = OperationInfo(
                    name=name,
                    soap_action=op.soapaction or "",
                    soap_version=version,
                    input=_element(name, op.input.body, 0),
                    output=_element(op.output.body.name, op.output.body, 0),
                    headers=headers,
                )
    for el in doc.types.elements:
        if not hasattr(el, "max_occurs"):
            continue  # zeep lists the XML Schema's own 'schema' element here
        local = etree.QName(el.qname).localname
        desc.elements.setdefault(local, _element(local, el, 0))
    if not any(service.ports for service in doc.services.values()):
        # Only a <service>'s ports give operations a binding and an address.
        raise WsdlError(Problem(shown, 1, 1, _NO_SERVICE))
    return desc, documents


_FIX = "save the service's WSDL in its place (often served at its address with ?wsdl)"
_NO_SERVICE = (
    "the WSDL has no <service> with a <port>, so it offers no operations; use the WSDL "
    "that describes the service itself, with <wsdl:service> and <soap:address>"
)
# zeep parses with `strict=False`, libxml2's recover mode, and fails on what nothing
# can be recovered from (plain text, random bytes) with an AttributeError. The same
# parse here names the document first.
_RECOVERING = etree.XMLParser(
    recover=True, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
)


class _NotWsdl(Exception):
    """A document loaded for a WSDL that is not XML, or a WSDL that is not one."""


def _check_document(location: str, content: bytes, is_wsdl: bool) -> None:
    try:
        root = etree.fromstring(content, parser=_RECOVERING)
    except etree.XMLSyntaxError:  # an empty document
        root = None
    if root is None and is_wsdl:
        raise _NotWsdl(f"not a WSDL: the file is not an XML document; {_FIX}")
    if root is None:
        raise _NotWsdl(f"cannot read WSDL: {location}, which it imports, is not an XML document")
    if is_wsdl and root.tag != f"{{{_WSDL}}}definitions":
        name = etree.QName(root).localname
        raise _NotWsdl(f"not a WSDL: its root element is <{name}>, not <wsdl:definitions>; {_FIX}")


# -- the cache ------------------------------------------------------------------

_FORMAT = 1


_ENTRY_HEX = 32  # an entry's name: this many hex digits of its WSDL's path, then .json


def _entry(cache_dir: Path, path: Path) -> Path:
    """The cache file of one WSDL: named by its absolute path."""
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:_ENTRY_HEX]
    return cache_dir / f"{name}.json"


def _is_entry(name: str) -> bool:
    """Whether a file in the cache folder is named as `_entry` names one."""
    stem, _, suffix = name.partition(".")
    hexdigits = "0123456789abcdef"
    return suffix == "json" and len(stem) == _ENTRY_HEX and all(c in hexdigits for c in stem)


@functools.cache
def _reader_stamp() -> str:
    """What a cached description depends on besides the documents: this module's
    code, the installed zeep (its wheel's RECORD, which lists a hash of every file;
    found, not imported), lxml and Python."""
    zeep_stamp = "-"
    spec = importlib.util.find_spec("zeep")
    if spec is not None and spec.origin:
        package = Path(spec.origin).parent
        records = sorted(package.parent.glob("zeep-*.dist-info/RECORD"))
        if records:
            zeep_stamp = hashlib.sha256(records[-1].read_bytes()).hexdigest()
        else:  # not installed from a wheel: its own entry point, as installed
            st = os.stat(spec.origin)
            zeep_stamp = f"{spec.origin}:{st.st_size}:{st.st_mtime_ns}"
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    lxml = ".".join(map(str, etree.LXML_VERSION))
    return f"{_FORMAT}:{code}:{zeep_stamp}:{lxml}:{sys.version_info[0]}.{sys.version_info[1]}"


def _own(folder: Path) -> bool:
    """Whether `folder` may hold the cache: absent (it will be made for this user
    alone), or a folder of this user that nobody else may write to."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return True
    log.warning("WSDL cache %s is not a folder of this user's own: not used", folder)
    return False


def _read_own(entry: Path) -> bytes | None:
    """An entry's bytes if it is a regular file of this user's own that nobody else
    may write; None otherwise. Never follows a link, never blocks (on a FIFO, say)."""
    fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            # Another user could have written it, e.g. to point the gateway at an
            # address of theirs: only this user's own entries count.
            log.warning("WSDL cache entry %s is not this user's own: passed over", entry)
            return None
        return file.read()


_XSD = "http://www.w3.org/2001/XMLSchema"
_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_REFERENCES = (f"{{{_XSD}}}import", f"{{{_XSD}}}include", f"{{{_XSD}}}redefine")
_WSDL_IMPORT = f"{{{_WSDL}}}import"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _references(location: str, content: bytes) -> list[str]:
    """What the document zeep loaded from `location` imports or includes, each
    where zeep would load it from (zeep.loader.absolute_location): an absolute
    location or a URL as written, a relative one joined to the document's own
    location with symbolic links resolved. A link pointed elsewhere since the
    description was cached changes this list."""
    found = []
    root = etree.fromstring(content, parser=_PARSER)
    for el in root.iter(*_REFERENCES, _WSDL_IMPORT):
        named = el.get("location" if el.tag == _WSDL_IMPORT else "schemaLocation")
        if not named or named == location or urlsplit(named).scheme or os.path.isabs(named):
            found.append(named or "")
        else:
            found.append(os.path.realpath(os.path.join(os.path.dirname(location), named)))
    return found


def _from_cache(entry: Path, path: Path) -> ServiceDescription | None:
    try:
        raw = _read_own(entry)
        if raw is None:
            return None
        data = json.loads(raw)
        documents = data["documents"]
        if data["reader"] != _reader_stamp() or documents[0][0] != str(path.resolve()):
            return None
        for location, digest, references in documents:
            # Read where zeep would read it (through any link), as zeep would parse it.
            content = Path(location).read_bytes()
            if hashlib.sha256(content).hexdigest() != digest:
                return None  # the WSDL or a schema it loads has changed
            if _references(location, content) != references:
                return None  # an import added or dropped, or a link pointed elsewhere
        service = data["service"]
        return ServiceDescription(
            path=path,
            operations={o["name"]: _decode_operation(o) for o in service["operations"]},
            elements={k: _decode_element(v) for k, v in service["elements"].items()},
            address=service["address"],
        )
    except FileNotFoundError:
        return None
    except Exception as exc:  # whatever is wrong with the cache, zeep reads the WSDL
        log.debug("WSDL cache entry %s passed over: %s", entry, type(exc).__name__)
        return None


def _to_cache(entry: Path, desc: ServiceDescription, documents: list[tuple[str, bytes]]) -> None:
    try:
        recorded = {}
        for location, content in documents:
            digest = hashlib.sha256(content).hexdigest()
            recorded[(location, digest)] = [location, digest, _references(location, content)]
        data = {
            "reader": _reader_stamp(),
            "documents": list(recorded.values()),  # the WSDL first
            "service": {
                "address": desc.address,
                "operations": [_encode_operation(o) for o in desc.operations.values()],
                "elements": {k: _encode_element(v) for k, v in desc.elements.items()},
            },
        }
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _own(entry.parent):  # made by someone else meanwhile
            return
        # Written whole, then renamed: a reader never sees half an entry.
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".wsdl-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(data, separators=(",", ":")).encode())
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except Exception as exc:  # a read-only or full disk: the next start reads with zeep
        log.debug("WSDL cache not written to %s: %s", entry.parent, type(exc).__name__)
        return
    _prune(entry.parent)


_LEFTOVER_SECONDS = 3600


def _prune(folder: Path) -> None:
    """Drop the entries of WSDLs that are gone (a checkout deleted, a system moved)
    and temporary files a crashed writer left; after a write, so on cold starts only."""
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        entry = folder / name
        try:
            if name.startswith(".wsdl-") and name.endswith(".tmp"):
                if now - entry.lstat().st_mtime > _LEFTOVER_SECONDS:
                    entry.unlink()
            elif _is_entry(name):
                raw = _read_own(entry)
                wsdl = json.loads(raw)["documents"][0][0] if raw is not None else None
                if isinstance(wsdl, str):
                    try:
                        os.stat(wsdl)
                    except FileNotFoundError:  # gone, not merely out of sight
                        entry.unlink()
        except Exception:  # noqa: S112 - another process's entry, or unreadable: left alone
            continue


def _encode_element(e: ElementInfo) -> dict[str, Any]:
    return {
        "name": e.name,
        "qname": e.qname,
        "min": e.min_occurs,
        "max": e.max_occurs,
        "type": e.type_name,
        "complex": e.is_complex,
        "children": [_encode_element(c) for c in e.children],
    }


def _decode_element(d: dict[str, Any]) -> ElementInfo:
    return ElementInfo(
        name=str(d["name"]),
        qname=str(d["qname"]),
        min_occurs=int(d["min"]),
        max_occurs=None if d["max"] is None else int(d["max"]),
        type_name=str(d["type"]),
        children=tuple(_decode_element(c) for c in d["children"]),
        is_complex=bool(d["complex"]),
    )


def _encode_operation(o: OperationInfo) -> dict[str, Any]:
    return {
        "name": o.name,
        "action": o.soap_action,
        "version": o.soap_version,
        "input": _encode_element(o.input),
        "output": _encode_element(o.output),
        "headers": [_encode_element(h) for h in o.headers],
    }


def _decode_operation(d: dict[str, Any]) -> OperationInfo:
    return OperationInfo(
        name=str(d["name"]),
        soap_action=str(d["action"]),
        soap_version=str(d["version"]),
        input=_decode_element(d["input"]),
        output=_decode_element(d["output"]),
        headers=tuple(_decode_element(h) for h in d["headers"]),
    )
