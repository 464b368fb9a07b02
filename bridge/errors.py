"""One error tree for the whole gateway.

Every error a FHIR client can see is a `FhirError`; each class owns its HTTP
status and its OperationOutcome issue code, and `app.py` renders any of them
(and anything unexpected) as an OperationOutcome. Diagnostics are written for
the client and never carry patient data or credentials.

    BridgeError
    ├── FhirError                       rendered as OperationOutcome
    │   ├── InvalidRequest              400 invalid
    │   │   └── InvalidPageToken        400 invalid
    │   ├── Unauthorized                401 login
    │   ├── Forbidden                   403 forbidden
    │   ├── NotFound                    404 not-found
    │   │   └── UnknownResourceType     404 not-supported
    │   ├── MethodNotAllowed            405 not-supported
    │   ├── NotAcceptable               406 not-supported
    │   ├── PayloadTooLarge             413 too-costly
    │   ├── UnsupportedMediaType        415 not-supported
    │   ├── UnprocessableEntity         422 processing
    │   ├── TooManyRequests             429 throttled + Retry-After
    │   ├── BackendError                502 exception (a legacy answer that makes no sense)
    │   │   └── UnmappedFault           502 exception
    │   ├── MappedFault                 any status: from a system's fault table
    │   ├── BackendUnavailable          503 transient + Retry-After
    │   │   ├── PoolExhausted           503 transient + Retry-After
    │   │   └── SessionLimitReached     503 transient + Retry-After
    │   ├── ServiceUnavailable          503 transient + Retry-After (the gateway's store)
    │   └── BackendTimeout              504 timeout
    └── ConfigError                     for integration engineers: file:line:col
        └── MappingError
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BridgeError",
    "ConfigError",
    "FhirError",
    "Forbidden",
    "InvalidPageToken",
    "InvalidRequest",
    "MappedFault",
    "MappingError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PoolExhausted",
    "Problem",
    "ServiceUnavailable",
    "SessionLimitReached",
    "TooManyRequests",
    "Unauthorized",
    "UnknownResourceType",
    "UnmappedFault",
    "UnprocessableEntity",
    "UnsupportedMediaType",
]


class BridgeError(Exception):
    """Base of every error the gateway raises on purpose."""


class FhirError(BridgeError):
    """An error a FHIR client sees as an OperationOutcome with `status`."""

    status: int = 500
    code: str = "exception"
    severity: str = "error"
    default_diagnostics: str = "The request could not be completed."

    def __init__(
        self,
        diagnostics: str | None = None,
        *,
        expression: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.diagnostics = diagnostics or self.default_diagnostics
        self.expression = expression or []
        self.headers = dict(headers or {})
        super().__init__(self.diagnostics)


class InvalidRequest(FhirError):
    status = 400
    code = "invalid"
    default_diagnostics = "The request is not valid."


class InvalidPageToken(InvalidRequest):
    default_diagnostics = (
        "The paging link is invalid or has expired; repeat the search from the first page."
    )


class Unauthorized(FhirError):
    status = 401
    code = "login"
    default_diagnostics = "A valid bearer access token is required."


class Forbidden(FhirError):
    status = 403
    code = "forbidden"
    default_diagnostics = "The access token does not allow this interaction."


class NotFound(FhirError):
    status = 404
    code = "not-found"
    default_diagnostics = "The resource was not found."


class UnknownResourceType(NotFound):
    code = "not-supported"
    default_diagnostics = "This server does not serve that resource type."


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"
    default_diagnostics = "This interaction is not supported for this resource type."


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"
    default_diagnostics = "This server answers in application/fhir+json only."


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"
    default_diagnostics = "The request body is too large."


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"
    default_diagnostics = "Send application/fhir+json or application/x-www-form-urlencoded."


class UnprocessableEntity(FhirError):
    status = 422
    code = "processing"
    default_diagnostics = "The resource is not valid."


class BackendError(FhirError):
    status = 502
    code = "exception"
    default_diagnostics = "The legacy system gave an answer the gateway could not use."


class UnmappedFault(BackendError):
    default_diagnostics = "The legacy system reported an error."


class MappedFault(FhirError):
    """A legacy fault translated through a system's declared fault table."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        retry_after: int = 0,
        empty_search: bool = False,
    ) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(diagnostics, headers=headers)
        self.status = status
        self.code = code
        self.empty_search = empty_search


class BackendUnavailable(FhirError):
    status = 503
    code = "transient"
    default_diagnostics = "The legacy system is unavailable; retry later."

    def __init__(self, diagnostics: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(diagnostics, headers={"Retry-After": str(retry_after)})


class PoolExhausted(BackendUnavailable):
    default_diagnostics = "All sessions to the legacy system are busy; retry later."


class SessionLimitReached(BackendUnavailable):
    default_diagnostics = "The legacy system refused another session; retry later."


class ServiceUnavailable(FhirError):
    """The gateway itself cannot serve now (its store is unreachable)."""

    status = 503
    code = "transient"
    default_diagnostics = "The gateway cannot serve this request now; retry later."

    def __init__(self, diagnostics: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(diagnostics, headers={"Retry-After": str(retry_after)})


class TooManyRequests(FhirError):
    status = 429
    code = "throttled"
    default_diagnostics = "Too many requests from this client; slow down."

    def __init__(self, diagnostics: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(diagnostics, headers={"Retry-After": str(retry_after)})


class BackendTimeout(FhirError):
    status = 504
    code = "timeout"
    default_diagnostics = "The legacy system did not answer in time."


@dataclass(frozen=True)
class Problem:
    """One problem in a configuration or mapping file, `file:line:col: message`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


@dataclass
class ConfigError(BridgeError):
    """Configuration an integration engineer must fix; one line per problem."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class MappingError(ConfigError):
    """A mapping file that cannot be loaded or compiled."""
