"""The seeded hospital behind every system, in-process (no server, no spyne)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from bridge.mock.codes import (
    CONDITIONS,
    DIAGNOSIS_CODES,
    DRUGS,
    LAB_TESTS,
    PROCEDURE_CODES,
)
from bridge.mock.providers import npi_check_digit
from bridge.mock.scheddata import HORIZON_DAYS
from bridge.mock.world import World, build_world

TODAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def timed_world() -> tuple[World, float]:
    # CPU time, so a busy machine does not fail the speed test; docs/mock.md
    # gives wall-clock numbers.
    started = time.process_time()
    world = build_world(42, 5000, TODAY)
    return world, time.process_time() - started


@pytest.fixture(scope="module")
def world(timed_world: tuple[World, float]) -> World:
    return timed_world[0]


def _snapshot(world: World) -> dict[str, object]:
    """Everything generated, in comparable form (lab results materialised)."""
    lab = {acc: world.lab.report(acc) for acc in world.lab}
    return {
        "patients": world.patients,
        "providers": world.providers,
        "problems": world.clinical.problems,
        "allergies": world.clinical.allergies,
        "medications": world.clinical.medications,
        "vitals": world.clinical.vitals,
        "lab": lab,
        "slots": world.schedule.slots,
        "appointments": world.schedule.appointments,
        "booked": world.schedule.booked,
        "prescriptions": world.pharmacy.by_number,
        "claims": world.billing.claims,
    }


def test_build_world_same_seed_and_today_gives_identical_data_for_every_system() -> None:
    first, second = build_world(7, 150, TODAY), build_world(7, 150, TODAY)
    assert _snapshot(first) == _snapshot(second)


_DIGEST = """
import datetime, hashlib
from bridge.mock.world import build_world
world = build_world(42, 800, datetime.date(2026, 11, 24))
reports = [world.lab.report(accession) for accession in world.lab]
parts = [world.patients, world.clinical.problems, world.clinical.vitals, reports,
         world.schedule.slots, world.schedule.booked, world.pharmacy.by_number,
         world.billing.claims]
