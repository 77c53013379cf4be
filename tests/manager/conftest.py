"""Fixtures shared by the manager tests."""

from __future__ import annotations

import pytest

from .harness import database_url, farm  # noqa: F401  (fixtures for every manager test)


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"
