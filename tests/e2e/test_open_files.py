"""A farm bigger than the process's soft limit of open files: every worker is still answered.

The manager holds a socket per connected worker. Where the soft limit is low (1,024 in a login
shell or a systemd service), uvloop closes each connection past it as soon as it accepts it, and
nothing is logged: ``serve`` raises the soft limit to the hard one, and says what it got.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port

from .farm import ROOT, wait_for

SOFT_LIMIT = 256
CONNECTIONS = 400


def _limited(soft: int, hard: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return lower


class _Manager:
    def __init__(self, tmp_path: Path, soft: int, hard: int) -> None:
        self.port = free_port()
        self.output = tmp_path / "manager.out"
        with self.output.open("wb") as stream:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "flamenco_manager.cli", "serve"),
                    *("--listen", f"127.0.0.1:{self.port}", "--data-dir", str(tmp_path / "data")),
                ],
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
                preexec_fn=_limited(soft, hard),
            )

        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the manager exited:\n{self.text()}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/api/openapi.json", timeout=1.0)
            except httpx.TransportError:
                return False
            return True

        wait_for("the manager to answer", answers, timeout=30)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_manager(tmp_path: Path) -> Iterator[Callable[[int, int], _Manager]]:
    started: list[_Manager] = []

    def start(soft: int, hard: int) -> _Manager:
        manager = _Manager(tmp_path, soft, hard)
        started.append(manager)
        return manager

    try:
        yield start
    finally:
        for manager in started:
            manager.stop()


async def _status_lines(port: int, count: int) -> list[bytes]:
    """Open ``count`` connections at once, ask on each, keep all open until every one answered
    (as connected workers do); the first line each got (empty: closed without an answer)."""
    writers: list[asyncio.StreamWriter] = []

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /api/openapi.json HTTP/1.1\r\nHost: manager\r\n\r\n")
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readline(), 20)
        except ConnectionError:
            return b""

    try:
        return await asyncio.gather(*(ask() for _ in range(count)))
    finally:
        for writer in writers:
            writer.close()


def _hard_limit_allows(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit of open files here is {hard}; the test needs {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        # This process holds the client end of every connection.
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_more_workers_than_the_soft_limit_are_all_answered(
    start_manager: Callable[[int, int], _Manager],
) -> None:
    _hard_limit_allows(2 * CONNECTIONS)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    manager = start_manager(SOFT_LIMIT, hard)

    lines = asyncio.run(_status_lines(manager.port, CONNECTIONS))

    assert [line for line in lines if not line.startswith(b"HTTP/1.1 200")] == []
    raised = 2**20 if hard == resource.RLIM_INFINITY else hard
    assert f'"open files limit" limit={raised} was={SOFT_LIMIT}' in manager.text()


def test_a_low_hard_limit_is_warned_of_at_start(
    start_manager: Callable[[int, int], _Manager],
) -> None:
    manager = start_manager(SOFT_LIMIT, 300)

    assert (
        "this process may open only 300 files: every connected worker, dashboard and upload "
        "holds one, so a farm of more than about 200 workers will lose connections"
    ) in manager.text()
