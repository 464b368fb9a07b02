"""The MockHospital handle and the pytest plugin's promises."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

import pytest

import bridge.mock
from bridge.mock import MockHospital, MockHospitalError


def test_public_surface_is_listed() -> None:
    assert bridge.mock.__all__ == ["MockHospital", "MockHospitalError"]


def test_plugin_imports_no_spyne() -> None:
    code = (
        "import sys, bridge.mock.pytest_plugin, bridge.mock; "
        "print(any(m == 'spyne' or m.startswith('spyne.') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_mock_hospital_fixture_is_the_session_server(mock_hospital, mock_hospital_server) -> None:
    assert mock_hospital is mock_hospital_server
    assert mock_hospital.ehr_url == mock_hospital.url + "/ehr"
    assert mock_hospital.url.startswith("http://127.0.0.1:")


def test_start_with_unknown_option_raises_type_error() -> None:
    with (
        pytest.raises(TypeError, match=r"unknown mock hospital options \['pages'\]"),
        contextlib.ExitStack() as stack,
    ):
        stack.enter_context(MockHospital.start(pages=3))


def test_start_failure_reports_the_child_stderr() -> None:
    with pytest.raises(MockHospitalError) as info, contextlib.ExitStack() as stack:
        stack.enter_context(MockHospital.start(page_size=0))
    message = str(info.value)
    assert "exited with code 2 before it was ready" in message
    assert "page_size must be >= 1, got 0" in message


def test_start_passes_options_and_stops_the_child() -> None:
    with MockHospital.start(
        patients=20, username="alice", password="s3cret", today="2026-11-24", seed=9
    ) as hospital:
        assert hospital.username == "alice"
        assert len(hospital.sample_patients(100)) == 20
        info = hospital.info()
        assert (info["today"], info["seed"], info["patients"]) == ("2026-11-24", 9, 20)
        # The calendar follows the pinned date.
        slots = hospital.get("/scheduling/slots", provider="DR1001", limit=1)
        assert slots[0]["Start"].startswith("2026-11-25T08:00")
        process = hospital._process
    assert process is not None
    assert process.poll() is not None


def test_urls_for_every_system(mock_hospital) -> None:
    for name in ("ehr", "lab", "scheduling", "pharmacy", "billing"):
        assert mock_hospital.system_url(name) == f"{mock_hospital.url}/{name}"
        assert getattr(mock_hospital, f"{name}_url") == mock_hospital.system_url(name)
    assert mock_hospital.wsdl_url("lab") == mock_hospital.url + "/lab?wsdl"
    with pytest.raises(ValueError, match="unknown system 'radiology'"):
        mock_hospital.system_url("radiology")


def test_get_reads_any_side_door_view(mock_hospital) -> None:
    assert mock_hospital.get("/_mock/patients/100001") == mock_hospital.patient("100001")
    assert mock_hospital.get("patients/100001") == mock_hospital.patient("100001")
    rows = mock_hospital.get("/lab/results", mrn="100001", limit=3)
    assert len(rows) == 3
    with pytest.raises(MockHospitalError, match="-> 404"):
        mock_hospital.get("/billing/claims/CLM-0000-000000")


def test_side_door_error_raises_mock_hospital_error(mock_hospital) -> None:
    with pytest.raises(MockHospitalError, match="-> 400"):
        mock_hospital.inject_faults(fault_rate=7)


def test_start_interrupted_while_waiting_stops_the_child(monkeypatch) -> None:
    import bridge.mock.hospital as hospital_module

    children: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        children.append(process)
        return process

    def interrupted(stream, timeout):
        raise KeyboardInterrupt  # e.g. Ctrl-C or a test timeout during start-up

    monkeypatch.setattr(hospital_module.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(hospital_module, "_first_line", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt), MockHospital.start(patients=5):
            pass
        [child] = children
        assert child.poll() is not None, "the mock's process outlived an interrupted start"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)
            if child.stdout is not None:
                child.stdout.close()


def test_unreachable_side_door_raises_mock_hospital_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hospital = MockHospital(f"http://127.0.0.1:{port}")
    with pytest.raises(MockHospitalError, match=r"GET /_mock/stats: cannot reach the mock"):
        hospital.stats()
