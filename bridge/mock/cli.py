"""``bridge mock``: run the mock hospital, or write its WSDLs.

The gateway's ``bridge`` command hands everything after ``mock`` to
:func:`main`; ``python -m bridge.mock`` does the same.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import socket
from pathlib import Path

import uvicorn

from bridge.mock.catalog import SYSTEMS
from bridge.mock.options import HOSPITAL_TIMEZONE, MockOptions

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge mock",
        description=(
            "Run the mock legacy hospital: SOAP systems at /ehr, /lab, /scheduling, "
            "/pharmacy and /billing, JSON side door at /_mock/."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8081, help="port to bind; 0 picks a free one (8081)"
    )
    parser.add_argument("--patients", type=int, default=5000, help="patients to generate (5000)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the generated data (42)")
    parser.add_argument(
        "--session-idle-timeout",
        type=float,
        default=300.0,
        metavar="SEC",
        help="seconds without a call before a session expires (300)",
    )
    parser.add_argument(
        "--max-sessions", type=int, default=10, help="live sessions allowed per account (10)"
    )
    parser.add_argument(
        "--page-size", type=int, default=25, help="records per FindPatients/FetchNext page (25)"
    )
    parser.add_argument(
        "--today",
        type=_date,
        metavar="YYYY-MM-DD",
        help=(
            "the hospital's reference date: slots, lab history and claims are laid out "
            f"around it (default: the current date in {HOSPITAL_TIMEZONE})"
        ),
    )
    parser.add_argument("--username", default="bridge", help="the one account's user (bridge)")
    parser.add_argument(
        "--password", default="bridge-dev-password", help="the one account's password"
    )
    parser.add_argument(
        "--write-wsdl",
        type=Path,
        metavar="PATH",
        help=(
            "write the WSDLs as checked in (addresses on http://127.0.0.1:8081) and exit: "
            "a directory gets every system's (DIR/hospital/ehr.wsdl, DIR/lab/lab.wsdl, ...); "
            "a path ending in .wsdl gets the EHR's alone"
        ),
    )
    return parser


def _date(text: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _write_wsdls(target: Path) -> list[Path]:
    """Write the checked-in form of the WSDLs; spyne is imported only here."""
    modules = {spec.name: importlib.import_module(f"bridge.mock.{spec.name}") for spec in SYSTEMS}
    if target.suffix == ".wsdl":
        pairs = [(target, modules["ehr"])]
    else:
        pairs = [(target / spec.wsdl_file, modules[spec.name]) for spec in SYSTEMS]
    for path, module in pairs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(module.checked_in_wsdl())
    return [path for path, _ in pairs]


def main(argv: list[str] | None = None) -> int:
    """Run until interrupted; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)

    if args.write_wsdl is not None:
        for path in _write_wsdls(args.write_wsdl):
            print(f"wrote {path}")
        return 0

    try:
        options = MockOptions(
            patients=args.patients,
            seed=args.seed,
            session_idle_timeout=args.session_idle_timeout,
            max_sessions=args.max_sessions,
            page_size=args.page_size,
            username=args.username,
            password=args.password,
            today=args.today,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return _serve(options, args.host, args.port)


def _serve(options: MockOptions, host: str, port: int) -> int:
    from bridge.mock.server import build_app

    config = uvicorn.Config(
        build_app(options),
        host=host,
        port=port,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _ReadyServer(config)
    server.run()
    return 0 if server.started else 1


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _ReadyServer(uvicorn.Server):
    """uvicorn's server, announcing itself on stdout once it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        # Report the bound port, so `--port 0` callers learn which one it is.
        bound = [s for server in self.servers for s in server.sockets]
        port = bound[0].getsockname()[1] if bound else self.config.port
        print(f"mock hospital ready at {_url(self.config.host, port)}", flush=True)
