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

    serve(config)    # config: a uvicorn.Config with workers > 1; returns at shutdown
"""

from __future__ import annotations

import logging
import socket
import sys

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

__all__ = ["balanced", "serve"]

log = logging.getLogger("bridge.workers")


def balanced() -> bool:
    """True where the kernel spreads connections over sockets of one SO_REUSEPORT group."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def serve(config: Config) -> None:
    """Run `config.workers` workers until SIGINT or SIGTERM, as `uvicorn.run` does."""
    if not balanced():
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    try:
        anchor = _bound(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc.strerror)
        sys.exit(STARTUP_FAILURE)
    scheme = "https" if config.is_ssl else "http"
    host, port = anchor.getsockname()[:2]
    log.info(
        "serving on %s://%s:%d with %d workers, each with its own listening socket",
        scheme,
        host,
        port,
        config.workers,
    )
    supervisor = _Supervisor(config, anchor)
    try:
        supervisor.run()
    finally:
        supervisor.close()


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


class _Supervisor(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, SIGHUP, SIGTTIN/SIGTTOU), with
    a new socket in the group for each worker it starts."""

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

    def keep_subprocess_alive(self) -> None:
        # A started worker has its own descriptor of its socket. The supervisor's
        # copy would keep that socket in the group after the worker died, and the
        # kernel would go on queueing connections on it that nobody accepts.
        self._close_handed()
        super().keep_subprocess_alive()

    def _close_handed(self) -> None:
        for sock in self._handed:
            sock.close()
        self._handed.clear()

    def close(self) -> None:
        self._close_handed()
        self._anchor.close()
