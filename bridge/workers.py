"""Worker processes for `bridge serve --workers N`, each with a listening socket of its own.

uvicorn's supervisor hands every worker the one socket it bound. Workers that
share a socket share its accept queue, and whichever worker wakes first takes
every connection waiting there: a client that opens its pool of keep-alive
connections at once (a reverse proxy, a load balancer, an app's HTTP client)
lands on one worker while the others idle.

On Linux each worker here gets a socket of its own in one `SO_REUSEPORT` group,
and the kernel spreads new connections over the workers by the hash of their
addresses. The supervisor keeps one more socket bound to the address and not
listening: it holds the port while workers come and go, takes no connections,
and resolves port 0 once for every worker. Where `SO_REUSEPORT` is missing the
workers share one socket, as uvicorn runs them.

The trade-off: a connection goes to its worker by hash, whatever that worker is
doing, so a worker busy with a long request holds its share of new connections
until it gets to them; and connections still waiting in a worker's queue when it
exits (a crash, a SIGHUP restart, SIGTTOU) are reset, unless the kernel moves
them (`net.ipv4.tcp_migrate_req=1`, Linux 5.14+).

    serve(config)    # config: a uvicorn.Config with workers > 1; returns at shutdown
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator

from prometheus_client import multiprocess
from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

__all__ = ["serve"]

log = logging.getLogger("bridge.workers")


def _balanced() -> bool:
    """True where the kernel spreads connections over sockets of one SO_REUSEPORT group."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def serve(config: Config) -> None:
    """Run `config.workers` workers until SIGINT or SIGTERM, as `uvicorn.run` does."""
    with _shared_metrics():
        if not _balanced():
            _Workers(config, sockets=[config.bind_socket()]).run()
            return
        _serve_balanced(config)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A folder for prometheus_client's multiprocess mode, for the workers' lifetime.

    Each worker's metrics go to files there, so the worker that answers /metrics
    shows every worker's (bridge/metrics.py). The variable must be set before a
    worker imports prometheus_client: workers are spawned, and inherit it."""
    folder = tempfile.mkdtemp(prefix="bridge-metrics-")
    before = os.environ.get(_METRICS_DIR)
    os.environ[_METRICS_DIR] = folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_METRICS_DIR, None)
        else:
            os.environ[_METRICS_DIR] = before
        shutil.rmtree(folder, ignore_errors=True)


_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _serve_balanced(config: Config) -> None:
    address = f"[{config.host}]" if ":" in config.host else config.host
    try:
        anchor = _anchor(config.host, config.port)
    except OSError as exc:
        log.error(
            "cannot listen on %s:%s: %s; choose another host or port, or stop what is "
            "listening there",
            address,
            config.port,
            exc.strerror or exc,
        )
        sys.exit(STARTUP_FAILURE)
    scheme = "https" if config.is_ssl else "http"
    log.info(
        "serving on %s://%s:%d with %d workers, each with its own listening socket",
        scheme,
        address,
        anchor.getsockname()[1],
        config.workers,
    )
    supervisor = _Supervisor(config, anchor)
    try:
        supervisor.run()
    except BaseException:
        # A worker's socket could not be made (too many open files, say): the
        # workers already running stop with the supervisor, not after it.
        supervisor.terminate_all()
        supervisor.join_all()
        raise
    finally:
        supervisor.close()


def _anchor(host: str, port: int) -> socket.socket:
    """The supervisor's socket on the address, in a new SO_REUSEPORT group.

    A plain bind first: a port that another server (another gateway of the same
    user, with SO_REUSEPORT too) listens on must fail as "address in use", not
    join its group and split its connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    return _bound(host, port)


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Workers(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, SIGHUP, SIGTTIN/SIGTTOU); a worker
    that is gone no longer counts in the live gauges of /metrics (sessions open)."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self._pids: set[int] = set()
        super().__init__(config, sockets=sockets)

    # Each of these may start or stop workers.

    def init_processes(self) -> None:
        super().init_processes()
        self._changed()

    def handle_signals(self) -> None:
        super().handle_signals()
        self._changed()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._changed()

    def _changed(self) -> None:
        pids = {p.pid for p in self.processes if p.pid is not None}
        for pid in self._pids - pids:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        self._pids = pids


class _Supervisor(_Workers):
    """`_Workers`, with a new socket in the group for each worker it starts."""

    def __init__(self, config: Config, anchor: socket.socket) -> None:
        self._anchor = anchor
        self._handed: list[socket.socket] = []
        super().__init__(config, sockets=[])

    # uvicorn's supervisor passes `self.sockets` to each worker it starts (the first
    # ones, the one replacing a dead worker, SIGHUP's replacements, SIGTTIN's extra
    # one) and reads it once per worker: here each read is a new socket.
    @property
    def sockets(self) -> list[socket.socket]:
        host, port = self._anchor.getsockname()[:2]
        sock = _bound(host, port)
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        """uvicorn's `__init__` stores the sockets it was given; here there are none."""

    def _changed(self) -> None:
        # A started worker has its own descriptor of its socket. The supervisor's
        # copy would keep that socket in the group after the worker died, and the
        # kernel would go on queueing connections on it that nobody accepts. So the
        # copies are closed as soon as their workers start.
        self._close_handed()
        super()._changed()

    def _close_handed(self) -> None:
        for sock in self._handed:
            sock.close()
        self._handed.clear()

    def close(self) -> None:
        self._close_handed()
        self._anchor.close()
