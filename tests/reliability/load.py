"""The soak test's apps: concurrent clients mixing reads, searches and writes.

Each client is one app with its own token and connection pools. It loops over
a weighted mix of interactions until told to stop, and records every answer
(`Call`) with its time and the replica that gave it, and every write
(`Write`) with the readings it carried and what the app was told.

With several gateway replicas each app has a home replica (apps are spread
over them in turn) and, on purpose, follows its `next` links on another
replica and asks for an asynchronous write's outcome at every replica in
turn, starting with another one: links and status URLs must work anywhere.

Every reading carries a fingerprint no other reading has (a device id, a
value and a time), so reconciliation finds it in the EHR's vitals exactly.

What an app was told, per write:

* `acknowledged`: 201, a transaction-response whose entries are all 201, or
  a 202 whose status URL later gave the created resource;
* `refused`: a final failure (an OperationOutcome with 4xx/5xx other than
  504, an asynchronous write whose status said it failed), or a connection
  that could not be opened (the request never left the app);
* `unknown`: no answer (the connection broke after the request was sent: the
  SIGKILL), a 504 (the gateway says it could not learn the outcome), or a 202
  whose status never became final. Such a write may or may not be applied.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["App", "Call", "Load", "Reading", "Write"]

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category"
# Readings' times start here and move one second per reading: unique, and far
# from a daylight-saving change in the hospital's time zone.
EPOCH = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)

# kind: (weight, legacy system it reaches)
MIX: dict[str, tuple[int, str]] = {
    "patient-read": (22, "ehr"),
    "patient-search": (14, "ehr"),
    "lab-search": (14, "lab"),
    "create": (20, "ehr"),
    "transaction": (12, "ehr"),
    "async-create": (18, "ehr"),
}
# Which legacy system each recorded kind reaches ("store": the gateway's own).
SYSTEM_OF = {
    **{kind: system for kind, (_, system) in MIX.items()},
    "patient-next": "ehr",
    "lab-next": "lab",
    "async-status": "store",
}


@dataclass
class Call:
    """One HTTP exchange: `status` None when no answer came."""

    kind: str
    start: float  # seconds since the run began
    end: float
    status: int | None
    detail: str = ""  # transport error class, or the diagnostics of a 5xx
    wid: str = ""  # the write it carried
    replica: int = 0  # the gateway replica it was sent to

    @property
    def system(self) -> str:
        return SYSTEM_OF[self.kind]


@dataclass
class Reading:
    device: str  # the fingerprint: DeviceId in the EHR
    type_code: str  # HR or STEPS
    value: int
    when: str  # effectiveDateTime

    def observation(self, mrn: str, unit: str | None = None) -> dict[str, Any]:
        code, fhir_unit = ("8867-4", "/min") if self.type_code == "HR" else ("55423-8", "{steps}")
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": VITALS, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{mrn}"},
            "effectiveDateTime": self.when,
            "valueQuantity": {
                "value": self.value,
                "unit": unit or fhir_unit,
                "system": UCUM,
                "code": unit or fhir_unit,
            },
            "device": {"identifier": {"value": self.device}},
        }


@dataclass
class Write:
    wid: str
    kind: str  # create | transaction | async-create
    mrn: str
    readings: list[Reading]
    client: int
    sent: float = 0.0
    answered: float | None = None
    outcome: str = "pending"  # acknowledged | refused | unknown
    status: int | None = None
    detail: str = ""
    expect_refusal: bool = False  # a transaction built with a reading the EHR cannot take
    status_url: str | None = None  # asynchronous writes: where the outcome will be
    accepted: bool = False  # asynchronous writes: a 202 came
    accepted_at: float | None = None
    replica: int = 0  # the replica the write was sent to
    outcome_replica: int | None = None  # asynchronous writes: the one that gave the outcome


@dataclass
class App:
    """One app: its index, a connection pool per replica (one token) and its home replica."""

    index: int
    https: list[httpx.AsyncClient]

    @property
    def home(self) -> int:
        return self.index % len(self.https)

    @property
    def other(self) -> int:
        """Another replica than home (home itself when there is only one)."""
        return (self.home + 1) % len(self.https)


@dataclass
class Load:
    """The clients of one run and everything they recorded."""

    mrns: list[str]
    families: list[str]
    run_tag: str  # in every device id: this run's readings and no others
    rng: random.Random
    clock: Callable[[], float]
    calls: list[Call] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    pollers: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: int = 0

    # -- the fingerprints -----------------------------------------------------

    def _reading(self) -> Reading:
        self._seq += 1
        n = self._seq
        when = (EPOCH + dt.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if n % 2:
            return Reading(f"{self.run_tag}-{n:06d}", "HR", 40 + n % 150, when)
        return Reading(f"{self.run_tag}-{n:06d}", "STEPS", n, when)

    def _write(self, kind: str, app: App, count: int = 1) -> Write:
        mrn = self.rng.choice(self.mrns)
        write = Write(f"w{len(self.writes) + 1}", kind, mrn, [], app.index)
        write.readings = [self._reading() for _ in range(count)]
        self.writes.append(write)
        return write

    # -- one client --------------------------------------------------------------

    async def client(self, app: App) -> None:
        kinds = list(MIX)
        weights = [MIX[k][0] for k in kinds]
        while not self.stopping.is_set():
            kind = self.rng.choices(kinds, weights)[0]
            answered = await getattr(self, "_" + kind.replace("-", "_"))(app)
            if not answered:
                await asyncio.sleep(0.2)  # the gateway is down: do not spin
            await asyncio.sleep(self.rng.uniform(0, 0.05))

    async def _send(
        self,
        kind: str,
        app: App,
        replica: int,
        method: str,
        url: str,
        wid: str = "",
        **kw: Any,
    ) -> httpx.Response | BaseException:
        start = self.clock()
        try:
            reply = await app.https[replica].request(method, url, **kw)
        except httpx.TransportError as exc:
            name = type(exc).__name__
            self.calls.append(Call(kind, start, self.clock(), None, name, wid, replica))
            return exc
        detail = ""
        if reply.status_code >= 400:
            detail = _diagnostics(reply)
        self.calls.append(Call(kind, start, self.clock(), reply.status_code, detail, wid, replica))
        return reply

    async def _patient_read(self, app: App) -> bool:
        path = f"/Patient/{self.rng.choice(self.mrns)}"
        reply = await self._send("patient-read", app, app.home, "GET", path)
        return isinstance(reply, httpx.Response)

    async def _search(self, kind: str, app: App, path: str, params: dict[str, Any]) -> bool:
        reply = await self._send(kind, app, app.home, "GET", path, params=params)
        if not isinstance(reply, httpx.Response):
            return False
        if reply.status_code != 200 or self.rng.random() < 0.4:
            return True
        links = {link["relation"]: link["url"] for link in reply.json().get("link", [])}
        if "next" in links:
            # On another replica than the one that wrote the link: any replica must serve it.
            next_kind = kind.replace("search", "next")
            await self._send(next_kind, app, app.other, "GET", _relative(links["next"]))
        return True

    async def _patient_search(self, app: App) -> bool:
        params = {"family": self.rng.choice(self.families), "_count": 3}
        return await self._search("patient-search", app, "/Patient", params)

    async def _lab_search(self, app: App) -> bool:
        params = {"patient": self.rng.choice(self.mrns), "category": "laboratory", "_count": 5}
        return await self._search("lab-search", app, "/Observation", params)

    async def _create(self, app: App) -> bool:
        write = self._write("create", app)
        return await self._post(
            write, app, "/Observation", write.readings[0].observation(write.mrn)
        )

    async def _transaction(self, app: App) -> bool:
        write = self._write("transaction", app, self.rng.randint(2, 5))
        # One transaction in eight carries a reading the EHR cannot store (a heart
        # rate in kg): the gateway must refuse the whole of it and store none.
        write.expect_refusal = self.rng.random() < 0.125
        bad = len(write.readings) - 1 if write.expect_refusal else -1
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{_uuid(r.device)}",
                    "resource": r.observation(write.mrn, "kg" if i == bad else None),
                    "request": {"method": "POST", "url": "Observation"},
                }
                for i, r in enumerate(write.readings)
            ],
        }
        return await self._post(write, app, "", bundle)

    async def _async_create(self, app: App) -> bool:
        write = self._write("async-create", app)
        headers = {"Prefer": "respond-async"}
        body = write.readings[0].observation(write.mrn)
        return await self._post(write, app, "/Observation", body, headers)

    async def _post(
        self,
        write: Write,
        app: App,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> bool:
        write.sent = self.clock()
        write.replica = app.home
        reply = await self._send(
            write.kind,
            app,
            app.home,
            "POST",
            path,
            write.wid,
            json=body,
            headers={"Content-Type": FHIR_JSON, **(headers or {})},
        )
        write.answered = self.clock()
        if not isinstance(reply, httpx.Response):
            # A connection never opened carried nothing; one that broke might have.
            write.outcome = "refused" if isinstance(reply, httpx.ConnectError) else "unknown"
            write.detail = type(reply).__name__
            return False
        write.status = reply.status_code
        if reply.status_code == 202 and write.kind == "async-create":
            write.accepted, write.accepted_at = True, write.answered
            write.status_url = reply.headers.get("content-location")
            if not write.status_url:
                write.outcome, write.detail = "unknown", "202 without Content-Location"
                return True
            task = asyncio.create_task(self._poll(write, app))
            self.pollers.add(task)
            task.add_done_callback(self.pollers.discard)
            return True
        self._judge(write, reply.status_code, _json(reply))
        return True

    def _judge(self, write: Write, status: int, body: dict[str, Any]) -> None:
        """Set a write's outcome from a final answer (the POST's, or the status URL's)."""
        write.status = status
        if status in (200, 201) and body.get("resourceType") == "Bundle":
            responses = [e.get("response", {}) for e in body.get("entry", [])]
            codes = [str(r.get("status", "")).split(" ")[0] for r in responses]
            if write.kind == "async-create":
                # The status URL's batch-response: one entry, the write's own result.
                code = codes[0] if codes else ""
                outcome = (responses[0].get("outcome") or {}) if responses else {}
                detail = _diagnostics_of(outcome)
                if code in ("200", "201"):
                    write.outcome = "acknowledged"
                elif code == "504":
                    write.outcome, write.detail = "unknown", f"{code} {detail}"
                else:
                    write.outcome, write.detail = "refused", f"{code} {detail}"
            elif len(codes) == len(write.readings) and all(c == "201" for c in codes):
                write.outcome = "acknowledged"
            else:
                write.outcome, write.detail = "refused", f"entries {codes}"
        elif status in (200, 201):
            write.outcome = "acknowledged"
        elif status == 504:
            write.outcome, write.detail = "unknown", _diagnostics_of(body)
        else:
            write.outcome, write.detail = "refused", _diagnostics_of(body)

    async def _poll(self, write: Write, app: App) -> None:
        """Follow an asynchronous write's status URL until it gives the final result.

        Each look goes to the next replica in turn, starting with another one than
        the replica that accepted the write."""
        assert write.status_url is not None
        url = _relative(write.status_url)
        replica = app.home
        while True:
            await asyncio.sleep(0.5)
            replica = (replica + 1) % len(app.https)
            reply = await self._send("async-status", app, replica, "GET", url, write.wid)
            if not isinstance(reply, httpx.Response):
                continue  # the gateway is restarting: the status is in its store
            if reply.status_code in (202, 429, 503):
                # Pending (or the status endpoint busy: not the write's result). Come back
                # when Retry-After says, within reason: the soak wants answers in time.
                await asyncio.sleep(min(_seconds(reply.headers.get("retry-after")), 3) - 0.5)
                continue
            write.answered, write.outcome_replica = self.clock(), replica
            self._judge(write, reply.status_code, _json(reply))
            return

    async def drain(self, timeout: float) -> None:
        """Wait for asynchronous writes' final results; what is still open is unknown."""
        deadline = time.monotonic() + timeout
        while self.pollers and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for task in list(self.pollers):
            task.cancel()
        for write in self.writes:
            if write.outcome == "pending":
                write.outcome, write.detail = "unknown", "status still pending at the end"


def _seconds(value: str | None) -> float:
    try:
        return max(0.5, float(value or 0))
    except ValueError:
        return 0.5


def _relative(url: str) -> str:
    """A link the gateway wrote (public base + path), as a path under any replica's base."""
    path = httpx.URL(url).raw_path.decode("ascii")
    if not path.startswith("/fhir/"):
        raise ValueError(f"a gateway link outside the FHIR base /fhir: {url}")
    return path.removeprefix("/fhir")


def _uuid(device: str) -> str:
    digits = "".join(c for c in device if c.isdigit())[-12:]
    return f"00000000-0000-4000-8000-{int(digits or 0):012d}"


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _diagnostics_of(body: dict[str, Any]) -> str:
    issues = body.get("issue") or [{}]
    return str(issues[0].get("diagnostics", ""))[:200]


def _diagnostics(reply: httpx.Response) -> str:
    return _diagnostics_of(_json(reply))
