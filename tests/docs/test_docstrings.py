"""Every public module, class and function of the four packages has a docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

PACKAGES = ("flamenco_protocol", "shaman_core", "flamenco_worker_client", "flamenco_manager")


def _public_modules() -> Iterator[ModuleType]:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            parts = info.name.split(".")
            if any(part.startswith("_") for part in parts) or "migrations" in parts:
                continue
            yield importlib.import_module(info.name)


def _undocumented(module: ModuleType) -> Iterator[str]:
    if not (module.__doc__ or "").strip():
        yield module.__name__
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    for name in names:
        item = getattr(module, name, None)
        if not (inspect.isclass(item) or inspect.isfunction(item)):
            continue
        if getattr(item, "__module__", None) != module.__name__:
            continue  # documented where it is defined
        if not (item.__doc__ or "").strip():
            yield f"{module.__name__}.{name}"
        if inspect.isclass(item):
            for member_name, member in vars(item).items():
                if member_name.startswith("_") or not inspect.isfunction(member):
                    continue
                if not (member.__doc__ or "").strip():
                    yield f"{module.__name__}.{name}.{member_name}"


@pytest.mark.parametrize("module", list(_public_modules()), ids=lambda module: module.__name__)
def test_public_names_have_docstrings(module: ModuleType) -> None:
    assert list(_undocumented(module)) == []
