"""The WSDL cache: a warm start reads no WSDL with zeep, and never a stale one."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import Settings
from bridge.soap import wsdl as wsdl_module
from bridge.soap.wsdl import ServiceDescription, load_wsdl

EHR_WSDL = Path("wsdl/hospital/ehr.wsdl")

WSDL = """<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:t" xmlns:ty="urn:types"
    targetNamespace="urn:t" name="T">
  <wsdl:types>
    <xs:schema targetNamespace="urn:t">
      <xs:import namespace="urn:types" schemaLocation="@@LOCATION@@"/>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="EchoIn"><wsdl:part name="parameters" element="ty:Echo"/></wsdl:message>
  <wsdl:message name="EchoOut">
    <wsdl:part name="parameters" element="ty:EchoResponse"/>
  </wsdl:message>
  <wsdl:portType name="P">
    <wsdl:operation name="Echo">
      <wsdl:input message="tns:EchoIn"/><wsdl:output message="tns:EchoOut"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="B" type="tns:P">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Echo">
      <soap:operation soapAction="urn:t/Echo"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="S">
    <wsdl:port name="Port" binding="tns:B">
      <soap:address location="http://127.0.0.1:9/t"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""

TYPES = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:types"
    elementFormDefault="qualified">
  <xs:element name="Echo"><xs:complexType><xs:sequence>
    <xs:element name="Text" type="xs:string"/>@@EXTRA@@
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="EchoResponse"><xs:complexType><xs:sequence>
    <xs:element name="Text" type="xs:string" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
