"""Start-up: the collector held while the gateway loads, the heap settled when it starts."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import cli
from bridge.app import _hold_collections, create_app, worker_app
from bridge.settings import _CONFIG_VARIABLE, load_settings
from bridge.store import core as store_core

_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone after it."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _config(tmp_path: Path, **more: Any) -> Path:
    config = tmp_path / "gateway.yaml"
    settings = {
        "systems": [{"path": str(_ROOT / "mappings" / "hospital")}],
        "auth": {"mode": "off"},
        "paging_key": "k" * 32,
        "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
    }
    config.write_text(json.dumps({**settings, **more}))
    return config


def _args(config: Path, workers: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        config=config,
        host=None,
        port=None,
        reload_mappings=None,
        workers=workers,
        tls_cert=None,
        tls_key=None,
    )


def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bridge serve`'s process-wide settings (logging, polling) left as the tests have them."""
    monkeypatch.setattr("bridge.logs.configure_logging", lambda level: None)
    monkeypatch.setattr("bridge.busypoll.configure", lambda window: None)


def _started(app: Any) -> tuple[bool, bool]:
    """(collector on, app's heap out of its sight) while the app's lifespan runs."""
    seen: list[tuple[bool, bool]] = []

    async def run() -> None:
        async with app.router.lifespan_context(app):
            tracked = any(o is app for o in gc.get_objects())  # frozen objects are not listed
            seen.append((gc.isenabled(), not tracked))

    asyncio.run(run())
    return seen[0]


@pytest.mark.usefixtures("collector")
def test_the_lifespan_settles_the_heap_and_turns_the_held_collector_back_on(
    tmp_path: Path,
) -> None:
    _hold_collections()
    app = create_app(load_settings(_config(tmp_path)))
    assert not gc.isenabled()  # loading the mappings collects nothing
    assert any(o is app for o in gc.get_objects())
    assert _started(app) == (True, True)


@pytest.mark.usefixtures("collector")
def test_a_worker_holds_the_collector_until_its_lifespan_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _quiet(monkeypatch)
    monkeypatch.setenv(_CONFIG_VARIABLE, str(_config(tmp_path)))
    app = worker_app()
    assert not gc.isenabled()
    assert _started(app) == (True, True)


@pytest.mark.usefixtures("collector")
def test_the_supervisor_of_workers_runs_with_the_collector_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _quiet(monkeypatch)
    monkeypatch.setattr("bridge.settings.share_with_workers", lambda config, settings: None)
    seen: list[bool] = []
    monkeypatch.setattr("bridge.workers.serve", lambda config: seen.append(gc.isenabled()))
    assert cli._serve(_args(_config(tmp_path), workers=2)) == 0
    assert seen == [True]


@pytest.mark.usefixtures("collector")
def test_a_start_that_fails_turns_the_collector_back_on_and_stops_the_store_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _quiet(monkeypatch)
    started: list[Any] = []
    real = store_core.migrate_ahead

    def migrate_ahead(url: str) -> Any:
        started.append(real(url))
        return started[-1]

    monkeypatch.setattr("bridge.store.core.migrate_ahead", migrate_ahead)

    def run(app: Any, **options: Any) -> None:
        assert not gc.isenabled()  # held until the lifespan, which this run never reaches
        raise RuntimeError("the port is taken")

    monkeypatch.setattr("uvicorn.run", run)
    with pytest.raises(RuntimeError):
        cli._serve(_args(_config(tmp_path)))
    assert gc.isenabled()
    assert len(started) == 1 and started[0] is not None  # a new store: a process was started
    assert started[0].wait(timeout=60) in (0, -15)  # finished, or stopped


def _lifespan_messages(failure: BaseException) -> list[dict[str, Any]]:
    import contextlib

    from bridge.routing import App, IndexedRouter

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        raise failure
        yield  # pragma: no cover - never reached

    app = App(routes=[])
    app.router = IndexedRouter(routes=[], lifespan=lifespan)  # as `create_app` builds it
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def run() -> None:
        with contextlib.suppress(BaseException):
            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    asyncio.run(run())
    return sent


