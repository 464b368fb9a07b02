"""The whole mock hospital in-process: one seeded world, five systems' state.

This is what the server wires to SOAP and the side door, and what unit
tests build directly (no spyne, no HTTP)::

    hospital = Hospital(MockOptions(patients=100, today=datetime.date(2026, 11, 24)))
    sid = hospital.ehr.login("bridge", "bridge-dev-password")
"""

from __future__ import annotations

import dataclasses
import time

from bridge.mock.billing_state import BillingState
from bridge.mock.ehr_state import EhrState
from bridge.mock.lab_state import LabState
from bridge.mock.options import MockOptions
from bridge.mock.rx_state import PharmacyState
from bridge.mock.sched_state import SchedulingState
from bridge.mock.state import Clock, HospitalState
from bridge.mock.world import World, build_world

__all__ = ["Hospital"]


class Hospital(HospitalState):
    """Every system of one hospital, sharing one generated :class:`World`.

    ``world`` lets tests reuse one generated world (it is immutable) across
    many fresh hospitals; it must have been built from the same options.
    """

    def __init__(
        self,
        options: MockOptions | None = None,
        *,
        world: World | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        options = options or MockOptions()
        # Pin "today" once, so every system (and a run crossing midnight)
        # agrees on the calendar.
        today = options.reference_date()
        self.options = dataclasses.replace(options, today=today)
        # A prebuilt world (tests share one between many hospitals) must match.
        self.world = world or build_world(self.options.seed, self.options.patients, today)
        self.ehr = EhrState(self.options, self.world, clock=clock)
        self.lab = LabState(self.options, self.world, clock=clock)
        self.scheduling = SchedulingState(
            self.options, self.world, clock=clock, wall_clock=wall_clock
        )
        self.pharmacy = PharmacyState(self.options, self.world, clock=clock)
        self.billing = BillingState(self.options, self.world, clock=clock)
        super().__init__([self.ehr, self.lab, self.scheduling, self.pharmacy, self.billing])
