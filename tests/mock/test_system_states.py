"""State logic of every system, in-process with fake clocks (no spyne, no HTTP)."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest

from bridge.mock.ehr_state import ReadingInput
from bridge.mock.hospital_state import Hospital
from bridge.mock.options import MockOptions
from bridge.mock.state import VendorError
from bridge.mock.world import World, build_world

USER, PASSWORD = "bridge", "bridge-dev-password"
TODAY = dt.date(2026, 11, 24)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def options() -> MockOptions:
    return MockOptions(patients=300, today=TODAY, max_sessions=2, session_idle_timeout=60)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture(scope="module")
def world(options: MockOptions) -> World:
    return build_world(options.seed, options.patients, TODAY)


@pytest.fixture
def hospital(options: MockOptions, world: World, clock: FakeClock) -> Hospital:
    # A fresh hospital per test over one shared (immutable) world.
    return Hospital(options, world=world, clock=clock)


def _code(call) -> str:
    with pytest.raises(VendorError) as info:
        call()
    return info.value.code


def _reading(**kw) -> ReadingInput:
    values = {
        "type_code": "HR",
        "value": Decimal("72"),
        "unit": "/min",
        "taken_at": "11/23/2026 08:15:00",
    }
    values.update(kw)
    return ReadingInput(**values)


# -- EHR: patient context and vitals -------------------------------------------


def test_ehr_select_patient_is_per_session(hospital) -> None:
    ehr = hospital.ehr
    with_allergies = next(iter(hospital.world.clinical.allergies))
    without = next(
        p.mrn for p in hospital.world.patients if p.mrn not in hospital.world.clinical.allergies
    )
    a, b = ehr.login(USER, PASSWORD), ehr.login(USER, PASSWORD)
    ehr.select_patient(a, with_allergies)
    ehr.select_patient(b, without)
    assert ehr.allergies(a) == hospital.world.clinical.allergies[with_allergies]
    assert ehr.allergies(b) == ()


def test_ehr_chart_needs_a_selected_patient(hospital) -> None:
    sid = hospital.ehr.login(USER, PASSWORD)
    for call in (hospital.ehr.allergies, hospital.ehr.problems, hospital.ehr.medications):
        assert _code(lambda call=call: call(sid)) == "EHR-NO-PATIENT"


def test_ehr_failed_select_clears_the_context(hospital) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    ehr.select_patient(sid, "100001")
    assert _code(lambda: ehr.select_patient(sid, "999999")) == "EHR-PAT-404"
    assert _code(lambda: ehr.problems(sid)) == "EHR-NO-PATIENT"


def test_ehr_context_dies_with_the_session(hospital, clock) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    ehr.select_patient(sid, "100001")
    clock.now += 61
    assert _code(lambda: ehr.problems(sid)) == "EHR-SESSION-EXPIRED"


def test_ehr_record_vitals_stores_a_batch_and_reads_it_back(hospital) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    ids = ehr.record_vitals(
        sid,
        "100002",
        [
            _reading(type_code="STEPS", value=Decimal("10234"), unit="steps", device_id="FB-1"),
            _reading(type_code="WT", value=Decimal("180.50"), unit="LB"),
        ],
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    stored = {r.ReadingId: r for r in ehr.get_vitals(sid, "100002", "11/23/2026", "11/23/2026")}
    assert stored[ids[0]].Value == "10234" and stored[ids[0]].DeviceId == "FB-1"
    assert stored[ids[1]].Value == "180.5" and stored[ids[1]].Unit == "LB"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type_code": "BP"}, "Reading 2: unknown TypeCode 'BP'; expected HR, STEPS, WT"),
        ({"unit": "kg", "type_code": "WT"}, "Reading 2: unit 'kg' does not fit WT; expected 'LB'"),
        ({"value": Decimal("-1")}, "Reading 2: Value must be a number >= 0"),
        ({"type_code": "STEPS", "unit": "steps", "value": Decimal("1.5")}, "STEPS must be a whole"),
        ({"taken_at": "2026-11-23T08:00:00"}, "is not MM/DD/YYYY HH:MM:SS"),
    ],
)
def test_ehr_record_vitals_is_all_or_nothing(hospital, bad, message) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    before = ehr.vitals("100003")
    with pytest.raises(VendorError) as info:
        ehr.record_vitals(sid, "100003", [_reading(), _reading(**bad), _reading()])
    assert info.value.code == "EHR-BAD-REQUEST"
    assert message in info.value.message
    assert ehr.vitals("100003") == before


def test_ehr_vitals_unknown_patient_and_bad_dates(hospital) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    assert _code(lambda: ehr.record_vitals(sid, "999999", [_reading()])) == "EHR-PAT-404"
    assert _code(lambda: ehr.get_vitals(sid, "999999", None, None)) == "EHR-PAT-404"
    assert _code(lambda: ehr.get_vitals(sid, "100001", "2026-11-01", None)) == "EHR-BAD-REQUEST"
    assert _code(lambda: ehr.record_vitals(sid, "100001", [])) == "EHR-BAD-REQUEST"


def test_reset_forgets_written_vitals_and_restarts_ids(hospital) -> None:
    ehr = hospital.ehr
    sid = ehr.login(USER, PASSWORD)
    (first,) = ehr.record_vitals(sid, "100004", [_reading()])
    hospital.reset()
    assert all(r.ReadingId != first for r in ehr.vitals("100004"))
    sid = ehr.login(USER, PASSWORD)
    assert ehr.record_vitals(sid, "100004", [_reading()]) == [first]


# -- lab ----------------------------------------------------------------------------


def test_lab_session_errors_are_lab_session(hospital, clock) -> None:
    lab = hospital.lab
    assert _code(lambda: lab.get_results(None, "100001", "2020-01-01", "2026-12-31")) == (
        "LAB-SESSION"
    )
    cookie = lab.logon(USER, PASSWORD)
    clock.now += 61
    assert _code(lambda: lab.get_report(cookie, "A26-0010001")) == "LAB-SESSION"
    assert _code(lambda: lab.logon(USER, "nope")) == "LAB-AUTH"
    lab.logon(USER, PASSWORD), lab.logon(USER, PASSWORD)
    assert _code(lambda: lab.logon(USER, PASSWORD)) == "LAB-SESSION-LIMIT"


def test_lab_pages_visit_every_result_once(hospital) -> None:
    lab = hospital.lab
    cookie = lab.logon(USER, PASSWORD)
    mrn = max(hospital.world.lab.accessions, key=lambda m: len(hospital.world.lab.results(m)))
    everything = hospital.world.lab.results(mrn)
    seen, page_number = [], 1
    while True:
        page = lab.get_results(cookie, mrn, "2000-01-01", "2030-12-31", page_number, 4)
        assert page.total_records == len(everything)
        seen += page.results
        if page_number >= page.total_pages:
            break
        page_number += 1
    assert seen == everything
    assert page.total_pages == -(-len(everything) // 4)
    # Past the end: an empty page, not an error.
    assert lab.get_results(cookie, mrn, "2000-01-01", "2030-12-31", 99, 4).results == []


def test_lab_page_size_is_capped_quietly(hospital) -> None:
    lab = hospital.lab
    cookie = lab.logon(USER, PASSWORD)
    page = lab.get_results(cookie, "100001", "2000-01-01", "2030-12-31", 1, 500)
    assert page.page_size == 100


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("999999", "2020-01-01", "2026-12-31"), "LAB-PAT-404"),
        (("100001", "2026-12-31", "2020-01-01"), "LAB-BAD-RANGE"),
        (("100001", "01/01/2020", "2026-12-31"), "LAB-BAD-REQUEST"),
        (("", "2020-01-01", "2026-12-31"), "LAB-BAD-REQUEST"),
    ],
)
def test_lab_get_results_errors(hospital, args, code) -> None:
    cookie = hospital.lab.logon(USER, PASSWORD)
    assert _code(lambda: hospital.lab.get_results(cookie, *args)) == code


def test_lab_date_range_is_inclusive(hospital) -> None:
    lab = hospital.lab
    cookie = lab.logon(USER, PASSWORD)
    result = hospital.world.lab.results("100001")[0]
    day = result.CollectedAt[:10]
    page = lab.get_results(cookie, "100001", day, day)
    assert result in page.results
    assert all(r.CollectedAt[:10] == day for r in page.results)


# -- scheduling -----------------------------------------------------------------------


def test_scheduling_booking_twice_is_slot_taken_and_cancel_frees(hospital) -> None:
    sched = hospital.scheduling
    slot = sched.open_slots("DR1001", "2026-11-25", "2026-12-31")[0]
    confirmation = sched.book(slot.SlotId, "100001", "Check-up")
    assert _code(lambda: sched.book(slot.SlotId, "100002", "x")) == "SLOT-TAKEN"
    assert slot not in sched.open_slots("DR1001", "2026-11-25", "2026-12-31")
    sched.cancel(confirmation)
    assert slot in sched.open_slots("DR1001", "2026-11-25", "2026-12-31")
    assert _code(lambda: sched.cancel(confirmation)) == "APPT-STATE"
    statuses = {a.ConfirmationNumber: a.Status for a in sched.appointments("100001")}
    assert statuses[confirmation] == "CANCELLED"


def test_scheduling_errors(hospital) -> None:
    sched = hospital.scheduling
    assert _code(lambda: sched.book("S9999999", "100001", "")) == "SLOT-404"
    slot = sched.open_slots("DR1002", "2026-11-25", "2026-12-31")[0]
    assert _code(lambda: sched.book(slot.SlotId, "999999", "")) == "SCHED-PAT-404"
    assert _code(lambda: sched.cancel("CN9999999")) == "APPT-404"
    assert _code(lambda: sched.appointments("999999")) == "SCHED-PAT-404"
    assert _code(lambda: sched.open_slots("DR9999", "2026-11-25", "2026-11-26")) == (
        "SCHED-PROV-404"
    )
    assert _code(lambda: sched.open_slots("DR1001", "2026-11-26", "2026-11-25")) == (
        "SCHED-BAD-REQUEST"
    )


def test_scheduling_one_slot_one_booking_under_concurrency(hospital) -> None:
    sched = hospital.scheduling
    slot = sched.open_slots("DR1003", "2026-11-25", "2026-12-31")[0]
    outcomes: list[str] = []

    def book(mrn: str) -> None:
        try:
            sched.book(slot.SlotId, mrn, "race")
            outcomes.append("ok")
        except VendorError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=book, args=(str(100001 + i),)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count("SLOT-TAKEN") == 29


def test_scheduling_reset_drops_bookings_and_cancellations(hospital) -> None:
    sched = hospital.scheduling
    seeded = next(a for a in hospital.world.schedule.appointments.values() if a.Status == "BOOKED")
    slot = sched.open_slots("DR1004", "2026-11-25", "2026-12-31")[0]
    confirmation = sched.book(slot.SlotId, "100005", "")
    sched.cancel(seeded.ConfirmationNumber)
    hospital.reset()
    assert sched.appointment(confirmation) is None
    assert sched.appointment(seeded.ConfirmationNumber).Status == "BOOKED"
    assert slot in sched.open_slots("DR1004", "2026-11-25", "2026-12-31")
    assert sched.book(slot.SlotId, "100005", "") == confirmation


# -- pharmacy -------------------------------------------------------------------------


def test_pharmacy_offset_limit_visits_every_prescription_once(hospital) -> None:
    rx = hospital.pharmacy
    ticket = rx.open_session(USER, PASSWORD)
    mrn = max(hospital.world.pharmacy.by_mrn, key=lambda m: len(hospital.world.pharmacy.by_mrn[m]))
    everything = hospital.world.pharmacy.by_mrn[mrn]
    assert len(everything) > 3
    seen, offset = [], 0
    while True:
        page = rx.prescriptions(ticket, mrn, offset, 3)
        assert page.total == len(everything)
        if not page.prescriptions:
            break
        seen += page.prescriptions
        offset += 3
    assert tuple(seen) == everything


def test_pharmacy_tickets_and_limits(hospital, clock) -> None:
    rx = hospital.pharmacy
    assert _code(lambda: rx.prescriptions("TKT-NOPE", "100001", 0, 10)) == "RX-TICKET"
    ticket = rx.open_session(USER, PASSWORD)
    assert rx.prescriptions(ticket, "999999", None, None).total == 0
    assert _code(lambda: rx.prescriptions(ticket, "100001", 0, 51)) == "RX-BAD-REQUEST"
    assert _code(lambda: rx.prescriptions(ticket, "100001", -1, 5)) == "RX-BAD-REQUEST"
    rx.open_session(USER, PASSWORD)
    assert _code(lambda: rx.open_session(USER, PASSWORD)) == "RX-LIMIT"
    assert _code(lambda: rx.open_session(USER, "x")) == "RX-AUTH"
    clock.now += 61
    assert _code(lambda: rx.prescriptions(ticket, "100001", 0, 10)) == "RX-TICKET"


# -- billing --------------------------------------------------------------------------


def _submit(billing, **kw):
    values = {
        "mrn": "100001",
        "encounter_date": "20261120",
        "diagnoses": ["I10"],
        "procedures": ["99213"],
        "amount": Decimal("95.00"),
    }
    values.update(kw)
    return billing.submit(**values)


def test_billing_claim_progression_and_outcome(hospital) -> None:
    billing = hospital.billing
    claim = _submit(billing)
    assert claim.number == f"CLM-2026-{hospital.world.billing.next_sequence[2026]:06d}"
    assert [billing.query(claim.number)[1] for _ in range(4)] == [
        "RECEIVED",
        "IN_REVIEW",
        "PAID",
        "PAID",
    ]
    assert billing.claim_view(claim.number)["PaidAmount"] == "76.00"
    big = _submit(billing, amount=Decimal("5000.01"))
    assert [billing.query(big.number)[1] for _ in range(3)][-1] == "DENIED"


@pytest.mark.parametrize(
    ("kw", "code", "message"),
    [
        ({"mrn": "999999"}, "BILL-PAT-404", "Patient 999999 not found"),
        ({"diagnoses": []}, "BILL-NO-DX", "at least one diagnosis"),
        ({"diagnoses": ["I10", "X99.9"]}, "BILL-CODE", "'X99.9'"),
        ({"procedures": ["99999"]}, "BILL-CODE", "'99999'"),
        ({"amount": Decimal("0")}, "BILL-BAD-REQUEST", "Amount"),
        ({"encounter_date": "11/20/2026"}, "BILL-BAD-REQUEST", "yyyyMMdd"),
        ({"encounter_date": "20271120"}, "BILL-BAD-REQUEST", "future"),
    ],
)
def test_billing_submit_errors(hospital, kw, code, message) -> None:
    with pytest.raises(VendorError) as info:
        _submit(hospital.billing, **kw)
    assert info.value.code == code
    assert message in info.value.message


def test_billing_auth_and_unknown_claim(hospital) -> None:
    assert _code(lambda: hospital.billing.authenticate(USER, "x")) == "BILL-AUTH"
    assert _code(lambda: hospital.billing.query("CLM-2026-999999")) == "BILL-CLAIM-404"
    assert hospital.billing.stats()["auth_failures"] == 1


def test_billing_reset_forgets_claims_and_query_counts(hospital) -> None:
    billing = hospital.billing
    claim = _submit(billing)
    seeded = next(iter(hospital.world.billing.claims))
    billing.query(seeded)
    hospital.reset()
    assert billing.claim_view(claim.number) is None
    assert billing.claim_view(seeded)["StatusQueries"] == 0
    assert _submit(billing).number == claim.number
