"""Seeded patient data for the mock EHR.

Every value comes from one ``random.Random(seed)``: no global RNG and no
clock, so the same seed always builds the same hospital, byte for byte.
Values are shaped the way the legacy EHR sends them (``LAST^FIRST^MIDDLE``
names, MM/DD/YYYY dates, local marital and language codes), because that
is what the gateway's mappings have to translate.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import random
import unicodedata
from dataclasses import dataclass

__all__ = ["FIRST_MRN", "SOAP_FIELDS", "PatientRecord", "generate", "search_key"]

FIRST_MRN = 100001

# The EHR's element names in the order its Patient type declares them.
SOAP_FIELDS: tuple[str, ...] = (
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
)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient exactly as the EHR stores it; ``None`` means "not sent"."""

    mrn: str
    last_name: str
    first_name: str
    middle_name: str
    dob: str
    sex: str
    address_line1: str
    address_line2: str | None
    city: str
    state: str
    zip: str
    phone: str | None
    marital_status: str
    language: str
    deceased_flag: str
    deceased_date: str | None

    @property
    def name(self) -> str:
        return f"{self.last_name}^{self.first_name}^{self.middle_name}"

    def to_soap_dict(self) -> dict[str, str]:
        """The record keyed by the EHR's element names, absent values left out."""
        values = (
            self.mrn,
            self.name,
            self.dob,
            self.sex,
            self.address_line1,
            self.address_line2,
            self.city,
            self.state,
            self.zip,
            self.phone,
            self.marital_status,
            self.language,
            self.deceased_flag,
            self.deceased_date,
        )
        return {k: v for k, v in zip(SOAP_FIELDS, values, strict=True) if v is not None}


def search_key(text: str) -> str:
    """Fold a name for "starts with" matching the way a user means it.

    NFC first so a decomposed ``u`` + combining diaeresis equals ``ü``;
    ``casefold`` rather than ``lower`` so ``ß``/``ss`` and friends compare.
    """
    return unicodedata.normalize("NFC", text).casefold()


# (surname, weight). Weights roughly follow the US census frequency list, with
# Smith, Johnson and Garcia pushed up so one search spans several pages.
_SURNAMES: tuple[tuple[str, int], ...] = (
    ("Smith", 45),
    ("Johnson", 38),
    ("Garcia", 34),
    ("Williams", 30),
    ("Brown", 28),
    ("Jones", 28),
    ("Miller", 24),
    ("Davis", 24),
    ("Rodriguez", 22),
    ("Martinez", 22),
    ("Hernandez", 20),
    ("Lopez", 18),
    ("Gonzalez", 18),
    ("Wilson", 17),
    ("Anderson", 17),
    ("Thomas", 16),
    ("Taylor", 16),
    ("Moore", 15),
    ("Jackson", 15),
    ("Martin", 15),
    ("Lee", 15),
    ("Perez", 14),
    ("Thompson", 14),
    ("White", 14),
    ("Harris", 13),
    ("Sanchez", 13),
    ("Clark", 12),
    ("Ramirez", 12),
    ("Lewis", 12),
    ("Robinson", 12),
    ("Walker", 11),
    ("Young", 11),
    ("Allen", 11),
    ("King", 11),
    ("Wright", 10),
    ("Scott", 10),
    ("Torres", 10),
    ("Hill", 10),
    ("Flores", 10),
    ("Green", 10),
    ("Adams", 9),
    ("Nelson", 9),
    ("Baker", 9),
    ("Hall", 9),
    ("Rivera", 9),
    ("Campbell", 8),
    ("Mitchell", 8),
    ("Carter", 8),
    ("Roberts", 8),
    ("Kim", 8),
    ("Patel", 8),
    ("Chen", 7),
    ("Wong", 6),
    ("Cohen", 5),
    # Names that break naive code: apostrophes, non-ASCII, hyphens.
    ("Nguyen", 9),
    ("O'Brien", 4),
    ("D'Angelo", 3),
    ("Müller", 3),
    ("Núñez", 3),
    ("García-López", 2),
    ("Łukasiewicz", 2),
)

