"""The mock EHR over real SOAP/HTTP: sessions, patients, searches, cursors, faults."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from lxml import etree

from bridge.mock import MockHospital

TNS = "urn:hospital:ehr"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS = {"e": TNS, "s": SOAP_ENV}

PATIENT_ORDER = [
    "MRN",
    "Name",
    "DOB",
    "Sex",
    "AddressLine1",
    "AddressLine2",
    "City",
    "State",
    "Zip",
    "Phone",
    "MaritalStatus",
    "Language",
    "DeceasedFlag",
    "DeceasedDate",
]


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _mrns(reply) -> list[str]:
    return [
        p.findtext("e:MRN", namespaces=NS) for p in reply.body.iterfind("e:Patients/e:Patient", NS)
    ]


# -- sessions -----------------------------------------------------------------


def test_login_get_patient_logout_round_trip(ehr, mock_hospital: MockHospital) -> None:
    session_id = ehr.login()
    assert len(session_id) == 32
    assert int(session_id, 16) >= 0

    reply = ehr.call("GetPatient", session_id, MRN="100001")
    assert reply.status == 200
    assert _local(reply.body) == "GetPatientResponse"
    assert reply.text("e:Patient/e:MRN") == "100001"
    assert reply.text("e:Patient/e:Name") == mock_hospital.patient("100001")["Name"]

    reply = ehr.logout(session_id)
    assert reply.status == 200
    assert reply.text("e:Result") == "OK"
    assert ehr.call("GetPatient", session_id, MRN="100001").fault_code == "EHR-SESSION-INVALID"


def test_login_gives_a_fresh_session_id_each_time(ehr) -> None:
    assert ehr.login() != ehr.login()


def test_login_bad_credentials_faults_auth_failed(ehr) -> None:
    reply = ehr.call("Login", Username="bridge", Password="wrong")
    assert reply.status == 500
    assert reply.fault_code == "EHR-AUTH-FAILED"
    assert reply.root.findtext("s:Body/s:Fault/faultcode", namespaces=NS) == "soap11env:Client"


def test_get_patient_without_header_faults_session_invalid(ehr) -> None:
    reply = ehr.call("GetPatient", None, MRN="100001")
    assert reply.status == 500
    assert reply.fault_code == "EHR-SESSION-INVALID"


def test_get_patient_with_unknown_session_faults_session_invalid(ehr) -> None:
    assert ehr.call("GetPatient", "0" * 32, MRN="100001").fault_code == "EHR-SESSION-INVALID"


def test_session_expired_via_side_door_faults_session_expired(ehr, mock_hospital) -> None:
    session_id = ehr.login()
    mock_hospital.expire_sessions()
    reply = ehr.call("GetPatient", session_id, MRN="100001")
    assert reply.fault_code == "EHR-SESSION-EXPIRED"
    # Expiry is one-shot: a new session works at once.
    assert ehr.call("GetPatient", ehr.login(), MRN="100001").status == 200


def test_login_over_session_limit_faults_until_a_logout(small) -> None:
    first = small.login()
    small.login()
    reply = small.call("Login", Username="bridge", Password="bridge-dev-password")
    assert reply.fault_code == "EHR-SESSION-LIMIT"

    assert small.logout(first).status == 200
    small.login()
    stats = small.hospital.stats()["ehr"]
    assert stats["active_sessions"] == 2
    assert stats["peak_sessions"] == 2
    assert stats["login_failures"] == 1


def test_logout_of_unknown_session_is_ok(ehr) -> None:
    reply = ehr.logout("not-a-session")
    assert reply.status == 200
    assert reply.text("e:Result") == "OK"


def test_session_idle_timeout_faults_session_expired(ehr_for) -> None:
    with MockHospital.start(patients=50, session_idle_timeout=1) as hospital:
        ehr = ehr_for(hospital)
        session_id = ehr.login()
        assert ehr.call("GetPatient", session_id, MRN="100001").status == 200
        time.sleep(1.5)
        assert ehr.call("GetPatient", session_id, MRN="100001").fault_code == "EHR-SESSION-EXPIRED"
        assert hospital.stats()["ehr"]["active_sessions"] == 0


# -- patients -----------------------------------------------------------------


def test_get_patient_unknown_mrn_faults_with_vendor_error_detail(ehr) -> None:
    reply = ehr.call("GetPatient", ehr.login(), MRN="999999")
    assert reply.status == 500
    fault = reply.body
    assert fault.tag == f"{{{SOAP_ENV}}}Fault"
    assert fault.findtext("faultcode") == "soap11env:Client"
    assert fault.findtext("faultstring") == "Patient 999999 not found"

    details = fault.findall("detail")
    assert len(details) == 1
    (vendor,) = list(details[0])
    assert vendor.tag == f"{{{TNS}}}VendorError"
    assert [child.tag for child in vendor] == [f"{{{TNS}}}Code", f"{{{TNS}}}Message"]
    assert vendor.findtext("e:Code", namespaces=NS) == "EHR-PAT-404"
    assert vendor.findtext("e:Message", namespaces=NS) == "Patient 999999 not found"


def test_get_patient_elements_follow_contract_order_and_omit_absent(ehr, mock_hospital) -> None:
    records = mock_hospital.sample_patients(200)
    # A record without the optional values, to see they are left out.
    sparse = next(r for r in records if "AddressLine2" not in r and r["DeceasedFlag"] == "N")
    reply = ehr.call("GetPatient", ehr.login(), MRN=sparse["MRN"])

    patient = reply.body.find("e:Patient", NS)
    names = [_local(child) for child in patient]
    assert names == [n for n in PATIENT_ORDER if n in sparse]
    assert {n: patient.findtext(f"e:{n}", namespaces=NS) for n in names} == sparse
    assert all(child.text for child in patient), "no empty or nil elements"


def test_find_patients_common_surname_walks_every_page(small) -> None:
    session_id = small.login()
    reply = small.call("FindPatients", session_id, LastName="smith")
    total = int(reply.text("e:TotalCount"))
    assert total > 20, "Smith should span several pages of 10"

    seen = _mrns(reply)
    assert len(seen) == 10
    cursor = reply.text("e:CursorId")
    pages = 1
    while cursor:
        reply = small.call("FetchNext", session_id, CursorId=cursor)
        assert reply.status == 200
        assert int(reply.text("e:TotalCount")) == total
        page = _mrns(reply)
        assert 0 < len(page) <= 10
        seen += page
        cursor = reply.text("e:CursorId")
        pages += 1

    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 10)


def test_find_patients_sorts_by_last_first_mrn(small) -> None:
    session_id = small.login()
    reply = small.call("FindPatients", session_id, LastName="J")
    names = [
        (p.findtext("e:Name", namespaces=NS), p.findtext("e:MRN", namespaces=NS))
        for p in reply.body.iterfind("e:Patients/e:Patient", NS)
    ]
    keys = [(n.split("^")[0].casefold(), n.split("^")[1].casefold(), m) for n, m in names]
    assert keys == sorted(keys)


def test_fetch_next_exhausted_cursor_faults_cursor_invalid(small) -> None:
    session_id = small.login()
    cursor = small.call("FindPatients", session_id, LastName="Smith").text("e:CursorId")
    while True:
        reply = small.call("FetchNext", session_id, CursorId=cursor)
        if not reply.text("e:CursorId"):
            break
    assert small.call("FetchNext", session_id, CursorId=cursor).fault_code == "EHR-CURSOR-INVALID"


def test_fetch_next_from_another_session_faults_cursor_invalid(small) -> None:
    owner, other = small.login(), small.login()
    cursor = small.call("FindPatients", owner, LastName="Smith").text("e:CursorId")
    assert cursor
    assert small.call("FetchNext", other, CursorId=cursor).fault_code == "EHR-CURSOR-INVALID"
    # The owner can still use it.
    assert small.call("FetchNext", owner, CursorId=cursor).status == 200


def test_cursor_dies_with_its_session(small) -> None:
    session_id = small.login()
    cursor = small.call("FindPatients", session_id, LastName="Smith").text("e:CursorId")
    small.logout(session_id)
    assert small.call("FetchNext", small.login(), CursorId=cursor).fault_code == (
        "EHR-CURSOR-INVALID"
    )


def test_find_patients_apostrophe_surname_escaped(small) -> None:
    session_id = small.login()
    # &apos; in the request, a literal apostrophe in the data.
    body = small.fields(LastName="o'brien").replace("'", "&apos;")
    reply = small.post(small.envelope("FindPatients", body, session_id))
    names = [p.findtext("e:Name", namespaces=NS) for p in reply.body.iterfind(".//e:Patient", NS)]
    assert names
    assert all(n.startswith("O'Brien^") for n in names)
    assert int(reply.text("e:TotalCount")) == len(names)


def test_find_patients_folds_unicode_case(small) -> None:
    session_id = small.login()
    as_text = small.call("FindPatients", session_id, LastName="müller")
    # The same search as a character reference and in a latin-1 document.
    as_ref = small.post(
        small.envelope("FindPatients", "<e:LastName>m&#xFC;ller</e:LastName>", session_id)
    )
    latin1 = small.envelope("FindPatients", "<e:LastName>MÜLLER</e:LastName>", session_id)
    latin1 = latin1.replace('encoding="utf-8"', 'encoding="iso-8859-1"').encode("iso-8859-1")
    as_latin1 = small.post(latin1, charset="iso-8859-1")

    expected = _mrns(as_text)
    assert expected
    assert _mrns(as_ref) == _mrns(as_latin1) == expected
    names = [p.findtext("e:Name", namespaces=NS) for p in as_text.body.iterfind(".//e:Patient", NS)]
    assert all(n.startswith("Müller^") for n in names)


def test_find_patients_combines_criteria(small) -> None:
    record = small.hospital.sample_patients(1, offset=7)[0]
    last, first, _ = record["Name"].split("^")
    reply = small.call(
        "FindPatients",
        small.login(),
        LastName=last.upper(),
        FirstName=first[:2].lower(),
        DOB=record["DOB"],
        Sex=record["Sex"],
    )
    assert record["MRN"] in _mrns(reply)
    by_mrn = small.call("FindPatients", small.login(), MRN=record["MRN"])
    assert _mrns(by_mrn) == [record["MRN"]]
    assert by_mrn.text("e:CursorId") is None


def test_find_patients_no_match_returns_empty_page(small) -> None:
    reply = small.call("FindPatients", small.login(), LastName="Zzyzx")
    assert reply.status == 200
    assert _mrns(reply) == []
    assert reply.text("e:TotalCount") == "0"
    assert reply.text("e:CursorId") is None


def test_find_patients_malformed_dob_faults_bad_request(small) -> None:
    reply = small.call("FindPatients", small.login(), DOB="1980-01-31")
    assert reply.fault_code == "EHR-BAD-REQUEST"


def test_schema_invalid_request_faults_bad_request(small) -> None:
    reply = small.call("GetPatient", small.login(), Patient="100001")
    assert reply.status == 500
    assert reply.fault_code == "EHR-BAD-REQUEST"


def test_request_in_wrong_charset_faults_bad_request(small) -> None:
    xml = small.envelope("FindPatients", "<e:LastName>Müller</e:LastName>", small.login())
    reply = small.post(xml.encode("iso-8859-1"), charset="utf-8")
    assert reply.status == 500
    assert reply.fault_code == "EHR-BAD-REQUEST"


def test_default_hospital_has_5000_patients(ehr, mock_hospital) -> None:
    # The session's mock runs with `bridge mock`'s defaults.
    reply = ehr.call("FindPatients", ehr.login())
    assert reply.text("e:TotalCount") == "5000"
    assert len(_mrns(reply)) == 25
    assert mock_hospital.sample_patients(1, offset=4999)[0]["MRN"] == "105000"
    smiths = ehr.call("FindPatients", ehr.login(), LastName="Smith")
    assert int(smiths.text("e:TotalCount")) > 75


def test_fifty_concurrent_calls_run_in_parallel(ehr, mock_hospital) -> None:
    session_id = ehr.login()
    mock_hospital.inject_faults(latency_ms=300)

    def get(i: int) -> int:
        return ehr.call("GetPatient", session_id, MRN=str(100001 + i)).status

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(get, range(50)))
    elapsed = time.monotonic() - started

    assert statuses == [200] * 50
    assert elapsed < 3, f"50 calls of 300 ms took {elapsed:.1f} s: not concurrent"