print(hashlib.sha256(repr(parts).encode()).hexdigest())
"""


def test_build_world_is_the_same_in_every_process() -> None:
    # Each MockHospital is its own process, with its own string-hash seed:
    # nothing generated may depend on set or hash order.
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _DIGEST], capture_output=True, text=True, env=env, check=True
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_build_world_other_seed_gives_other_data() -> None:
    first, other = _snapshot(build_world(7, 150, TODAY)), _snapshot(build_world(8, 150, TODAY))
    for key in ("problems", "lab", "slots", "prescriptions", "claims"):
        if key != "slots":
            assert first[key] != other[key], key
    # Same calendar grid, different bookings.
    assert first["booked"] != other["booked"]


def test_build_world_5000_patients_is_fast(timed_world) -> None:
    world, seconds = timed_world
    assert seconds < 1.5
    # Lab results are made on first use; all of them, too, stay well inside budget.
    started = time.process_time()
    results = sum(len(world.lab.report(acc).results) for acc in world.lab)
    assert time.process_time() - started < 1.5
    assert results > 40_000


def test_every_patient_is_in_every_system_under_the_same_mrn(world) -> None:
    mrns = {p.mrn for p in world.patients}
    assert mrns == {str(n) for n in range(100001, 105001)}
    assert set(world.lab.accessions) <= mrns
    assert {a.MRN for a in world.schedule.appointments.values()} <= mrns
    assert set(world.pharmacy.by_mrn) <= mrns
    assert {c.mrn for c in world.billing.claims.values()} <= mrns
    # Plentiful: most patients have something everywhere.
    assert len(world.lab.accessions) > 0.85 * len(mrns)
    assert len(world.schedule.by_mrn) > 0.85 * len(mrns)
    assert len(world.pharmacy.by_mrn) > 0.5 * len(mrns)
    assert len(world.billing.by_mrn) > 0.6 * len(mrns)


def test_allergies_most_patients_have_none_others_one_to_four(world) -> None:
    counts = Counter(len(world.clinical.allergies.get(p.mrn, ())) for p in world.patients)
    assert 0.55 < counts[0] / 5000 < 0.65
    assert set(counts) <= {0, 1, 2, 3, 4}
    for allergies in world.clinical.allergies.values():
        for a in allergies:
            assert re.fullmatch(r"ALG-[A-Z]+", a.SubstanceCode)
            assert a.Severity in {"MILD", "MODERATE", "SEVERE"}
            assert a.Status in {"ACTIVE", "INACTIVE", "RESOLVED"}
            assert re.fullmatch(r"\d{2}/\d{2}/\d{4}", a.RecordedDate)


def test_problems_use_real_icd10_codes_and_flag_sensitive_ones(world) -> None:
    known = {c.icd10: c for c in CONDITIONS}
    assert len(known) >= 30
    seen = Counter()
    for problems in world.clinical.problems.values():
        for p in problems:
            condition = known[p.ICD10]
            assert p.Description == condition.description
            assert p.Sensitive == ("Y" if condition.sensitive else "N")
            assert p.Status in {"ACTIVE", "RESOLVED"}
            seen[p.ICD10] += 1
    assert seen["E11.9"] > 100 and seen["I10"] > 200
    assert seen["F32.9"] > 0 and seen["B20"] > 0
    assert all(known[c].sensitive for c in ("F32.9", "F10.20", "B20", "Z21", "F17.210"))
    assert not known["Z87.891"].sensitive


def test_medications_follow_problems_in_ehr_and_pharmacy(world) -> None:
    ehr_codes = {d.ehr_code for d in DRUGS}
    rx_codes = {d.rx_code for d in DRUGS}
    assert len(DRUGS) >= 25
    assert all(re.fullmatch(r"\d{5,7}", d.rxcui) for d in DRUGS)
    for mrn, meds in world.clinical.medications.items():
        assert {m.LocalCode for m in meds} <= ehr_codes
        assert all(m.Status in {"ACTIVE", "COMPLETED", "DISCONTINUED"} for m in meds)
        # The pharmacy fills what the EHR charted.
        by_ehr = {d.ehr_code: d.rx_code for d in DRUGS}
        filled = {rx.DrugCode for rx in world.pharmacy.by_mrn.get(mrn, ())}
        assert {by_ehr[m.LocalCode] for m in meds} == filled
    statuses = Counter(rx.Status for rx in world.pharmacy.by_number.values())
    assert set(statuses) == {"ACTIVE", "COMPLETED", "CANCELLED", "ON-HOLD"}
    assert all(rx.DrugCode in rx_codes for rx in world.pharmacy.by_number.values())


def test_prescribers_are_providers_named_by_npi(world) -> None:
    npis = {p.npi for p in world.providers}
    assert {rx.PrescriberId for rx in world.pharmacy.by_number.values()} <= npis


def test_providers_have_luhn_valid_npis(world) -> None:
    assert len(world.providers) == 25
    assert [p.provider_id for p in world.providers] == [f"DR{1001 + i}" for i in range(25)]
    assert npi_check_digit("123456789") == "3"  # CMS's published example 1234567893
    for p in world.providers:
        assert re.fullmatch(r"[12]\d{9}", p.npi)
        assert npi_check_digit(p.npi[:9]) == p.npi[9]
        assert re.fullmatch(r"[A-Z' -]+, [A-Z' -]+", p.name)
    assert sum(not p.active for p in world.providers) == 2


def test_lab_flags_agree_with_reference_ranges_and_criticals(world) -> None:
    flags = Counter()
    for accession in list(world.lab)[:6000]:
        report = world.lab.report(accession)
        assert 1 <= len(report.results) <= 6
        assert re.fullmatch(r"A\d{2}-\d{7}", accession)
        assert report.status in {"F", "P", "C"}
        for r in report.results:
            test = LAB_TESTS[r.TestCode]
            flags[r.Flag] += 1
            if test.qualitative:
                assert (r.Value, r.Flag) in {("POSITIVE", "A"), ("NEGATIVE", "")}
                continue
            value = float(r.Value)
            low = float(r.RefLow) if r.RefLow else None
            high = float(r.RefHigh) if r.RefHigh else None
            if test.critical_low is not None and value < test.critical_low:
                assert r.Flag == "LL"
            elif test.critical_high is not None and value > test.critical_high:
                assert r.Flag == "HH"
            elif low is not None and value < low:
                assert r.Flag == "L"
            elif high is not None and value > high:
                assert r.Flag == "H"
            else:
                assert r.Flag == ""
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", r.CollectedAt)
            assert r.ResultedAt >= r.CollectedAt
    assert all(flags[f] > 0 for f in ("", "H", "L", "HH", "LL", "A"))


def test_lab_history_covers_the_last_three_years(world) -> None:
    first = (TODAY - dt.timedelta(days=3 * 366)).isoformat()
    dates = [world.lab.report(a).collected_at[:10] for a in list(world.lab)[::50]]
    assert min(dates) >= first
    assert max(dates) <= TODAY.isoformat()
    assert len(LAB_TESTS) >= 15


def test_slots_are_weekday_office_hours_for_the_next_sixty_days(world) -> None:
    slots = list(world.schedule.slots.values())
    days = {s.Start[:10] for s in slots}
    assert min(days) > TODAY.isoformat()
    assert max(days) <= (TODAY + dt.timedelta(days=HORIZON_DAYS)).isoformat()
    for slot in slots[::37]:
        start = dt.datetime.fromisoformat(slot.Start)
        end = dt.datetime.fromisoformat(slot.End)
        assert start.weekday() < 5
        assert dt.time(8) <= start.time() and end.time() <= dt.time(17)
        assert (end - start) == dt.timedelta(minutes=slot.DurationMinutes)
        assert slot.DurationMinutes in (20, 30)
    booked = len(world.schedule.booked) / len(slots)
    assert 0.27 < booked < 0.33
    inactive = [p.provider_id for p in world.providers if not p.active]
    assert all(world.schedule.slots_by_provider[p] == () for p in inactive)


def test_appointments_past_and_future_with_statuses(world) -> None:
    statuses = Counter(a.Status for a in world.schedule.appointments.values())
    assert set(statuses) == {"BOOKED", "COMPLETED", "CANCELLED"}
    for a in world.schedule.appointments.values():
        if a.Status == "BOOKED":
            assert a.Start[:10] > TODAY.isoformat()
        else:
            assert a.Start[:10] < TODAY.isoformat()


def test_claims_use_known_codes_and_numbering(world) -> None:
    for claim in list(world.billing.claims.values())[::7]:
        assert re.fullmatch(r"CLM-\d{4}-\d{6}", claim.number)
        assert set(claim.diagnoses) <= set(DIAGNOSIS_CODES)
        assert set(claim.procedures) <= set(PROCEDURE_CODES)
        assert claim.amount > 0
        assert claim.submitted_date <= TODAY.strftime("%Y%m%d")
    assert len(DIAGNOSIS_CODES) >= 40
    assert len(PROCEDURE_CODES) >= 20
    assert {"99213", "99214", "80053", "85025", "93000", "36415"} <= set(PROCEDURE_CODES)


def test_claim_status_advances_with_queries() -> None:
    world = build_world(3, 200, TODAY)
    claim = next(c for c in world.billing.claims.values() if c.stage == 0)
    assert [claim.status(q) for q in (0, 1, 2, 3, 9)] == [
        "RECEIVED",
        "RECEIVED",
        "IN_REVIEW",
        claim.outcome,
        claim.outcome,
    ]


def test_today_moves_the_calendar_not_the_patients() -> None:
    a, b = build_world(5, 100, TODAY), build_world(5, 100, TODAY + dt.timedelta(days=7))
    assert a.patients == b.patients
    assert min(s.Start for s in a.schedule.slots.values()) < min(
        s.Start for s in b.schedule.slots.values()
    )
