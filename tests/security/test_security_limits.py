"""JSON depth limits and per-client rate limits: unit tests, then a real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.errors import FhirError, InvalidRequest
from bridge.fhir.jsondepth import check_json_depth
from bridge.fhir.negotiate import FHIR_JSON
from bridge.fhir.outcome import operation_outcome
from bridge.middleware.ratelimit import RateLimitMiddleware, TokenBuckets
from bridge.mock import MockHospital
from bridge.settings import Limits
from tests.support import Gateway, start_gateway


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


# -- JSON depth ------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 8, 63, 64])
def test_json_depth_within_the_limit_passes(depth: int) -> None:
    value = _nested(depth)
    check_json_depth(value, orjson.dumps(value), 64)


@pytest.mark.parametrize("depth", [65, 100, 1000])
def test_json_depth_past_the_limit_is_400(depth: int) -> None:
    value = _nested(depth)
    with pytest.raises(InvalidRequest, match="deeper than 64 levels"):
        check_json_depth(value, b"[" * depth, 64)  # raw: only its brackets are counted


def test_json_depth_counts_levels_not_containers() -> None:
    # Many containers side by side are shallow: a Bundle of 1,000 entries is depth 4.
    bundle = {"entry": [{"resource": {"code": {"coding": [{"code": "x"}]}}} for _ in range(1000)]}
    check_json_depth(bundle, orjson.dumps(bundle), 8)
    with pytest.raises(InvalidRequest):
        check_json_depth(bundle, orjson.dumps(bundle), 5)


def test_json_depth_default_is_64() -> None:
    assert Limits().max_json_depth == 64


# -- token buckets -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    # Another client has its own bucket.
    assert buckets.take("b") == 0.0


def test_bucket_never_saves_more_than_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock)
    clock.now += 3600
    assert [buckets.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_buckets_are_evicted() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=10, clock=clock)
    for n in range(500):
        buckets.take(f"client-{n}")
    assert len(buckets) == 500
    clock.now += 2  # every bucket has refilled: forgetting them changes nothing
    buckets.take("late")
    assert len(buckets) == 1


def test_memory_is_bounded_by_max_clients() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=0.001, burst=5, max_clients=100, clock=clock)
    for n in range(10_000):
        buckets.take(f"client-{n}")
    assert len(buckets) <= 100
    # The most recent clients are remembered: their buckets are spent.
    for _ in range(4):
        buckets.take("client-9999")
    assert buckets.take("client-9999") > 0


def _render(error: FhirError) -> Any:
    from starlette.responses import JSONResponse

    body = operation_outcome(error.code, error.diagnostics)
    return JSONResponse(body, error.status, error.headers, media_type="application/fhir+json")


def _app(rate: float, burst: int, clock: Clock) -> Any:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/fhir/x", ok), Route("/healthz", ok)])
    return RateLimitMiddleware(inner, rate=rate, burst=burst, render=_render, clock=clock)


def test_middleware_answers_429_with_retry_after_and_an_outcome() -> None:
    asyncio.run(_answers_429())


async def _answers_429() -> None:
    clock = Clock()
    transport = httpx.ASGITransport(app=_app(0.25, 2, clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert [(await client.get("/fhir/x")).status_code for _ in range(2)] == [200, 200]
        reply = await client.get("/fhir/x")
        assert reply.status_code == 429
        assert reply.headers["Retry-After"] == "4"
        outcome = reply.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "throttled"
        # Probes are never limited.
        assert (await client.get("/healthz")).status_code == 200
        clock.now += 4
        assert (await client.get("/fhir/x")).status_code == 200


def test_rate_zero_turns_limiting_off() -> None:
    async def main() -> set[int]:
        transport = httpx.ASGITransport(app=_app(0, 1, Clock()))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return {(await client.get("/fhir/x")).status_code for _ in range(20)}

    assert asyncio.run(main()) == {200}


# -- a real gateway ----------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    mock_hospital_server: MockHospital, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    # Almost no refill: a test never depends on how fast it runs.
    limits = {"rate_per_second": 0.001, "rate_burst": 5, "max_json_depth": 16}
    tmp: Path = tmp_path_factory.mktemp("limited")
    with start_gateway(tmp, mock_hospital_server.ehr_url, extra={"limits": limits}) as gateway:
        yield gateway


def _client(gateway: Gateway, client_id: str) -> httpx.Client:
    token = gateway.issuer.mint(scope="user/*.cruds", client_id=client_id)
    client = httpx.Client(
        base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    gateway.clients.append(client)
    return client


@pytest.mark.e2e
def test_a_client_over_its_budget_gets_429(limited: Gateway, fhir: Any) -> None:
    greedy = _client(limited, "greedy-app")
    statuses = [greedy.get("/Patient/100001").status_code for _ in range(5)]
    assert statuses == [200] * 5
    reply = greedy.get("/Patient/100001")
    assert reply.status_code == 429
    assert int(reply.headers["Retry-After"]) >= 1
    outcome = fhir(reply.json())
    assert outcome["issue"][0]["code"] == "throttled"
    # Another app, and the same app's probes, are not affected.
    assert _client(limited, "polite-app").get("/Patient/100001").status_code == 200
    assert httpx.get(limited.base.removesuffix("/fhir") + "/healthz").status_code == 200


@pytest.mark.e2e
def test_clients_without_a_token_are_limited_by_address(limited: Gateway) -> None:
    # The only test here without a token: the loopback address's budget is its own.
    anonymous = limited.anonymous()
    statuses = [anonymous.get("/metadata").status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429, 429]


def _post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    headers = {"Content-Type": "application/fhir+json"}
    return client.post(path, content=orjson.dumps(body), headers=headers)


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/Observation", "", "/Appointment", "/Consent"])
def test_a_body_nested_too_deep_is_400(limited: Gateway, fhir: Any, path: str) -> None:
    client = _client(limited, f"deep-{path}")
    body = {"resourceType": "Observation", "extension": [_nested(20)]}
    reply = _post(client, path, body)
    assert reply.status_code == 400, reply.text
    outcome = fhir(reply.json())
    assert "deeper than 16 levels" in outcome["issue"][0]["diagnostics"]


@pytest.mark.e2e
def test_a_body_past_orjsons_own_limit_is_400(limited: Gateway, fhir: Any) -> None:
    client = _client(limited, "deeper")
    body = b"[" * 5000 + b"]" * 5000
    reply = client.post("/Observation", content=body, headers={"Content-Type": FHIR_JSON})
    assert reply.status_code == 400
    fhir(reply.json())


@pytest.mark.e2e
def test_a_patch_nested_too_deep_is_400(limited: Gateway, fhir: Any) -> None:
    client = _client(limited, "patcher")
    patch = [{"op": "replace", "path": "/status", "value": _nested(20)}]
    reply = client.patch(
        "/Appointment/CN0000001",
        content=orjson.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert reply.status_code == 400, reply.text
    fhir(reply.json())
