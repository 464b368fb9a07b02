"""Every checked-in WSDL is what the mock serves, ``--write-wsdl`` rebuilds it, zeep reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zeep
from lxml import etree

from bridge.mock import MockHospital
from bridge.mock.catalog import SYSTEMS

ROOT = Path(__file__).resolve().parents[2]
WSDL_DIR = ROOT / "wsdl"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
REGENERATE = "python -m bridge.mock --write-wsdl wsdl"
SYSTEM_NAMES = [spec.name for spec in SYSTEMS]

OPERATIONS = {
    "ehr": {
        "Login", "Logout", "GetPatient", "FindPatients", "FetchNext", "SelectPatient",
        "GetAllergies", "GetProblems", "GetMedications", "RecordVitals", "GetVitals",
    },
    "lab": {"Logon", "Logoff", "GetResults", "GetReport"},
    "scheduling": {
        "GetProviders", "GetOpenSlots", "BookAppointment", "CancelAppointment", "GetAppointments",
    },
    "pharmacy": {"OpenSession", "CloseSession", "GetPrescriptions"},
    "billing": {"SubmitClaim", "GetClaimStatus"},
}  # fmt: skip


def _address(root: etree._Element) -> etree._Element:
    (address,) = [a for ns in (WSDL_SOAP11, WSDL_SOAP12) for a in root.iter(f"{{{ns}}}address")]
    return address


def _canonical(xml: bytes, location: str) -> bytes:
    """C14N with whitespace-only text dropped and the service address fixed."""
    root = etree.fromstring(xml, etree.XMLParser(remove_blank_text=True))
    _address(root).set("location", location)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(root, method="c14n")


@pytest.mark.parametrize("spec", SYSTEMS, ids=SYSTEM_NAMES)
def test_served_wsdl_matches_checked_in_file(spec, mock_hospital: MockHospital, http) -> None:
    checked_in = WSDL_DIR / spec.wsdl_file
    served = http.get(mock_hospital.wsdl_url(spec.name))
    assert served.status_code == 200
    location = spec.checked_in_location
    assert _canonical(served.content, location) == _canonical(checked_in.read_bytes(), location), (
        f"{checked_in} is out of date with the mock's {spec.path}?wsdl; regenerate with:\n"
        f"    {REGENERATE}"
    )


@pytest.mark.parametrize("spec", SYSTEMS, ids=SYSTEM_NAMES)
def test_served_wsdl_addresses_the_mock_itself(spec, mock_hospital, http) -> None:
    root = etree.fromstring(http.get(mock_hospital.wsdl_url(spec.name)).content)
    assert _address(root).get("location") == mock_hospital.system_url(spec.name)


def test_write_wsdl_directory_reproduces_every_checked_in_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.mock", "--write-wsdl", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wsdl"))
    assert written == sorted(spec.wsdl_file for spec in SYSTEMS)
    for spec in SYSTEMS:
        assert (tmp_path / spec.wsdl_file).read_bytes() == (
            WSDL_DIR / spec.wsdl_file
        ).read_bytes(), f"regenerate with: {REGENERATE}"
    assert f"wrote {tmp_path / 'lab' / 'lab.wsdl'}" in result.stdout


def test_write_wsdl_file_form_writes_the_ehr_alone(tmp_path: Path) -> None:
    target = tmp_path / "ehr.wsdl"
    result = subprocess.run(
        [sys.executable, "-m", "bridge.mock", "--write-wsdl", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == (WSDL_DIR / "hospital" / "ehr.wsdl").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["ehr.wsdl"]


@pytest.mark.parametrize("spec", SYSTEMS, ids=SYSTEM_NAMES)
def test_zeep_reads_every_operation_with_the_right_soap_version(spec) -> None:
    client = zeep.Client(wsdl=str(WSDL_DIR / spec.wsdl_file))
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    assert set(port.binding._operations) == OPERATIONS[spec.name]
    assert port.binding_options["address"] == spec.checked_in_location
    expected = "Soap12Binding" if spec.soap_version == "1.2" else "Soap11Binding"
    assert type(port.binding).__name__ == expected
    # Every body element is in the vendor's namespace, and children are qualified.
    for operation in port.binding._operations.values():
        assert operation.input.body.qname.namespace == spec.namespace
    root = etree.parse(str(WSDL_DIR / spec.wsdl_file)).getroot()
    (schema,) = root.iter("{http://www.w3.org/2001/XMLSchema}schema")
    assert schema.get("targetNamespace") == spec.namespace
    assert schema.get("elementFormDefault") == "qualified"


def test_zeep_sees_the_ehr_session_header_and_fault_detail() -> None:
    client = zeep.Client(wsdl=str(WSDL_DIR / "hospital" / "ehr.wsdl"))
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    get_patient = port.binding._operations["GetPatient"]
    headers = [name for name, _ in get_patient.input.header.type.elements]
    assert headers == ["SessionHeader"]
    assert not port.binding._operations["Login"].input.header.type.elements
    assert client.get_element("{urn:hospital:ehr}VendorError") is not None


def test_zeep_talks_to_the_mock_ehr(mock_hospital: MockHospital) -> None:
    client = zeep.Client(wsdl=str(WSDL_DIR / "hospital" / "ehr.wsdl"))
    service = client.create_service("{urn:hospital:ehr}EhrService", mock_hospital.ehr_url)
    session_id = service.Login(Username=mock_hospital.username, Password=mock_hospital.password)
    header = {"SessionHeader": {"SessionId": session_id}}

    patient = service.GetPatient(MRN="100002", _soapheaders=header)
    assert patient.MRN == "100002"

    page = service.FindPatients(LastName="Garcia", _soapheaders=header)
    assert len(page.Patients.Patient) == 25
    assert page.TotalCount > 75

    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GetPatient(MRN="999999", _soapheaders=header)
    assert info.value.code == "soap11env:Client"
    code = info.value.detail.findtext("{urn:hospital:ehr}VendorError/{urn:hospital:ehr}Code")
    assert code == "EHR-PAT-404"
    assert service.Logout(SessionId=session_id) == "OK"


def test_zeep_talks_soap12_with_ws_security_to_scheduling(mock_hospital: MockHospital) -> None:
    from zeep.wsse.username import UsernameToken

    client = zeep.Client(
        wsdl=str(WSDL_DIR / "scheduling" / "scheduling.wsdl"),
        wsse=UsernameToken(mock_hospital.username, mock_hospital.password, use_digest=True),
    )
    service = client.create_service(
        "{urn:sched-systems:scheduling:v3}SchedulingService", mock_hospital.scheduling_url
    )
    providers = service.GetProviders()
    assert len(providers) == 25
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GetAppointments(MRN="999999")
    assert info.value.code == "soap12env:Sender"
    ns = "{urn:sched-systems:scheduling:v3}"
    assert info.value.detail.findtext(f"{ns}VendorError/{ns}Code") == "SCHED-PAT-404"
