"""What the middleware tests share."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bridge.logs import JsonFormatter
from bridge.middleware import accesslog
from tests.middleware.support import CountedStream


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountedStream]:
    """The JSON stream handler `configure_logging` installs, as the only one."""
    out = CountedStream()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    # pytest puts capturing handlers on the loggers: point the direct path at ours.
    monkeypatch.setattr(accesslog, "_direct_handler", lambda: handler)
    level = accesslog.log.level
    accesslog.log.setLevel(logging.INFO)
    yield out
    accesslog.log.setLevel(level)
