"""A running mock hospital, driven from tests: start it, poke its side door.

Standard library only (``subprocess`` + ``urllib``) and no spyne import, so
the pytest plugin costs nothing to load and works without an HTTP client
library. The mock itself runs in a child process, exactly as ``bridge mock``
runs in production-like setups, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from bridge.mock.catalog import SYSTEMS

__all__ = ["MockHospital", "MockHospitalError"]

READY_PREFIX = "mock hospital ready at "
START_TIMEOUT = 20.0

# Keyword -> default, mirroring `bridge mock`'s options (the CLI owns the
# real defaults; these are what a test sees on the handle).
_OPTIONS: dict[str, Any] = {
    "patients": 5000,
    "seed": 42,
    "session_idle_timeout": 300,
    "max_sessions": 10,
    "page_size": 25,
    "username": "bridge",
    "password": "bridge-dev-password",
    "today": None,  # None: the current date in the hospital (America/New_York)
}

_PATHS = {spec.name: spec.path for spec in SYSTEMS}


class MockHospitalError(RuntimeError):
    """The mock could not start, or its side door answered with an error."""


class MockHospital:
    """Handle on a running mock hospital.

    Start one for a block of code (the fixtures ``mock_hospital`` and
    ``mock_hospital_server`` do this for you)::

        with MockHospital.start(max_sessions=4, page_size=10) as hospital:
            post_soap(hospital.ehr_url, login_envelope(hospital.username, hospital.password))
            assert hospital.stats()["ehr"]["logins"] == 1
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"mock hospital URL must be http(s)://..., got {url!r}")
        self.url = url.rstrip("/")
        self.ehr_url = self.url + "/ehr"
        self.lab_url = self.url + "/lab"
        self.scheduling_url = self.url + "/scheduling"
        self.pharmacy_url = self.url + "/pharmacy"
        self.billing_url = self.url + "/billing"
        self.options: dict[str, Any] = {**_OPTIONS, **(options or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def username(self) -> str:
        return str(self.options["username"])

    @property
    def password(self) -> str:
        return str(self.options["password"])

    def __repr__(self) -> str:
        return f"MockHospital({self.url!r})"

    def system_url(self, system: str) -> str:
        """The SOAP endpoint of ``system`` (``ehr``, ``lab``, ``scheduling``, ...)."""
        try:
            return self.url + _PATHS[system]
        except KeyError:
            raise ValueError(f"unknown system {system!r}; known: {sorted(_PATHS)}") from None

    def wsdl_url(self, system: str) -> str:
        return self.system_url(system) + "?wsdl"

    # -- lifecycle ------------------------------------------------------

    @classmethod
    @contextmanager
    def start(cls, *, host: str = "127.0.0.1", **options: Any) -> Iterator[MockHospital]:
        """Run a mock hospital with ``options`` for the duration of the block.

        Options are ``bridge mock``'s, as keywords: ``patients``, ``seed``,
        ``session_idle_timeout``, ``max_sessions``, ``page_size``,
        ``username``, ``password``, ``today`` (``"2026-11-24"`` or a
        ``datetime.date``; pin it for deterministic slots and histories).
        """
        hospital = cls.spawn(host=host, **options)
        try:
            yield hospital
        finally:
            hospital.stop()

    @classmethod
    def spawn(cls, *, host: str = "127.0.0.1", **options: Any) -> MockHospital:
        """Start a mock hospital and return once it listens; call :meth:`stop`."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise TypeError(f"unknown mock hospital options {unknown}; known: {sorted(_OPTIONS)}")
        argv = [sys.executable, "-m", "bridge.mock", "--host", host, "--port", "0"]
        for key, value in options.items():
            if value is not None:
                argv += ["--" + key.replace("_", "-"), str(value)]

        # stderr goes to a file, not a pipe: nobody reads it while the mock
        # runs, and a full pipe would block the child.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env)
        assert process.stdout is not None
        try:
            line = _first_line(process.stdout, START_TIMEOUT)
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a test timeout): nobody
            # holds a handle yet, so the child would outlive the test run.
            _terminate(process)
            process.stdout.close()
            stderr.close()
            raise
        if line is None or not line.startswith(READY_PREFIX):
            if line == "":  # EOF on stdout: the child is exiting.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            exited = process.poll() is not None
            _terminate(process)
            process.stdout.close()
            stderr.seek(0)
            output = stderr.read().decode(errors="replace").strip()
            stderr.close()
            if exited:
                why = f"exited with code {process.returncode} before it was ready"
            elif line is None:
                why = f"did not report ready within {START_TIMEOUT:g} s"
            else:
                why = f"printed {line!r} instead of the ready line"
            raise MockHospitalError(
                f"mock hospital {why}.\ncommand: {' '.join(argv)}\nstderr:\n{output or '(empty)'}"
            )
        hospital = cls(line[len(READY_PREFIX) :].strip(), options=options)
        hospital._process = process
        hospital._stderr = stderr
        return hospital

    def stop(self) -> None:
        """Stop a mock started by :meth:`start`/:meth:`spawn`; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        _terminate(process)
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- the side door ----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Call and fault counters per system, e.g. ``stats()["ehr"]["logins"]``."""
        return dict(self._request("GET", "/_mock/stats"))

    def info(self) -> dict[str, Any]:
        """``GET /_mock/info``: seed, patients, ``today``, time zone, the systems."""
        return dict(self._request("GET", "/_mock/info"))

    def get(self, path: str, **params: Any) -> Any:
        """A side-door view as parsed JSON, e.g. ``get("/_mock/ehr/vitals", mrn="100001")``.

        ``path`` may leave out the ``/_mock`` prefix; keyword values become
        the query string (``None`` is left out).
        """
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/_mock/"):
            path = "/_mock" + path
        query = {k: str(v) for k, v in params.items() if v is not None}
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self._request("GET", path)

    def reset(self) -> None:
        """Forget sessions, cursors, stats, injected faults and every write made through SOAP."""
        self._request("POST", "/_mock/reset")

    def inject_faults(self, **settings: Any) -> dict[str, Any]:
        """Inject faults; keywords as ``POST /_mock/faults`` takes them.

        ``system`` (default: all), ``latency_ms``, ``fault_rate`` (0..1),
        ``expire_sessions`` (one-shot), ``refuse_seconds``, ``drop_calls``,
        ``write_fault`` (``"apply-then-delay"``, ``"apply-then-drop"``,
        ``"drop-before-apply"`` or None), ``write_delay_ms``.
        """
        return dict(self._request("POST", "/_mock/faults", settings))

    def faults(self) -> dict[str, Any]:
        """The injected fault settings per system, as ``GET /_mock/faults`` shows them."""
        return dict(self._request("GET", "/_mock/faults"))

    def clear_faults(self) -> None:
        self._request("DELETE", "/_mock/faults")

    def expire_sessions(self, system: str | None = None) -> None:
        """Expire every live session now, as an idle timeout would."""
        body: dict[str, Any] = {"expire_sessions": True}
        if system is not None:
            body["system"] = system
        self._request("POST", "/_mock/faults", body)

    def sample_patients(self, n: int = 10, *, offset: int = 0) -> list[dict[str, str]]:
        """``n`` raw EHR records (``MRN``, ``Name``, ``DOB``, ...) in MRN order."""
        return list(self._request("GET", f"/_mock/patients?limit={n}&offset={offset}"))

    def patient(self, mrn: str) -> dict[str, str]:
        """One raw EHR record by MRN."""
        return dict(self._request("GET", f"/_mock/patients/{urllib.parse.quote(mrn, safe='')}"))

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        # The URL is http:// by construction (checked in __init__).
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise MockHospitalError(f"{method} {path} -> {exc.code}: {detail}") from exc
        except OSError as exc:  # URLError, a timeout, a reset connection
            why = getattr(exc, "reason", exc)
            raise MockHospitalError(
                f"{method} {path}: cannot reach the mock hospital at {self.url}: {why}"
            ) from exc


def _first_line(stream: IO[bytes], timeout: float) -> str | None:
    """The first line the child prints, ``""`` at EOF, ``None`` on timeout."""
    # A thread, because a pipe read cannot time out portably.
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True)
    reader.start()
    try:
        raw = lines.get(timeout=timeout)
    except queue.Empty:
        return None
    return raw.decode(errors="replace").strip()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
