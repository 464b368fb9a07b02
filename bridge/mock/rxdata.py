"""The pharmacy's seeded prescriptions, written from the EHR's therapies.

A chronic drug is renewed every few months: older prescriptions are
COMPLETED, the latest ACTIVE (a few ON-HOLD), or CANCELLED if the EHR
shows the drug was stopped. Antibiotic courses are one COMPLETED
prescription. The pharmacy identifies prescribers by NPI and prints drug
names upper-case, as pharmacy systems do.
"""

from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass
from typing import NamedTuple

from bridge.mock.clinical import Therapy
from bridge.mock.dates import Life, mmddyyyy

__all__ = ["PharmacyData", "Prescription", "generate_pharmacy"]

_HISTORY_DAYS = 3 * 365


class Prescription(NamedTuple):
    RxNumber: str
    MRN: str
    DrugCode: str
    DrugName: str
    Sig: str
    Quantity: int
    Refills: int
    Prescriber: str
    PrescriberId: str
    WrittenDate: str
    Status: str


@dataclass(frozen=True, slots=True)
class PharmacyData:
    by_mrn: dict[str, tuple[Prescription, ...]]  # newest first
    by_number: dict[str, Prescription]


def generate_pharmacy(
    rng: random.Random, lives: list[Life], therapies: dict[str, tuple[Therapy, ...]]
) -> PharmacyData:
    drafts: list[tuple[_dt.date, str, Therapy, str]] = []
    for life in lives:
        for therapy in therapies.get(life.mrn, ()):
            horizon = life.last_day - _dt.timedelta(days=_HISTORY_DAYS)
            if not therapy.drug.chronic:
                status = "COMPLETED" if rng.random() < 0.95 else "CANCELLED"
                drafts.append((therapy.start, life.mrn, therapy, status))
                continue
            end = therapy.end or life.last_day
            written = [therapy.start]
            while True:
                following = written[-1] + _dt.timedelta(days=rng.choice((120, 180, 365)))
                if following > end:
                    break
                written.append(following)
            kept = [d for d in written if d >= horizon] or written[-1:]
            for i, day in enumerate(kept):
                if i < len(kept) - 1:
                    status = "COMPLETED"
                elif therapy.end is not None:
                    status = "CANCELLED"
                else:
                    status = "ON-HOLD" if rng.random() < 0.03 else "ACTIVE"
                drafts.append((day, life.mrn, therapy, status))
    drafts.sort(key=lambda d: (d[0], d[1], d[2].drug.rx_code))

    by_number: dict[str, Prescription] = {}
    by_mrn: dict[str, list[Prescription]] = {}
    for n, (day, mrn, therapy, status) in enumerate(drafts, start=6_000_001):
        drug, prescriber = therapy.drug, therapy.prescriber
        rx = Prescription(
            str(n),
            mrn,
            drug.rx_code,
            drug.pharmacy_name,
            drug.sig,
            drug.quantity,
            drug.refills,
            f"{prescriber.last_name.upper()}, {prescriber.first_name.upper()}",
            prescriber.npi,
            mmddyyyy(day),
            status,
        )
        by_number[rx.RxNumber] = rx
        by_mrn.setdefault(mrn, []).append(rx)
    newest_first = {mrn: tuple(reversed(rxs)) for mrn, rxs in by_mrn.items()}
    return PharmacyData(by_mrn=newest_first, by_number=by_number)
