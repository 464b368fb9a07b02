"""Hot reload: a failed reload of any kind is logged and refused, and watching goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.app import GatewayHolder, checked_systems, create_gateway
from bridge.errors import BackendError
from bridge.gateway import Gateway
from bridge.mapping.compiled import CompiledSystem
from bridge.reload import MappingReloader
from bridge.settings import Settings
from tests.support import copy_mappings

_REFUSED = "mapping not reloaded, the previous one keeps serving: "
_ZIP = """  - fhir: identifier[1]
    fields:
      - {fhir: system, value: "urn:example:zip"}
      - {fhir: value, from: Zip}
"""


def _reloader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compile_all: Callable[[Settings], Any]
) -> MappingReloader:
    """A reloader of a copy of the hospital's folder, run from its root."""
    copy_mappings(tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        systems=[{"path": tmp_path / "mappings" / "hospital"}],
        auth={"mode": "off"},
        paging_key="k" * 32,
    )
    holder = GatewayHolder(create_gateway(settings))

    def build(systems: list[CompiledSystem], backends: dict[str, Any]) -> Gateway:
        return create_gateway(settings, systems, backends, holder.current.page_tokens)

    return MappingReloader(
        holder, [Path("mappings/hospital")], lambda: compile_all(settings), build
    )


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage().removeprefix(_REFUSED)
        for r in caplog.records
        if r.name == "bridge.reload" and r.levelno == logging.ERROR
    ]


def _identifiers(reloader: MappingReloader) -> int:
    patient = reloader.holder.current.systems[0].resources["Patient"]  # type: ignore[attr-defined]
    return sum(1 for f in patient.fields if f.steps and f.steps[0].name == "identifier")


def test_a_failure_that_is_no_config_error_leaves_the_watcher_watching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def compile_all(settings: Settings) -> list[CompiledSystem]:
        calls.append(1)
        if len(calls) == 1:
            raise UnicodeDecodeError("utf-8", b"\xff", 3473, 3474, "invalid start byte")
        return checked_systems(settings)

    reloader = _reloader(tmp_path, monkeypatch, compile_all)
    mapping = Path("mappings/hospital/Patient.yaml")
    original = mapping.read_text()
    before = _identifiers(reloader)

    async def run() -> None:
        watcher = asyncio.create_task(reloader.watch())
        try:
            deadline = time.monotonic() + 20
            while not calls and time.monotonic() < deadline:  # until the watcher sees edits
                mapping.write_text(original)
                await asyncio.sleep(0.3)
            assert calls, "the watcher never saw an edit"
            while reloader.failures < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            mapping.write_text(original + _ZIP)
            while _identifiers(reloader) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not watcher.done()
        finally:
            reloader.stop()
            await asyncio.wait_for(watcher, 10)

    with caplog.at_level(logging.INFO, logger="bridge.reload"):
        asyncio.run(run())
    assert reloader.failures == 1
    assert _identifiers(reloader) == before + 1  # the later good edit serves
    assert _refusals(caplog) == [
        "mappings/hospital/Patient.yaml: not utf-8 text (byte 3473: invalid start byte); "
        "save the file as utf-8"
    ]


@pytest.mark.parametrize(
    ("failure", "logged"),
    [
        (
            BackendError("The legacy system answered with an empty SOAP body."),
            "mappings/hospital/Patient.yaml: The legacy system answered with an empty SOAP body.",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "mappings/hospital/gone.csv"),
            "mappings/hospital/gone.csv: cannot read file: No such file or directory",
        ),
        (
            KeyError("Jane Doe, born 1944-02-21"),
            "mappings/hospital/Patient.yaml: the edit could not be loaded (KeyError); "
            "run `bridge check` on the folder to see why",
        ),
    ],
)
def test_a_failed_reload_names_the_file_never_the_exception_text(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    logged: str,
) -> None:
    def compile_all(settings: Settings) -> list[CompiledSystem]:
        raise failure

    reloader = _reloader(tmp_path, monkeypatch, compile_all)
    old = reloader.holder.current  # type: ignore[attr-defined]
    changed = [str(tmp_path / "mappings" / "hospital" / "Patient.yaml")]
    with caplog.at_level(logging.ERROR, logger="bridge.reload"):
        assert asyncio.run(reloader.reload(changed)) is False
    assert reloader.holder.current is old  # type: ignore[attr-defined]
    assert _refusals(caplog) == [logged]
    assert "Jane" not in caplog.text


def test_a_broken_sample_answer_is_refused_with_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = _reloader(tmp_path, monkeypatch, checked_systems)
    old = reloader.holder.current  # type: ignore[attr-defined]
    Path("mappings/hospital/tests/patient_middle_name.response.xml").write_text("<not xml")
    with caplog.at_level(logging.ERROR, logger="bridge.reload"):
        assert asyncio.run(reloader.reload()) is False
    assert reloader.holder.current is old  # type: ignore[attr-defined]
    assert _refusals(caplog) == [
        "mappings/hospital/tests/patient_middle_name.response.xml:1:9: not well-formed XML: "
        "Specification mandates value for attribute xml; it must hold the legacy system's "
        "SOAP answer, as it sends it"
    ]


def test_the_watcher_watches_again_when_watching_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = _reloader(tmp_path, monkeypatch, checked_systems)
    reloader.retry = 0.01
    watches: list[int] = []

    async def awatch(*paths: Any, stop_event: asyncio.Event, **options: Any) -> AsyncIterator[Any]:
        watches.append(1)
        if len(watches) == 1:
            raise RuntimeError("inotify watch limit reached")
        yield {(2, str(tmp_path / "mappings" / "hospital" / "Patient.yaml"))}
        stop_event.set()

    monkeypatch.setattr("watchfiles.awatch", awatch)
    with caplog.at_level(logging.ERROR, logger="bridge.reload"):
        asyncio.run(asyncio.wait_for(reloader.watch(), 10))
    assert len(watches) == 2
    assert reloader.reloads == 1
    assert [r.getMessage() for r in caplog.records] == [
        "watching the mapping folders failed (RuntimeError); watching again in 0.01 s"
    ]
