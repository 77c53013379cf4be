"""Two Shaman processes (uvicorn each) on one file store: "someone else is uploading" holds.

Upload coordination lives in the file system (a temp file under ``uploading/``, locked with
``flock`` by the process receiving it), so it must hold between processes as it does between
requests of one: while process A receives a blob, process B answers ``420`` to ``OPTIONS`` and
``208`` "please defer" to a deferrable upload; once A stored it, B serves it. When A dies in the
middle, its temp file is nobody's any more: B must not report the blob as being uploaded (the
client would wait for an upload that never ends), and B's own upload of it succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.farm import Child, free_port, wait_for

pytestmark = pytest.mark.slow

BLOB = os.urandom(6 * 1024 * 1024)
CHECKSUM = hashlib.sha256(BLOB).hexdigest()
FILES = f"/files/{CHECKSUM}/{len(BLOB)}"


class Shamans:
    """Standalone Shaman servers on one store."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.store = base / "store"
        self.children: list[Child] = []

    def start(self, name: str) -> str:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "shaman_core.cli",
            "serve",
            "--no-auth",
            "--store",
            str(self.store),
            "--checkouts",
            str(self.base / "checkouts"),
            "--port",
            str(port),
            "--gc-period-hours",
            "0",
        ]
        child = Child(name, args, self.base / f"{name}.out", self.base)
        self.children.append(child)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert child.running(), child.text()
            try:
                httpx.get(f"{url}/my-info", timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_for(f"{name} to answer", answers, timeout=20)
        return url

    def kill_all(self) -> None:
        for child in self.children:
            if child.running():
                child.kill_group()

    def temp_files(self) -> list[Path]:
        return list((self.store / "uploading").rglob("*.tmp"))


@pytest.fixture
def shamans(tmp_path: Path) -> Iterator[Shamans]:
    servers = Shamans(tmp_path)
    try:
        yield servers
    finally:
        servers.kill_all()


async def _slow_body(half_sent: asyncio.Event, go_on: asyncio.Event) -> AsyncIterator[bytes]:
    """The blob in two halves, waiting between them until told."""
    middle = len(BLOB) // 2
    yield BLOB[:middle]
    half_sent.set()
    await go_on.wait()
    yield BLOB[middle:]


async def _deferrable_upload_answer(url: str) -> tuple[int, str]:
    """The answer to a deferrable upload, sent as headers only: Shaman answers before the body
    (and closes the connection of a large one, which an HTTP client still sending it sees as a
    reset before it reads the answer)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {FILES} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(BLOB)}\r\n"
            "X-Shaman-Can-Defer-Upload: true\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    return int(head.split()[1]), body.decode()


async def _when_uploading(shamans: Shamans, half_sent: asyncio.Event) -> None:
    await asyncio.wait_for(half_sent.wait(), 20)
    for _ in range(200):
        if shamans.temp_files():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("process A never started receiving the upload")


def test_an_upload_in_one_process_is_seen_by_the_other(shamans: Shamans) -> None:
    url_a, url_b = shamans.start("shaman-a"), shamans.start("shaman-b")

    async def scenario() -> None:
        half_sent, go_on = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(timeout=30) as client:
            upload = asyncio.create_task(
                client.post(url_a + FILES, content=_slow_body(half_sent, go_on))
            )
            await _when_uploading(shamans, half_sent)

            assert (await client.options(url_b + FILES)).status_code == 420
            status, text = await _deferrable_upload_answer(url_b)
            assert status == 208, text
            assert "defer" in text
            assert (await client.get(url_b + FILES)).status_code == 404, "not stored yet"

            go_on.set()
            done = await asyncio.wait_for(upload, 30)
            assert done.status_code == 204, done.text
            assert (await client.options(url_b + FILES)).status_code == 200
            assert (await client.get(url_b + FILES)).content == BLOB

    asyncio.run(scenario())
    assert shamans.temp_files() == []


def test_an_upload_whose_process_died_is_not_waited_for(shamans: Shamans) -> None:
    url_a, url_b = shamans.start("shaman-a"), shamans.start("shaman-b")
    process_a = shamans.children[0]

    async def scenario() -> None:
        half_sent, go_on = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(timeout=30) as client:
            upload = asyncio.create_task(
                client.post(url_a + FILES, content=_slow_body(half_sent, go_on))
            )
            await _when_uploading(shamans, half_sent)
            assert (await client.options(url_b + FILES)).status_code == 420

            process_a.signal(signal.SIGKILL)
            process_a.wait_exit(timeout=10)
            go_on.set()
            with pytest.raises(httpx.TransportError):
                await asyncio.wait_for(upload, 30)
            assert shamans.temp_files(), "the dead upload's temp file is still there"

            # Nobody is uploading any more: B says so, and takes the upload itself.
            assert (await client.options(url_b + FILES)).status_code == 404
            taken = await client.post(
                url_b + FILES, content=BLOB, headers={"X-Shaman-Can-Defer-Upload": "true"}
            )
            assert taken.status_code == 204, taken.text
            assert (await client.get(url_b + FILES)).content == BLOB

    asyncio.run(scenario())
