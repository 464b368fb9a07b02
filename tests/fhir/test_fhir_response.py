"""FhirResponse: the headers its short way makes are the ones Starlette's would."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from bridge.fhir.response import FhirResponse


def _starlette(response: FhirResponse, headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    general = Response.__new__(Response)
    general.status_code = response.status_code
    general.media_type = response.media_type
    general.body = response.body
    Response.init_headers(general, headers)
    return general.raw_headers


@pytest.mark.parametrize("status", [100, 199, 200, 201, 204, 304, 400, 404, 500])
@pytest.mark.parametrize("headers", [None, {}, {"ETag": 'W/"1"'}, {"Content-Type": "text/plain"}])
@pytest.mark.parametrize("media_type", [None, "application/json", "text/plain"])
@pytest.mark.parametrize("content", [{"resourceType": "Patient", "id": "é"}, {}])
def test_headers_as_starlette_makes_them(
    status: int, headers: dict[str, str] | None, media_type: str | None, content: dict[str, str]
) -> None:
    response = FhirResponse(content, status, headers, media_type=media_type)
    assert response.raw_headers == _starlette(response, headers)


def test_a_plain_answer_has_length_and_fhir_type() -> None:
    response = FhirResponse({"resourceType": "Patient"})
    assert response.raw_headers == [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", b"application/fhir+json; charset=utf-8"),
    ]
    response.headers["etag"] = 'W/"2"'  # headers set later change this answer only
    assert FhirResponse({}).headers.get("etag") is None
