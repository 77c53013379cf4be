"""Benchmark (a): upload one large file to a Shaman over loopback.

Ratio = (time to SHA-256 the same bytes with hashlib on one core) / (time to upload them: the
Shaman receives, hashes, writes, fsyncs and stores). Target >= 0.7. Also reports the server's peak
RSS growth during the upload (target < 64 MiB, whatever the size), and the ratio against a bare
ASGI endpoint on the same uvicorn stack that only reads and drops the body (what the server
stack alone costs).

    python benchmarks/shaman_upload.py [--size-mib 1024]

The server is `shaman serve` (uvicorn) in a subprocess on 127.0.0.1; the client streams the file
with sendfile() on a plain socket so that the client costs as little as possible.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shaman_core.allocator import tune_malloc_for_streaming


async def drain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare endpoint: read the whole body, answer 204 (with the Shaman's malloc settings)."""
    tune_malloc_for_streaming()
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found")


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for index in range(size >> 20):
            # Vary each block a little so that nothing downstream can deduplicate.
            out.write(index.to_bytes(8, "little") + block[8:])


def _hash(path: Path) -> tuple[str, float]:
    start = time.perf_counter()
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as source:
        while read := source.readinto(buffer):
            digest.update(memoryview(buffer)[:read])
    return digest.hexdigest(), time.perf_counter() - start


def _upload(port: int, path: Path, checksum: str, size: int) -> tuple[int, float]:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn, open(path, "rb") as source:
        head = (
            f"POST /files/{checksum}/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {size}\r\nX-Shaman-Original-Filename: bench.bin\r\n\r\n"
        )
        conn.sendall(head.encode())
        conn.sendfile(source)
        response = conn.recv(4096)
    elapsed = time.perf_counter() - start
    return int(response.split(b" ", 2)[1]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="shaman-bench-") as tmp:
        base = Path(tmp)
        source = base / "source.bin"
        _make_file(source, size)
        checksum, _ = _hash(source)  # warms the page cache
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shaman_core.cli",
                "serve",
                "--no-auth",
                "--store",
                str(base / "store"),
                "--checkouts",
                str(base / "co"),
                "--port",
                str(port),
                "--gc-period-hours",
                "0",
            ],
            stderr=subprocess.DEVNULL,
        )
        bare_port = _free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(__file__).parent),
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "shaman_upload:drain_app",
            ],
        )
        try:
            _wait_for_port(port)
            _wait_for_port(bare_port)
            warm = base / "warm.bin"
            _make_file(warm, 8 << 20)
            warm_sum, _ = _hash(warm)
            _upload(port, warm, warm_sum, 8 << 20)
            results = []
            for run in range(args.runs):
                blob = base / "store" / "stored" / checksum[:2] / checksum[2:] / f"{size}.blob"
                blob.unlink(missing_ok=True)
                rss_before = _memory_kib(server.pid, "VmRSS")
                hwm_before = _memory_kib(server.pid, "VmHWM")
                _, hash_seconds = _hash(source)
                _, bare_seconds = _upload(bare_port, source, checksum, size)
                status, upload_seconds = _upload(port, source, checksum, size)
                assert status == 204, status
                peak_growth = max(0, _memory_kib(server.pid, "VmHWM") - max(rss_before, hwm_before))
                results.append((hash_seconds, upload_seconds, peak_growth, bare_seconds))
                print(
                    f"run {run + 1}: sha256 {hash_seconds:.3f} s "
                    f"({size / hash_seconds / 2**20:.0f} MiB/s), upload {upload_seconds:.3f} s "
                    f"({size / upload_seconds / 2**20:.0f} MiB/s), "
                    f"ratio {hash_seconds / upload_seconds:.2f}; "
                    f"bare endpoint {bare_seconds:.3f} s, "
                    f"ratio bare/upload {bare_seconds / upload_seconds:.2f}; "
                    f"peak RSS growth {peak_growth / 1024:.1f} MiB"
                )
            best_ratio = max(h / u for h, u, _, _ in results)
            best_bare = max(b / u for _, u, _, b in results)
            worst_growth = max(g for _, _, g, _ in results)
            print(
                f"upload {args.size_mib} MiB: best ratio sha256/upload = {best_ratio:.2f} "
                f"(target >= 0.7); bare endpoint/upload = {best_bare:.2f}; "
                f"peak RSS growth {worst_growth / 1024:.1f} MiB (target < 64)"
            )
        finally:
            for process in (server, bare):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
