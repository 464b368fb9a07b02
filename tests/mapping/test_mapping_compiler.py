"""compile_system: the real hospital folder compiles; each mistake is one precise problem.

Broken folders are copies of mappings/hospital changed by one small string
replacement (the `hospital_copy` fixture); `at(file, text)` reads the edited
file to find the `file:line:col` a problem must point at.
"""

from __future__ import annotations

import re

import pytest

from bridge.mapping.compiler import compile_system
from bridge.mapping.fhirmodel import PathStep

PATIENT_ELEMENTS = (
    "MRN, Name, DOB, Sex, AddressLine1, AddressLine2, City, State, Zip, Phone, "
    "MaritalStatus, Language, DeceasedFlag, DeceasedDate"
)
OPERATIONS = (
    "FetchNext, FindPatients, GetAllergies, GetMedications, GetPatient, GetProblems, "
    "GetVitals, Login, Logout, RecordVitals, SelectPatient"
)
TRANSFORMS = (
    "boolean, case, date, datetime, decimal, integer, join, quantity, regex, split, table, template"
)
EHR = "{urn:hospital:ehr}"


# -- the real folder ---------------------------------------------------------


def test_compile_hospital_serves_patient_read_and_search(hospital) -> None:
    assert hospital.name == "hospital"
    assert list(hospital.resources) == ["AllergyIntolerance", "Condition", "Observation", "Patient"]
    patient = hospital.resources["Patient"]
    assert patient.type == "Patient"
    assert patient.system == "hospital"
    assert patient.file == "mappings/hospital/Patient.yaml"
    assert patient.profiles == ("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",)
    assert patient.read is not None and patient.search is not None
    assert patient.read.call.operation == "GetPatient"
    assert patient.read.record == f"{EHR}Patient"
    assert patient.read.call.request({"id": "100001"}) == {"MRN": "100001"}
    assert patient.read.id_pattern is not None
    assert patient.read.id_pattern.match("100001")
    assert not patient.read.id_pattern.match("abc")
    assert patient.search.call.operation == "FindPatients"
    assert patient.search.records == f"{EHR}Patients/{EHR}Patient"
    assert patient.search.total == f"{EHR}TotalCount"
    assert sorted(patient.search.params) == [
        "_id",
        "birthdate",
        "family",
        "gender",
        "given",
        "identifier",
    ]
    assert patient.search.params["family"].pushed
    assert patient.search.call.request({"params.family": "Smi"})["LastName"] == "Smi"
    assert patient.search.params["identifier"].system == "urn:oid:2.16.840.1.113883.3.7777.1"
    paging = patient.search.paging
    assert (paging.style, paging.cursor, paging.page_size) == ("cursor", f"{EHR}CursorId", 25)
    assert paging.next is not None and paging.next.operation == "FetchNext"
    assert paging.next.request({"cursor": "c-1"}) == {"CursorId": "c-1"}
    assert paging.invalid_cursor_codes == frozenset({"EHR-CURSOR-INVALID"})


def test_compile_hospital_fields_point_at_their_mapping_lines(hospital) -> None:
    patient = hospital.resources["Patient"]
    lines = (hospital.folder / "Patient.yaml").read_text(encoding="utf-8").splitlines()
    birth = next(f for f in patient.fields if f.steps == (PathStep("birthDate", None),))
    line = lines.index("  - fhir: birthDate") + 1
    assert birth.where == f"mappings/hospital/Patient.yaml:{line}"
    assert birth.source == f"{EHR}DOB"
    name = next(f for f in patient.fields if f.steps == (PathStep("name", 0),))
    assert name.is_group
    assert [c.steps for c in name.children] == [
        (PathStep("use", None),),
        (PathStep("family", None),),
        (PathStep("given", 0),),
        (PathStep("given", 1),),
    ]


