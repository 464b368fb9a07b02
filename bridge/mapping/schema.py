"""The mapping file format, as strict models.

Two kinds of file make a system folder: `system.yaml` (how to reach and talk to
the legacy system) and one `<Resource>.yaml` per FHIR resource type it serves.
Unknown keys are errors everywhere. The JSON Schema published for editors is
generated from these models (`bridge schema`).

Request values are constants or text with `{placeholders}`:

    {id}                 the FHIR id (read, update, delete); {id.0}, {id.1}... its
                         dot-separated parts
    {params.NAME}        a search parameter, converted to the legacy form
    {params.NAME.ge}     a date parameter's bound for one prefix (ge, gt, le, lt, eq)
    {STEP.PATH}          a value from the answer of an earlier step named STEP
    {item.PATH}          in a `for_each` step, a value from the current item; {item}
                         the item's own text. In field values, {item.PATH} reads the
                         record being built and {position} is the place (1, 2...)
                         in an `each` group
    {cursor} {offset} {limit} {page} {size}   paging positions
    {username} {password} {token}             in session calls
    {name|default}       a default when the value is absent

A request element whose placeholders have no value is left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Answer",
    "Connection",
    "CredentialsSpec",
    "EnvValue",
    "FaultRule",
    "Faults",
    "FieldSpec",
    "InBodyErrors",
    "Include",
    "LoginSpec",
    "LogoutSpec",
    "Lookup",
    "OperationCall",
    "OperationOutput",
    "OperationParam",
    "OperationSpec",
    "Paging",
    "ReadSpec",
    "ResourceFile",
    "SearchParam",
    "SearchSpec",
    "SessionHeaderSpec",
    "SessionSpec",
    "Step",
    "Steps",
    "Strict",
    "SystemFile",
    "When",
    "WriteSpec",
    "WsSecuritySpec",
]

Scalar = str | int | float | bool
RequestValue = Scalar | list[Scalar]
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
    timeout: float = Field(
        10.0,
        gt=0,
        description="Read timeout: seconds one SOAP call may take, from sending it to the "
        "whole answer (then 504, or a lookup for a write).",
    )
    connect_timeout: float = Field(
        3.0, gt=0, description="Seconds to open a connection (nothing is sent before)."
    )
    deadline: float = Field(
        30.0,
        gt=0,
        description="Seconds one FHIR interaction may spend on this system in all: waiting "
        "for a session, logins, every call of every step, retries and their pauses.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Reads: further attempts after a transport failure or an expired "
        "session. Writes are retried only when nothing reached the system.",
    )
    backoff_base: float = Field(
        0.1, gt=0, description="Seconds: the longest pause before the first retry."
    )
    backoff_cap: float = Field(
        2.0,
        gt=0,
        description="Seconds: the longest pause between retries (doubling from "
        "backoff_base, with full jitter).",
    )
    max_connections: int = Field(100, ge=1)
    breaker_failures: int = Field(
        5, ge=1, description="Transport failures in a row that open the circuit breaker."
    )
    breaker_cooldown: float = Field(
        10, gt=0, description="Seconds an open breaker answers 503 before one probe."
    )


class OperationCall(Strict):
    """A SOAP operation and the values of its request elements (see the module doc)."""

    operation: str
    request: dict[str, RequestValue] = Field(default_factory=dict)


class Step(OperationCall):
    """One SOAP call of a multi-step interaction, run in order on one session."""

    name: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]*$", description="Lets later steps use {NAME.PATH}."
    )
    for_each: str | None = Field(
        None, description="STEP.PATH: call once per element found there, as {item.PATH}."
    )


class LoginSpec(OperationCall):
    token: str | None = Field(
        None, description="Path, in the login response, of the session token."
    )
    success: When | None = Field(None, description="A test the login answer must pass.")


class LogoutSpec(OperationCall):
    pass


class SessionHeaderSpec(Strict):
    element: str = Field(description="The SOAP header element (a global element of the WSDL).")
    token: str = Field(description="Path, inside the header element, that carries the token.")


class WsSecuritySpec(Strict):
    password: Literal["digest", "text"] = "digest"  # noqa: S105 - the kind, not a secret
    nonce: bool = True
    timestamp: bool = Field(True, description="Add wsu:Created (and a wsu:Timestamp).")
    ttl: int = Field(300, ge=1, description="Seconds the security header is valid.")


class CredentialsSpec(Strict):
    username: str = Field(description="The request element that carries the user name.")
    password: str = Field(description="The request element that carries the password.")


SessionStyleName = Literal[
    "header-token", "body-token", "cookie", "ws-security", "credentials", "none"
]


class SessionSpec(Strict):
    style: SessionStyleName = "none"
    login: LoginSpec | None = None
    header: SessionHeaderSpec | None = None
    body: str | None = Field(
        None, description="body-token: the request element that carries the token in every call."
    )
    cookie: str | None = Field(None, description="cookie: the name of the session cookie.")
    ws_security: WsSecuritySpec | None = None
    credentials: CredentialsSpec | None = None
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
        needs = {
            "header-token": ("login", "header"),
            "body-token": ("login", "body"),
            "cookie": ("login", "cookie"),
            "credentials": ("credentials",),
        }.get(self.style, ())
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            both = "both " if len(missing) == 2 else ""
            names = " and ".join(repr(m) for m in missing)
            raise ValueError(f"style '{self.style}' needs {both}{names}")
        if self.style in ("header-token", "body-token") and self.login and not self.login.token:
            raise ValueError(f"style '{self.style}' needs 'login.token'")
        return self


# FHIR R4's IssueType (http://hl7.org/fhir/issue-type): what OperationOutcome.issue.code takes.
IssueCode = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "security",
    "login",
    "unknown",
    "expired",
    "forbidden",
    "suppressed",
    "processing",
    "not-supported",
    "duplicate",
    "multiple-matches",
    "not-found",
    "deleted",
    "too-long",
    "code-invalid",
    "extension",
    "too-costly",
    "business-rule",
    "conflict",
    "transient",
    "lock-error",
    "no-store",
    "exception",
    "timeout",
    "incomplete",
    "throttled",
    "informational",
]


class FaultRule(Strict):
    status: int = Field(ge=400, le=599)
    issue: IssueCode = Field(
        description="OperationOutcome issue code (FHIR's IssueType), e.g. not-found, invalid."
    )
    diagnostics: str | None = Field(
        None, description="What the client reads. Never the legacy fault text, which may hold PHI."
    )
    retry_after: int = Field(0, ge=0)
    empty_search: bool = Field(
        False, description="In a search, this fault means no match: an empty Bundle."
    )


class InBodyErrors(Strict):
    """Errors a legacy system reports inside normal answers instead of SOAP Faults."""

    when: When = Field(description="The test, on each answer, that says it is an error.")
    code: str = Field(description="Path, in the answer, of the vendor error code.")


class Faults(Strict):
    code: str = Field(
        "detail/*/Code", description="Path, inside the SOAP Fault, of the vendor fault code."
    )
    in_body: InBodyErrors | None = None
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
    constant, which may use `{placeholders}` of the interaction) or `fields`
    (a group of elements under this one). `each` repeats a group once per
    legacy element found at that path. `direction` limits a field to reads or
    writes; by default it works both ways when its transforms can be reversed.
    """

    fhir: str = Field("", description="The FHIR element; empty only for a legacy constant.")
    from_: str | list[str] | None = Field(
        None, alias="from", description="A legacy path, or several joined by a 'join' transform."
    )
    value: Scalar | None = None
    transform: Pipeline = Field(default_factory=list)
    when: When | None = None
    each: str | None = None
    fields: list[FieldSpec] | None = None
    resource: str | None = Field(
        None, description="For a group at contained[n]: the type of the contained resource."
    )
    direction: Literal["both", "read", "write"] = "both"

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        sources = [s for s in (self.from_, self.value, self.fields) if s is not None]
        legacy_constant = self.direction == "write" and len(sources) == 2 and not self.fields
        if legacy_constant:
            return self  # `from` + `value`: a constant written to a legacy element
        if not self.fhir:
            raise ValueError(
                "'fhir' is required (it may be left out only for a legacy "
                "constant: direction write, with 'from' and 'value')"
            )
        if len(sources) != 1:
            raise ValueError("give exactly one of 'from', 'value' or 'fields'")
        if self.each is not None and self.fields is None:
            raise ValueError("'each' repeats a group: it needs 'fields'")
        templated = isinstance(self.value, str) and "{" in self.value
        if self.transform and self.from_ is None and not templated:
            raise ValueError(
                "'transform' applies to a value taken 'from' the legacy record "
                "(or to a value with {placeholders})"
            )
        return self


