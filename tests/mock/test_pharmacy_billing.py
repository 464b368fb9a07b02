"""The pharmacy (ticket in the body) and billing (credentials in the body) over real SOAP."""

from __future__ import annotations

from tests.mock.clients import RX, SoapClient

PRESCRIPTION = ["RxNumber", "MRN", "DrugCode", "DrugName", "Sig", "Quantity", "Refills",
                "Prescriber", "PrescriberId", "WrittenDate", "Status"]  # fmt: skip
CLAIM = ["ClaimNumber", "MRN", "Status", "SubmittedDate", "EncounterDate", "Amount",
         "PaidAmount", "DiagnosisCodes", "ProcedureCodes"]  # fmt: skip


def _ticket(rx, hospital) -> str:
    reply = rx.call("OpenSession", User=hospital.username, Pass=hospital.password)
    assert reply.status == 200
    ticket = reply.text("v:Ticket")
    assert ticket and ticket.startswith("TKT-")
    return ticket


def _busiest(hospital, view: str) -> str:
    return max(
        (p["MRN"] for p in hospital.sample_patients(60)),
        key=lambda m: len(hospital.get(view, mrn=m)),
    )


# -- pharmacy ---------------------------------------------------------------------


def test_ticket_travels_as_first_body_element(rx, mock_hospital) -> None:
    ticket = _ticket(rx, mock_hospital)
    mrn = _busiest(mock_hospital, "/pharmacy/prescriptions")
    reply = rx.call("GetPrescriptions", Ticket=ticket, MRN=mrn)
    assert reply.status == 200
    rows = reply.records("v:Prescriptions/v:Prescription")
    expected = mock_hospital.get("/pharmacy/prescriptions", mrn=mrn)
    assert reply.text("v:TotalCount") == str(len(expected))
    assert len(rows) == min(20, len(expected))
    assert all(list(r) == PRESCRIPTION for r in rows)
    assert rows[0] == {k: str(v) for k, v in expected[0].items()}


def test_offset_limit_paging_visits_every_prescription_once(rx, mock_hospital) -> None:
    ticket = _ticket(rx, mock_hospital)
    mrn = _busiest(mock_hospital, "/pharmacy/prescriptions")
    expected = [e["RxNumber"] for e in mock_hospital.get("/pharmacy/prescriptions", mrn=mrn)]
    assert len(expected) > 4
    seen, offset = [], 0
    while offset < len(expected):
        reply = rx.call("GetPrescriptions", Ticket=ticket, MRN=mrn, Offset=offset, Limit=4)
        seen += [r["RxNumber"] for r in reply.records("v:Prescriptions/v:Prescription")]
        offset += 4
    assert seen == expected


def test_unknown_mrn_is_an_empty_list_not_a_fault(rx, mock_hospital) -> None:
    reply = rx.call("GetPrescriptions", Ticket=_ticket(rx, mock_hospital), MRN="999999")
    assert reply.status == 200
    assert reply.text("v:TotalCount") == "0"
    assert reply.all("v:Prescriptions/v:Prescription") == []


def test_bad_ticket_and_bad_limit_fault(rx, mock_hospital) -> None:
    reply = rx.call("GetPrescriptions", Ticket="TKT-FORGED", MRN="100001")
    assert (reply.status, reply.fault_code) == (500, "RX-TICKET")
    ticket = _ticket(rx, mock_hospital)
    assert rx.call("GetPrescriptions", Ticket=ticket, MRN="100001", Limit=51).fault_code == (
        "RX-BAD-REQUEST"
    )
    assert rx.call("OpenSession", User="bridge", Pass="x").fault_code == "RX-AUTH"


def test_close_session_ends_the_ticket(rx, mock_hospital) -> None:
    ticket = _ticket(rx, mock_hospital)
    assert rx.call("CloseSession", Ticket=ticket).text("v:Result") == "OK"
    assert rx.call("GetPrescriptions", Ticket=ticket, MRN="100001").fault_code == "RX-TICKET"
    stats = mock_hospital.stats()["pharmacy"]
    assert (stats["logins"], stats["logouts"]) == (1, 1)


def test_expired_ticket_faults_rx_ticket(rx, mock_hospital) -> None:
    ticket = _ticket(rx, mock_hospital)
    mock_hospital.expire_sessions(system="pharmacy")
    assert rx.call("GetPrescriptions", Ticket=ticket, MRN="100001").fault_code == "RX-TICKET"


