"""The farm fixture: every process it starts is killed at the end, whatever happened."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.manager.harness import database_url  # noqa: F401  (each backend, a schema per test)

from .farm import Farm


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed farm test shows what each of its processes wrote."""
    report = yield
    farm = getattr(item, "funcargs", {}).get("farm")
    if report.failed and isinstance(farm, Farm):
        report.sections.append(("farm processes", farm.outputs()))
    return report


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """A manager data directory and a port on 127.0.0.1; start processes with its methods."""
    farm = Farm(tmp_path)
    try:
        yield farm
    finally:
        farm.kill_all()
