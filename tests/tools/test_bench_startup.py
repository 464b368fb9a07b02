"""bench/startup.py: two trees started in turn, each to a ready gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_trees_start_in_turn_and_the_ratio_is_printed() -> None:
    done = subprocess.run(
        [sys.executable, "bench/startup.py", "--source", str(ROOT), "--starts", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("  start 1: snapshot / checkout ")
    assert lines[1].startswith("snapshot   ready median ")
    assert lines[2].startswith("checkout   ready median ")
    assert lines[3].startswith("checkout / snapshot, pair by pair: median ")


def test_a_source_without_bridge_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/startup.py", "--source", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no bridge/ package there" in done.stderr
