"""The billing vendor's state: credentials in every body, claims that move along.

Seeded claims are immutable; claims submitted through SOAP and the count
of status queries per claim are the overlay ``reset`` clears. How a claim
advances is :meth:`bridge.mock.billdata.Claim.status`.
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.mock.billdata import Claim, outcome_for
from bridge.mock.codes import DIAGNOSIS_CODES, PROCEDURE_CODES
from bridge.mock.options import MockOptions
from bridge.mock.state import Clock, SystemState, VendorError
from bridge.mock.world import World, build_world

__all__ = ["BillingState"]

_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_CENTS = Decimal("0.01")


class BillingState(SystemState):
    """Claims of the mock billing system."""

    writes = frozenset({"SubmitClaim"})

    def __init__(
        self, options: MockOptions, world: World | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        super().__init__("billing", internal_code="BILL-INTERNAL", seed=options.seed, clock=clock)
        self.options = options
        self.world = world or build_world(options.seed, options.patients, options.reference_date())
        self._mrns = {p.mrn for p in self.world.patients}
        self._auth_failures = 0
        self._clear_writes()

    def _clear_writes(self) -> None:
        self._new: dict[str, Claim] = {}
        self._new_by_mrn: dict[str, list[str]] = {}
        self._queries: Counter[str] = Counter()
        self._sequence = dict(self.world.billing.next_sequence)

    def authenticate(self, user_id: str | None, password: str | None) -> None:
        user_ok = secrets.compare_digest((user_id or "").encode(), self.options.username.encode())
        pass_ok = secrets.compare_digest((password or "").encode(), self.options.password.encode())
        if not (user_ok and pass_ok):
            with self._lock:
                self._auth_failures += 1
            raise VendorError("BILL-AUTH", "Invalid UserId or Password")

    def submit(
        self,
        mrn: str | None,
        encounter_date: str | None,
        diagnoses: Sequence[str | None],
        procedures: Sequence[str | None],
        amount: Decimal | None,
    ) -> Claim:
        mrn = (mrn or "").strip()
        if mrn not in self._mrns:
            raise VendorError("BILL-PAT-404", f"Patient {mrn} not found")
        encounter = _compact_date(encounter_date)
        today = self.world.today
        if encounter > today:
            raise VendorError(
                "BILL-BAD-REQUEST", f"EncounterDate {encounter_date} is in the future"
            )
        dx = _codes(diagnoses)
        if not dx:
            raise VendorError("BILL-NO-DX", "A claim needs at least one diagnosis code")
        for code in dx:
            if code not in DIAGNOSIS_CODES:
                raise VendorError("BILL-CODE", f"Unknown ICD-10-CM diagnosis code '{code}'")
        px = _codes(procedures)
        if not px:
            raise VendorError("BILL-BAD-REQUEST", "A claim needs at least one procedure code")
        for code in px:
            if code not in PROCEDURE_CODES:
                raise VendorError("BILL-CODE", f"Unknown CPT procedure code '{code}'")
        try:
            valid = amount is not None and amount.is_finite() and amount > 0
        except InvalidOperation:
            valid = False
        if not valid or amount is None:
            raise VendorError("BILL-BAD-REQUEST", "Amount must be a positive decimal")
        total = amount.quantize(_CENTS)
        outcome, paid = outcome_for(total)
        with self._lock:
            sequence = self._sequence.get(today.year, 1)
            self._sequence[today.year] = sequence + 1
            claim = Claim(
                number=f"CLM-{today.year}-{sequence:06d}",
                mrn=mrn,
                encounter_date=encounter.strftime("%Y%m%d"),
                submitted_date=today.strftime("%Y%m%d"),
                amount=total,
                diagnoses=dx,
                procedures=px,
                stage=0,
                outcome=outcome,
                paid_amount=paid,
            )
            self._new[claim.number] = claim
            self._new_by_mrn.setdefault(mrn, []).append(claim.number)
            return claim

    def query(self, number: str | None) -> tuple[Claim, str]:
        """A status query: counts it, then answers the claim and its status now."""
        number = (number or "").strip()
        with self._lock:
            claim = self._claim(number)
            if claim is None:
                raise VendorError("BILL-CLAIM-404", f"Claim {number} does not exist")
            self._queries[number] += 1
            return claim, claim.status(self._queries[number])

    # -- side-door views ----------------------------------------------------

    def claim_view(self, number: str) -> dict[str, Any] | None:
        with self._lock:
            claim = self._claim(number)
            if claim is None:
                return None
            view = claim.to_dict(self._queries[number])
            view["StatusQueries"] = self._queries[number]
            return view

    def claims_view(self, mrn: str) -> list[dict[str, Any]]:
        with self._lock:
            numbers = [*self.world.billing.by_mrn.get(mrn, ()), *self._new_by_mrn.get(mrn, ())]
        views = [self.claim_view(n) for n in numbers]
        return [v for v in views if v is not None]

    def _claim(self, number: str) -> Claim | None:
        return self._new.get(number) or self.world.billing.claims.get(number)

    # -- stats and reset ------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._clear_writes()
            self._auth_failures = 0
        super().reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ours: dict[str, Any] = {"auth_failures": self._auth_failures}
        ours.update(super().stats())
        return ours


def _codes(values: Sequence[str | None]) -> tuple[str, ...]:
    """Codes as sent, trimmed, blanks and repeats dropped, order kept."""
    seen: dict[str, None] = {}
    for value in values:
        code = (value or "").strip()
        if code:
            seen.setdefault(code, None)
    return tuple(seen)


def _compact_date(text: str | None) -> _dt.date:
    match = _COMPACT_DATE.match((text or "").strip())
    if match is not None:
        try:
            return _dt.date(*(int(g) for g in match.groups()))
        except ValueError:
            pass
    raise VendorError("BILL-BAD-REQUEST", f"EncounterDate '{text or ''}' is not yyyyMMdd")
