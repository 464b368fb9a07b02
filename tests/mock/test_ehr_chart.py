"""The EHR's patient context, chart and vitals over real SOAP/HTTP."""

from __future__ import annotations

from lxml import etree

from bridge.mock import MockHospital

TNS = "urn:hospital:ehr"
NS = {"e": TNS}

ALLERGY = ["AllergyId", "Substance", "SubstanceCode", "Reaction", "Severity", "Status",
           "RecordedDate"]  # fmt: skip
PROBLEM = ["ProblemId", "Description", "ICD10", "OnsetDate", "Status", "Sensitive"]
MEDICATION = ["MedId", "Name", "LocalCode", "Dose", "Route", "Frequency", "StartDate", "Status"]


def _rows(reply, path: str) -> list[dict[str, str]]:
    return [
        {etree.QName(c).localname: c.text for c in element}
        for element in reply.body.iterfind(path, NS)
    ]


def _patients_with(hospital: MockHospital, view: str, *, empty: bool) -> str:
    for record in hospital.sample_patients(100):
        rows = hospital.get(f"/ehr/{view}", mrn=record["MRN"])
        if bool(rows) != empty:
            return record["MRN"]
    raise AssertionError(f"no patient with {'no' if empty else 'some'} {view}")


def _reading(type_code: str, value: str, unit: str, taken: str, device: str | None = None) -> str:
    device_xml = f"<e:DeviceId>{device}</e:DeviceId>" if device else ""
    return (
        f"<e:Reading><e:TypeCode>{type_code}</e:TypeCode><e:Value>{value}</e:Value>"
        f"<e:Unit>{unit}</e:Unit><e:TakenAt>{taken}</e:TakenAt>{device_xml}</e:Reading>"
    )


def test_select_patient_then_chart_answers_for_that_patient(ehr, mock_hospital) -> None:
    mrn = _patients_with(mock_hospital, "allergies", empty=False)
    sid = ehr.login()
    reply = ehr.call("SelectPatient", sid, MRN=mrn)
    assert reply.status == 200 and reply.text("e:Result") == "OK"

    allergies = ehr.call("GetAllergies", sid)
    rows = _rows(allergies, "e:Allergies/e:Allergy")
    assert rows == mock_hospital.get("/ehr/allergies", mrn=mrn)
    assert [etree.QName(c).localname for c in allergies.body.find("e:Allergies/e:Allergy", NS)] == [
        n for n in ALLERGY if n in rows[0]
    ]
    problems = _rows(ehr.call("GetProblems", sid), "e:Problems/e:Problem")
    assert problems == mock_hospital.get("/ehr/problems", mrn=mrn)
    medications = _rows(ehr.call("GetMedications", sid), "e:Medications/e:Medication")
    assert medications == mock_hospital.get("/ehr/medications", mrn=mrn)
    for row in problems:
        assert list(row) == PROBLEM
    for row in medications:
        assert list(row) == MEDICATION


def test_selected_patient_is_isolated_per_session(ehr, mock_hospital) -> None:
    first = _patients_with(mock_hospital, "allergies", empty=False)
    second = _patients_with(mock_hospital, "allergies", empty=True)
    a, b = ehr.login(), ehr.login()
    ehr.call("SelectPatient", a, MRN=first)
    ehr.call("SelectPatient", b, MRN=second)
    assert _rows(ehr.call("GetAllergies", a), "e:Allergies/e:Allergy") == mock_hospital.get(
        "/ehr/allergies", mrn=first
    )
    assert _rows(ehr.call("GetAllergies", b), "e:Allergies/e:Allergy") == []
    # A answers for its own patient still, after B selected another.
    assert _rows(ehr.call("GetAllergies", a), "e:Allergies/e:Allergy") != []


def test_chart_without_a_selected_patient_faults_no_patient(ehr) -> None:
    sid = ehr.login()
    for operation in ("GetAllergies", "GetProblems", "GetMedications"):
        reply = ehr.call(operation, sid)
        assert reply.status == 500
        assert reply.fault_code == "EHR-NO-PATIENT"