def test_compile_hospital_defaults_apply_with_empty_env(hospital) -> None:
    assert hospital.endpoint == "http://127.0.0.1:8081/ehr"
    assert hospital.session.kind == "header-token"
    assert hospital.session.login_values == {
        "Username": "bridge",
        "Password": "bridge-dev-password",
    }
    assert (hospital.max_sessions, hospital.idle_timeout, hospital.wait_timeout) == (4, 300, 5)
    assert hospital.session.expired_codes == frozenset(
        {"EHR-SESSION-EXPIRED", "EHR-SESSION-INVALID"}
    )
    assert sorted(hospital.tables) == [
        "allergens",
        "allergy-status",
        "language",
        "marital",
        "problem-status",
        "severity",
        "sex",
        "vital-types",
    ]
    assert sorted(hospital.faults) == [
        "EHR-AUTH-FAILED",
        "EHR-BAD-REQUEST",
        "EHR-INTERNAL",
        "EHR-NO-PATIENT",
        "EHR-PAT-404",
    ]
    assert hospital.faults["EHR-PAT-404"].status == 404


def test_compile_hospital_env_overrides_defaults(hospital_copy) -> None:
    system = hospital_copy.compile(
        {
            "BRIDGE_HOSPITAL_URL": "http://ehr.example:9000/ehr",
            "BRIDGE_HOSPITAL_USERNAME": "svc-fhir",
            "BRIDGE_HOSPITAL_PASSWORD": "s3cret&<",
        }
    )
    assert system.endpoint == "http://ehr.example:9000/ehr"
    assert system.session.login_values == {"Username": "svc-fhir", "Password": "s3cret&<"}


def test_compile_hospital_endpoint_argument_wins_over_env(hospital_copy) -> None:
    system = compile_system(
        hospital_copy.folder,
        {"BRIDGE_HOSPITAL_URL": "http://from-env/ehr"},
        endpoint="http://from-argument/ehr",
    )
    assert system.endpoint == "http://from-argument/ehr"


# -- one mistake, one problem --------------------------------------------------


def test_compile_unknown_read_operation_lists_known_operations(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "operation: GetPatient\n", "operation: GetPatients\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'operation: GetPatients')}: operation "
        f"'GetPatients' is not in the WSDL; known: {OPERATIONS}"
    ]


def test_compile_unknown_search_operation_lists_known_operations(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "operation: FindPatients", "operation: FindPatient")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'operation: FindPatient')}: operation "
        f"'FindPatient' is not in the WSDL; known: {OPERATIONS}"
    ]


def test_compile_from_element_not_in_record_lists_known_elements(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "from: DOB\n", "from: DOB2\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'from: DOB2')}: field 'birthDate': element "
        f"'DOB2' is not in Patient; known: {PATIENT_ELEMENTS}"
    ]


def test_compile_from_element_in_group_not_in_record(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "from: AddressLine2}", "from: AddressLine3}")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'from: AddressLine3')}: field 'line[1]': "
        f"element 'AddressLine3' is not in Patient; known: {PATIENT_ELEMENTS}"
    ]


def test_compile_unknown_fhir_element_suggests_close_match(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "fhir: birthDate", "fhir: birthDat")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: birthDat')}: field 'birthDat': "
        "Patient has no element 'birthDat'; did you mean 'birthDate'?"
    ]


def test_compile_unknown_fhir_element_in_group_names_its_parent(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "{fhir: postalCode,", "{fhir: postcode,")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: postcode')}: field 'postcode': "
        "address has no element 'postcode'; did you mean 'postalCode'?"
    ]


def test_compile_repeating_fhir_element_without_index(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "  - fhir: active\n",
        "  - {fhir: name.family, from: Name}\n  - fhir: active\n",
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: name.family')}: field 'name.family': "
        "'name' repeats: write name[0] (or use 'each' on a group)"
    ]


def test_compile_repeating_group_without_index_is_one_problem_at_the_group(
    hospital_copy,
) -> None:
    hospital_copy.edit("Patient.yaml", "  - fhir: name[0]\n", "  - fhir: name\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: name')}: field 'name': "
        "'name' repeats: write name[0] (or use 'each' on a group)"
    ]


def test_compile_index_on_non_repeating_element(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "  - fhir: gender\n", "  - fhir: gender[0]\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: gender[0]')}: field 'gender[0]': "
        "'gender' does not repeat: remove [0]"
    ]


def test_compile_fhir_path_with_bad_syntax(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "  - fhir: gender\n", "  - fhir: Gender\n")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'fhir: Gender')}: 'Gender' is not a FHIR "
        "element path like name[0].family"
    ]


