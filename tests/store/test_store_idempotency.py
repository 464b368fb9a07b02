"""Idempotency keys in the store: one run per (owner, key), repeats wait or replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response

from bridge.auth.scopes import parse_scopes
from bridge.auth.tokens import Principal
from bridge.errors import FhirError, InvalidRequest, UnprocessableEntity
from bridge.idempotency import Idempotency, IdempotencyConflict, owner_of, parse_key
from bridge.store import Store


def _request(body: bytes, path: str = "/fhir/Observation") -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/fhir+json")],
    }
    return Request(scope, receive)


def _render(error: FhirError) -> Response:
    return Response(error.diagnostics.encode(), error.status)


def test_a_repeat_waits_for_the_first_and_gets_its_result(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        keys = Idempotency(store, ttl=3600, wait=10, pending_timeout=300)
        runs = 0
        release = asyncio.Event()

        async def handler(request: Request) -> Response:
            nonlocal runs
            runs += 1
            await release.wait()
            return Response(b"created", 201, {"Location": "/fhir/Observation/1"})

        first = asyncio.create_task(keys.run(_request(b"{}"), "app", "k1", handler, _render, 1000))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(keys.run(_request(b"{}"), "app", "k1", handler, _render, 1000))
        await asyncio.sleep(0.2)
        release.set()
        one, two = await asyncio.gather(first, second)
        assert runs == 1
        assert (one.status_code, two.status_code) == (201, 201)
        assert two.headers["location"] == "/fhir/Observation/1"
        assert two.headers["idempotent-replayed"] == "true"
        await store.close()

    asyncio.run(main())


def test_a_repeat_that_waits_too_long_is_409(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        keys = Idempotency(store, ttl=3600, wait=0, pending_timeout=300)
        release = asyncio.Event()

        async def handler(request: Request) -> Response:
            await release.wait()
            return Response(b"", 201)

        first = asyncio.create_task(keys.run(_request(b"{}"), "app", "k2", handler, _render, 1000))
        await asyncio.sleep(0.2)
        with pytest.raises(IdempotencyConflict) as caught:
            await keys.run(_request(b"{}"), "app", "k2", handler, _render, 1000)
        assert caught.value.headers["Retry-After"] == "1"
        release.set()
        await first
        await store.close()

    asyncio.run(main())


def test_a_failure_that_may_be_retried_frees_the_key(tmp_path: Path) -> None:
    async def main() -> None:
        from bridge.errors import BackendUnavailable

        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        keys = Idempotency(store, ttl=3600, wait=0, pending_timeout=300)
        answers = [BackendUnavailable(), None]

        async def handler(request: Request) -> Response:
            error = answers.pop(0)
            if error is not None:
                raise error
            return Response(b"ok", 201)

        down = await keys.run(_request(b"{}"), "app", "k3", handler, _render, 1000)
        assert down.status_code == 503
        again = await keys.run(_request(b"{}"), "app", "k3", handler, _render, 1000)
        assert again.status_code == 201 and "idempotent-replayed" not in again.headers
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("raw", ["", "x" * 257, "a b", "é"])
def test_unusable_keys_are_400(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_key(raw)


def test_keys_may_be_quoted() -> None:
    assert parse_key('"abc-123"') == "abc-123"
    assert parse_key("x" * 256) == "x" * 256


def _principal(
    scope: str = "user/*.*",
    *,
    client_id: str = "app",
    subject: str = "u1",
    patient: str | None = None,
    fhir_user: str | None = None,
) -> Principal:
    return Principal(
        client_id=client_id,
        subject=subject,
        patient=patient,
        scopes=parse_scopes(scope),
        token_id=None,
        fhir_user=fhir_user,
    )


def test_owner_of_is_the_client_the_user_and_the_patient_context() -> None:
    owner = owner_of(_principal())
    # Another token of the same user and launch: the same owner.
    assert owner_of(_principal("user/Observation.rs")) == owner
    others = [
        _principal(client_id="another-app"),
        _principal(subject="u2"),
        _principal(patient="100001"),
        _principal(fhir_user="Practitioner/DR1001"),
        # Tokens without client_id share the client "-", never the owner.
        _principal(client_id="-", subject="u2"),
    ]
    owners = {owner_of(p) for p in others}
    assert len(owners) == len(others) and owner not in owners
    # The store holds no user or patient ids.
    assert "u1" not in owner and "100001" not in owner_of(others[2])
    assert owner_of(None) == "anonymous"  # authentication off: one caller, no identities


def test_a_key_of_one_owner_is_new_to_another(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        keys = Idempotency(store, ttl=3600, wait=0, pending_timeout=300)
        runs = 0

        async def handler(request: Request) -> Response:
            nonlocal runs
            runs += 1
            return Response(f"run {runs}".encode(), 200)

        mine, theirs = owner_of(_principal()), owner_of(_principal(patient="100001"))
        first = await keys.run(_request(b"{}"), mine, "k4", handler, _render, 1000)
        other = await keys.run(_request(b"{}"), theirs, "k4", handler, _render, 1000)
        again = await keys.run(_request(b"{}"), mine, "k4", handler, _render, 1000)
        assert (first.body, other.body, again.body) == (b"run 1", b"run 2", b"run 1")
        assert "idempotent-replayed" not in other.headers
        assert again.headers["idempotent-replayed"] == "true"
        await store.close()

    asyncio.run(main())


def test_a_key_kept_before_owners_is_refused_not_run_again(tmp_path: Path) -> None:
    # Before owners, a key was kept under the bare client id ("-" without one): after
    # the upgrade, or on a replica still running the older gateway, a retry must not
    # run the write a second time.
    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        keys = Idempotency(store, ttl=3600, wait=0, pending_timeout=300)
        runs = 0

        async def handler(request: Request) -> Response:
            nonlocal runs
            runs += 1
            return Response(b"created", 201)

        # What the older gateway stored for client "app".
        await keys.run(_request(b"{}"), "app", "k5", handler, _render, 1000)
        owner = owner_of(_principal())
        with pytest.raises(UnprocessableEntity) as caught:
            await keys.run(_request(b"{}"), owner, "k5", handler, _render, 1000, earlier="app")
        assert caught.value.diagnostics.startswith("This Idempotency-Key was used before the")
        assert runs == 1
        # A key the older gateway never kept runs as new.
        fresh = await keys.run(_request(b"{}"), owner, "k6", handler, _render, 1000, "app")
        assert (fresh.status_code, runs) == (201, 2)
        await store.close()

    asyncio.run(main())
