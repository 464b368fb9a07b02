"""The interpreter `make` builds .venv on, and how the bench reports it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.procs import python_build  # noqa: E402

MAKE = shutil.which("make")


def _fake_python(folder: Path, *, optimized: bool) -> Path:
    """A `python3.11` that answers the Makefile's FAST_BUILD probe as told."""
    folder.mkdir()
    python = folder / "python3.11"
    python.write_text(f"#!/bin/sh\nexit {0 if optimized else 1}\n")
    python.chmod(0o755)
    return python


def _chosen(path: list[Path], *args: str) -> str:
    assert MAKE is not None
    done = subprocess.run(
        [MAKE, "-s", "--eval", "chosen: ; $(info $(PYTHON))", *args, "chosen"],
        cwd=ROOT,
        env={**os.environ, "PATH": os.pathsep.join(str(p) for p in path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A folder with `make` alone, so that no real python3.11 is on the PATH."""
    assert MAKE is not None
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "make").symlink_to(MAKE)
    return folder


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_prefers_the_first_optimized_python(tmp_path: Path, tools: Path) -> None:
    plain = _fake_python(tmp_path / "plain", optimized=False)
    fast = _fake_python(tmp_path / "fast", optimized=True)
    assert _chosen([plain.parent, fast.parent, tools]) == str(fast)


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_takes_the_first_python_when_none_is_optimized(tmp_path: Path, tools: Path) -> None:
    first = _fake_python(tmp_path / "first", optimized=False)
    second = _fake_python(tmp_path / "second", optimized=False)
    assert _chosen([first.parent, second.parent, tools]) == str(first)


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_python_given_to_make_wins(tmp_path: Path, tools: Path) -> None:
    fast = _fake_python(tmp_path / "fast", optimized=True)
    assert _chosen([fast.parent, tools], "PYTHON=/opt/python") == "/opt/python"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no /proc here")
def test_the_probe_agrees_with_the_bench_on_this_interpreter() -> None:
    probe = subprocess.run(
        [MAKE or "make", "-s", "--eval", "probe: ; @echo '$(FAST_BUILD)'", "probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    fast = subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0
    built = python_build()
    assert fast == ("profile-guided" in built or "linked statically" in built)


def test_python_build_reads_how_libpython_is_mapped(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libpython3.11.so.1.0\n")
    assert python_build(maps).endswith("libpython shared")
    maps.write_text("5600-5601 r-xp 0 08:01 1 /usr/bin/python3.11\n")
    assert python_build(maps).endswith("linked statically")
    assert python_build(tmp_path / "missing") in ("unknown", "profile-guided")