def test_compile_unknown_transform_lists_known_transforms(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "    transform: [{date: MM/DD/YYYY}]\n  - fhir: deceasedDateTime",
        "    transform: [{datum: MM/DD/YYYY}]\n  - fhir: deceasedDateTime",
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', '{datum:')}: transform: unknown transform "
        f"'datum'; known: {TRANSFORMS}"
    ]


def test_compile_transform_bad_argument_is_reported(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        '{split: {separator: "^", index: 0}}',
        '{split: {separator: "^", idx: 0}}',
    )
    where = hospital_copy.at("Patient.yaml", '{split: {separator: "^", idx')
    assert hospital_copy.problems() == [
        f"{where}: transform: unknown argument 'idx'; known: separator, index"
    ]


def test_compile_unknown_code_table_lists_known_tables(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "    transform: [{table: sex}]\n  - fhir: birthDate",
        "    transform: [{table: sexes}]\n  - fhir: birthDate",
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', '{table: sexes}')}: transform: no code table "
        "'sexes'; known: allergens, allergy-status, language, marital, problem-status, "
        "severity, sex, vital-types"
    ]


def test_compile_unknown_placeholder_in_read_request_lists_known(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", 'request: {MRN: "{id}"}', 'request: {MRN: "{mrn}"}')
    where = hospital_copy.at("Patient.yaml", 'MRN: "{mrn}"')
    assert hospital_copy.problems() == [f"{where}: unknown placeholder '{{mrn}}'; known: {{id}}"]


def test_compile_unknown_placeholder_in_login_request_is_a_problem(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", 'Username: "{username}"', 'Username: "{user}"')
    where = hospital_copy.at("system.yaml", 'Username: "{user}"')
    assert hospital_copy.problems() == [
        f"{where}: unknown placeholder '{{user}}'; known: {{username}}, {{password}}"
    ]


def test_compile_unknown_request_element_lists_known(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", 'request: {MRN: "{id}"}', 'request: {MRNX: "{id}"}')
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'MRNX:')}: request of GetPatient: element "
        "'MRNX' is not in GetPatient; known: MRN"
    ]


def test_compile_search_param_element_not_in_request(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "element: LastName", "element: Surname")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'element: Surname')}: param 'family': element "
        "'Surname' is not in FindPatients; known: LastName, FirstName, DOB, Sex, MRN"
    ]


def test_compile_one_way_transform_on_search_param_is_refused(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "      transform: [{table: sex}]\n    identifier:",
        "      transform: [{regex: '^(.)'}]\n    identifier:",
    )
    where = hospital_copy.at("Patient.yaml", "transform: [{regex: '^(.)'}]")
    assert hospital_copy.problems() == [
        f"{where}: param 'gender': a search value must be converted to the legacy form, "
        "and this transform only works one way"
    ]


def test_compile_condition_on_unknown_element(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "{path: Phone, exists: true}", "{path: Phon, exists: true}")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'path: Phon,')}: when: element 'Phon' is not "
        f"in Patient; known: {PATIENT_ELEMENTS}"
    ]


def test_compile_bad_id_pattern_is_reported(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", '"^[0-9]{1,10}$"', '"^[0-9"')
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'id_pattern:')}: not a regular expression: "
        "unterminated character set at position 1"
    ]


def test_compile_env_var_without_default_must_be_set(hospital_copy) -> None:
    hospital_copy.edit(
        "system.yaml",
        'endpoint: {env: BRIDGE_HOSPITAL_URL, default: "http://127.0.0.1:8081/ehr"}',
        "endpoint: {env: BRIDGE_HOSPITAL_URL}",
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'endpoint:')}: environment variable "
        "BRIDGE_HOSPITAL_URL is not set and has no default"
    ]
    system = hospital_copy.compile({"BRIDGE_HOSPITAL_URL": "http://ehr.example/ehr"})
    assert system.endpoint == "http://ehr.example/ehr"


def test_compile_system_name_must_match_folder(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "system: hospital", "system: clinic")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'system: clinic')}: system 'clinic' must be "
        "named like its folder 'hospital'"
    ]


def test_compile_resource_file_named_unlike_its_resource(hospital_copy) -> None:
    (hospital_copy.folder / "Patient.yaml").rename(hospital_copy.folder / "People.yaml")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('People.yaml', 'resource: Patient')}: resource 'Patient' must "
        "be in Patient.yaml"
    ]


