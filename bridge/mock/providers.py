"""The hospital's clinicians: one seeded list every legacy system refers to.

Scheduling books them, the lab names them as ordering providers, the
pharmacy as prescribers (by NPI, as pharmacies do). Each system formats
the name its own way; the identity underneath is the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bridge.mock.codes import SPECIALTIES

__all__ = ["Provider", "make_providers", "npi_check_digit"]

_LAST = (
    "Abernathy", "Bhatt", "Castillo", "Delgado", "Eastwood", "Fitzgerald", "Goldberg",
    "Haddad", "Ibarra", "Jensen", "Kowalski", "Lindqvist", "Mahoney", "Nakamura", "Okafor",
    "Petrov", "Quintero", "Rosenthal", "Sorensen", "Takahashi", "Underwood", "Vasquez",
    "Whitfield", "Yamamoto", "Zielinski", "Brennan", "Chaudhry", "Dubois", "Ferreira",
    "Gallagher",
)  # fmt: skip

_FIRST = (
    "Aisha", "Benjamin", "Catherine", "Daniel", "Elena", "Farid", "Grace", "Henry", "Irene",
    "Jonah", "Keiko", "Lucas", "Miriam", "Nikhil", "Olivia", "Patrick", "Rosa", "Samuel",
    "Tamar", "Victor", "Wendy", "Yusuf", "Zara", "Marcus", "Leah",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Provider:
    """One clinician; ``slot_minutes`` is how long their clinic slots are."""

    provider_id: str
    last_name: str
    first_name: str
    specialty: str
    npi: str
    active: bool
    slot_minutes: int

    @property
    def name(self) -> str:
        """``LAST, FIRST``, the scheduling system's form."""
        return f"{self.last_name.upper()}, {self.first_name.upper()}"

    def to_soap_dict(self) -> dict[str, str | bool]:
        return {
            "ProviderId": self.provider_id,
            "Name": self.name,
            "Specialty": self.specialty,
            "NPI": self.npi,
            "Active": self.active,
        }


def npi_check_digit(first_nine: str) -> str:
    """The Luhn check digit of an NPI, computed with the ``80840`` prefix.

    >>> npi_check_digit("123456789")  # CMS's example NPI 1234567893
    '3'
    """
    digits = [int(d) for d in "80840" + first_nine]
    total = 0
    # Double every second digit counting from the right of the payload,
    # which (the check digit being appended) starts at its last digit.
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def make_providers(rng: random.Random) -> tuple[Provider, ...]:
    """The 25 providers, ``DR1001``..``DR1025``; two are inactive."""
    specialties = [s for s, count in SPECIALTIES for _ in range(count)]
    lasts = rng.sample(_LAST, len(specialties))
    firsts = rng.sample(_FIRST, len(specialties))
    inactive = set(rng.sample(range(len(specialties)), 2))
    providers = []
    for i, specialty in enumerate(specialties):
        base = str(rng.choice("12")) + "".join(str(rng.randrange(10)) for _ in range(8))
        providers.append(
            Provider(
                provider_id=f"DR{1001 + i}",
                last_name=lasts[i],
                first_name=firsts[i],
                specialty=specialty,
                npi=base + npi_check_digit(base),
                active=i not in inactive,
                slot_minutes=rng.choice((20, 30)),
            )
        )
    return tuple(providers)
