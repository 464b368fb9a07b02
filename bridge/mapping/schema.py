"""The mapping file format, as strict models.

Two kinds of file make a system folder: `system.yaml` (how to reach and talk to
the legacy system) and one `<Resource>.yaml` per FHIR resource type it serves.
Unknown keys are errors everywhere. The JSON Schema published for editors is
generated from these models (`bridge schema`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Connection",
    "EnvValue",
    "FaultRule",
    "Faults",
    "FieldSpec",
    "LoginSpec",
    "LogoutSpec",
    "OperationCall",
    "Paging",
    "ReadSpec",
    "ResourceFile",
    "SearchParam",
    "SearchSpec",
    "SessionHeaderSpec",
    "SessionSpec",
    "Strict",
    "SystemFile",
    "When",
]

Scalar = str | int | float | bool
# A transform pipeline: each step is a one-key mapping naming a transform and its
# arguments, e.g. `- split: {separator: "^", index: 0}` or `- table: sex`.
Pipeline = list[dict[str, Any]]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EnvValue(Strict):
    """A value read from an environment variable, with an optional default."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    default: str | None = None


class Connection(Strict):
    endpoint: str | EnvValue
    username: str | EnvValue | None = None
    password: EnvValue | None = Field(
        None, description="Always from the environment: secrets never live in mapping files."
    )
    timeout: float = Field(10.0, gt=0, description="Seconds for one SOAP call, end to end.")
    connect_timeout: float = Field(3.0, gt=0)
    max_connections: int = Field(100, ge=1)


class OperationCall(Strict):
    """A SOAP operation and the values of its request elements.

    Values are constants or `{name}` placeholders: `{id}` for the FHIR id,
    `{username}`/`{password}`/`{token}` in session calls, `{cursor}` in paging.
    """

    operation: str
    request: dict[str, Scalar] = Field(default_factory=dict)


class LoginSpec(OperationCall):
    token: str = Field(description="Path, in the login response, of the session token.")


class LogoutSpec(OperationCall):
    pass


class SessionHeaderSpec(Strict):
    element: str = Field(description="The SOAP header element (a global element of the WSDL).")
    token: str = Field(description="Path, inside the header element, that carries the token.")


class SessionSpec(Strict):
    style: Literal["header-token", "none"] = "none"
    login: LoginSpec | None = None
    header: SessionHeaderSpec | None = None
    logout: LogoutSpec | None = None
    max_sessions: int = Field(4, ge=1, description="Never more sessions open at once than this.")
    idle_timeout: float = Field(
        300, gt=0, description="Seconds after which the legacy system drops an idle session."
    )
    wait_timeout: float = Field(
        5, gt=0, description="Seconds a request waits for a free session before a 503."
    )
    expired_faults: list[str] = Field(default_factory=list)
    limit_faults: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _style_needs(self) -> SessionSpec:
        if self.style == "header-token" and (self.login is None or self.header is None):
            raise ValueError("style 'header-token' needs both 'login' and 'header'")
        return self


class FaultRule(Strict):
    status: int = Field(ge=400, le=599)
    issue: str = Field(description="OperationOutcome issue code, e.g. not-found, invalid.")
    diagnostics: str | None = Field(
        None, description="What the client reads. Never the legacy fault text, which may hold PHI."
    )
    retry_after: int = Field(0, ge=0)


class Faults(Strict):
    code: str = Field(
        "detail/*/Code", description="Path, inside the SOAP Fault, of the vendor fault code."
    )
    table: dict[str, FaultRule] = Field(default_factory=dict)


class SystemFile(Strict):
    system: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    wsdl: str = Field(description="Path of the WSDL, relative to this file.")
    connection: Connection
    session: SessionSpec = Field(default_factory=lambda: SessionSpec())
    faults: Faults = Field(default_factory=lambda: Faults())


class When(Strict):
    """A test on the legacy record: `exists`, `equals` or `in` on one path."""

    path: str
    exists: bool | None = None
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _one_test(self) -> When:
        tests = [t for t in (self.exists, self.equals, self.in_) if t is not None]
        if len(tests) != 1:
            raise ValueError("give exactly one of 'exists', 'equals' or 'in'")
        return self


class FieldSpec(Strict):
    """One FHIR element and where its value comes from.

    Exactly one source: `from` (a path in the legacy record), `value` (a
    constant) or `fields` (a group of elements under this one). `each` repeats
    a group once per legacy element found at that path.
    """

    fhir: str
    from_: str | None = Field(None, alias="from")
    value: Scalar | None = None
    transform: Pipeline = Field(default_factory=list)
    when: When | None = None
    each: str | None = None
    fields: list[FieldSpec] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        sources = [s for s in (self.from_, self.value, self.fields) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'from', 'value' or 'fields'")
        if self.each is not None and self.fields is None:
            raise ValueError("'each' repeats a group: it needs 'fields'")
        if self.transform and self.from_ is None:
            raise ValueError("'transform' applies to a value taken 'from' the legacy record")
        return self


class SearchParam(Strict):
    element: str = Field(description="The request element the value goes into.")
    type: Literal["string", "token", "date"]
    transform: Pipeline = Field(default_factory=list)
    system: str | None = Field(
        None, description="For tokens: the only code system this parameter matches."
    )
    description: str = ""


class Paging(Strict):
    style: Literal["cursor", "none"] = "none"
    cursor: str | None = Field(None, description="Path of the cursor in each page's response.")
    next: OperationCall | None = None
    page_size: int | None = Field(
        None, ge=1, description="The legacy system's own page size, when it is fixed."
    )
    invalid_cursor_faults: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cursor_needs(self) -> Paging:
        if self.style == "cursor" and (self.cursor is None or self.next is None):
            raise ValueError("style 'cursor' needs both 'cursor' and 'next'")
        return self


class ReadSpec(OperationCall):
    record: str = Field(description="Path, in the response, of the legacy record.")
    id_pattern: str | None = Field(
        None, description="Ids that cannot match this regular expression are 404 without a call."
    )


class SearchSpec(OperationCall):
    params: dict[Annotated[str, Field(pattern=r"^_?[a-z][a-z0-9-]*$")], SearchParam]
    records: str = Field(description="Path, in each page's response, of the repeating record.")
    total: str | None = Field(None, description="Path of the total match count, when known.")
    paging: Paging = Field(default_factory=lambda: Paging())


class ResourceFile(Strict):
    resource: str = Field(pattern=r"^[A-Z][A-Za-z]+$")
    description: str = ""
    profile: list[str] = Field(default_factory=list)
    read: ReadSpec | None = None
    search: SearchSpec | None = None
    fields: list[FieldSpec]