"""

EXTRA = '\n    <xs:element name="Extra" type="xs:int" minOccurs="0"/>'


def _service(folder: Path, location: str = "types.xsd", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "types.xsd").write_text(TYPES.replace("@@EXTRA@@", extra))
    path = folder / "service.wsdl"
    path.write_text(WSDL.replace("@@LOCATION@@", location))
    return path


def _no_zeep(path: Path, shown: str) -> tuple[ServiceDescription, list[Path] | None]:
    raise AssertionError("read with zeep, not from the cache")


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


def test_a_warm_load_equals_what_zeep_reads_and_does_not_use_zeep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    fresh = load_wsdl(EHR_WSDL)
    assert load_wsdl(EHR_WSDL, cache_dir=cache) == fresh
    assert len(_entries(cache)) == 1
    monkeypatch.setattr(wsdl_module, "_read", _no_zeep)
    warm = load_wsdl(EHR_WSDL, cache_dir=cache)
    assert warm == fresh
    assert warm.operations["GetPatient"].output.child("Patient") is not None


def test_an_imported_schema_is_recorded_and_a_change_to_it_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = _service(tmp_path / "svc")
    first = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in first.operations["Echo"].input.children] == ["Text"]
    (entry,) = _entries(cache)
    recorded = [Path(name).name for name, _, _ in json.loads(entry.read_text())["documents"]]
    assert recorded == ["service.wsdl", "types.xsd"]

    _service(tmp_path / "svc", extra=EXTRA)  # the schema changes, the WSDL does not
    second = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in second.operations["Echo"].input.children] == ["Text", "Extra"]
    assert second == load_wsdl(path)

    monkeypatch.setattr(wsdl_module, "_read", _no_zeep)
    assert load_wsdl(path, cache_dir=cache) == second  # cached again, as changed


def test_a_changed_wsdl_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "ehr.wsdl"
    path.write_bytes(EHR_WSDL.read_bytes())
    before = load_wsdl(path, cache_dir=cache)
    path.write_text(EHR_WSDL.read_text().replace('soapAction="', 'soapAction="v2/'))
    after = load_wsdl(path, cache_dir=cache)
    assert after.operations["GetPatient"].soap_action.startswith("v2/")
    assert after.operations["GetPatient"].soap_action != before.operations["GetPatient"].soap_action


def test_a_symbolic_link_pointed_elsewhere_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = tmp_path / "svc"
    _service(folder)
    (folder / "types.xsd").rename(folder / "v1.xsd")
    (folder / "v2.xsd").write_text(TYPES.replace("@@EXTRA@@", EXTRA))
    (folder / "types.xsd").symlink_to("v1.xsd")
    path = folder / "service.wsdl"
    assert [c.name for c in load_wsdl(path, cache_dir=cache).operations["Echo"].input.children] == [
        "Text"
    ]
    (folder / "types.xsd").unlink()
    (folder / "types.xsd").symlink_to("v2.xsd")  # the "current release" link moves on
    warm = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in warm.operations["Echo"].input.children] == ["Text", "Extra"]
    assert warm == load_wsdl(path)


def test_a_schema_folder_swapped_by_a_link_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _service(tmp_path / "r1", location="schemas/types.xsd")
    (tmp_path / "r1" / "schemas").mkdir()
    (tmp_path / "r1" / "types.xsd").rename(tmp_path / "r1" / "schemas" / "types.xsd")
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "types.xsd").write_text(TYPES.replace("@@EXTRA@@", EXTRA))
    path = tmp_path / "r1" / "service.wsdl"
    (tmp_path / "r1" / "schemas").rename(tmp_path / "r1-schemas")
    (tmp_path / "r1" / "schemas").symlink_to(tmp_path / "r1-schemas")
    assert len(load_wsdl(path, cache_dir=cache).operations["Echo"].input.children) == 1
    (tmp_path / "r1" / "schemas").unlink()
    (tmp_path / "r1" / "schemas").symlink_to(tmp_path / "r2")
    assert len(load_wsdl(path, cache_dir=cache).operations["Echo"].input.children) == 2


def test_entries_of_wsdls_that_are_gone_are_pruned_on_the_next_write(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gone = _service(tmp_path / "old-checkout")
    load_wsdl(gone, cache_dir=cache)
    (old,) = _entries(cache)
    leftover = cache / ".wsdl-crashed.tmp"
    leftover.write_text("{")
    os.utime(leftover, (1, 1))  # long ago
    fresh = cache / ".wsdl-writing.tmp"
    fresh.write_text("{")  # another process writing now
    for file in (tmp_path / "old-checkout").iterdir():
        file.unlink()
    load_wsdl(EHR_WSDL, cache_dir=cache)  # a cold load writes, then prunes
    assert not old.exists() and not leftover.exists()
    assert fresh.exists()
    assert len(_entries(cache)) == 1


def _part(name: str, extra: str = "") -> str:
    """A schema of urn:types defining one element `name` (Text, and `extra`)."""
    return TYPES.replace(
        TYPES[TYPES.index("  <xs:element") : TYPES.index("</xs:schema>")],
        f'  <xs:element name="{name}"><xs:complexType><xs:sequence>\n'
        f'    <xs:element name="Text" type="xs:string"/>{extra}\n'
        "  </xs:sequence></xs:complexType></xs:element>\n",
    )


def _including(*locations: str) -> str:
    """A schema of urn:types that includes `locations` and defines EchoResponse."""
    includes = "".join(f'<xs:include schemaLocation="{loc}"/>' for loc in locations)
    return _part("EchoResponse").replace("<xs:element", includes + "<xs:element", 1)


@pytest.mark.filterwarnings("ignore:The wsdl:")  # zeep, on the release without Echo
def test_a_link_pointed_at_a_schema_already_recorded_is_read_again(tmp_path: Path) -> None:
    # Both releases are loaded (as "current" and "next"); "current" moves on to "next".
    cache = tmp_path / "cache"
    folder = tmp_path / "svc"
    path = _service(folder)
    (folder / "types.xsd").write_text(_including("current.xsd", "next.xsd"))
    (folder / "echo-1.xsd").write_text(_part("Echo"))
    (folder / "echo-2.xsd").write_text(_part("EchoNext", EXTRA))
    (folder / "current.xsd").symlink_to("echo-1.xsd")
    (folder / "next.xsd").symlink_to("echo-2.xsd")
    assert "Echo" in load_wsdl(path, cache_dir=cache).elements
    (folder / "current.xsd").unlink()
    (folder / "current.xsd").symlink_to("echo-2.xsd")
    with pytest.raises(KeyError):  # no Echo any more: zeep drops the operation
        _ = load_wsdl(path).operations["Echo"]
    assert load_wsdl(path, cache_dir=cache) == load_wsdl(path)


def test_an_absolute_location_through_links_resolves_as_zeep_does(tmp_path: Path) -> None:
    # zeep keeps an absolute location as written: the schema's own relative includes
    # are then found beside the link, not beside its target.
    cache = tmp_path / "cache"
    schemas = tmp_path / "schemas"
    for release, extra in (("v1", ""), ("v2", EXTRA)):
        (schemas / release).mkdir(parents=True)
        (schemas / release / "types.xsd").write_text(_including("common.xsd"))
        (schemas / release / "common.xsd").write_text(_part("Echo", extra))
    (schemas / "types.xsd").symlink_to("v1/types.xsd")
    (schemas / "common.xsd").symlink_to("v1/common.xsd")
    path = _service(tmp_path / "svc", location=str(schemas / "types.xsd"))
    first = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in first.operations["Echo"].input.children] == ["Text"]
    (schemas / "common.xsd").unlink()
    (schemas / "common.xsd").symlink_to("v2/common.xsd")  # a patch release of one file
    warm = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in warm.operations["Echo"].input.children] == ["Text", "Extra"]
    assert warm == load_wsdl(path)


def test_an_include_without_a_location_is_a_wsdl_error(tmp_path: Path) -> None:
    path = _service(tmp_path / "svc")
    path.write_text(path.read_text().replace('schemaLocation="types.xsd"', ""))
    path.write_text(path.read_text().replace("<xs:import", "<xs:include"))
    with pytest.raises(wsdl_module.WsdlError, match="cannot read WSDL"):
        load_wsdl(path, cache_dir=tmp_path / "cache")


def test_a_deleted_import_is_an_error_even_with_a_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = _service(tmp_path / "svc")
    load_wsdl(path, cache_dir=cache)
    (tmp_path / "svc" / "types.xsd").unlink()
    with pytest.raises(wsdl_module.WsdlError, match="cannot read WSDL"):
        load_wsdl(path, cache_dir=cache)


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"reader": 1}',
        b"\xff\xfe",
        b"[" * 200_000,  # deeper than the JSON parser goes
    ],
)
def test_a_damaged_entry_is_passed_over_and_written_anew(tmp_path: Path, damage: bytes) -> None:
    cache = tmp_path / "cache"
    fresh = load_wsdl(EHR_WSDL, cache_dir=cache)
    (entry,) = _entries(cache)
    entry.write_bytes(damage)
    assert load_wsdl(EHR_WSDL, cache_dir=cache) == fresh
    assert json.loads(entry.read_bytes())["service"]["operations"]


def _warm(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A cache holding the EHR's WSDL: the folder, its one entry and what it holds."""
    cache = tmp_path / "cache"
    load_wsdl(EHR_WSDL, cache_dir=cache)
    (entry,) = _entries(cache)
    return cache, entry, json.loads(entry.read_text())