ParamName = Annotated[str, Field(pattern=r"^_?[a-z][a-zA-Z0-9.-]*$")]


class SearchParam(Strict):
    type: Literal["string", "token", "date", "reference", "number"]
    element: str | None = Field(
        None, description="The request element of the first step that the value goes into."
    )
    transform: Pipeline = Field(default_factory=list)
    system: str | None = Field(
        None, description="For tokens: the only code system this parameter matches."
    )
    target: str | None = Field(
        None, description="For references: the resource type referred to, e.g. Patient."
    )
    prefixes: dict[Literal["eq", "ge", "gt", "le", "lt"], str] | None = Field(
        None, description="For dates: the request element each comparison prefix goes into."
    )
    fhir: str | None = Field(
        None,
        description="A FHIR element path: the gateway also applies the parameter to the "
        "resources it builds (exact FHIR semantics when the legacy search is broader).",
    )
    required: bool = Field(False, description="Searches without this parameter are refused.")
    description: str = ""


class Paging(Strict):
    style: Literal["cursor", "offset", "page", "none"] = "none"
    cursor: str | None = Field(None, description="cursor: path of the cursor in each answer.")
    next: OperationCall | None = Field(None, description="cursor: the call that takes {cursor}.")
    page_size: int | None = Field(
        None, ge=1, description="The legacy system's page size (the largest {limit}/{size})."
    )
    first_page: int = Field(1, ge=0, description="page: the number of the first page.")
    invalid_cursor_faults: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _style_needs(self) -> Paging:
        missing = [k for k in ("cursor", "next") if getattr(self, k) is None]
        if self.style == "cursor" and missing:
            raise ValueError(f"style 'cursor' needs {' and '.join(repr(m) for m in missing)}")
        if self.style in ("offset", "page") and self.page_size is None:
            raise ValueError(f"style '{self.style}' needs 'page_size'")
        return self


