"""Helpers that tests share: free ports, the command that serves a manager, waiting for a
server, ASGI scopes for apps called directly, the files this process has open, and the event
loop's turns during a call."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_command(data_dir: Path, port: int, *flags: str) -> list[str]:
    """``flamenco-manager serve`` on ``127.0.0.1:port`` with this data directory and ``flags``,
    run by this interpreter."""
    return [
        sys.executable,
        "-m",
        "flamenco_manager.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        *flags,
    ]


def wait_until_serving(
    url: str,
    server: subprocess.Popen[str],
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Return once ``url`` answers HTTP at all; fail with the server's output if it died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1, headers=headers)
            return
        except httpx.TransportError:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                raise AssertionError(f"the server exited: {output}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.2)


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], client: str = "127.0.0.1"
) -> dict[str, Any]:
    """The ASGI scope of an HTTP/1.1 request, for calling an app with messages of one's own."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 1),
        "server": ("127.0.0.1", 80),
    }


def open_files_under(root: Path) -> list[str]:
    """The files under ``root`` this process has open (Linux), sorted."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed since
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(link for link in links if link.startswith(f"{root}{os.sep}"))


class LoopTurns:
    """What :func:`loop_turns` saw: the wake-ups of a task sleeping in steps during the block."""

    def __init__(self) -> None:
        self.turns: list[float] = []
        self.seconds = 0.0


@contextlib.asynccontextmanager
async def loop_turns(step: float) -> AsyncIterator[LoopTurns]:
    """Count how often a task sleeping ``step`` seconds at a time woke up during the block: work
    that holds the event loop (no ``await`` for its whole length) lets it wake up at most once."""
    seen = LoopTurns()
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(step)

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        await anyio.sleep(10 * step)
        started = time.monotonic()
        try:
            yield seen
        finally:
            ended = time.monotonic()
            group.cancel_scope.cancel()
    seen.turns = [moment for moment in ticks if started < moment < ended]
    seen.seconds = ended - started
