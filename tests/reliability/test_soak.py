"""The soak test, short: 45 s of load with every fault, a SIGKILL and a restart.

`make soak` runs the long version (tests/reliability/soak.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.soak import run_soak

pytestmark = pytest.mark.e2e


def test_soak_keeps_every_promise_under_faults_and_a_kill(tmp_path: Path) -> None:
    report = run_soak(duration=45, clients=16, run_dir=tmp_path / "soak", log=lambda _: None)
    assert report.ok, report.text()