def test_an_entry_of_another_reader_is_not_used(tmp_path: Path) -> None:
    cache, entry, data = _warm(tmp_path)
    data["reader"] = "0:older-code:older-zeep"
    data["service"]["operations"] = []
    entry.write_text(json.dumps(data))
    assert "GetPatient" in load_wsdl(EHR_WSDL, cache_dir=cache).operations


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d["service"]["operations"][0]["input"].update(max=float("inf")),
        lambda d: d["service"].update(elements=[]),
        lambda d: d["documents"].append(["/nonexistent/x.xsd", "0", []]),
    ],
    ids=["infinite", "wrong-shape", "missing-document"],
)
def test_an_entry_that_decodes_badly_is_passed_over(
    tmp_path: Path, spoil: Callable[[dict[str, Any]], None]
) -> None:
    cache, entry, data = _warm(tmp_path)
    spoil(data)
    entry.write_text(json.dumps(data))
    assert load_wsdl(EHR_WSDL, cache_dir=cache) == load_wsdl(EHR_WSDL)


def test_an_element_nested_too_deep_to_decode_is_passed_over(tmp_path: Path) -> None:
    cache, entry, data = _warm(tmp_path)
    leaf = '{"name":"x","qname":"x","min":1,"max":1,"type":"t","complex":true,"children":['
    deep = leaf * 5_000 + "]}" * 5_000  # within JSON's nesting, past the decoder's recursion
    data["service"]["operations"][0]["input"] = "@@DEEP@@"
    entry.write_text(json.dumps(data).replace('"@@DEEP@@"', deep))
    assert load_wsdl(EHR_WSDL, cache_dir=cache) == load_wsdl(EHR_WSDL)


