"""Fixtures of the user API tests: the manager harness, plus a user token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.manager.harness import Farm, database_url  # noqa: F401  (fixture)
from tests.manager.harness import farm as farm  # the fixture


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"


class User:
    """A user of the API: the farm's client with a user token."""

    def __init__(self, farm: Farm, name: str = "alice") -> None:
        self.farm = farm
        self.token = farm.manager.mint_user_token(name, timedelta(hours=1))
        self.headers = {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.farm.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def submit(
        self, frames: str = "1-3", chunk_size: int = 1, **extra: Any
    ) -> dict[str, Any]:
        """Submit a sleep job; its document."""
        body = {
            "name": extra.pop("name", "sleepy"),
            "type": "sleep",
            "settings": {"frames": frames, "chunk_size": chunk_size, "time_in_seconds": 1},
            **extra,
        }
        response = await self.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job


@pytest.fixture
def user(farm: Farm) -> User:
    """A user with a valid token."""
    return User(farm)
