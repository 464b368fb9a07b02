"""One seeded hospital, shared by every legacy system.

The same patients (MRNs 100001..) and the same clinicians appear in the
EHR, the lab, scheduling, the pharmacy and billing. Each system draws from
its own ``random.Random`` stream, seeded from ``--seed`` and the system's
name, so adding data to one system never reshuffles another; nothing
reads the clock, so ``seed`` + ``today`` fix the whole hospital.

>>> import datetime
>>> world = build_world(42, 20, datetime.date(2026, 11, 24))
>>> world.patients[0].mrn
'100001'
"""

from __future__ import annotations

import datetime as _dt
import gc
import random
from dataclasses import dataclass

from bridge.mock.billdata import BillingData, generate_billing
from bridge.mock.clinical import ClinicalData, generate_clinical
from bridge.mock.data import PatientRecord, generate
from bridge.mock.dates import Life, lifetimes
from bridge.mock.labdata import LabData, generate_lab
from bridge.mock.providers import Provider, make_providers
from bridge.mock.rxdata import PharmacyData, generate_pharmacy
from bridge.mock.scheddata import ScheduleData, generate_schedule

__all__ = ["World", "build_world"]


@dataclass(frozen=True, slots=True)
class World:
    """Everything generated; immutable. Writes live in each system's state."""

    seed: int
    today: _dt.date
    patients: tuple[PatientRecord, ...]
    lives: tuple[Life, ...]
    providers: tuple[Provider, ...]
    clinical: ClinicalData
    lab: LabData
    schedule: ScheduleData
    pharmacy: PharmacyData
    billing: BillingData

    def provider(self, provider_id: str) -> Provider | None:
        return next((p for p in self.providers if p.provider_id == provider_id), None)


def _stream(seed: int, system: str) -> random.Random:
    # A str seed is hashed with SHA-512, the same in every process.
    return random.Random(f"{seed}/{system}")


def build_world(seed: int, patients: int, today: _dt.date) -> World:
    """Generate the hospital for ``seed``, ``patients`` and the reference date."""
    # Hundreds of thousands of small immutable records: the cyclic GC would
    # rescan them again and again while they are built, for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(seed, patients, today)
    finally:
        if enabled:
            gc.enable()


def _build(seed: int, patients: int, today: _dt.date) -> World:
    records = generate(seed, patients)
    lives = lifetimes(records, today)
    providers = make_providers(_stream(seed, "providers"))
    clinical = generate_clinical(_stream(seed, "ehr"), lives, providers)
    return World(
        seed=seed,
        today=today,
        patients=tuple(records),
        lives=tuple(lives),
        providers=providers,
        clinical=clinical,
        lab=generate_lab(
            _stream(seed, "lab"), seed, lives, clinical.active_codes, clinical.primary, providers
        ),
        schedule=generate_schedule(
            _stream(seed, "scheduling"), lives, providers, clinical.primary, today
        ),
        pharmacy=generate_pharmacy(_stream(seed, "pharmacy"), lives, clinical.therapies),
        billing=generate_billing(_stream(seed, "billing"), lives, clinical.active_codes, today),
    )
