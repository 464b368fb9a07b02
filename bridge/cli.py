"""The `bridge` command.

bridge serve --config gateway.yaml      the gateway
bridge demo                             mock hospital + gateway, ready to try
bridge token --scope "patient/*.rs" ...  a token from the demo's development issuer
bridge mock --port 8081                 the mock legacy hospital alone
bridge check [SYSTEM_DIR ...]           check mapping folders against their WSDLs
bridge explain "GET /fhir/Patient?..."  the SOAP envelopes a FHIR request becomes
bridge test [SYSTEM_DIR ...]            run the golden cases beside the mappings
bridge schema [--out docs]              write the mapping format's JSON Schemas
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import ConfigError, FhirError, Problem

if TYPE_CHECKING:
    from bridge.mapping.compiled import CompiledSystem
    from bridge.settings import Settings

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    gc.disable()  # until the app's lifespan settles the heap: see `bridge.app._hold_collections`
    try:
        from bridge.settings import load_settings
        from bridge.store.core import migrate_ahead

        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            reload_mappings=args.reload_mappings,
            workers=args.workers,
            tls={"cert": args.tls_cert, "key": args.tls_key} if args.tls_cert else None,
        )
        # A new store's migrations run in a process of their own while this one loads.
        ahead = migrate_ahead(settings.store.url)
        try:
            return _serve_with(args, settings)
        except BaseException:
            # No gateway: no new store for it either (its migrations are one transaction).
            if ahead is not None and ahead.poll() is None:
                ahead.terminate()
            raise
    finally:
        gc.enable()


def _serve_with(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bridge import busypoll
    from bridge.app import create_app
    from bridge.logs import configure_logging
    from bridge.server import HttpProtocol, client_address_options
    from bridge.settings import share_with_workers

    configure_logging(settings.log_level)
    busypoll.configure(busypoll.window_for(settings.busy_poll, settings.workers))
    options: dict[str, Any] = {
        **_tls_options(settings),
        **client_address_options(settings.trusted_proxies),
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "loop": "uvloop",
        "http": HttpProtocol,  # httptools, one write per answer
        # No WebSockets: an upgrade request is an ordinary one (uvicorn's WebSocket
        # protocols log the URL of each handshake, and a URL may hold a patient id).
        "ws": "none",
        "timeout_graceful_shutdown": 10,
        # No "server: uvicorn" on every answer: it tells attackers what to look up.
        "server_header": False,
    }
    if settings.workers > 1:
        # Each worker builds its own app from the same settings (and paging key).
        share_with_workers(args.config, settings)
        create_app(settings)  # fail here, once, on a bad mapping, before forking
        gc.enable()  # the supervisor's app is never started: its heap is not settled
        gc.collect()  # and is garbage now, before the workers start
        from bridge import workers

        config = uvicorn.Config(
            "bridge.app:worker_app", factory=True, workers=settings.workers, **options
        )
        workers.serve(config)
        return 0
    uvicorn.run(create_app(settings), **options)
    return 0


def _tls_options(settings: Any) -> dict[str, Any]:
    """HTTPS for `bridge serve`: TLS 1.2 at least, modern ciphers, optional client certs."""
    import ssl

    tls = settings.tls
    if tls.cert is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(tls.cert),
        "ssl_keyfile": str(tls.key) if tls.key else None,
        "ssl_ciphers": tls.ciphers,
        # A TLS server context refuses anything older than TLS 1.2 (Python 3.10+).
        "ssl_version": ssl.PROTOCOL_TLS_SERVER,
    }
    if tls.client_ca is not None:
        options["ssl_ca_certs"] = str(tls.client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(host=args.host, port=args.port, mock_port=args.mock_port)


def _token(args: argparse.Namespace) -> int:
    from bridge.auth.devissuer import DevIssuer, default_key_file
    from bridge.auth.scopes import ScopeError, parse_scopes
    from bridge.fhir.ids import is_fhir_id

    if args.patient is not None and not is_fhir_id(args.patient):
        print(
            "--patient: a patient's FHIR id (1-64 letters, digits, '-' or '.', like 100002); "
            "the gateway would refuse this token",
            file=sys.stderr,
        )
        return 2
    try:
        parse_scopes(args.scope)
        issuer = DevIssuer.load(args.issuer_file or default_key_file())
    except ScopeError as exc:
        print(f"--scope: {exc}; the gateway would refuse this token", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        issuer.mint(
            scope=args.scope,
            client_id=args.client_id,
            patient=args.patient,
            subject=args.subject,
            lifetime=args.lifetime,
        )
    )
    return 0


def _mock(argv: list[str]) -> int:
    import importlib.util

    # The mock's server needs spyne, which imports on Python 3.11 only.
    missing = [m for m in ("spyne", "a2wsgi") if importlib.util.find_spec(m) is None]
    if missing and not {"-h", "--help"} & set(argv):
        print(
            f"bridge mock needs {' and '.join(missing)}: install the mock extra on "
            "Python 3.11 (pip install -e '.[mock]'); the gateway itself runs on 3.11-3.13.",
            file=sys.stderr,
        )
        return 2
    from bridge.mock.cli import main as mock_main

    return mock_main(argv)


def _check(args: argparse.Namespace) -> int:
    from bridge.fhir.paging import PageTokens
    from bridge.gateway import Gateway
    from bridge.mapping.compiler import compile_system
    from bridge.settings import environment
    from bridge.tools.golden import check_samples
    from bridge.tools.valuesets import check_value_sets, one_way_fields

    folders = _folders(args.systems)
    failed = False
    env = environment()
    systems = []
    for folder in folders:
        try:
            system = compile_system(Path(folder), env)
        except ConfigError as exc:
            failed = True
            print(exc, file=sys.stderr)
            continue
        problems = check_value_sets(system) + check_samples(system, values=True)
        if problems:
            failed = True
            print("\n".join(str(p) for p in problems), file=sys.stderr)
            continue
        systems.append(system)
        for note in one_way_fields(system):
            print(note)
        resources = ", ".join(sorted(system.resources)) or "no resources"
        print(f"{folder}: ok ({resources})")
    try:
        # Across folders: one system per (resource type, interaction).
        Gateway(systems, page_tokens=PageTokens(b"check"))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _folders(given: list[Path]) -> list[Path]:
    """The system folders named, or every folder of mappings/ with a system.yaml (or a
    misnamed system.yml, which the compiler then reports)."""
    if given:
        return given
    found = sorted(
        p.parent
        for name in ("system.yaml", "system.yml")
        for p in Path("mappings").glob(f"*/{name}")
        if not p.parent.name.startswith(".")
    )
    if not found:
        raise ConfigError(
            [
                Problem(
                    "mappings",
                    1,
                    1,
                    "no system folder found (mappings/<system>/system.yaml); run from the "
                    "folder that holds mappings/, or name the system folders",
                )
            ]
        )
    return found


def _compile_all(folders: list[Path]) -> list[CompiledSystem]:
    from bridge.mapping.compiler import compile_system
    from bridge.settings import environment

    env = environment()
    return [compile_system(folder, env) for folder in folders]


def _explain(args: argparse.Namespace) -> int:
    from bridge.tools.explain import explain, load_body

    systems = _compile_all(_folders(args.system))
    blocks, result = explain(args.request, systems, body=load_body(args.body), against=args.against)
    print("\n".join(blocks) if blocks else "(no SOAP call)")
    if result is not None:
        print(result)
    return 0


def _test(args: argparse.Namespace) -> int:
    from bridge.tools.golden import run_cases

    failed = 0
    total = 0
    for system in _compile_all(_folders(args.systems)):
        for case in run_cases(system):
            total += 1
            print(f"{'ok  ' if case.ok else 'FAIL'} {system.name}/{case.name}")
            if not case.ok:
                failed += 1
                print(case.detail)
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    from bridge.tools.schema import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mock"]:
        return _mock(argv[1:])
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="YAML or TOML settings file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="gateway processes sharing the port")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of the certificate")
    serve.add_argument(
        "--reload-mappings",
        action="store_true",
        default=None,
        help="watch the mapping folders; swap in edits that compile, keep serving otherwise",
    )
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", help="run the mock hospital and the gateway, ready to try")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--mock-port", type=int, default=8081)
    demo.set_defaults(run=_demo)

    token = sub.add_parser(
        "token", help="mint a token against the running demo's development issuer"
    )
    token.add_argument("--scope", required=True, help='SMART scopes, e.g. "patient/*.rs"')
    token.add_argument("--patient", help="the patient in context (the token's patient claim)")
    token.add_argument("--client-id", default="dev-cli", help="the app the token is for")
    token.add_argument("--subject", default="dev-user", help="the token's sub")
    token.add_argument(
        "--lifetime", type=int, default=3600, help="seconds the token is valid (default 3600)"
    )
    token.add_argument(
        "--issuer-file",
        type=Path,
        help="the demo's issuer file (default ~/.bridge/dev-issuer.json)",
    )
    token.set_defaults(run=_token)

    sub.add_parser("mock", help="run the mock legacy hospital (see: bridge mock --help)")

    check = sub.add_parser("check", help="check mapping folders against their WSDLs")
    check.add_argument("systems", nargs="*", type=Path)
    check.set_defaults(run=_check)

    explain = sub.add_parser("explain", help="show the SOAP envelopes a FHIR request becomes")
    explain.add_argument("request", help='e.g. "GET /fhir/Patient?family=smith"')
    explain.add_argument("--body", type=Path, help="a JSON file: the body of POST/PUT/PATCH")
    explain.add_argument("--against", help="also send to a live system at this base URL")
    explain.add_argument("--system", type=Path, action="append", default=[])
    explain.set_defaults(run=_explain)

    golden = sub.add_parser("test", help="run the golden cases kept beside the mappings")
    golden.add_argument("systems", nargs="*", type=Path)
    golden.set_defaults(run=_test)

    schema = sub.add_parser("schema", help="write the JSON Schemas of the mapping format")
    schema.add_argument("--out", type=Path, default=Path("docs"))
    schema.set_defaults(run=_schema)

    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except FhirError as exc:
        print(f"{exc.status} {exc.code}: {exc.diagnostics}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