def test_a_start_refused_for_a_setting_reports_its_problem_not_a_traceback() -> None:
    from bridge.errors import ConfigError, Problem

    refused = ConfigError([Problem("settings", 1, 1, "store.url: cannot parse it (ValueError)")])
    assert _lifespan_messages(refused) == [
        {
            "type": "lifespan.startup.failed",
            "message": "settings:1:1: store.url: cannot parse it (ValueError)",
        }
    ]
    # anything else is a bug: its traceback is what the log needs
    (failed,) = _lifespan_messages(RuntimeError("a bug"))
    assert failed["message"].startswith("Traceback (most recent call last)")


def test_bridge_serve_with_a_store_it_cannot_use_says_so_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = _config(tmp_path, port=0, store={"url": "mysql://gateway@db/bridge"})
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3  # uvicorn's start-up failure
    assert "Traceback" not in done.stderr
    assert "store.url: 'mysql' is not supported" in done.stderr


def test_bridge_serve_refuses_a_mapping_that_bridge_check_refuses_with_its_messages(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from tests.support import copy_mappings

    table = copy_mappings(tmp_path) / "tables" / "sex.csv"
    table.write_text(table.read_text().replace(",female\n", ",femme\n"))
    config = _config(tmp_path, port=0, systems=[{"path": "mappings/hospital"}])

    def bridge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    served, checked = bridge("serve", "--config", str(config)), bridge("check", "mappings/hospital")
    rows = (table.parent.parent / "Patient.yaml").read_text().splitlines()
    where = f"mappings/hospital/Patient.yaml:{rows.index('  - fhir: gender') + 1}:1"
    problems = [
        f"{where}: field 'gender': table 'sex' gives femme, not in the required value set; "
        "allowed: female, male, other, unknown",
        f"{where}: field 'gender': table 'sex' has no local code for female, so searches for "
        "them cannot reach the legacy system; add rows for them",
    ]
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == problems
    assert served.returncode == 2  # as for any mapping that does not compile
    assert served.stderr.splitlines() == problems


def test_the_app_refuses_a_sample_answer_that_bridge_check_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.errors import MappingError
    from tests.support import copy_mappings

    answer = copy_mappings(tmp_path) / "tests" / "patient_middle_name.response.xml"
    answer.write_text("<a><b></a>")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(_config(tmp_path, systems=[{"path": "mappings/hospital"}]))
    with pytest.raises(MappingError) as refused:
        create_app(settings)
    assert str(refused.value) == (
        "mappings/hospital/tests/patient_middle_name.response.xml:1:11: not well-formed XML: "
        "Opening and ending tag mismatch: b line 1 and a; it must hold the legacy system's SOAP "
        "answer, as it sends it"
    )


def test_the_app_refuses_an_endpoint_left_a_path_without_an_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.errors import MappingError
    from tests.support import copy_mappings

    system = copy_mappings(tmp_path) / "system.yaml"
    system.write_text(system.read_text().replace('"http://127.0.0.1:8081/ehr"', '"/ehr"'))
    monkeypatch.chdir(tmp_path)
    alone = load_settings(_config(tmp_path, systems=[{"path": "mappings/hospital"}]))
    with pytest.raises(MappingError) as refused:
        create_app(alone)
    assert str(refused.value) == (
        "mappings/hospital/system.yaml:9:3: endpoint '/ehr' has no scheme and host; give the "
        "full URL (https://ehr.example.org/soap), or this system's origin in the gateway "
        "config (systems: [{path: ..., origin: https://ehr.example.org}])"
    )
    completed = load_settings(
        _config(
            tmp_path,
            systems=[{"path": "mappings/hospital", "origin": "http://127.0.0.1:18081"}],
        )
    )
    app = create_app(completed)
    assert app.state.gateway.current.systems[0].endpoint == "http://127.0.0.1:18081/ehr"


@pytest.mark.parametrize(
    "override", [{"endpoint": "ehr:8081"}, {"origin": "127.0.0.1:18081"}, {"origin": "http://"}]
)
def test_settings_refuse_a_system_override_that_is_not_a_url(
    tmp_path: Path, override: dict[str, str]
) -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_settings(_config(tmp_path, systems=[{"path": "mappings/hospital", **override}]))
    assert "is not an http:// or https:// URL with a host" in str(refused.value)
