"""What every mock legacy system shares: vendor errors, stats, fault injection.

The SOAP services run in a thread pool (a2wsgi) while the side door runs on
the event loop, so every piece of mutable state sits behind one lock per
legacy system. Critical sections are short dictionary updates; nothing
sleeps or does I/O while holding a lock.

Errors a legacy system would answer with a fault are raised as
:class:`VendorError`, free of any SOAP library, so the state modules
(``ehr_state``, ``lab_state``, ...) can be unit tested in-process and each
protocol module decides how to render them (a SOAP fault, or, for the lab,
an error inside a normal response).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "WRITE_FAULTS",
    "Clock",
    "FaultSettings",
    "HospitalState",
    "SystemState",
    "VendorError",
]

# What can happen to a write (an operation that changes the system's data):
# applied and then its answer is held back (`write_delay_ms`) or the connection
# dropped; or the connection dropped before it is applied.
WRITE_FAULTS = ("apply-then-delay", "apply-then-drop", "drop-before-apply")

Clock = Callable[[], float]


class VendorError(Exception):
    """A fault the legacy system sends: vendor ``code`` plus a human message.

    ``server`` picks the SOAP faultcode: ``False`` blames the caller
    (``Client``), ``True`` blames the system itself (``Server``).
    """

    def __init__(self, code: str, message: str, *, server: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.server = server


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What is currently injected into one system (see ``POST /_mock/faults``)."""

    latency_ms: float = 0.0
    fault_rate: float = 0.0
    refuse_until: float | None = None
    write_fault: str | None = None  # one of WRITE_FAULTS
    write_delay_ms: float = 5000.0

    def to_json(self, now: float) -> dict[str, Any]:
        remaining = 0.0
        if self.refuse_until is not None:
            remaining = max(0.0, round(self.refuse_until - now, 3))
        return {
            "latency_ms": self.latency_ms,
            "fault_rate": self.fault_rate,
            "refuse_seconds": remaining,
            "write_fault": self.write_fault,
            "write_delay_ms": self.write_delay_ms,
        }


class SystemState:
    """Stats and fault injection shared by every mock legacy system.

    A new system (lab, scheduling, ...) subclasses this, adds its own data
    and sessions, and overrides :meth:`reset`, :meth:`expire_sessions` and
    :meth:`stats` to include them. ``writes`` names its operations that
    change data: the ones ``write_fault`` hits.
    """

    writes: frozenset[str] = frozenset()

    def __init__(self, name: str, *, internal_code: str, seed: int, clock: Clock) -> None:
        self.name = name
        self.internal_code = internal_code
        self._seed = seed
        self._clock = clock
        self._lock = threading.RLock()
        self._calls: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._refused = 0
        self._write_faults = 0
        self._drop_calls = 0  # the next this many calls have their connection dropped
        self._dropped = 0
        self._settings = FaultSettings()
        self._fault_rng = random.Random(seed)

    # -- calls and faults -------------------------------------------------

    def begin_call(self, operation: str, *, injectable: bool = True) -> None:
        """Count one SOAP operation and maybe fail it on purpose.

        Injected faults use a seeded RNG, re-seeded whenever faults are set,
        so a given fault_rate fails the same calls on every run.
        """
        with self._lock:
            self._calls[operation] += 1
            rate = self._settings.fault_rate
            fail = injectable and rate > 0 and self._fault_rng.random() < rate
        if fail:
            raise VendorError(
                self.internal_code,
                f"Internal error processing {operation}; please retry later",
                server=True,
            )

    def record_fault(self, code: str) -> None:
        with self._lock:
            self._faults[code] += 1

    def record_refused(self) -> None:
        with self._lock:
            self._refused += 1

    def latency_seconds(self) -> float:
        with self._lock:
            return self._settings.latency_ms / 1000.0

    def write_fault(self, operation: str) -> tuple[str, float] | None:
        """The fault to apply to this call (mode, delay in seconds), if it is a hit write."""
        with self._lock:
            settings = self._settings
            if settings.write_fault is None or operation not in self.writes:
                return None
            self._write_faults += 1
            return settings.write_fault, settings.write_delay_ms / 1000.0

    @property
    def has_call_faults(self) -> bool:
        # Unlocked reads of values only the side door changes: a hint, rechecked below.
        return self._settings.write_fault is not None or self._drop_calls > 0

    def drop_call(self) -> bool:
        """Whether to drop this call's connection unanswered (``drop_calls``)."""
        with self._lock:
            if self._drop_calls <= 0:
                return False
            self._drop_calls -= 1
            self._dropped += 1
            return True

    def drop_next_calls(self, count: int) -> None:
        with self._lock:
            self._drop_calls = count

    def refusing(self) -> bool:
        with self._lock:
            until = self._settings.refuse_until
        return until is not None and self._clock() < until

    # -- fault settings ---------------------------------------------------

    def set_faults(
        self,
        *,
        latency_ms: float | None = None,
        fault_rate: float | None = None,
        refuse_seconds: float | None = None,
        write_fault: str | None = None,
        write_delay_ms: float | None = None,
        clear_write_fault: bool = False,
    ) -> None:
        """Change the given settings, leave the others as they are."""
        with self._lock:
            current = self._settings
            if latency_ms is not None:
                current = dataclasses.replace(current, latency_ms=latency_ms)
            if fault_rate is not None:
                current = dataclasses.replace(current, fault_rate=fault_rate)
                self._fault_rng = random.Random(self._seed)
            if refuse_seconds is not None:
                until = self._clock() + refuse_seconds if refuse_seconds > 0 else None
                current = dataclasses.replace(current, refuse_until=until)
            if write_fault is not None or clear_write_fault:
                current = dataclasses.replace(current, write_fault=write_fault)
            if write_delay_ms is not None:
                current = dataclasses.replace(current, write_delay_ms=write_delay_ms)
            self._settings = current

    def clear_faults(self) -> None:
        with self._lock:
            self._settings = FaultSettings()
            self._drop_calls = 0
            self._fault_rng = random.Random(self._seed)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return {**self._settings.to_json(self._clock()), "drop_calls": self._drop_calls}

    # -- hooks for subclasses ---------------------------------------------

    def expire_sessions(self) -> int:
        """Expire every live session now; returns how many there were."""
        return 0

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._refused = 0
            self._write_faults = 0
            self._dropped = 0
        self.clear_faults()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(sorted(self._calls.items())),
                "faults": dict(sorted(self._faults.items())),
                "refused": self._refused,
                "write_faults": self._write_faults,
                "dropped": self._dropped,
            }


# -- the whole hospital -------------------------------------------------------


class HospitalState:
    """Every mock system by name; what the side door talks to."""

    def __init__(self, systems: Sequence[SystemState]) -> None:
        self.systems: dict[str, SystemState] = {s.name: s for s in systems}

    def system(self, name: str) -> SystemState:
        return self.systems[name]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: system.stats() for name, system in self.systems.items()}

    def reset(self) -> None:
        """Sessions, stats, faults and everything written through SOAP, on every system."""
        for system in self.systems.values():
            system.reset()

    def faults(self) -> dict[str, dict[str, Any]]:
        return {name: system.faults() for name, system in self.systems.items()}

    def clear_faults(self) -> None:
        for system in self.systems.values():
            system.clear_faults()