def test_select_unknown_patient_faults_pat_404(ehr) -> None:
    assert ehr.call("SelectPatient", ehr.login(), MRN="999999").fault_code == "EHR-PAT-404"


def test_chart_needs_a_session(ehr) -> None:
    assert ehr.call("GetAllergies", None).fault_code == "EHR-SESSION-INVALID"


def test_record_vitals_then_get_vitals_reads_them_back(ehr, mock_hospital) -> None:
    sid = ehr.login()
    readings = (
        _reading("STEPS", "10234", "steps", "11/20/2026 23:59:59", "WATCH-77")
        + _reading("HR", "61", "/min", "11/20/2026 07:00:00")
        + _reading("WT", "182.4", "LB", "11/20/2026 07:05:00")
    )
    body = f"<e:MRN>100010</e:MRN><e:Readings>{readings}</e:Readings>"
    reply = ehr.post(ehr.envelope("RecordVitals", body, sid))
    assert reply.status == 200, etree.tostring(reply.root)
    assert reply.text("e:Accepted") == "3"
    ids = [e.text for e in reply.body.iterfind("e:ReadingIds/e:ReadingId", NS)]
    assert len(ids) == 3 and len(set(ids)) == 3

    back = ehr.call("GetVitals", sid, MRN="100010", FromDate="11/20/2026", ToDate="11/20/2026")
    rows = {r["ReadingId"]: r for r in _rows(back, "e:Readings/e:Reading")}
    assert rows[ids[0]] == {
        "ReadingId": ids[0],
        "TypeCode": "STEPS",
        "Value": "10234",
        "Unit": "steps",
        "TakenAt": "11/20/2026 23:59:59",
        "DeviceId": "WATCH-77",
    }
    assert rows[ids[2]]["Value"] == "182.4"
    side = {r["ReadingId"] for r in mock_hospital.get("/ehr/vitals", mrn="100010")}
    assert set(ids) <= side


def test_record_vitals_bad_reading_stores_nothing(ehr, mock_hospital) -> None:
    sid = ehr.login()
    before = mock_hospital.get("/ehr/vitals", mrn="100011")
    readings = _reading("HR", "70", "/min", "11/20/2026 07:00:00") + _reading(
        "WT", "80", "kg", "11/20/2026 07:00:00"
    )
    body = f"<e:MRN>100011</e:MRN><e:Readings>{readings}</e:Readings>"
    reply = ehr.post(ehr.envelope("RecordVitals", body, sid))
    assert reply.fault_code == "EHR-BAD-REQUEST"
    assert "Reading 2: unit 'kg' does not fit WT" in reply.root.findtext(".//faultstring")
    assert mock_hospital.get("/ehr/vitals", mrn="100011") == before

    unknown = _reading("BP", "120", "mmHg", "11/20/2026 07:00:00")
    body = f"<e:MRN>100011</e:MRN><e:Readings>{unknown}</e:Readings>"
    assert ehr.post(ehr.envelope("RecordVitals", body, sid)).fault_code == "EHR-BAD-REQUEST"


def test_record_vitals_unknown_patient_faults_pat_404(ehr) -> None:
    readings = _reading("HR", "70", "/min", "11/20/2026 07:00:00")
    body = f"<e:MRN>999999</e:MRN><e:Readings>{readings}</e:Readings>"
    assert ehr.post(ehr.envelope("RecordVitals", body, ehr.login())).fault_code == "EHR-PAT-404"


def test_reset_clears_recorded_vitals(ehr, mock_hospital) -> None:
    sid = ehr.login()
    readings = _reading("HR", "70", "/min", "11/20/2026 07:00:00")
    body = f"<e:MRN>100012</e:MRN><e:Readings>{readings}</e:Readings>"
    reply = ehr.post(ehr.envelope("RecordVitals", body, sid))
    (reading_id,) = [e.text for e in reply.body.iterfind("e:ReadingIds/e:ReadingId", NS)]
    mock_hospital.reset()
    assert reading_id not in {
        r["ReadingId"] for r in mock_hospital.get("/ehr/vitals", mrn="100012")
    }