class Steps(Strict):
    """A single call (`operation` + `request`) or several `steps`."""

    operation: str | None = None
    request: dict[str, RequestValue] = Field(default_factory=dict)
    steps: list[Step] | None = None

    @model_validator(mode="after")
    def _calls(self) -> Steps:
        if (self.operation is None) == (self.steps is None):
            raise ValueError("give either 'operation' (one call) or 'steps' (several)")
        if self.steps is not None and self.request:
            raise ValueError("with 'steps', each step has its own 'request'")
        return self


class ReadSpec(Steps):
    record: str = Field(description="Path, in the last step's answer, of the legacy record.")
    id_pattern: str | None = Field(
        None, description="Ids that cannot match this regular expression are 404 without a call."
    )
    match: str | None = Field(
        None,
        description="For systems without a get-by-id: the element, in each record at "
        "'record', whose value must equal the id.",
    )


class Include(Strict):
    """Resources built from records nested in this one (`_include`)."""

    resource: str = Field(description="The resource type built from each nested record.")
    each: str = Field(description="Path, in this resource's record, of the nested records.")


class SearchSpec(Steps):
    params: dict[ParamName, SearchParam] = Field(default_factory=dict)
    records: str = Field(description="Path, in each answer, of the repeating record.")
    total: str | None = Field(None, description="Path of the total match count, when known.")
    paging: Paging = Field(default_factory=lambda: Paging())
    include: dict[str, Include] = Field(
        default_factory=dict, description="_include targets, e.g. 'result' for Type:result."
    )


