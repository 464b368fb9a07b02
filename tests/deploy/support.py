"""Helpers for the deployment tests: parsing Dockerfiles and YAML, CLI options.

These tests read files and run `bridge ... --help`; they never need docker or a cluster.
`make lint-deploy` checks the same files against hadolint, yamllint and the compose and
Kubernetes schemas; the tests here check what a schema cannot: that the pieces agree.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text(encoding="utf-8")) if doc]


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    value: str


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def stages(self) -> list[list[Instruction]]:
        """Instructions grouped by FROM (ARGs before the first FROM are left out)."""
        stages: list[list[Instruction]] = []
        for instruction in self.instructions:
            if instruction.keyword == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(instruction)
        return stages


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, value = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
    return Dockerfile(path, instructions)


_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@functools.cache
def help_options(subcommand: str) -> frozenset[str]:
    """The options `bridge SUBCOMMAND --help` lists, e.g. {'--config', '--port', ...}."""
    result = subprocess.run(
        [sys.executable, "-m", "bridge", subcommand, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    options = frozenset(_OPTION.findall(result.stdout))
    assert "--help" in options, result.stdout
    return options


def unknown_options(argv: list[str], subcommand: str) -> list[str]:
    """The `--options` in argv that `bridge SUBCOMMAND` does not have."""
    known = help_options(subcommand)
    return [a for a in argv if a.startswith("--") and a.split("=", 1)[0] not in known]


@dataclass(frozen=True)
class SystemVariables:
    """The environment variables mappings/*/system.yaml read, by kind."""

    endpoints: frozenset[str]
    credentials: frozenset[str]


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with an empty shell: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)
