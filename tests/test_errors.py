"""The error tree: each class owns its HTTP status and OperationOutcome issue code."""

from __future__ import annotations

import inspect

import pytest

import bridge.errors as errors
from bridge.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BridgeError,
    ConfigError,
    FhirError,
    Forbidden,
    InvalidPageToken,
    InvalidRequest,
    MappedFault,
    MappingError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    PoolExhausted,
    Problem,
    ServiceUnavailable,
    SessionLimitReached,
    TooManyRequests,
    Unauthorized,
    UnknownResourceType,
    UnmappedFault,
    UnprocessableEntity,
    UnsupportedMediaType,
)

# The tree in the module docstring: (class, parent, status, issue code).
TREE: list[tuple[type[FhirError], type[Exception], int, str]] = [
    (InvalidRequest, FhirError, 400, "invalid"),
    (InvalidPageToken, InvalidRequest, 400, "invalid"),
    (Unauthorized, FhirError, 401, "login"),
    (Forbidden, FhirError, 403, "forbidden"),
    (NotFound, FhirError, 404, "not-found"),
    (UnknownResourceType, NotFound, 404, "not-supported"),
    (MethodNotAllowed, FhirError, 405, "not-supported"),
    (NotAcceptable, FhirError, 406, "not-supported"),
    (PayloadTooLarge, FhirError, 413, "too-costly"),
    (UnsupportedMediaType, FhirError, 415, "not-supported"),
    (UnprocessableEntity, FhirError, 422, "processing"),
    (TooManyRequests, FhirError, 429, "throttled"),
    (BackendError, FhirError, 502, "exception"),
    (UnmappedFault, BackendError, 502, "exception"),
    (BackendUnavailable, FhirError, 503, "transient"),
    (PoolExhausted, BackendUnavailable, 503, "transient"),
    (SessionLimitReached, BackendUnavailable, 503, "transient"),
    (ServiceUnavailable, FhirError, 503, "transient"),
    (BackendTimeout, FhirError, 504, "timeout"),
]
RETRY_AFTER = {
    BackendUnavailable,
    PoolExhausted,
    SessionLimitReached,
    ServiceUnavailable,
    TooManyRequests,
}


@pytest.mark.parametrize(("cls", "parent", "status", "code"), TREE)
def test_fhir_error_status_and_code(
    cls: type[FhirError], parent: type[Exception], status: int, code: str
) -> None:
    error = cls()

    assert cls.__bases__ == (parent,)
    assert error.status == status
    assert error.code == code
    assert error.severity == "error"
    assert error.diagnostics == cls.default_diagnostics
    assert str(error) == cls.default_diagnostics
    assert error.expression == []


@pytest.mark.parametrize(("cls", "parent", "status", "code"), TREE)
def test_fhir_error_is_in_the_docstring_tree(
    cls: type[FhirError], parent: type[Exception], status: int, code: str
) -> None:
    doc = errors.__doc__ or ""
    line = next((ln for ln in doc.splitlines() if f" {cls.__name__} " in ln), "")

    assert f"{status} {code}" in " ".join(line.split())


def test_fhir_error_tree_covers_every_fhir_error() -> None:
    tabled = {cls for cls, *_ in TREE} | {MappedFault}
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, FhirError) and obj is not FhirError
    }

    assert defined == tabled


def test_fhir_error_base() -> None:
    error = FhirError()

    assert isinstance(error, BridgeError)
    assert error.status == 500
    assert error.code == "exception"


def test_fhir_error_diagnostics_expression_and_headers() -> None:
    error = InvalidRequest("family: bad", expression=["Patient.name"], headers={"X-A": "1"})

    assert error.diagnostics == "family: bad"
    assert str(error) == "family: bad"
    assert error.expression == ["Patient.name"]
    assert error.headers == {"X-A": "1"}


def test_fhir_error_headers_are_not_shared() -> None:
    given = {"X-A": "1"}
    first = Unauthorized(headers=given)
    first.headers["WWW-Authenticate"] = "Bearer"

    assert given == {"X-A": "1"}
    assert Unauthorized().headers == {}
    assert PoolExhausted().headers == {"Retry-After": "5"}


@pytest.mark.parametrize("cls", [BackendUnavailable, PoolExhausted, SessionLimitReached])
def test_backend_unavailable_has_retry_after(cls: type[BackendUnavailable]) -> None:
    assert cls().headers == {"Retry-After": "5"}
    assert cls(retry_after=2).headers == {"Retry-After": "2"}
    assert cls("down for maintenance", retry_after=60).diagnostics == "down for maintenance"


@pytest.mark.parametrize(
    "cls", [pytest.param(c, id=c.__name__) for c, *_ in TREE if c not in RETRY_AFTER]
)
def test_other_errors_have_no_retry_after(cls: type[FhirError]) -> None:
    assert "Retry-After" not in cls().headers


def test_mapped_fault_carries_status_code_and_retry_after() -> None:
    fault = MappedFault(503, "transient", "The EHR is in maintenance.", retry_after=30)

    assert isinstance(fault, FhirError)
    assert fault.status == 503
    assert fault.code == "transient"
    assert fault.diagnostics == "The EHR is in maintenance."
    assert fault.headers == {"Retry-After": "30"}


def test_mapped_fault_without_retry_after_has_no_header() -> None:
    fault = MappedFault(404, "not-found", "No patient has that identifier.")

    assert fault.status == 404
    assert fault.code == "not-found"
    assert fault.headers == {}


def test_mapped_fault_does_not_change_the_class_defaults() -> None:
    MappedFault(409, "conflict", "x")

    assert MappedFault.status == FhirError.status == 500
    assert MappedFault.code == FhirError.code == "exception"


def test_problem_renders_file_line_col_message() -> None:
    problem = Problem("mappings/hospital/Patient.yaml", 14, 7, "field 'birthDate': no")

    assert str(problem) == "mappings/hospital/Patient.yaml:14:7: field 'birthDate': no"


def test_config_error_lists_one_problem_per_line() -> None:
    error = MappingError([Problem("a.yaml", 1, 2, "first"), Problem("b.yaml", 30, 1, "second")])

    assert isinstance(error, ConfigError)
    assert isinstance(error, BridgeError)
    assert not isinstance(error, FhirError)
    assert str(error) == "a.yaml:1:2: first\nb.yaml:30:1: second"
    assert error.problems[1].line == 30
