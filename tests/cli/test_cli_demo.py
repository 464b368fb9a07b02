"""`bridge demo` (what `make run` starts): its printed requests must work as printed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, free_port

pytestmark = pytest.mark.e2e


def _assert_stopped(mock_port: int) -> None:
    """The demo stopped the mock hospital it started: nothing listens on its port."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", mock_port), timeout=0.5).close()
        except OSError:
            return
        assert time.monotonic() < deadline, "the demo left its mock hospital running"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, list[str]]]:
    port, mock_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "demo",
            "--port",
            str(port),
            "--mock-port",
            str(mock_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # a terminal's process group, for Ctrl+C below
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl+C"):
                break
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, lines
    finally:
        # Ctrl+C in the terminal: SIGINT to the whole foreground group.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
        rest = process.stdout.read()
        process.stdout.close()
    # The gateway logged out of the mock before the mock stopped.
    assert "logout from" not in rest, rest
    _assert_stopped(mock_port)


def test_demo_prints_the_base_url_first(demo: tuple[str, list[str]]) -> None:
    base, lines = demo
    first = next(line for line in lines if line.strip())
    assert first == f"FHIR base URL:  {base}/fhir"


def test_demo_sample_requests_work_as_printed(demo: tuple[str, list[str]], fhir: Any) -> None:
    base, lines = demo
    tokens = dict(re.findall(r"^export (\w+)=(\S+)$", "\n".join(lines), re.M))
    assert tokens.pop("BASE") == f"{base}/fhir"  # what the README's workflows use
    assert set(tokens) == {"TOKEN", "PATIENT_TOKEN", "SERVICE_TOKEN", "ADMIN_TOKEN"}
    # `bridge` as the shell finds it: the venv's, which nothing put on the PATH.
    minting = next(line.strip() for line in lines if " token --scope " in line)
    command = minting.split()[0]
    assert Path(command).name == "bridge"
    assert (ROOT / command).exists()  # from where the demo runs
    curls = [line.strip() for line in lines if line.strip().startswith("curl ")]
    assert len(curls) >= 4
    posts = 0
    for curl in curls:
        header = re.search(r'-H "Authorization: Bearer \$(\w+)"', curl)
        url = re.findall(r'"?(http://[^"\' ]+)"?', curl)[0 if " -X POST " in curl else -1]
        headers = {"Authorization": f"Bearer {tokens[header.group(1)]}"} if header else {}
        if " -X POST " in curl:
            body = re.search(r"-d '(.+)'$", curl)
            assert body is not None, curl
            headers["Content-Type"] = "application/fhir+json"
            reply = httpx.post(url, content=body.group(1), headers=headers, timeout=30)
            assert reply.status_code == 201, (curl, reply.text)
            assert reply.headers["location"].startswith(url)
            posts += 1
        else:
            reply = httpx.get(url, headers=headers, timeout=30)
            assert reply.status_code == 200, (curl, reply.text)
        assert "server" not in reply.headers  # as `bridge serve` answers
        resource = fhir(reply.json())
        if "/Patient/" in url:
            assert resource["resourceType"] == "Patient"
        if "/AuditEvent?" in url:
            # The trail holds the sample requests about the patient made above.
            assert len(resource["entry"]) >= 3
    assert posts == 2  # billing and wearables


def test_a_closed_terminal_stops_the_demo_and_its_mock(tmp_path: Path) -> None:
    # The mock runs in a session of its own: a hangup reaches the demo alone,
    # which must still stop it (else the next `make run` finds its port taken).
    port, mock_port = free_port(), free_port()
    argv = [sys.executable, "-m", "bridge", "demo", "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--mock-port", str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGHUP)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _assert_stopped(mock_port)
