"""Cross-cutting concerns as ASGI middleware; `app.py` wires them in order."""

from bridge.middleware.accesslog import AccessLogMiddleware
from bridge.middleware.limits import LimitsMiddleware
from bridge.middleware.ratelimit import RateLimitMiddleware
from bridge.middleware.requestid import RequestIdMiddleware

__all__ = ["AccessLogMiddleware", "LimitsMiddleware", "RateLimitMiddleware", "RequestIdMiddleware"]
