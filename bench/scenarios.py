"""The scenarios: each FHIR interaction beside the direct SOAP calls it stands for.

Read, a search page of 50, a search walked 20 `next` pages, page 20 by a reused
link, an Observation create and a batch Bundle of 100 readings; each at the
connection counts given, against one backend, with one row per scenario.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from bench import procs
from bench.drivers import Load
from bench.measure import Backend, Bench
from bench.record import batch

FIXTURES = procs.BENCH / "fixtures"
WALK_PAGES = 20
BATCH = 100  # readings in the wearable batch Bundle


def _soap_headers(meta: dict[str, Any], action: str) -> dict[str, str]:
    return {
        "Content-Type": meta.get("request_content_type", "text/xml; charset=utf-8"),
        "SOAPAction": f'"{action}"',
    }


def _soap_post(backend: Backend, meta: dict[str, Any], action: str, body: bytes) -> bytes:
    status, answer = procs.fetch(
        backend.url, method="POST", body=body, headers=_soap_headers(meta, action)
    )
    if status != 200:
        raise RuntimeError(f"{action} on {backend.name} answered {status}: {answer[:300]!r}")
    return answer


def login_direct(backend: Backend, meta: dict[str, Any], n: int) -> None:
    """Sessions for the direct calls, as any legacy client would open them."""
    body = (FIXTURES / "Login.request.xml").read_bytes()
    for _ in range(n):
        answer = _soap_post(backend, meta, "Login", body)
        match = re.search(rb"SessionId>([^<]+)<", answer)
        if match is None:
            raise RuntimeError(f"no SessionId in {backend.name}'s Login answer")
        backend.sessions.append(match.group(1).decode())


def logout_direct(backend: Backend, meta: dict[str, Any]) -> None:
    body = (FIXTURES / "Logout.request.xml").read_bytes()
    for session in backend.sessions:
        with contextlib.suppress(Exception):
            _soap_post(backend, meta, "Logout", body.replace(b"@@SESSION@@", session.encode()))
    backend.sessions.clear()


def fhir_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def page_url(gateway: procs.Gateway, token: str, search: str, page: int) -> str:
    """The path of the `page`-th page of a search, by walking its next links once."""
    path = f"/fhir/Patient?{search}"
    for _ in range(page - 1):
        status, body = procs.fetch(
            f"http://127.0.0.1:{gateway.port}{path}", headers=fhir_headers(token)
        )
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body[:300]!r}")
        bundle = json.loads(body)
        url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    return path


def run_scenarios(
    bench: Bench,
    backend: Backend,
    gateways: list[procs.Gateway],
    token: str,
    conns: tuple[int, ...],
    *,
    direct: bool = True,
    reused_page: bool = False,
    writes: bool = False,
    only_read: bool = False,
    page_beside_walk: bool = False,
) -> None:
    meta = bench.meta
    mode = bench.mode
    workers = sum(g.workers for g in gateways)
    gw_addrs = [g.addr for g in gateways]
    headers = fhir_headers(token)
    read_path = f"/fhir/Patient/{meta['read_id']}"
    search = meta["search"]
    count = int(dict(p.split("=") for p in search.split("&"))["_count"])
    per_call = int(meta["records_per_legacy_page"])
    calls_per_page = -(-count // per_call)
    sessions = backend.sessions or ["bench-direct"]

    # The direct envelopes: exactly what the gateway sent, with a live session.
    read_body = bench.work / f"GetPatient-{backend.name}.xml"
    read_body.write_bytes(
        (FIXTURES / "GetPatient.request.xml")
        .read_bytes()
        .replace(b"@@SESSION@@", sessions[0].encode())
    )

    def soap_walk() -> dict[str, Any]:
        return {
            "path": backend.path,
            "headers": {"Content-Type": meta.get("request_content_type", "text/xml")},
            "find_file": str(FIXTURES / "FindPatients.request.xml"),
            "next_file": str(FIXTURES / "FetchNext.request.xml"),
            "calls_per_page": calls_per_page,
            "sessions": sessions,
        }

    base_row = {"backend": backend.name, "workers": workers}
    d = mode.duration
    for c in conns:
        # Patient read: GET /fhir/Patient/{id} vs POST GetPatient.
        direct_result = None
        if direct:
            direct_result = bench.measure(
                f"direct GetPatient {backend.name} c{c}",
                Load(
                    [backend.addr],
                    c,
                    d,
                    method="POST",
                    path=backend.path,
                    headers=_soap_headers(meta, "GetPatient"),
                    body_file=str(read_body),
                ),
                backend,
                [],
            )
        gw = bench.measure(
            f"gateway read {backend.name} w{workers} c{c}",
            Load(gw_addrs, c, d, path=read_path, headers=headers),
            backend,
            gateways,
        )
        bench.row(
            scenario="Patient read",
            conns=c,
            tool=gw["tool"],
            direct_what="GetPatient",
            gw=gw,
            direct=direct_result,
            **base_row,
        )

    if only_read:
        return
    for c in conns:
        # A page of 50: the FHIR search vs FindPatients + FetchNext on the same backend.
        # The Python loader on both sides: the direct side is a sequence of calls.
        direct_result = None
        if direct:
            direct_result = bench.measure(
                f"direct FindPatients+FetchNext {backend.name} c{c}",
                Load(
                    [backend.addr],
                    c,
                    d,
                    mode="soap-walk",
                    pages=1,
                    soap_walk=soap_walk(),
                ),
                backend,
                [],
                driver=bench.loader,
            )
        gw = bench.measure(
            f"gateway search _count={count} {backend.name} w{workers} c{c}",
            Load(gw_addrs, c, d, path=f"/fhir/Patient?{search}", headers=headers),
            backend,
            gateways,
            driver=bench.loader,
        )
        bench.row(
            scenario=f"Patient search, page of {count}",
            conns=c,
            tool=gw["tool"],
            direct_what=f"FindPatients + {calls_per_page - 1} FetchNext",
            gw=gw,
            direct=direct_result,
            **base_row,
        )

    for c in conns:
        # Walk 20 pages through next links vs the same cursor walk on SOAP.
        direct_result = None
        if direct:
            direct_result = bench.measure(
                f"direct cursor walk {WALK_PAGES} pages {backend.name} c{c}",
                Load(
                    [backend.addr],
                    c,
                    d,
                    mode="soap-walk",
                    pages=WALK_PAGES,
                    soap_walk=soap_walk(),
                ),
                backend,
                [],
                driver=bench.loader,
            )
        # Under load a page's own CPU cannot be told apart, so the walk's average page
        # is compared with page 1 alone, measured just before and just after the walk:
        # their mean cancels a machine that drifts between windows.
        beside = page_beside_walk and c > 1

        def page_one(when: str, c: int = c) -> dict[str, Any]:
            return bench.measure(
                f"gateway page 1 {when} the walk {backend.name} w{workers} c{c}",
                Load(gw_addrs, c, d, path=f"/fhir/Patient?{search}", headers=headers),
                backend,
                gateways,
                driver=bench.loader,
            )

        before = page_one("before") if beside else None
        gw = bench.measure(
            f"gateway walk {WALK_PAGES} pages {backend.name} w{workers} c{c}",
            Load(
                gw_addrs,
                c,
                d,
                mode="walk",
                pages=WALK_PAGES,
                path=f"/fhir/Patient?{search}",
                headers=headers,
                cpu_pid=gateways[0].pid if workers == 1 else None,
            ),
            backend,
            gateways,
            driver=bench.loader,
        )
        if before is not None:
            after = page_one("after")
            gw["page1_beside_cpu_us"] = [before["gateway_cpu_us"], after["gateway_cpu_us"]]
        bench.row(
            scenario=f"search walked {WALK_PAGES} next pages (per page)",
            conns=c,
            tool=gw["tool"],
            direct_what=f"cursor walk, {calls_per_page} calls/page",
            gw=gw,
            direct=direct_result,
            **base_row,
        )

    if writes:
        run_writes(bench, backend, gateways, headers, conns, direct=direct)

    if reused_page:
        path = page_url(gateways[0], token, search, WALK_PAGES)
        for c in conns:
            gw = bench.measure(
                f"gateway page {WALK_PAGES} link reused {backend.name} w{workers} c{c}",
                Load(gw_addrs, c, d, path=path, headers=headers),
                backend,
                gateways,
            )
            bench.row(
                scenario=f"page {WALK_PAGES} by a reused link (search replayed)",
                conns=c,
                tool=gw["tool"],
                direct_what="",
                gw=gw,
                direct=None,
                **base_row,
            )


def writes_recorded(served: set[str]) -> bool:
    """True when record.py recorded the Observation create and the gateway serves it."""
    return (FIXTURES / "RecordVitals.request.xml").exists() and "Observation" in served


def run_writes(
    bench: Bench,
    backend: Backend,
    gateways: list[procs.Gateway],
    headers: dict[str, str],
    conns: tuple[int, ...],
    *,
    direct: bool = True,
) -> None:
    """Observation create and a batch Bundle of 100 readings vs RecordVitals calls."""
    meta = bench.meta
    d = bench.mode.duration
    workers = sum(g.workers for g in gateways)
    gw_addrs = [g.addr for g in gateways]
    sessions = backend.sessions or ["bench-direct"]
    post = {**headers, "Content-Type": "application/fhir+json"}
    create_body = FIXTURES / "Observation.create.json"
    batch_body = bench.work / f"batch-{BATCH}.json"
    batch_body.write_text(json.dumps(batch(meta["read_id"], BATCH)))
    vitals = bench.work / f"RecordVitals-{backend.name}.xml"
    vitals.write_bytes(
        (FIXTURES / "RecordVitals.request.xml")
        .read_bytes()
        .replace(b"@@SESSION@@", sessions[0].encode())
    )
    per_entry = (meta.get("writes") or {}).get("legacy_calls_per_batch_entry", 1) or 1
    base_row = {"backend": backend.name, "workers": workers}
    for c in conns:
        direct_result = None
        if direct:
            direct_result = bench.measure(
                f"direct RecordVitals {backend.name} c{c}",
                Load(
                    [backend.addr],
                    c,
                    d,
                    method="POST",
                    path=backend.path,
                    headers=_soap_headers(meta, "RecordVitals"),
                    body_file=str(vitals),
                ),
                backend,
                [],
            )
        gw = bench.measure(
            f"gateway Observation create {backend.name} w{workers} c{c}",
            Load(
                gw_addrs,
                c,
                d,
                method="POST",
                path="/fhir/Observation",
                headers=post,
                body_file=str(create_body),
            ),
            backend,
            gateways,
        )
        bench.row(
            scenario="Observation create (one reading)",
            conns=c,
            tool=gw["tool"],
            direct_what="RecordVitals",
            gw=gw,
            direct=direct_result,
            **base_row,
        )
    calls = round(BATCH * per_entry)
    for c in conns:
        direct_result = None
        if direct:
            direct_result = bench.measure(
                f"direct {calls} x RecordVitals {backend.name} c{c}",
                Load(
                    [backend.addr],
                    c,
                    d,
                    mode="soap-seq",
                    soap_seq={
                        "path": backend.path,
                        "headers": {"Content-Type": meta.get("request_content_type", "text/xml")},
                        "calls": [["RecordVitals", str(FIXTURES / "RecordVitals.request.xml")]],
                        "repeat": calls,
                        "sessions": sessions,
                    },
                ),
                backend,
                [],
                driver=bench.loader,
            )
        gw = bench.measure(
            f"gateway batch of {BATCH} readings {backend.name} w{workers} c{c}",
            Load(
                gw_addrs, c, d, method="POST", path="/fhir", headers=post, body_file=str(batch_body)
            ),
            backend,
            gateways,
            driver=bench.loader,
        )
        bench.row(
            scenario=f"wearable batch Bundle of {BATCH} readings",
            conns=c,
            tool=gw["tool"],
            direct_what=f"{calls} RecordVitals calls",
            gw=gw,
            direct=direct_result,
            **base_row,
        )
