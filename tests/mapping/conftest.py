"""Fixtures for the mapping room: the real hospital mapping, compiled once, and
throw-away copies of it to break on purpose.

A copy keeps the repository's layout (`mappings/hospital` next to
`wsdl/hospital`) so the relative WSDL path in system.yaml still resolves, and
the test runs inside the copy so every problem reads
`mappings/hospital/<file>:line:col: ...`, as an engineer would see it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.errors import MappingError
from bridge.mapping.compiled import CompiledResource, CompiledSystem
from bridge.mapping.compiler import compile_system

REPO = Path(__file__).resolve().parents[2]
HOSPITAL = REPO / "mappings" / "hospital"


class HospitalCopy:
    """A copy of mappings/hospital in a temporary folder, edited by string replacement."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "mappings" / "hospital"
        shutil.copytree(HOSPITAL, self.folder)
        (root / "wsdl" / "hospital").mkdir(parents=True)
        shutil.copy(REPO / "wsdl" / "hospital" / "ehr.wsdl", root / "wsdl" / "hospital")

    def edit(self, file: str, old: str, new: str) -> None:
        """Replace `old`, which must occur exactly once, by `new` in `file`."""
        path = self.folder / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def at(self, file: str, needle: str) -> str:
        """`mappings/hospital/<file>:line:col` of the one line holding `needle` (col: its start)."""
        lines = (self.folder / file).read_text(encoding="utf-8").splitlines()
        found = [(n, line.index(needle)) for n, line in enumerate(lines, start=1) if needle in line]
        assert len(found) == 1, f"{needle!r} is on {len(found)} lines of {file}"
        line, col = found[0]
        return f"mappings/hospital/{file}:{line}:{col + 1}"

    def compile(self, env: dict[str, str] | None = None) -> CompiledSystem:
        return compile_system(self.folder, env or {})

    def problems(self, env: dict[str, str] | None = None) -> list[str]:
        """Every problem the compiler reports, one `file:line:col: message` string each."""
        with pytest.raises(MappingError) as caught:
            self.compile(env)
        return [str(p) for p in caught.value.problems]


@pytest.fixture
def hospital_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HospitalCopy:
    copy = HospitalCopy(tmp_path)
    monkeypatch.chdir(tmp_path)
    return copy


@pytest.fixture(scope="session")
def hospital() -> CompiledSystem:
    # Compiled from the repository root so file names read mappings/hospital/...
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        return compile_system(HOSPITAL, {})


@pytest.fixture(scope="session")
def patient(hospital: CompiledSystem) -> CompiledResource:
    return hospital.resources["Patient"]
