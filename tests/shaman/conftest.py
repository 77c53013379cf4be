"""Fixtures for the Shaman tests: a configured app, an authenticated client, blob helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from shaman_core.asgi import create_app
from shaman_core.config import Shaman, ShamanConfig
from shaman_core.jwt import KeyStore, generate_key_pair, mint_token
from shaman_core.serving import uvicorn_options

settings.register_profile(
    "shaman",
    max_examples=int(os.environ.get("SHAMAN_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("shaman")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(shaman: Shaman, data: bytes) -> tuple[str, int]:
    """Place `data` in the store directly; return its (checksum, size)."""
    checksum = sha256(data)
    with shaman.store.begin_upload(checksum, len(data)) as upload:
        upload.write(data)
        upload.finish()
    return checksum, len(data)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("jwtkeys")
    generate_key_pair(directory)
    return directory


@pytest.fixture(scope="session")
def token(key_dir: Path) -> str:
    return mint_token(KeyStore(key_dir), "user-ID")


@pytest.fixture
def config(tmp_path: Path, key_dir: Path) -> ShamanConfig:
    return ShamanConfig(
        store_dir=tmp_path / "store",
        checkout_dir=tmp_path / "checkouts",
        jwt_key_dir=key_dir,
        gc_period=0,
        create_waits_for_uploads=0.5,
    )


@pytest.fixture
def app_and_shaman(config: ShamanConfig) -> tuple[object, Shaman]:
    app = create_app(config, run_gc=False)
    return app, app.state.shaman


@pytest.fixture
def shaman(app_and_shaman: tuple[object, Shaman]) -> Shaman:
    return app_and_shaman[1]


@pytest.fixture
async def client(
    app_and_shaman: tuple[object, Shaman], token: str
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_and_shaman[0])  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://shaman.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        yield http


def files_under(root: Path) -> set[str]:
    """Every path (files, links, dirs) under `root`, relative, for 'nothing left behind' checks."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


class LiveShaman:
    """A Shaman served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, config: ShamanConfig) -> None:
        import socket
        import threading

        import uvicorn

        self.app = create_app(config, run_gc=False)
        self.shaman: Shaman = self.app.state.shaman
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                **uvicorn_options(),  # as `shaman serve` runs it
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(tmp_path: Path, key_dir: Path) -> Iterator[LiveShaman]:
    config = ShamanConfig(
        store_dir=tmp_path / "store",
        checkout_dir=tmp_path / "checkouts",
        jwt_key_dir=key_dir,
        serve_get_token=True,
        gc_period=0,
        create_waits_for_uploads=30.0,
    )
    server = LiveShaman(config)
    yield server
    server.stop()
