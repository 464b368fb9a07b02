"""Record the canned backend's answers from a real `bridge mock` run.

Starts the real mock hospital (default options), a recording proxy in front
of it, and a real gateway pointed at the proxy; reads one Patient, searches
``gender=female&_count=50`` and follows one ``next`` link, creates one
wearable reading (Observation) and posts a batch of two; then stops the
gateway (which logs its session out). Every SOAP operation's first request
and answer is written to ``bench/fixtures/<Operation>.{request,response}.xml``
exactly as it crossed the wire, with the session id replaced by
``@@SESSION@@``, the cursor id by ``@@CURSOR@@`` and a new reading's id by
``@@READING@@``; ``Observation.create.json`` is the FHIR body the create
sent, and ``recorded.json`` says what was asked. Run it again only when the
mock or the mappings change:

    .venv/bin/python bench/record.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs
from bench.procs import ROOT, fetch, new_paging_key, start_gateway

if TYPE_CHECKING:
    from bridge.mock.hospital import MockHospital

FIXTURES = ROOT / "bench" / "fixtures"
SEARCH = "gender=female&_count=50"
SCOPE = "user/*.read user/*.write"


def observation(mrn: str, i: int = 0) -> dict[str, Any]:
    """A wearable's heart-rate reading, as a device aggregator would send it."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": f"2026-11-20T{8 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:"
        f"{i % 60:02d}-05:00",
        "valueQuantity": {
            "value": 60 + i % 40,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        "device": {"identifier": {"value": "watch-0001"}},
    }


def batch(mrn: str, n: int) -> dict[str, Any]:
    """A batch Bundle of `n` readings, each created on its own (FHIR batch semantics)."""
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": observation(mrn, i), "request": {"method": "POST", "url": "Observation"}}
            for i in range(n)
        ],
    }


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Proxy)
        self.target = target
        self.exchanges: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's client expects
    server: _Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        forward = {
            k: v for k, v in self.headers.items() if k.lower() in ("content-type", "soapaction")
        }
        request = urllib.request.Request(self.server.target, data=body, headers=forward)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, answer, ctype = resp.status, resp.read(), resp.headers["Content-Type"]
        except urllib.error.HTTPError as exc:  # SOAP faults come as HTTP 500
            status, answer, ctype = exc.code, exc.read(), exc.headers["Content-Type"]
        with self.server.lock:
            self.server.exchanges.append(
                {
                    "action": self.headers.get("SOAPAction", "").strip('"'),
                    "content_type_in": self.headers.get("Content-Type", ""),
                    "request": body,
                    "status": status,
                    "content_type": ctype,
                    "response": answer,
                }
            )
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _redact(xml: bytes, element: str, placeholder: bytes) -> bytes:
    """Replace the text of every ``<...element>`` with the placeholder."""
    pattern = re.compile(rb"(<(?:[\w.-]+:)?" + element.encode() + rb">)([^<]*)(<)")
    return pattern.sub(lambda m: m.group(1) + placeholder + m.group(3), xml)


def _post(url: str, token: str, body: dict[str, Any]) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    return fetch(url, method="POST", body=json.dumps(body).encode(), headers=headers)


def _get(url: str, token: str) -> dict[str, Any]:
    status, body = fetch(url, headers={"Authorization": f"Bearer {token}"})
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}: {body[:500]!r}")
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def _richest_patient(hospital: MockHospital) -> str:
    """An MRN whose record fills every optional field, so a read maps every field."""
    best = max(hospital.sample_patients(200), key=lambda r: sum(1 for v in r.values() if v))
    return str(best["MRN"])


