"""Fixtures shared by the manager tests."""

from __future__ import annotations

import pytest

from .harness import farm  # noqa: F401  (the fixture, for every manager test)


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"