# Present at least once in any hospital big enough, so tests can rely on them.
_ENCODING_SURNAMES = ("O'Brien", "D'Angelo", "Müller", "Núñez", "García-López", "Łukasiewicz")

_MALE_NAMES = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph",
    "Thomas", "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark",
    "Donald", "Steven", "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian",
    "George", "Timothy", "Ronald", "Edward", "Jason", "Jeffrey", "Ryan", "Jacob",
    "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "José",
    "Luis", "Wei", "Minh",
)  # fmt: skip

_FEMALE_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan",
    "Jessica", "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Margaret", "Sandra",
    "Ashley", "Kimberly", "Emily", "Donna", "Michelle", "Carol", "Amanda",
    "Dorothy", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura",
    "Cynthia", "Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Zoë",
    "María", "Mei", "Linh",
)  # fmt: skip

_STREET_NAMES = (
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill",
    "Park", "Walnut", "Sunset", "Lincoln", "Jackson", "Church", "Highland",
    "Willow", "Mill", "River", "Franklin", "Jefferson", "Spring", "Ridge", "Dogwood",
)  # fmt: skip

_STREET_SUFFIXES = ("St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Way", "Pl")

# (city, state, first three zip digits, area code)
_CITIES: tuple[tuple[str, str, str, str], ...] = (
    ("Boston", "MA", "021", "617"),
    ("Cambridge", "MA", "021", "617"),
    ("Worcester", "MA", "016", "508"),
    ("Springfield", "MA", "011", "413"),
    ("Providence", "RI", "029", "401"),
    ("Hartford", "CT", "061", "860"),
    ("New Haven", "CT", "065", "203"),
    ("Albany", "NY", "122", "518"),
    ("Brooklyn", "NY", "112", "718"),
    ("Buffalo", "NY", "142", "716"),
    ("Newark", "NJ", "071", "973"),
    ("Philadelphia", "PA", "191", "215"),
    ("Pittsburgh", "PA", "152", "412"),
    ("Baltimore", "MD", "212", "410"),
    ("Richmond", "VA", "232", "804"),
    ("Charlotte", "NC", "282", "704"),
    ("Atlanta", "GA", "303", "404"),
    ("Miami", "FL", "331", "305"),
    ("Orlando", "FL", "328", "407"),
    ("Nashville", "TN", "372", "615"),
    ("Cleveland", "OH", "441", "216"),
    ("Columbus", "OH", "432", "614"),
    ("Detroit", "MI", "482", "313"),
    ("Chicago", "IL", "606", "312"),
    ("Milwaukee", "WI", "532", "414"),
    ("Minneapolis", "MN", "554", "612"),
    ("St. Louis", "MO", "631", "314"),
    ("Houston", "TX", "770", "713"),
    ("San Antonio", "TX", "782", "210"),
    ("El Paso", "TX", "799", "915"),
    ("Denver", "CO", "802", "303"),
    ("Phoenix", "AZ", "850", "602"),
    ("Albuquerque", "NM", "871", "505"),
    ("Los Angeles", "CA", "900", "213"),
    ("San Diego", "CA", "921", "619"),
    ("San Jose", "CA", "951", "408"),
    ("Seattle", "WA", "981", "206"),
    ("Portland", "OR", "972", "503"),
)

_MARITAL = (("MAR", 45), ("SGL", 30), ("DIV", 11), ("WID", 7), ("SEP", 3), ("UNK", 4))
_LANGUAGES = (
    ("ENG", 820), ("SPA", 110), ("CHI", 15), ("VIE", 12), ("FRE", 8),
    ("GER", 6), ("ARA", 8), ("RUS", 8), ("POR", 7), ("KOR", 6),
)  # fmt: skip

# A fixed "today" instead of the clock, so the data never drifts.
_EPOCH = _dt.date(1930, 1, 1)
_LAST_DOB = _dt.date(2023, 12, 31)
_TODAY = _dt.date(2024, 12, 31)


