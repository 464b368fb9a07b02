"""FHIR JSON responses (orjson; `_pretty=true` indents)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from bridge.fhir.negotiate import FHIR_JSON

__all__ = ["FhirResponse"]


class FhirResponse(Response):
    media_type = FHIR_JSON

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        *,
        pretty: bool = False,
        media_type: str | None = None,
    ) -> None:
        self._pretty = pretty
        super().__init__(content, status_code, headers, media_type=media_type)

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 if self._pretty else 0)
