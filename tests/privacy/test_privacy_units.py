"""Units of the privacy and audit layer: date ranges, Consent rules, failing closed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from bridge.audit import AuditMiddleware, AuditTrail, classify, not_coming
from bridge.errors import FhirError, InvalidRequest, UnprocessableEntity
from bridge.fhir.outcome import operation_outcome
from bridge.fhir.response import FhirResponse
from bridge.local import date_bounds
from bridge.privacy import MAX_PROVISION_NESTING, Privacy, parse_consent
from bridge.store import Store, StoreUnavailable


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("values", "since", "until"),
    [
        (["2026-11-24"], "2026-11-24T00:00:00", "2026-11-25T00:00:00"),
        (["ge2026-11"], "2026-11-01T00:00:00", None),
        (["lt2026"], None, "2026-01-01T00:00:00"),
        (["gt2026-12-31"], "2027-01-01T00:00:00", None),
        (["ge2026-11-01", "le2026-11-30"], "2026-11-01T00:00:00", "2026-12-01T00:00:00"),
        (["eq2026-11-24T10:00:00Z"], "2026-11-24T10:00:00", "2026-11-24T10:00:01"),
        (["2026-11-24T05:00-05:00"], "2026-11-24T10:00:00", "2026-11-24T10:01:00"),
    ],
)
def test_date_search_values_become_ranges(
    values: list[str], since: str | None, until: str | None
) -> None:
    assert date_bounds(values) == (
        _ts(since) if since else None,
        _ts(until) if until else None,
    )


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "ne2026-11-24", "2026-11-24T10Z"])
def test_bad_date_search_values_are_400(value: str) -> None:
    with pytest.raises(InvalidRequest):
        date_bounds([value])


DAY = 86_400.0
LAST_DAY = _ts("9999-12-31T00:00:00")
FIRST_SECOND = _ts("0001-01-01T00:00:00") - 14 * 3600  # 0001-01-01T00:00:00+14:00


@pytest.mark.parametrize(
    ("values", "since", "until"),
    [
        # The calendar's last day, month and year end on the first second past it.
        (["9999-12-31"], LAST_DAY, LAST_DAY + DAY),
        (["ge9999-12-31"], LAST_DAY, None),
        (["gt9999-12-31"], LAST_DAY + DAY, None),
        (["le9999-12"], None, LAST_DAY + DAY),
        (["9999"], _ts("9999-01-01T00:00:00"), LAST_DAY + DAY),
        (["2024-02"], _ts("2024-02-01T00:00:00"), _ts("2024-03-01T00:00:00")),
        (["le9999-12-31T23:59:59-14:00"], None, LAST_DAY + DAY + 14 * 3600),
        (["0001-01-01T00:00:00+14:00"], FIRST_SECOND, FIRST_SECOND + 1),
    ],
)
def test_date_search_values_at_the_calendars_ends(
    values: list[str], since: float | None, until: float | None
) -> None:
    assert date_bounds(values) == (since, until)


def _consent(provision: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"code": "59284-0"}]}],
        "patient": {"reference": "Patient/7"},
        "provision": provision,
        **extra,
    }


APP = {
    "role": {"coding": [{"code": "IRCP"}]},
    "reference": {"identifier": {"system": "urn:ietf:params:oauth:client-id", "value": "a"}},
}


def test_deny_rules_match_app_type_category_and_label() -> None:
    patient, status, rules = parse_consent(
        _consent(
            {
                "type": "permit",
                "actor": [APP],
                "provision": [
                    {
                        "type": "deny",
                        "class": [{"code": "Observation"}],
                        "code": [{"coding": [{"system": "cat", "code": "laboratory"}]}],
                    },
                    {"type": "deny", "securityLabel": [{"system": "conf", "code": "R"}]},
                ],
            }
        )
    )
    assert (patient, status, len(rules)) == ("7", "active", 2)
    lab = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": "cat", "code": "laboratory"}]}],
    }
    vital = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": "cat", "code": "vital-signs"}]}],
    }
    restricted = {
        "resourceType": "Condition",
        "meta": {"security": [{"system": "conf", "code": "R"}]},
    }
    labs, labels = rules
    assert labs.applies("a", lab)
    assert not labs.applies("b", lab)  # another app
    assert not labs.applies("a", vital)
    assert labels.applies("a", restricted)
    assert not labels.applies("a", {"resourceType": "Condition"})


def test_a_top_level_deny_withholds_everything_from_its_apps() -> None:
    _, _, (rule,) = parse_consent(_consent({"type": "deny", "actor": [APP]}))
    assert rule.applies("a", {"resourceType": "Patient"})
    assert not rule.applies("b", {"resourceType": "Patient"})


def test_only_the_apps_and_types_a_consent_names_pay_for_it(tmp_path: Path) -> None:
    # A search pays for Consents (filtering while it pages, a record read ahead) only
    # where one may withhold something: its app and its type.
    async def reach(provision: dict[str, Any], name: str) -> list[bool]:
        store = await Store.open(f"sqlite:///{tmp_path / name}")
        privacy = Privacy(store, poll_interval=60)
        try:
            await privacy.reload()
            nothing = privacy.may_withhold("a", "Observation")
            await privacy.save_consent(_consent(provision), None)
            await privacy.reload()
            asked = [("a", "Observation"), ("a", "Condition"), ("b", "Observation")]
            return [nothing, *(privacy.may_withhold(c, t) for c, t in asked)]
        finally:
            await store.close()

    deny = {"type": "deny", "class": [{"code": "Observation"}]}
    by_type = {"type": "permit", "actor": [APP], "provision": [deny]}
    assert asyncio.run(reach(by_type, "one.db")) == [False, True, False, False]
    everything = {"type": "deny", "actor": [APP]}
    assert asyncio.run(reach(everything, "two.db")) == [False, True, True, False]


@pytest.mark.parametrize(
    "provision",
    [
        {"type": "permit"},  # active but denies nothing
        {"type": "permit", "provision": [{"type": "deny", "purpose": [{"code": "TREAT"}]}]},
        {"type": "permit", "provision": [{"type": "deny", "code": [{"text": "no code"}]}]},
    ],
)
def test_consents_the_gateway_cannot_enforce_are_422(provision: dict[str, Any]) -> None:
    with pytest.raises(UnprocessableEntity):
        parse_consent(_consent(provision))


def _nested(levels: int) -> dict[str, Any]:
    """A permit provision with `levels` deny provisions nested in one another."""
    provision: dict[str, Any] = {"type": "deny", "class": [{"code": "Observation"}]}
    for _ in range(levels - 1):
        provision = {"type": "deny", "provision": [provision]}
    return {"type": "permit", "actor": [APP], "provision": [provision]}


def test_provisions_nested_to_the_limit_are_enforced() -> None:
    _, _, rules = parse_consent(_consent(_nested(MAX_PROVISION_NESTING)))
    assert len(rules) == MAX_PROVISION_NESTING


@pytest.mark.parametrize("levels", [MAX_PROVISION_NESTING + 1, 200, 2000])
def test_provisions_nested_past_the_limit_are_422_naming_the_first_too_deep(levels: int) -> None:
    # 2000 levels would exhaust the recursion of the model's validation: a 500.
    with pytest.raises(UnprocessableEntity) as caught:
        parse_consent(_consent(_nested(levels)))
    where = "Consent.provision" + ".provision[0]" * (MAX_PROVISION_NESTING + 1)
    assert caught.value.diagnostics == (
        f"{where}: provisions may nest at most {MAX_PROVISION_NESTING} levels deep"
    )
    assert caught.value.expression == [where]


def test_a_stored_consent_nested_past_the_limit_stays_enforced() -> None:
    # Accepted before the limit existed: reloading it must not drop what it denies.
    _, _, rules = parse_consent(_consent(_nested(40)), max_nesting=None)
    assert len(rules) == 40


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/fhir/Patient/1", ("read", "Patient", "1")),
        ("GET", "/fhir/Patient", ("search-type", "Patient", None)),
        ("POST", "/fhir/Patient/_search", ("search-type", "Patient", None)),
        ("POST", "/fhir/Observation", ("create", "Observation", None)),
        ("PUT", "/fhir/Appointment/9", ("update", "Appointment", "9")),
        ("PATCH", "/fhir/Appointment/9", ("patch", "Appointment", "9")),
        ("DELETE", "/fhir/Appointment/9", ("delete", "Appointment", "9")),
        ("POST", "/fhir", ("batch", None, None)),
        ("GET", "/fhir/metadata", ("capabilities", None, None)),
        ("GET", "/fhir/Claim/5/$status", ("operation", "Claim", "5")),
        ("POST", "/admin/revocations", ("admin", None, None)),
    ],
)
def test_requests_are_classified_as_fhir_interactions(
    method: str, path: str, expected: tuple[str, str | None, str | None]
) -> None:
    assert classify(method, path) == expected


class _BrokenTrail:
    async def record(self, row: dict[str, Any]) -> None:
        raise StoreUnavailable("the store failed a write (OperationalError)")


def _render(error: FhirError) -> FhirResponse:
    body = operation_outcome(error.code, error.diagnostics)
    return FhirResponse(body, error.status, error.headers)


def test_no_answer_leaves_when_its_audit_event_cannot_be_written() -> None:
    async def data(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"name": "SECRET PATIENT DATA"})(scope, receive, send)

    app = AuditMiddleware(data, trail=lambda: _BrokenTrail(), render=_render)  # type: ignore[arg-type, return-value]

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/fhir/Patient/1")

    reply = asyncio.run(call())
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "5"
    assert "SECRET" not in reply.text
    assert reply.json()["resourceType"] == "OperationOutcome"


def test_replicas_opening_a_new_store_together_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    script = (
        "import asyncio, sys\n"
        "from bridge.store import Store\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    print(await store.ping())\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert outputs == ["True"] * 4
    assert [p.returncode for p in processes] == [0] * 4

    async def version() -> list[Any]:
        store = await Store.open(url)
        async with store.read() as conn:
            rows = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
        await store.close()
        return [r[0] for r in rows]

    assert len(asyncio.run(version())) == 1  # one schema version, migrated once


def test_a_store_url_the_gateway_cannot_use_names_the_setting() -> None:
    from bridge.errors import ConfigError

    for url in ("mysql://x@y/z", "sqlite:///:memory:", "not a url"):
        with pytest.raises(ConfigError) as caught:
            asyncio.run(Store.open(url))
        assert "store.url" in str(caught.value.problems[0])


def test_a_request_waiting_for_its_turn_is_not_awaited_by_other_commits(tmp_path: Path) -> None:
    # The group commit waits for the AuditEvents of requests under way; a Bundle
    # waiting for its turn (up to limits.bundle_wait) is not about to hand one over.
    counted: list[int] = []

    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        trail = AuditTrail(store)
        trail.start()

        async def queued(scope: Scope, receive: Receive, send: Send) -> None:
            counted.append(trail.opened)  # under way: counted
            with not_coming(trail, scope["state"]):
                counted.append(trail.opened)  # waiting its turn: not counted
                await asyncio.sleep(0)
            counted.append(trail.opened)
            await JSONResponse({"resourceType": "Bundle"})(scope, receive, send)

        app = AuditMiddleware(queued, trail=lambda: trail, render=_render)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.post("/fhir", json={})).status_code == 200
        finally:
            await trail.close()
            await store.close()

    asyncio.run(main())
    assert counted == [1, 0, 1]


# -- hostile Consents and revocation bodies ------------------------------------------------


@pytest.mark.parametrize(
    ("consent", "where"),
    [
        # Each of these was accepted and then withheld nothing, silently.
        (
            _consent(
                {
                    "type": "permit",
                    "actor": [APP],
                    "provision": [{"type": "deny", "class": [{"system": "x"}]}],
                }
            ),
            "Consent.provision.provision[0].class[0].code",
        ),
        (
            _consent(
                {
                    "type": "permit",
                    "actor": [APP],
                    "provision": [{"type": "deny", "class": [{"code": "observation"}]}],
                }
            ),
            "Consent.provision.provision[0].class[0].code",
        ),
        (
            _consent(
                {
                    "type": "permit",
                    "actor": [APP],
                    "provision": [{"type": "deny", "class": [{"code": "Coding"}]}],
                }
            ),
            "Consent.provision.provision[0].class[0].code",
        ),
        (
            _consent(
                {"type": "deny", "actor": [APP]}, patient={"reference": "Patient/7/_history/1"}
            ),
            "Consent.patient.reference",
        ),
        (
            _consent({"type": "deny", "actor": [APP]}, patient={"reference": "Patient/ 7"}),
            "Consent.patient.reference",
        ),
        (
            _consent(
                {"type": "deny", "actor": [APP]}, patient={"reference": "Patient/" + "7" * 65}
            ),
            "Consent.patient.reference",
        ),
        # A modifier changes what the Consent means: the gateway cannot enforce it.
        (
            _consent(
                {"type": "deny", "actor": [APP]},
                modifierExtension=[{"url": "http://example.org/x", "valueBoolean": True}],
            ),
            "Consent.modifierExtension",
        ),
        (
            _consent({"type": "deny", "actor": [APP]}, implicitRules="http://example.org/rules"),
            "Consent.implicitRules",
        ),
    ],
)
def test_a_consent_that_would_deny_nothing_or_something_else_is_422(
    consent: dict[str, Any], where: str
) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        parse_consent(consent)
    assert caught.value.expression == [where]


def test_a_consents_class_codes_never_fill_memory_or_the_answer() -> None:
    from bridge.privacy import _known_type

    before = _known_type.cache_info().currsize
    for n in range(50):
        code = f"Nothing{n}" + "x" * 100_000
        with pytest.raises(UnprocessableEntity) as caught:
            parse_consent(_consent({"type": "deny", "actor": [APP], "class": [{"code": code}]}))
        assert len(caught.value.diagnostics or "") < 300
    assert _known_type.cache_info().currsize == before


def test_a_stored_consent_is_enforced_as_it_was_accepted() -> None:
    # Stored before the class check: reloading it must not drop its other rules.
    provision = {
        "type": "permit",
        "actor": [APP],
        "provision": [
            {"type": "deny", "class": [{"system": "x"}]},
            {"type": "deny", "class": [{"code": "Condition"}]},
        ],
    }
    _, _, rules = parse_consent(_consent(provision), max_nesting=None, stored=True)
    assert [r.classes for r in rules] == [frozenset(), frozenset({"Condition"})]


def test_a_security_label_rule_reads_a_resource_without_a_usable_meta() -> None:
    provision = {"type": "deny", "actor": [APP], "securityLabel": [{"system": "conf", "code": "R"}]}
    _, _, (rule,) = parse_consent(_consent(provision))
    for meta in (None, "R", ["R"], {"security": "R"}):
        assert not rule.applies("a", {"resourceType": "Condition", "meta": meta})  # was a 500


def _privacy_run(tmp_path: Path, body: Any) -> Any:
    async def main() -> Any:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            privacy = Privacy(store, poll_interval=60)
            await privacy.reload()
            return await body(privacy, store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"client_id": "app", "expires_in": True},  # was a revocation for 1 second
            "expires_in must be a whole number of seconds from 1 to 315360000 (ten years); "
            "leave it out for a revocation that never ends.",
        ),
        (
            {"client_id": "app", "expires_in": 2**62},  # was stored, then a 500 on every list
            "expires_in must be a whole number of seconds from 1 to 315360000 (ten years); "
            "leave it out for a revocation that never ends.",
        ),
        (
            {"client_id": "app", "patient": "7" * 129},  # wider than the store's column
            "patient must be a non-empty string of at most 128 characters.",
        ),
        (
            {"client_id": "app", "patient": "Patient/100001"},  # would match no token's patient
            "patient is the patient's FHIR id, like 100001.",
        ),
    ],
)
def test_a_revocation_body_of_the_wrong_type_or_size_is_400(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    async def revoke(privacy: Privacy, store: Store) -> Any:
        with pytest.raises(InvalidRequest) as caught:
            await privacy.revoke(body)
        return caught.value.diagnostics, await privacy.revocations()

    assert _privacy_run(tmp_path, revoke) == (message, [])


def test_a_stored_revocation_with_an_expiry_past_the_calendar_is_still_listed(
    tmp_path: Path,
) -> None:
    from bridge.store.tables import revocations

    async def listed(privacy: Privacy, store: Store) -> Any:
        async with store.write() as conn:
            await conn.execute(
                revocations.insert().values(
                    id="r1", client_id="app", created=1.0, expires=4.6e18, reason="old"
                )
            )
            await Store.bump(conn, "revocations")
        await privacy.reload()
        return [r.json() for r in await privacy.revocations()]

    assert _privacy_run(tmp_path, listed) == [
        {
            "id": "r1",
            "client_id": "app",
            "created": "1970-01-01T00:00:01+00:00",
            "expires": "9999-12-31T23:59:59+00:00",
        }
    ]


def test_a_token_revoked_twice_stays_revoked_when_the_shorter_revocation_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.auth.scopes import parse_scopes
    from bridge.auth.tokens import Principal
    from bridge.errors import Unauthorized

    principal = Principal("app", "u", None, parse_scopes("user/*.rs"), "j-1", issued_at=1.0)

    async def guard(privacy: Privacy, store: Store) -> Any:
        await privacy.revoke({"jti": "j-1", "reason": "lost phone"})
        await privacy.revoke({"jti": "j-1", "expires_in": 60, "reason": "checking"})
        later = datetime.now(UTC).timestamp() + 3600
        monkeypatch.setattr("bridge.privacy.time.time", lambda: later)
        with pytest.raises(Unauthorized):
            await privacy.guard(principal)  # was let through: the ended one hid the other
        return len(await privacy.revocations())

    assert _privacy_run(tmp_path, guard) == 2