def test_compile_unknown_resource_type(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "resource: Patient", "resource: Patients")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('Patient.yaml', 'resource: Patients')}: 'Patients' is not a "
        "FHIR R4 resource type"
    ]


def test_compile_unknown_header_element_lists_global_elements(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "element: SessionHeader", "element: SessionHdr")
    (problem,) = hospital_copy.problems()
    assert problem.startswith(
        f"{hospital_copy.at('system.yaml', 'element: SessionHdr')}: header element "
        "'SessionHdr' is not in the WSDL; known: Allergy, AllergyArray, FetchNext, "
    )
    assert ", SessionHeader, " in problem


def test_compile_missing_wsdl_names_the_path(hospital_copy) -> None:
    hospital_copy.edit("system.yaml", "wsdl/hospital/ehr.wsdl", "wsdl/hospital/gone.wsdl")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'wsdl:')}: wsdl: WSDL file not found "
        "(../../wsdl/hospital/gone.wsdl)"
    ]


WSDL_FIX = "save the service's WSDL in its place (often served at its address with ?wsdl)"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello world\n", f"not a WSDL: the file is not an XML document; {WSDL_FIX}"),
        (
            b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><p>Sign in<br>"
            b"</body></html>\n",
            f"not a WSDL: its root element is <html>, not <wsdl:definitions>; {WSDL_FIX}",
        ),
    ],
    ids=["text", "html-page"],
)
def test_compile_wsdl_that_is_no_wsdl_says_so(hospital_copy, content: bytes, expected: str) -> None:
    (hospital_copy.root / "wsdl" / "hospital" / "ehr.wsdl").write_bytes(content)
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'wsdl:')}: wsdl: {expected} "
        "(../../wsdl/hospital/ehr.wsdl)"
    ]


def test_compile_wsdl_without_a_service_is_one_problem_not_one_per_operation(
    hospital_copy,
) -> None:
    path = hospital_copy.root / "wsdl" / "hospital" / "ehr.wsdl"
    text = path.read_text(encoding="utf-8")
    start, end = text.index("<wsdl:service"), text.index("</wsdl:service>")
    path.write_text(text[:start] + text[end + len("</wsdl:service>") :], encoding="utf-8")
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'wsdl:')}: wsdl: the WSDL has no <service> with a "
        "<port>, so it offers no operations; use the WSDL that describes the service "
        "itself, with <wsdl:service> and <soap:address> (../../wsdl/hospital/ehr.wsdl)"
    ]


def test_compile_wsdl_binding_without_operations_says_so_not_known_nothing(
    hospital_copy,
) -> None:
    path = hospital_copy.root / "wsdl" / "hospital" / "ehr.wsdl"
    text = path.read_text(encoding="utf-8")
    start, end = text.index("<wsdl:binding"), text.index("</wsdl:binding>")
    binding = re.sub(r"<wsdl:operation\b.*?</wsdl:operation>", "", text[start:end], flags=re.S)
    path.write_text(text[:start] + binding + text[end:], encoding="utf-8")
    problems = hospital_copy.problems()
    assert problems[0] == (
        f"{hospital_copy.at('system.yaml', 'operation: Login')}: operation 'Login' is not in "
        "the WSDL, which offers no SOAP operation at all; check that its <service> has a port "
        "whose <binding> is SOAP and lists the operations"
    )
    assert not [p for p in problems if "known: " in p]


def test_compile_fault_code_path_with_a_quote_is_reported(hospital_copy) -> None:
    hospital_copy.edit(
        "system.yaml", "code: detail/VendorError/Code", 'code: "detail/Vendor\'Error/Code"'
    )
    assert hospital_copy.problems() == [
        f"{hospital_copy.at('system.yaml', 'code: ')}: faults: code "
        '"detail/Vendor\'Error/Code": "Vendor\'Error" is not an XML element name; give local '
        "names without a prefix, separated by '/', or '*' for any element"
    ]


