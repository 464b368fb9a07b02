"""Structured JSON logs, one object per line.

Messages are written never to contain patient data or secrets; the fields
added by `extra=` are the only structured values.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["configure_logging"]

_CHATTY = (
    "aiosqlite",
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "aiohttp",
    "zeep",
    "urllib3",
    "httpx",
    "httpcore",
    "asyncio",
    "multipart",
)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = value
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log prints paths (ids are identifiers): ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").setLevel(max(logging.INFO, root.level))
    # Libraries that log statement parameters, message bodies or headers at debug
    # (patient data, credentials) stay at warning whatever the gateway's level.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
