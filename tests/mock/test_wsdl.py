"""The checked-in wsdl/hospital/ehr.wsdl is what the mock serves, and zeep reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zeep
from lxml import etree

from bridge.mock import MockHospital

CHECKED_IN = Path(__file__).resolve().parents[2] / "wsdl" / "hospital" / "ehr.wsdl"
CHECKED_IN_ADDRESS = "http://127.0.0.1:8081/ehr"
REGENERATE = f"python -m bridge.mock --write-wsdl {CHECKED_IN.relative_to(CHECKED_IN.parents[2])}"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
OPERATIONS = {"Login", "Logout", "GetPatient", "FindPatients", "FetchNext"}


def _canonical(xml: bytes) -> bytes:
    """C14N with whitespace-only text dropped and the service address fixed."""
    root = etree.fromstring(xml, etree.XMLParser(remove_blank_text=True))
    for address in root.iter(f"{{{WSDL_SOAP}}}address"):
        address.set("location", CHECKED_IN_ADDRESS)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(root, method="c14n")


def test_served_wsdl_matches_checked_in_file(mock_hospital: MockHospital, http) -> None:
    served = http.get(mock_hospital.ehr_url + "?wsdl")
    assert served.status_code == 200
    assert _canonical(served.content) == _canonical(CHECKED_IN.read_bytes()), (
        f"{CHECKED_IN} is out of date with the mock's /ehr?wsdl; regenerate it with:\n"
        f"    {REGENERATE}"
    )


def test_served_wsdl_addresses_the_mock_itself(mock_hospital, http) -> None:
    root = etree.fromstring(http.get(mock_hospital.ehr_url + "?wsdl").content)
    (address,) = root.iter(f"{{{WSDL_SOAP}}}address")
    assert address.get("location") == mock_hospital.ehr_url


def test_write_wsdl_reproduces_the_checked_in_file_exactly(tmp_path: Path) -> None:
    target = tmp_path / "ehr.wsdl"
    result = subprocess.run(
        [sys.executable, "-m", "bridge.mock", "--write-wsdl", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == CHECKED_IN.read_bytes(), f"regenerate with: {REGENERATE}"


def test_zeep_reads_checked_in_wsdl_with_every_operation() -> None:
    client = zeep.Client(wsdl=str(CHECKED_IN))
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    assert set(port.binding._operations) == OPERATIONS
    assert port.binding_options["address"] == CHECKED_IN_ADDRESS

    get_patient = port.binding._operations["GetPatient"]
    headers = [name for name, _ in get_patient.input.header.type.elements]
    assert headers == ["SessionHeader"]
    assert not port.binding._operations["Login"].input.header.type.elements


def test_zeep_talks_to_the_mock(mock_hospital: MockHospital) -> None:
    client = zeep.Client(wsdl=str(CHECKED_IN))
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