def _mmddyyyy(day: _dt.date) -> str:
    return f"{day.month:02d}/{day.day:02d}/{day.year:04d}"


def _date_between(rng: random.Random, first: _dt.date, last: _dt.date) -> _dt.date:
    return first + _dt.timedelta(days=rng.randint(0, (last - first).days))


def _make_patient(
    rng: random.Random, mrn: int, surnames: list[str], s_cum: list[int]
) -> PatientRecord:
    sex = rng.choices(("M", "F", "U"), weights=(49, 49, 2))[0]
    if sex == "M":
        first = rng.choice(_MALE_NAMES)
    elif sex == "F":
        first = rng.choice(_FEMALE_NAMES)
    else:
        first = rng.choice(_MALE_NAMES + _FEMALE_NAMES)
    middle = chr(ord("A") + rng.randrange(26)) if rng.random() < 0.6 else ""
    dob = _date_between(rng, _EPOCH, _LAST_DOB)

    deceased_flag, deceased_date = "N", None
    if rng.random() < 0.05:
        deceased_flag = "Y"
        # A few deceased patients have no recorded date, as in real exports.
        if rng.random() < 0.85:
            # Mostly in old age, as in a real registry; infants only if young.
            earliest = dob + _dt.timedelta(days=50 * 365)
            if earliest > _TODAY:
                earliest = dob
            deceased_date = _mmddyyyy(_date_between(rng, earliest, _TODAY))

    city, state, zip3, area = rng.choice(_CITIES)
    line1 = f"{rng.randint(1, 9999)} {rng.choice(_STREET_NAMES)} {rng.choice(_STREET_SUFFIXES)}"
    line2 = None
    if rng.random() < 0.15:
        line2 = rng.choice(("Apt", "Unit", "Suite", "#")) + f" {rng.randint(1, 40)}"
        if rng.random() < 0.3:
            line2 += rng.choice("ABCD")
    phone = f"({area}) 555-01{rng.randrange(100):02d}" if rng.random() < 0.9 else None

    if _TODAY.year - dob.year < 18:
        marital = "SGL" if rng.random() < 0.95 else "UNK"
    else:
        marital = rng.choices([c for c, _ in _MARITAL], weights=[w for _, w in _MARITAL])[0]
    language = rng.choices([c for c, _ in _LANGUAGES], weights=[w for _, w in _LANGUAGES])[0]

    return PatientRecord(
        mrn=str(mrn),
        last_name=rng.choices(surnames, cum_weights=s_cum)[0],
        first_name=first,
        middle_name=middle,
        dob=_mmddyyyy(dob),
        sex=sex,
        address_line1=line1,
        address_line2=line2,
        city=city,
        state=state,
        zip=f"{zip3}{rng.randrange(100):02d}",
        phone=phone,
        marital_status=marital,
        language=language,
        deceased_flag=deceased_flag,
        deceased_date=deceased_date,
    )


def generate(seed: int, count: int) -> list[PatientRecord]:
    """Build ``count`` patients with MRNs ``100001`` upwards, the same for a seed.

    >>> generate(42, 3)[0].mrn
    '100001'
    """
    if count < 0 or count > 899_999:
        raise ValueError(f"patient count must be 0..899999 (6-digit MRNs), got {count}")
    rng = random.Random(seed)
    surnames = [name for name, _ in _SURNAMES]
    cum: list[int] = []
    total = 0
    for _, weight in _SURNAMES:
        total += weight
        cum.append(total)
    records = [_make_patient(rng, FIRST_MRN + i, surnames, cum) for i in range(count)]

    # Guarantee the awkward names exist even in a small hospital, so tests of
    # quoting and Unicode folding never silently search for nobody.
    if count >= 10 * len(_ENCODING_SURNAMES):
        present = {r.last_name for r in records}
        for surname in _ENCODING_SURNAMES:
            if surname not in present:
                i = rng.randrange(count)
                while records[i].last_name in _ENCODING_SURNAMES:
                    i = rng.randrange(count)
                records[i] = dataclasses.replace(records[i], last_name=surname)
    return records