class Answer(Strict):
    """Where, in the last step's answer, the written resource can be read back."""

    records: str = Field(description="Path of the records in the last step's answer.")
    match: str = Field(description="The element, in each record, that holds the new id.")


class Lookup(Steps):
    """How to learn whether a write whose answer was lost was applied.

    The call(s) may use `{record.PATH}` (the legacy record the write sent) and,
    for update and delete, `{id}`. The write happened when a record at
    `records` holds every value in `match`.
    """

    records: str = Field(description="Path, in the last step's answer, of the records.")
    match: dict[str, Scalar] = Field(
        description="Element (in each record) -> the value the write sent, usually "
        "'{record.PATH}'; a value without one means the element is absent.",
        min_length=1,
    )
    id: str | None = Field(
        None, description="create: the element, in the record found, that holds its id."
    )
    settle: float = Field(
        0.5,
        ge=0,
        le=30,
        description="Seconds to wait after a timed-out write before looking, so a write "
        "the system is still processing can land.",
    )


class WriteSpec(Steps):
    """create / update / delete: the calls, and where the resource's fields go.

    Later steps may use `{record.PATH}`, a value of the legacy record written.
    """

    record: str | None = Field(
        None, description="Path, in the first step's request, where the fields are written."
    )
    id: str | None = Field(
        None, description="Path, in the last step's answer (or STEP.PATH), of the new id."
    )
    answer: Answer | None = Field(
        None, description="Read the written resource back from the last step's answer."
    )
    version: str | None = Field(
        None, description="update: the field compared with If-Match (a legacy version)."
    )
    when: dict[str, Scalar] | None = Field(
        None, description="update: only resources with these FHIR values take this route."
    )
    conditional: str | None = Field(
        None, description="create: the search parameter(s) If-None-Exist may use."
    )
    respond: Literal["read", "echo", "answer"] = Field(
        "echo",
        description="What answers a write: the resource read back (read), the one sent "
        "(echo), or the one built from 'answer'.",
    )
    lookup: Lookup | None = Field(
        None,
        description="After a timeout or a broken connection, how to check whether the "
        "write was applied before answering.",
    )


class OperationParam(Strict):
    type: Literal[
        "string", "code", "date", "dateTime", "integer", "decimal", "boolean", "reference"
    ]
    required: bool = False
    transform: Pipeline = Field(default_factory=list)
    description: str = ""


class OperationOutput(Strict):
    type: Literal["string", "code", "date", "dateTime", "integer", "decimal", "boolean"]
    from_: str = Field(alias="from", description="Path, in the last step's answer, of the value.")
    transform: Pipeline = Field(default_factory=list)


class OperationSpec(Steps):
    """A FHIR operation (`$name`) served by SOAP calls."""

    level: Literal["type", "instance"] = "instance"
    changes: bool = Field(
        False, description="The operation changes legacy data (needs write scope)."
    )
    params: dict[Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9-]*$")], OperationParam] = Field(
        default_factory=dict
    )
    outputs: dict[Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9-]*$")], OperationOutput] = Field(
        default_factory=dict, description="The Parameters answered."
    )
    record: str | None = Field(
        None, description="Instead of outputs: the record, built into this resource type."
    )
    description: str = ""

    @model_validator(mode="after")
    def _one_answer(self) -> OperationSpec:
        if bool(self.outputs) == bool(self.record):
            raise ValueError("an operation answers either 'outputs' (Parameters) or a 'record'")
        return self


class ResourceFile(Strict):
    resource: str = Field(pattern=r"^[A-Z][A-Za-z]+$")
    description: str = ""
    profile: list[str] = Field(default_factory=list)
    read: ReadSpec | None = None
    search: SearchSpec | None = None
    create: WriteSpec | None = None
    update: list[WriteSpec] | WriteSpec | None = None
    delete: WriteSpec | None = None
    operations: dict[Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9-]*$")], OperationSpec] = Field(
        default_factory=dict, description="FHIR operations, by name without the '$'."
    )
    fields: list[FieldSpec]
