"""`bridge serve --workers N`: each worker listens on a socket of its own.

Connections opened while one worker is busy are spread over every worker,
not all taken by the one that is idle at that moment (a keep-alive connection
stays with the worker that accepted it); a worker that dies is replaced with a
new socket, and the dead one's socket leaves the group. A worker is
stopped (SIGSTOP) while connections are opened, as a busy worker would be,
and the connections each worker holds are read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, start_gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT groups are Linux's"),
]

_SOCKET = re.compile(r"socket:\[(\d+)\]")


def _port(gw: Gateway) -> int:
    return int(gw.base.split(":")[2].split("/")[0])


def _workers(gw: Gateway) -> list[int]:
    """The gateway's worker processes (the children that run `bridge`)."""
    found = []
    for task in os.listdir(f"/proc/{gw.process.pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            children = Path(f"/proc/{gw.process.pid}/task/{task}/children").read_text()
            found += [int(pid) for pid in children.split()]
    workers = []
    for pid in found:
        with contextlib.suppress(OSError):  # a worker that exited meanwhile
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers


def _sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on `port` in `state` (01 established, 0A listening)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def _held(pid: int, inodes: set[str]) -> set[str]:
    held: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # the process exited meanwhile
        return held
    for fd in fds:
        try:
            match = _SOCKET.match(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if match and match.group(1) in inodes:
            held.add(match.group(1))
    return held


def _health(conn: socket.socket) -> bytes:
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    conn.settimeout(10)
    return conn.recv(65536)


def _burst_while_busy(gw: Gateway, busy: int, workers: list[int], count: int) -> dict[int, int]:
    """Open `count` connections while worker `busy` is stopped (as a worker busy with
    requests is, for a while), answer one request on each, and count the
    connections each worker accepted."""
    port = _port(gw)
    with contextlib.ExitStack() as conns:
        os.kill(busy, signal.SIGSTOP)
        try:
            opened = [
                conns.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                for _ in range(count)
            ]
            time.sleep(0.2)  # the idle worker accepts what it is given
        finally:
            os.kill(busy, signal.SIGCONT)
        for conn in opened:
            assert _health(conn).startswith(b"HTTP/1.1 200")
        established = _sockets(port, "01")
        return {pid: len(_held(pid, established)) for pid in workers}


def _wait_for(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@contextlib.contextmanager
def _two_workers(mock_hospital: MockHospital, tmp_path: Path) -> Iterator[tuple[Gateway, int]]:
    """A gateway with two workers, once both listen; and its port. They poll (set:
    with as many workers as cores, they would not by default)."""
    extra = {"workers": 2, "busy_poll": 0.00025}
    with start_gateway(tmp_path, mock_hospital.ehr_url, extra=extra) as gw:
        port = _port(gw)
        _wait_for(lambda: len(_sockets(port, "0A")) == 2)
        yield gw, port


def _kill_a_worker(gw: Gateway, port: int) -> None:
    """SIGKILL one worker; return once its replacement listens."""
    dead = _workers(gw)[0]
    os.kill(dead, signal.SIGKILL)
    _wait_for(lambda: dead not in _workers(gw) and len(_workers(gw)) == 2)  # replaced
    _wait_for(lambda: len(_sockets(port, "0A")) == 2)


def test_workers_each_listen_on_a_socket_of_their_own(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    with start_gateway(tmp_path, mock_hospital.ehr_url, extra={"workers": 2}) as gw:
        _wait_for(lambda: len(_workers(gw)) == 2 and len(_sockets(_port(gw), "0A")) == 2)
        listening = _sockets(_port(gw), "0A")
        workers = _workers(gw)
        assert [len(_held(pid, listening)) for pid in workers] == [1, 1]
        assert _held(workers[0], listening) != _held(workers[1], listening)
        # The supervisor keeps none of them: a worker's socket dies with it.
        _wait_for(lambda: not _held(gw.process.pid, _sockets(_port(gw), "0A")))
        assert "each with its own listening socket" in gw.logs()


def test_connections_opened_while_a_worker_is_busy_go_to_every_worker(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    with start_gateway(tmp_path, mock_hospital.ehr_url, extra={"workers": 2}) as gw:
        _wait_for(lambda: len(_sockets(_port(gw), "0A")) == 2)
        workers = _workers(gw)
        for busy in (*workers, workers[0]):
            counts = _burst_while_busy(gw, busy, workers, 64)
            assert sum(counts.values()) == 64
            # The kernel hashes each connection to one of two queues: fewer than 16
            # of 64 on one worker happens about once in 30,000 bursts.
            assert min(counts.values()) >= 16, counts


def test_a_worker_that_dies_is_replaced_and_its_socket_leaves_the_group(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    with _two_workers(mock_hospital, tmp_path) as (gw, port):
        _kill_a_worker(gw, port)
        # Every listening socket on the port belongs to a live worker: none is left
        # queueing connections that nobody accepts.
        listening = _sockets(port, "0A")
        held = set().union(*(_held(pid, listening) for pid in _workers(gw)))
        assert held == listening
        for _ in range(64):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                assert _health(conn).startswith(b"HTTP/1.1 200")


def test_a_port_another_gateway_listens_on_is_refused(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    with _two_workers(mock_hospital, tmp_path) as (_, port):
        # Same user, same port, SO_REUSEPORT on both sides: it must not join the group.
        with (
            pytest.raises(RuntimeError, match="exited at start") as refused,
            start_gateway(tmp_path, mock_hospital.ehr_url, extra={"workers": 2, "port": port}),
        ):
            pass
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in str(refused.value)
        assert len(_sockets(port, "0A")) == 2


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the metrics")


def test_metrics_show_every_worker_whichever_answers(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    with _two_workers(mock_hospital, tmp_path) as (gw, port):
        headers = {"Authorization": f"Bearer {gw.token('user/Patient.rs')}"}
        # A new connection each: the kernel spreads them over both workers.
        for i in range(40):
            with httpx.Client(base_url=gw.base, headers=headers, timeout=30) as client:
                assert client.get(f"/Patient/{100001 + i % 5}").status_code == 200
        metrics = gw.base.removesuffix("/fhir") + "/metrics"
        # Request counts are shared as they happen; session figures within a second.
        _wait_for(
            lambda: (
                _metric(
                    httpx.get(metrics, timeout=10).text, "bridge_legacy_sessions", system="hospital"
                )
                >= 2
            )
        )
        scrapes = [httpx.get(metrics, timeout=10).text for _ in range(8)]
        reads = {
            _metric(
                t, "bridge_requests_total", resource="Patient", interaction="read", status="200"
            )
            for t in scrapes
        }
        assert reads == {40.0}
        logins = {_metric(t, "bridge_legacy_logins_total", system="hospital") for t in scrapes}
        assert len(logins) == 1 and logins.pop() >= 2  # each worker logged in its own
        sessions = _metric(scrapes[-1], "bridge_legacy_sessions", system="hospital")
        assert sessions >= 2
        # The workers poll after their answers; what found nothing is summed here too.
        polled = [
            float(line.rsplit(" ", 1)[1])
            for line in scrapes[-1].splitlines()
            if line.startswith("bridge_busy_poll_idle_seconds_total ")
        ]
        assert polled and polled[0] > 0

        # A worker that dies takes its sessions out of the gauge; counters go on.
        _kill_a_worker(gw, port)
        after = httpx.get(metrics, timeout=10).text
        assert _metric(after, "bridge_legacy_sessions", system="hospital") < sessions
        assert (
            _metric(
                after, "bridge_requests_total", resource="Patient", interaction="read", status="200"
            )
            == 40
        )
