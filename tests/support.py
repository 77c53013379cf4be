"""Helpers that tests running real servers share: free ports and waiting for a server."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
