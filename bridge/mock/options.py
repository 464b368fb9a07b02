"""The knobs of the mock hospital, one per ``bridge mock`` option.

Every legacy system shares them: one seeded hospital, one account, one
session policy. ``today`` pins the hospital's calendar (appointments,
lab history, claims are laid out around it); left out, the mock uses the
current date in the hospital's time zone, resolved once at start-up and
never inside data generation.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["HOSPITAL_TIMEZONE", "MockOptions", "hospital_today"]

# Every local time the legacy systems send (slot starts, lab collection
# times, vitals) is wall-clock time here, without an offset.
HOSPITAL_TIMEZONE = "America/New_York"


def hospital_today() -> _dt.date:
    """The current date in the hospital's time zone (UTC if tzdata is missing)."""
    try:
        return _dt.datetime.now(ZoneInfo(HOSPITAL_TIMEZONE)).date()
    except ZoneInfoNotFoundError:  # pragma: no cover - minimal containers
        return _dt.datetime.now(_dt.UTC).date()


@dataclass(frozen=True, slots=True)
class MockOptions:
    """Options of one mock hospital; ``today=None`` means "the real date"."""

    patients: int = 5000
    seed: int = 42
    session_idle_timeout: float = 300.0
    max_sessions: int = 10
    page_size: int = 25
    username: str = "bridge"
    password: str = "bridge-dev-password"  # noqa: S105 - a documented mock default
    today: _dt.date | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.patients < 0:
            problems.append(f"patients must be >= 0, got {self.patients}")
        if self.patients > 899_999:
            problems.append(f"patients must be <= 899999 (6-digit MRNs), got {self.patients}")
        if self.session_idle_timeout <= 0:
            problems.append(
                f"session_idle_timeout must be > 0 seconds, got {self.session_idle_timeout}"
            )
        if self.max_sessions < 1:
            problems.append(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.page_size < 1:
            problems.append(f"page_size must be >= 1, got {self.page_size}")
        if problems:
            raise ValueError("; ".join(problems))

    def reference_date(self) -> _dt.date:
        """``today`` if pinned, else the current date in the hospital."""
        return self.today if self.today is not None else hospital_today()