def test_compile_mapping_file_not_in_utf8_is_reported_at_the_byte(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", "  - fhir: birthDate\n", "  - fhir: birthDate # caf@\n")
    path = hospital_copy.folder / "Patient.yaml"
    path.write_bytes(path.read_bytes().replace(b"caf@", b"caf\xe9"))
    lines = path.read_bytes().split(b"\n")
    line, col = next(
        (n, row.index(b"\xe9") + 1) for n, row in enumerate(lines, 1) if b"caf\xe9" in row
    )
    assert hospital_copy.problems() == [
        f"mappings/hospital/Patient.yaml:{line}:{col}: the file must be UTF-8, but byte 0xe9 "
        "is not; save it as UTF-8"
    ]


# -- code tables ---------------------------------------------------------------


def test_compile_table_with_bad_header_reports_the_csv(hospital_copy) -> None:
    hospital_copy.edit("tables/sex.csv", "local,display,system,code", "local,display,code,system")
    problems = hospital_copy.problems()
    assert problems[0] == (
        "mappings/hospital/tables/sex.csv:1:1: the header must be local,display,system,code"
    )


def test_compile_table_with_duplicate_local_code_reports_its_line(hospital_copy) -> None:
    hospital_copy.edit("tables/sex.csv", "F,Female,", "M,Female,")
    problems = hospital_copy.problems()
    assert problems[0] == (
        f"{hospital_copy.at('tables/sex.csv', 'M,Female,')}: local code 'M' is listed twice"
    )
    assert hospital_copy.at("tables/sex.csv", "M,Female,") == "mappings/hospital/tables/sex.csv:3:1"


def test_compile_broken_table_is_not_reported_again_where_it_is_used(hospital_copy) -> None:
    # tables/sex.csv exists: 'no code table sex' at each use would send the
    # engineer looking for a missing file. One mistake, one problem.
    hospital_copy.edit("tables/sex.csv", "F,Female,", "M,Female,")
    assert hospital_copy.problems() == [
        "mappings/hospital/tables/sex.csv:3:1: local code 'M' is listed twice"
    ]


# -- several problems ----------------------------------------------------------


def test_compile_reports_every_problem_together(hospital_copy) -> None:
    hospital_copy.edit(
        "system.yaml",
        'endpoint: {env: BRIDGE_HOSPITAL_URL, default: "http://127.0.0.1:8081/ehr"}',
        "endpoint: {env: BRIDGE_HOSPITAL_URL}",
    )
    hospital_copy.edit("Patient.yaml", 'request: {MRN: "{id}"}', 'request: {MRN: "{mrn}"}')
    hospital_copy.edit("Patient.yaml", "from: DOB\n", "from: DOB2\n")
    hospital_copy.edit("Patient.yaml", "  - fhir: gender\n", "  - fhir: gender[0]\n")
    hospital_copy.edit(
        "Patient.yaml",
        "    transform: [{date: MM/DD/YYYY}]\n  - fhir: deceasedBoolean",
        "    transform: [{datum: MM/DD/YYYY}]\n  - fhir: deceasedBoolean",
    )
    at = hospital_copy.at
    mrn = at("Patient.yaml", 'MRN: "{mrn}"')
    assert hospital_copy.problems() == [
        f"{at('system.yaml', 'endpoint:')}: environment variable BRIDGE_HOSPITAL_URL is not "
        "set and has no default",
        f"{mrn}: unknown placeholder '{{mrn}}'; known: {{id}}",
        f"{at('Patient.yaml', 'fhir: gender[0]')}: field 'gender[0]': 'gender' does not "
        "repeat: remove [0]",
        f"{at('Patient.yaml', 'from: DOB2')}: field 'birthDate': element 'DOB2' is not in "
        f"Patient; known: {PATIENT_ELEMENTS}",
        f"{at('Patient.yaml', '{datum:')}: transform: unknown transform 'datum'; known: "
        f"{TRANSFORMS}",
    ]


def test_compile_problem_lines_match_the_edited_file(hospital_copy) -> None:
    # Inserting lines above a mistake moves the reported line with it.
    hospital_copy.edit("Patient.yaml", "\nfields:\n", "\nfields:\n\n\n# three more lines\n")
    hospital_copy.edit("Patient.yaml", "from: DOB\n", "from: DOB2\n")
    (problem,) = hospital_copy.problems()
    lines = (hospital_copy.folder / "Patient.yaml").read_text(encoding="utf-8").splitlines()
    line = lines.index("    from: DOB2") + 1
    assert re.match(rf"mappings/hospital/Patient\.yaml:{line}:5: field 'birthDate'", problem)