def test_a_fifo_in_place_of_an_entry_does_not_block(tmp_path: Path) -> None:
    cache, entry, _ = _warm(tmp_path)
    entry.unlink()
    os.mkfifo(entry)
    loaded: list[ServiceDescription] = []
    thread = threading.Thread(target=lambda: loaded.append(load_wsdl(EHR_WSDL, cache_dir=cache)))
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "load_wsdl blocked on a FIFO"
    assert loaded == [load_wsdl(EHR_WSDL)]


def test_a_fifo_among_the_entries_does_not_block_pruning(tmp_path: Path) -> None:
    cache, _, _ = _warm(tmp_path)
    os.mkfifo(cache / ("0" * 32 + ".json"))  # where another WSDL's entry would be
    path = _service(tmp_path / "svc")
    thread = threading.Thread(target=lambda: load_wsdl(path, cache_dir=cache))
    thread.start()  # a cold load: it writes, then prunes
    thread.join(timeout=20)
    assert not thread.is_alive(), "pruning blocked on a FIFO"
    assert len(_entries(cache)) == 3  # both entries, and the FIFO left alone


def test_a_cache_folder_others_may_write_to_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert load_wsdl(EHR_WSDL, cache_dir=shared) == load_wsdl(EHR_WSDL)
    assert _entries(shared) == []
    assert "not a folder of this user's own" in caplog.text


def test_an_entry_others_may_write_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, entry, data = _warm(tmp_path)
    assert entry.stat().st_mode & 0o077 == 0  # written for this user only
    data["service"]["address"] = "http://attacker.invalid/ehr"
    entry.write_text(json.dumps(data))
    entry.chmod(0o666)
    assert load_wsdl(EHR_WSDL, cache_dir=cache).address != "http://attacker.invalid/ehr"
    assert "not this user's own" in caplog.text
    entry.chmod(0o600)  # rewritten by the load above, this user's own again
    assert load_wsdl(EHR_WSDL, cache_dir=cache).address != "http://attacker.invalid/ehr"


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert load_wsdl(EHR_WSDL, cache_dir=blocked / "wsdl") == load_wsdl(EHR_WSDL)
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o500)
        assert load_wsdl(EHR_WSDL, cache_dir=readonly) == load_wsdl(EHR_WSDL)
        assert _entries(readonly) == []


@pytest.fixture
def schema_server(tmp_path: Path) -> Iterator[str]:
    """types.xsd over HTTP on 127.0.0.1, as a WSDL's remote import."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "types.xsd").write_text(TYPES.replace("@@EXTRA@@", ""))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/types.xsd"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_wsdl_that_loads_over_the_network_is_not_cached(
    tmp_path: Path, schema_server: str
) -> None:
    cache = tmp_path / "cache"
    path = _service(tmp_path / "svc", location=schema_server)
    desc = load_wsdl(path, cache_dir=cache)
    assert [c.name for c in desc.operations["Echo"].input.children] == ["Text"]
    assert _entries(cache) == []


WARM_START = """
import sys
from pathlib import Path
from bridge.mapping.compiler import compile_system
from bridge.settings import environment
system = compile_system(Path("mappings/hospital"), environment(), wsdl_cache=Path(sys.argv[1]))
print(sorted(system.resources)[0], "zeep" in sys.modules)
"""


def test_a_warm_start_does_not_import_zeep(tmp_path: Path) -> None:
    def start() -> str:
        done = subprocess.run(
            [sys.executable, "-c", WARM_START, str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.split()[-1]

    assert start() == "True"  # cold: zeep reads the WSDL and fills the cache
    assert start() == "False"  # warm: the cache, and no zeep in the process


def test_the_setting_defaults_to_the_user_cache_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_WSDL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings().wsdl_cache_dir == tmp_path / "fhir-soap-bridge" / "wsdl"
    for off in ("", "off", "OFF", "none"):
        monkeypatch.setenv("BRIDGE_WSDL_CACHE_DIR", off)
        assert Settings().wsdl_cache_dir is None
    monkeypatch.setenv("BRIDGE_WSDL_CACHE_DIR", str(tmp_path / "here"))
    assert Settings().wsdl_cache_dir == tmp_path / "here"
    monkeypatch.delenv("BRIDGE_WSDL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().wsdl_cache_dir == tmp_path / "home" / ".cache" / "fhir-soap-bridge" / "wsdl"
