"""The loader: YAML into strict models, every problem as `file:line:col: message`.

Each YAML text is written here with its line numbers in mind; the comments on
the right give the line an expected problem points at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import MappingError, Problem
from bridge.mapping.loader import load_document, load_model
from bridge.mapping.schema import ResourceFile, SystemFile


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # File names in messages are relative to the working directory.
    monkeypatch.chdir(tmp_path)


def _problems(text: str, model: type = ResourceFile, name: str = "Patient.yaml") -> list[str]:
    path = Path(name)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_model(load_document(path), model)
    return [str(p) for p in caught.value.problems]


SYSTEM_HEAD = "system: hospital\nwsdl: ehr.wsdl\nconnection:\n"  # lines 1-3


def test_load_model_valid_resource_file_gives_model() -> None:
    Path("Patient.yaml").write_text(
        "resource: Patient\nread: {operation: GetPatient, record: Patient}\n"
        "fields:\n  - {fhir: id, from: MRN}\n",
        encoding="utf-8",
    )
    spec = load_model(load_document(Path("Patient.yaml")), ResourceFile)
    assert spec.resource == "Patient"
    assert spec.read is not None and spec.read.record == "Patient"
    assert spec.fields[0].from_ == "MRN"


def test_load_model_unknown_key_suggests_close_match_and_lists_known_keys() -> None:
    text = (
        "resource: Patient\n"  # 1
        "fields:\n"  # 2
        "  - fhir: id\n"  # 3
        "    form: MRN\n"  # 4: 'form' at column 5
    )
    assert _problems(text) == [
        "Patient.yaml:4:5: unknown key 'form'; did you mean 'from'? "
        "known: direction, each, fhir, fields, from, resource, transform, value, when"
    ]


def test_load_model_unknown_key_in_nested_group_lists_field_keys() -> None:
    text = (
        "resource: Patient\n"  # 1
        "fields:\n"  # 2
        "  - fhir: name[0]\n"  # 3
        "    fields:\n"  # 4
        "      - fhir: family\n"  # 5
        "        from: Name\n"  # 6
        "        transfrom: []\n"  # 7: column 9
    )
    assert _problems(text) == [
        "Patient.yaml:7:9: unknown key 'transfrom'; did you mean 'transform'? "
        "known: direction, each, fhir, fields, from, resource, transform, value, when"
    ]


def test_load_model_unknown_key_in_condition_lists_alias_in() -> None:
    text = (
        "resource: Patient\n"
        "fields:\n"
        "  - fhir: gender\n"
        "    from: Sex\n"
        "    when: {path: Sex, exits: true}\n"  # 5: 'exits' at column 23
    )
    assert _problems(text) == [
        "Patient.yaml:5:23: unknown key 'exits'; did you mean 'exists'? "
        "known: equals, exists, in, path"
    ]


def test_load_model_unknown_key_in_system_session_login() -> None:
    text = SYSTEM_HEAD + (
        "  endpoint: http://ehr.example/ehr\n"  # 4
        "session:\n"  # 5
        "  style: header-token\n"  # 6
        "  header: {element: SessionHeader, token: SessionId}\n"  # 7
        "  login: {operation: Login, token: SessionId, tokne: x}\n"  # 8: 'tokne' at 47
    )
    assert _problems(text, SystemFile, "system.yaml") == [
        "system.yaml:8:47: unknown key 'tokne'; did you mean 'token'? "
        "known: operation, request, success, token"
    ]


def test_load_model_unknown_key_in_search_param_lists_param_keys() -> None:
    text = (
        "resource: Patient\n"  # 1
        "search:\n"  # 2
        "  operation: FindPatients\n"  # 3
        "  records: Patients/Patient\n"  # 4
        "  params:\n"  # 5
        "    family: {element: LastName, type: string, descripton: x}\n"  # 6: column 47
        "fields: []\n"
    )
    assert _problems(text) == [
        "Patient.yaml:6:47: unknown key 'descripton'; did you mean 'description'? "
        "known: description, element, fhir, prefixes, required, system, target, transform, type"
    ]


def test_load_model_unknown_key_without_close_match_still_lists_known_keys() -> None:
    text = "resource: Patient\nfields:\n  - fhir: id\n    zzzz: MRN\n"
    # Every other 'known:' list in the mapping room follows a '; '.
    assert _problems(text) == [
        "Patient.yaml:4:5: unknown key 'zzzz'; known: direction, each, fhir, fields, from, "
        "resource, transform, value, when"
    ]


def test_load_model_missing_top_level_key_points_at_start_of_file() -> None:
    assert _problems("resource: Patient\n") == ["Patient.yaml:1:1: 'fields' is required"]


def test_load_model_missing_nested_key_points_at_its_parent() -> None:
    text = (
        "resource: Patient\n"  # 1
        "read:\n"  # 2: the parent of the missing key
        "  operation: GetPatient\n"
        '  request: {MRN: "{id}"}\n'
        "fields: []\n"
    )
    assert _problems(text) == ["Patient.yaml:2:1: 'read.record' is required"]


def test_load_model_misspelt_key_reports_missing_and_unknown_together() -> None:
    text = (
        "resource: Patient\n"  # 1
        "feilds:\n"  # 2
        "  - {fhir: id, from: MRN}\n"
    )
    assert _problems(text) == [
        "Patient.yaml:1:1: 'fields' is required",
        "Patient.yaml:2:1: unknown key 'feilds'; did you mean 'fields'? "
        "known: create, delete, description, fields, operations, profile, read, resource, search, "
        "update",
    ]


def test_load_model_several_problems_are_all_reported() -> None:
    text = (
        "resource: Patient\n"  # 1
        "fields:\n"  # 2
        "  - fhir: id\n"  # 3
        "    form: MRN\n"  # 4
        "  - fhir: gender\n"  # 5
        "    from: Sex\n"  # 6
        "    trasnform: []\n"  # 7
    )
    assert _problems(text) == [
        "Patient.yaml:4:5: unknown key 'form'; did you mean 'from'? "
        "known: direction, each, fhir, fields, from, resource, transform, value, when",
        "Patient.yaml:7:5: unknown key 'trasnform'; did you mean 'transform'? "
        "known: direction, each, fhir, fields, from, resource, transform, value, when",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SYSTEM_HEAD + "  endpoint: http://ehr.example/ehr\n  timeout: fast\n",
            "system.yaml:5:3: connection.timeout: Input should be a valid number, "
            "unable to parse string as a number (got 'fast')",
        ),
        (
            SYSTEM_HEAD + "  endpoint: http://ehr.example/ehr\n  timeout: -1\n",
            "system.yaml:5:3: connection.timeout: Input should be greater than 0 (got -1)",
        ),
        (
            SYSTEM_HEAD + "  endpoint: http://ehr.example/ehr\n  password: secret\n",
            "system.yaml:5:3: connection.password: Input should be a valid dictionary or "
            "instance of EnvValue (got 'secret')",
        ),
        (
            "system: Hospital\nwsdl: ehr.wsdl\nconnection: {endpoint: http://x}\n",
            "system.yaml:1:1: system: String should match pattern '^[a-z][a-z0-9_-]*$' "
            "(got 'Hospital')",
        ),
        (
            SYSTEM_HEAD
            + "  endpoint: http://x\nfaults:\n  table:\n    EHR-X: {status: 200, issue: invalid}\n",
            "system.yaml:7:13: faults.table.EHR-X.status: Input should be greater than or "
            "equal to 400 (got 200)",
        ),
    ],
    ids=["timeout-not-a-number", "timeout-negative", "password-not-env", "name", "status"],
)
def test_load_model_wrong_value_type_in_system_file(text: str, expected: str) -> None:
    assert _problems(text, SystemFile, "system.yaml") == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resource: Patient\nfields: yes\n",
            "Patient.yaml:2:1: fields: Input should be a valid list (got 'yes')",
        ),
        (
            "resource: patient\nfields: []\n",
            "Patient.yaml:1:1: resource: String should match pattern '^[A-Z][A-Za-z]+$' "
            "(got 'patient')",
        ),
        (
            "resource: Patient\nsearch:\n  operation: F\n  records: R\n  params:\n"
            "    family: {element: X, type: text}\nfields: []\n",
            "Patient.yaml:6:26: search.params.family.type: Input should be 'string', 'token', "
            "'date', 'reference' or 'number' (got 'text')",
        ),
    ],
    ids=["list", "resource-pattern", "param-type"],
)
def test_load_model_wrong_value_type_in_resource_file(text: str, expected: str) -> None:
    assert _problems(text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resource: Patient\nfields:\n  - fhir: id\n    from: MRN\n    value: x\n",
            "Patient.yaml:3:5: fields.0: give exactly one of 'from', 'value' or 'fields'",
        ),
        (
            "resource: Patient\nfields:\n  - fhir: active\n    value: true\n"
            "    transform: [{boolean: {true: Y, false: N}}]\n",
            "Patient.yaml:3:5: fields.0: 'transform' applies to a value taken 'from' the "
            "legacy record (or to a value with {placeholders})",
        ),
        (
            "resource: Patient\nfields:\n  - fhir: gender\n    from: Sex\n    when: {path: Sex}\n",
            "Patient.yaml:5:5: fields.0.when: give exactly one of 'exists', 'equals' or 'in'",
        ),
        (
            "resource: Patient\nfields:\n  - fhir: name[0]\n    each: Names\n    from: Name\n",
            "Patient.yaml:3:5: fields.0: 'each' repeats a group: it needs 'fields'",
        ),
    ],
    ids=["two-sources", "transform-on-constant", "condition-without-test", "each-without-group"],
)
def test_load_model_rule_broken_across_keys_points_at_the_item(text: str, expected: str) -> None:
    assert _problems(text) == [expected]


def test_load_model_session_style_needs_login_and_header() -> None:
    text = SYSTEM_HEAD + "  endpoint: http://x\nsession:\n  style: header-token\n"
    assert _problems(text, SystemFile, "system.yaml") == [
        "system.yaml:5:1: session: style 'header-token' needs both 'login' and 'header'"
    ]


def test_load_model_env_value_typo_reports_only_the_unknown_key() -> None:
    # `endpoint` is `str | EnvValue`: a mapping can only mean an EnvValue, and the
    # name of pydantic's union member ('str') is not a key of the file.
    text = SYSTEM_HEAD + "  endpoint: {env: BRIDGE_URL, dflt: http://x}\n"  # 4: 'dflt' at 31
    assert _problems(text, SystemFile, "system.yaml") == [
        "system.yaml:4:31: unknown key 'dflt'; did you mean 'default'? known: default, env"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resource: Patient\nfields:\n  - fhir: id\n   from: MRN\n",
            "Patient.yaml:4:4: not valid YAML: expected <block end>, but found "
            "'<block mapping start>'",
        ),
        (
            "resource: Patient\nfields: [\n",
            "Patient.yaml:3:1: not valid YAML: expected the node content, but found '<stream end>'",
        ),
        (
            "resource: Patient\nfields:\n\t- fhir: id\n",
            "Patient.yaml:3:1: not valid YAML: found character '\\t' that cannot start any token",
        ),
        (
            "resource: Patient\nresource: Observation\nfields: []\n",
            'Patient.yaml:2:1: not valid YAML: found duplicate key "resource" with value '
            '"Observation" (original value: "Patient")',
        ),
    ],
    ids=["bad-indent", "unclosed-list", "tab", "duplicate-key"],
)
def test_load_document_invalid_yaml_reports_position(text: str, expected: str) -> None:
    Path("Patient.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_document(Path("Patient.yaml"))
    assert str(caught.value) == expected


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"], ids=["list", "empty", "scalar"])
def test_load_document_top_level_must_be_a_mapping(text: str) -> None:
    Path("Patient.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_document(Path("Patient.yaml"))
    assert str(caught.value) == "Patient.yaml:1:1: expected a mapping of keys at the top"


def test_load_document_missing_file_says_so() -> None:
    with pytest.raises(MappingError) as caught:
        load_document(Path("Nope.yaml"))
    assert str(caught.value) == "Nope.yaml:1:1: cannot read file: No such file or directory"


def test_load_document_reads_dates_as_the_text_they_are(tmp_path: Path) -> None:
    # YAML 1.1 timestamps: a FHIR date is text, and an impossible one raised a ValueError.
    path = tmp_path / "Patient.yaml"
    path.write_text("a: 2024-02-30\nb: 2024-02-03\nc: 2024-02-03T10:00:00Z\n", encoding="utf-8")
    root = load_document(path).root
    assert dict(root) == {"a": "2024-02-30", "b": "2024-02-03", "c": "2024-02-03T10:00:00Z"}
    assert all(type(v) is str for v in root.values())


def test_load_document_outside_working_directory_shows_path_as_given(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "Patient.yaml"
    path.write_text("- a\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path / "elsewhere")
        with pytest.raises(MappingError) as caught:
            load_document(path)
    assert str(caught.value) == f"{path}:1:1: expected a mapping of keys at the top"


def test_problem_prefix_is_file_line_column() -> None:
    Path("Patient.yaml").write_text(
        "resource: Patient\nfields:\n  - fhir: id\n    form: MRN\n", encoding="utf-8"
    )
    with pytest.raises(MappingError) as caught:
        load_model(load_document(Path("Patient.yaml")), ResourceFile)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == ("Patient.yaml", 4, 5)
    assert str(problem).startswith("Patient.yaml:4:5: unknown key 'form'")
    assert str(Problem("a.yaml", 3, 7, "boom")) == "a.yaml:3:7: boom"


def test_mapping_error_renders_one_line_per_problem() -> None:
    error = MappingError([Problem("a.yaml", 1, 2, "one"), Problem("b.csv", 3, 1, "two")])
    assert str(error) == "a.yaml:1:2: one\nb.csv:3:1: two"


def test_compile_system_reports_loader_problems_with_folder_path(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "connect_timeout: 3", "conect_timeout: 3")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'conect_timeout')}: unknown key 'conect_timeout'; "
        "did you mean 'connect_timeout'? known: backoff_base, backoff_cap, breaker_cooldown, "
        "breaker_failures, connect_timeout, deadline, endpoint, max_connections, password, "
        "retries, timeout, username"
    ]


def test_compile_system_reports_missing_key_in_resource_file(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "  record: Patient\n", "")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'read:')}: 'read.record' is required"
    ]


# -- timeouts, retries and lookups ----------------------------------------------


def test_connection_timeouts_default_to_safe_values(hospital) -> None:
    assert (hospital.timeout, hospital.connect_timeout, hospital.deadline) == (10, 3, 30)
    assert (hospital.retries, hospital.backoff_base, hospital.backoff_cap) == (2, 0.1, 2.0)


def test_connection_deadline_shorter_than_timeout_is_reported(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "  timeout: 10\n", "  timeout: 10\n  deadline: 6\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'deadline')}: connection: deadline 6 is shorter "
        "than timeout 10, so no call could use its whole timeout; raise deadline to at "
        "least 10 or lower timeout"
    ]


def test_connection_backoff_limits_are_checked(hospital_copy) -> None:
    hospital_copy.edit(
        "system.yaml",
        "  connect_timeout: 3\n",
        "  connect_timeout: 3\n  backoff_base: 3\n  backoff_cap: 1\n",
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'backoff_base')}: connection: backoff_base 3 is "
        "above backoff_cap 1; the cap bounds every pause, so lower backoff_base",
    ]


def test_session_wait_longer_than_the_deadline_is_reported(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "  wait_timeout: 5\n", "  wait_timeout: 45\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'wait_timeout')}: session: wait_timeout 45 is "
        "longer than connection.deadline 30, which bounds the wait too; lower wait_timeout"
    ]


def test_connection_retries_must_be_a_small_count(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "  timeout: 10\n", "  timeout: 10\n  retries: -1\n")
    [problem] = hospital_copy.problems()
    assert problem.startswith(f"{hospital_copy.at('system.yaml', 'retries')}: ")
    assert "retries" in problem


def test_lookup_compiles_match_paths_and_record_placeholders(hospital) -> None:
    create = hospital.resources["Observation"].create
    assert create is not None and create.lookup is not None
    lookup = create.lookup
    assert lookup.steps[0].call.operation == "GetVitals"
    assert [path.rsplit("}", 1)[1] for path, _ in lookup.match] == [
        "TypeCode",
        "Value",
        "TakenAt",
        "DeviceId",
    ]
    assert lookup.id is not None and lookup.id.endswith("}ReadingId")
    assert lookup.settle == 0.5


def test_lookup_match_on_an_unknown_element_is_reported(hospital_copy) -> None:
    hospital_copy.edit("Observation.yaml", "      TakenAt: ", "      Taken: ")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Observation.yaml', 'Taken:')}: match: element 'Taken' is not in "
        "Reading; known: ReadingId, TypeCode, Value, Unit, TakenAt, DeviceId"
    ]


def test_lookup_unknown_record_placeholder_is_reported(hospital_copy) -> None:
    hospital_copy.edit(
        "Observation.yaml", '{record.Readings/Reading/Value}"', '{record.Readings/Reading/Val}"'
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Observation.yaml', 'Value: ')}: {{record}}: element 'Val' "
        "is not in Reading; known: ReadingId, TypeCode, Value, Unit, TakenAt, DeviceId"
    ]


def test_lookup_of_a_create_needs_an_id(hospital_copy) -> None:
    hospital_copy.edit("Observation.yaml", "    id: ReadingId\n", "")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Observation.yaml', 'lookup:')}: lookup: a create's lookup needs "
        "'id', the element of the record found that holds its id (for the Location of the "
        "answer)"
    ]


# -- what is not text, not YAML, or too much of it ------------------------------


def _document_problem(data: bytes) -> str:
    Path("Patient.yaml").write_bytes(data)
    with pytest.raises(MappingError) as caught:
        load_document(Path("Patient.yaml"))
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"resource: Patient\ndescription: caf\xe9\nfields: []\n",  # 2: 0xe9 at column 17
            "Patient.yaml:2:17: the file must be UTF-8, but byte 0xe9 is not; save it as UTF-8",
        ),
        (
            b"resource: Patient\r\n# \xc3\xa9t\xc3\xa9 \x93quoted\x94\r\nfields: []\r\n",
            "Patient.yaml:2:7: the file must be UTF-8, but byte 0x93 is not; save it as UTF-8",
        ),
        (
            "resource: Patient\nfields: []\n".encode("utf-16"),
            "Patient.yaml:1:1: the file must be UTF-8, but it is UTF-16; save it as UTF-8",
        ),
        (
            b"\x8f\x00\xfe\x13random",
            "Patient.yaml:1:1: the file must be UTF-8, but byte 0x8f is not; save it as UTF-8",
        ),
    ],
    ids=["latin-1", "windows-1252-after-utf-8", "utf-16", "random-bytes"],
)
def test_load_document_not_utf8_names_the_byte_and_its_position(data: bytes, expected: str) -> None:
    assert _document_problem(data) == expected


def test_load_document_utf8_with_byte_order_mark_loads() -> None:
    Path("Patient.yaml").write_bytes(b"\xef\xbb\xbfresource: Patient\nfields: []\n")
    assert load_document(Path("Patient.yaml")).root == {"resource": "Patient", "fields": []}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resource: Patient\x01\nfields: []\n",
            "Patient.yaml:1:18: not valid YAML: character U+0001 is not allowed; remove it",
        ),
        (
            "resource: Patient\nfields:\n  - {fhir: id, from: M\x7fRN}\n",
            "Patient.yaml:3:23: not valid YAML: character U+007F is not allowed; remove it",
        ),
        (
            "resource: Patient\r\ndescription: x\x1b[0m\r\nfields: []\r\n",
            "Patient.yaml:2:15: not valid YAML: character U+001B is not allowed; remove it",
        ),
    ],
    ids=["soh", "del", "escape-after-crlf"],
)
def test_load_document_control_character_is_named_with_its_position(
    text: str, expected: str
) -> None:
    assert _document_problem(text.encode()) == expected


def test_load_document_nesting_too_deep_points_at_the_level_that_is_too_deep() -> None:
    # 5000 levels used to overflow the stack of the YAML composer.
    text = "resource: Patient\nfields: []\nx: " + "[" * 5000 + "]" * 5000 + "\n"
    assert _document_problem(text.encode()) == (
        "Patient.yaml:3:53: values nested more than 50 levels deep; nest them less deeply"
    )


def test_load_document_nesting_within_the_limit_loads() -> None:
    text = "resource: Patient\nfields: []\nx: " + "[" * 48 + "]" * 48 + "\n"
    Path("Patient.yaml").write_text(text, encoding="utf-8")
    assert "x" in load_document(Path("Patient.yaml")).root


def test_load_document_refuses_anchors_before_an_alias_can_expand() -> None:
    # 1 KB that stands for 10^9 values once the aliases are expanded.
    levels = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = "resource: Patient\nfields: []\n" + "\n".join(levels) + "\n"  # &a0 on line 3
    assert _document_problem(text.encode()) == (
        "Patient.yaml:3:5: YAML anchors are not supported (found '&a0'); remove it and write "
        "the value out where it is used"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resource: Patient\nfields: *f\n",
            "Patient.yaml:2:9: YAML aliases are not supported (found '*f'); write the value "
            "out where it is used",
        ),
        (
            "resource: Patient\nfields: &f [*f]\n",
            "Patient.yaml:2:9: YAML anchors are not supported (found '&f'); remove it and "
            "write the value out where it is used",
        ),
    ],
    ids=["alias", "recursive-alias"],
)
def test_load_document_refuses_aliases(text: str, expected: str) -> None:
    assert _document_problem(text.encode()) == expected


def test_no_mapping_in_the_repository_uses_anchors_or_aliases() -> None:
    # Refusing them breaks nothing that ships; the gateway's own configs load too.
    repo = Path(__file__).resolve().parents[2]
    files = [*repo.glob("mappings/*/*.yaml"), *repo.glob("docker/**/gateway.yaml")]
    assert len(files) > 10
    for file in files:
        load_document(file)