def record() -> dict[str, Any]:
    from bridge.auth.devissuer import DevIssuer
    from bridge.mock.hospital import MockHospital

    with contextlib.ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rec-")))
        hospital = stack.enter_context(MockHospital.start())
        proxy = _Recorder(hospital.ehr_url)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        stack.callback(proxy.server_close)
        stack.callback(proxy.shutdown)
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}/ehr"

        issuer = DevIssuer(issuer="https://bench.issuer.invalid", audience="")
        gateway = start_gateway(
            run_dir,
            proxy_url,
            base_url=None,
            issuer=issuer.issuer,
            jwks=issuer.jwks(),
            paging_key=new_paging_key(),
            name="record",
        )
        base = f"http://127.0.0.1:{gateway.port}/fhir"
        issuer.audience = base
        token = issuer.mint(scope=SCOPE, client_id="bench")
        try:
            mrn = _richest_patient(hospital)
            patient = _get(f"{base}/Patient/{mrn}", token)
            page1 = _get(f"{base}/Patient?{SEARCH}", token)
            nxt = next(link["url"] for link in page1["link"] if link["relation"] == "next")
            page2 = _get(nxt, token)
            # Writes, when the mappings have them (an Observation create).
            created, _ = _post(f"{base}/Observation", token, observation(mrn))
            before = len(proxy.exchanges)
            batched, _ = _post(base, token, batch(mrn, 2))
            batch_calls = len(proxy.exchanges) - before
        finally:
            gateway.stop()  # logs its session out: records Logout
        time.sleep(0.2)
        exchanges = list(proxy.exchanges)

    FIXTURES.mkdir(parents=True, exist_ok=True)
    seen: dict[str, dict[str, Any]] = {}
    for exchange in exchanges:
        seen.setdefault(exchange["action"], exchange)
    wanted = ("Login", "GetPatient", "FindPatients", "FetchNext", "Logout")
    missing = [op for op in wanted if op not in seen]
    if missing:
        raise RuntimeError(f"the gateway made no {missing} call; recorded {sorted(seen)}")
    writes = created == 201 and "RecordVitals" in seen
    if writes:
        wanted += ("RecordVitals",)
        (FIXTURES / "Observation.create.json").write_text(
            json.dumps(observation(mrn), indent=1) + "\n"
        )
    else:
        print(f"no Observation create recorded (HTTP {created}): the writes are not benchmarked")
    for op in wanted:
        exchange = seen[op]
        request = _redact(exchange["request"], "SessionId", b"@@SESSION@@")
        request = _redact(request, "CursorId", b"@@CURSOR@@")
        response = _redact(exchange["response"], "SessionId", b"@@SESSION@@")
        response = _redact(response, "CursorId", b"@@CURSOR@@")
        response = _redact(response, "ReadingId", b"@@READING@@")
        if exchange["status"] != 200:
            raise RuntimeError(f"{op} answered HTTP {exchange['status']}")
        (FIXTURES / f"{op}.request.xml").write_bytes(request)
        (FIXTURES / f"{op}.response.xml").write_bytes(response)
    meta = {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": "bridge mock (spyne), default options",
        "mock_options": hospital.options,
        "content_type": seen["GetPatient"]["content_type"],
        "request_content_type": seen["GetPatient"]["content_type_in"],
        "read_id": mrn,
        "search": SEARCH,
        "search_total": page1.get("total"),
        "records_per_legacy_page": len(
            re.findall(rb"<(?:[\w.-]+:)?Patient>", seen["FindPatients"]["response"])
        ),
        "scope": SCOPE,
        "writes": {
            "observation_create": created,
            "batch_of_2": batched,
            "legacy_calls_per_batch_entry": batch_calls / 2,
        }
        if writes
        else None,
        "calls": [e["action"] for e in exchanges],
        "checks": {
            "patient_id": patient.get("id"),
            "page1_entries": len(page1.get("entry", [])),
            "page2_entries": len(page2.get("entry", [])),
        },
    }
    (FIXTURES / "recorded.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source", type=Path, help="run bridge from this tree (default: this checkout)"
    )
    args = parser.parse_args(argv)
    if args.source is not None:
        procs.use_source(args.source)
    meta = record()
    print(json.dumps(meta, indent=2))
    print(f"wrote {FIXTURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
