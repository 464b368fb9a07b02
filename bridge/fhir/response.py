"""FHIR JSON responses (orjson; `_pretty=true` indents)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from bridge.fhir.negotiate import FHIR_JSON

__all__ = ["FhirResponse"]

# FHIR's bodies are UTF-8, and HTTP's default charset is not: the answer says so
# (http.html: "SHALL explicitly set the character encoding to UTF-8").
MEDIA_TYPE = f"{FHIR_JSON}; charset=utf-8"
_CONTENT_TYPE = (b"content-type", MEDIA_TYPE.encode("latin-1"))


class FhirResponse(Response):
    media_type = MEDIA_TYPE

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

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        # Most answers (a read, a search page, most errors) have no headers of their own: the two
        # Starlette would add, without its general way through them.
        status = self.status_code
        if not headers and self.media_type == MEDIA_TYPE and 200 <= status not in (204, 304):
            self.raw_headers = [(b"content-length", b"%d" % len(self.body)), _CONTENT_TYPE]
            return
        super().init_headers(headers)

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 if self._pretty else 0)