def test_pharmacy_session_cap_is_rx_limit(small_hospital, http) -> None:
    small_hospital.reset()
    rx = SoapClient(small_hospital.pharmacy_url, RX, http)
    _ticket(rx, small_hospital), _ticket(rx, small_hospital)
    assert rx.call("OpenSession", User="bridge", Pass="bridge-dev-password").fault_code == (
        "RX-LIMIT"
    )


# -- billing ----------------------------------------------------------------------


def _submit(bill, hospital, **overrides) -> object:
    values = {
        "UserId": hospital.username,
        "Password": hospital.password,
        "MRN": "100030",
        "EncounterDate": "20240115",
        "DiagnosisCodes": "<v:Code>I10</v:Code><v:Code>E11.9</v:Code>",
        "ProcedureCodes": "<v:Code>99214</v:Code><v:Code>80053</v:Code>",
        "Amount": "165.00",
    }
    values.update(overrides)
    body = "".join(f"<v:{k}>{v}</v:{k}>" for k, v in values.items() if v is not None)
    return bill.post(bill.envelope("SubmitClaim", body))


def _status(bill, hospital, number: str):
    return bill.call(
        "GetClaimStatus", UserId=hospital.username, Password=hospital.password, ClaimNumber=number
    )


def test_submit_claim_then_status_advances_per_query(bill, mock_hospital) -> None:
    reply = _submit(bill, mock_hospital)
    assert reply.status == 200
    number = reply.text("v:ClaimNumber")
    assert reply.text("v:Status") == "RECEIVED"
    assert number.startswith("CLM-") and len(number) == len("CLM-2026-000123")

    statuses = []
    for _ in range(3):
        answer = _status(bill, mock_hospital, number)
        statuses.append(answer.text("v:Status"))
    assert statuses == ["RECEIVED", "IN_REVIEW", "PAID"]
    assert [c.tag.split("}")[1] for c in answer.body] == CLAIM
    assert answer.text("v:PaidAmount") == "132.00"
    assert [e.text for e in answer.all("v:DiagnosisCodes/v:Code")] == ["I10", "E11.9"]

    view = mock_hospital.get(f"/billing/claims/{number}")
    assert (view["Status"], view["StatusQueries"], view["MRN"]) == ("PAID", 3, "100030")


def test_side_door_shows_status_without_advancing_it(bill, mock_hospital) -> None:
    number = _submit(bill, mock_hospital).text("v:ClaimNumber")
    for _ in range(3):
        assert mock_hospital.get(f"/billing/claims/{number}")["Status"] == "RECEIVED"
    assert number in {c["ClaimNumber"] for c in mock_hospital.get("/billing/claims", mrn="100030")}


def test_bad_credentials_fault_bill_auth(bill, mock_hospital) -> None:
    reply = _submit(bill, mock_hospital, Password="guess")
    assert (reply.status, reply.fault_code) == (500, "BILL-AUTH")
    reply = bill.call("GetClaimStatus", UserId="someone", Password="x", ClaimNumber="CLM-1")
    assert reply.fault_code == "BILL-AUTH"
    assert mock_hospital.stats()["billing"]["auth_failures"] == 2


def test_claim_errors(bill, mock_hospital) -> None:
    bad_dx = _submit(
        bill, mock_hospital, DiagnosisCodes="<v:Code>I10</v:Code><v:Code>Q99.9X</v:Code>"
    )
    assert bad_dx.fault_code == "BILL-CODE"
    assert "'Q99.9X'" in bad_dx.root.findtext(".//detail/{*}VendorError/{*}Message")
    bad_px = _submit(bill, mock_hospital, ProcedureCodes="<v:Code>12345</v:Code>")
    assert bad_px.fault_code == "BILL-CODE"
    assert _submit(bill, mock_hospital, MRN="999999").fault_code == "BILL-PAT-404"
    assert _submit(bill, mock_hospital, DiagnosisCodes="").fault_code == "BILL-NO-DX"
    assert _submit(bill, mock_hospital, DiagnosisCodes=None).fault_code == "BILL-NO-DX"
    assert _status(bill, mock_hospital, "CLM-1999-000001").fault_code == "BILL-CLAIM-404"
    assert mock_hospital.stats()["billing"]["faults"] == {
        "BILL-CLAIM-404": 1,
        "BILL-CODE": 2,
        "BILL-NO-DX": 2,
        "BILL-PAT-404": 1,
    }


def test_reset_forgets_submitted_claims(bill, mock_hospital) -> None:
    number = _submit(bill, mock_hospital).text("v:ClaimNumber")
    mock_hospital.reset()
    assert _status(bill, mock_hospital, number).fault_code == "BILL-CLAIM-404"
