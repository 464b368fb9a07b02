"""Public surfaces list exactly what they offer in `__all__` (httpx does the same)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import bridge.mapping
import bridge.mock

MAPPING_MODULES = sorted(
    f"bridge.mapping.{m.name}" for m in pkgutil.iter_modules(bridge.mapping.__path__)
)
MODULES = ["bridge.errors", "bridge.mock", *MAPPING_MODULES]


def public_classes(module: ModuleType) -> set[str]:
    """Classes a module (or, for a package, its submodules) defines under a public name."""
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_") or not inspect.isclass(obj):
            continue
        home = obj.__module__
        if home == module.__name__ or (
            hasattr(module, "__path__") and home.startswith(module.__name__ + ".")
        ):
            names.add(name)
    return names


def test_public_api_mapping_modules_are_found() -> None:
    assert {"bridge.mapping.compiler", "bridge.mapping.loader", "bridge.mapping.runner"} <= set(
        MAPPING_MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_public_api_has_all(name: str) -> None:
    module = importlib.import_module(name)

    assert isinstance(getattr(module, "__all__", None), list)
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("name", MODULES)
def test_public_api_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)

    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_public_api_all_names_are_public(name: str) -> None:
    module = importlib.import_module(name)

    assert [n for n in getattr(module, "__all__", []) if n.startswith("_")] == []


@pytest.mark.parametrize("name", MODULES)
def test_public_api_every_public_class_is_listed(name: str) -> None:
    module = importlib.import_module(name)

    unlisted = sorted(public_classes(module) - set(getattr(module, "__all__", [])))
    assert unlisted == [], f"{name}: public classes missing from __all__: {', '.join(unlisted)}"


def test_public_api_mock_offers_the_hospital() -> None:
    assert set(bridge.mock.__all__) == {"MockHospital", "MockHospitalError"}
