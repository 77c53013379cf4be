"""Benchmark (a): upload one large file to a Shaman over loopback.

Ratio = (time to SHA-256 the same bytes with hashlib on one core) / (time to upload them: the
Shaman receives, hashes, writes, fsyncs and stores). Target >= 0.7. Also reports the server's peak
RSS growth during the upload (target < 64 MiB, whatever the size), the CPU time the server used
(all its threads), and the ratio against a bare ASGI endpoint on the same uvicorn stack that only
reads and drops the body (what the server stack alone costs).

    python benchmarks/shaman_upload.py [--size-mib 1024] [--runs 3] [--floors]

The server is `shaman serve` (uvicorn) in a subprocess on 127.0.0.1; the client streams the file
with sendfile() on a plain socket so that the client costs as little as possible. The bare
endpoint runs as `shaman serve` runs uvicorn (`shaman_core.serving.uvicorn_options`, the
allocator tuning).

``--floors`` also uploads to a plain-socket server with no HTTP at all, which receives into two
aligned 4 MiB buffers with ``recv_into``: only that ("recv"), plus SHA-256 on a thread ("+hash"),
plus direct-I/O writes on another thread and an fsync ("+hash+write"). That is what any Python
server can reach on the machine; the ratios there say how much of the gap is HTTP and asyncio.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import mmap
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shaman_core.allocator import tune_malloc_for_streaming

_FLOORS = ("recv", "hash", "hash-write")


async def drain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare endpoint: read the whole body, answer 204."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _serve_bare(port: int) -> None:
    import uvicorn

    from shaman_core.serving import uvicorn_options

    tune_malloc_for_streaming()
    uvicorn.run(drain_app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options())


def _serve_raw(port: int, mode: str, out_dir: Path) -> None:
    """The floor: a plain-socket server, one request per connection, no HTTP parsing beyond
    Content-Length."""
    listener = socket.create_server(("127.0.0.1", port))
    hashing, writing = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    buffers = [mmap.mmap(-1, 4 << 20), mmap.mmap(-1, 4 << 20)]
    while True:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (data := conn.recv(65536)):
                head += data
            if b"\r\n\r\n" not in head:
                continue  # a probe that only connected
            head, rest = head.split(b"\r\n\r\n", 1)
            size = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            hasher = hashlib.sha256()
            fd = os.open(out_dir / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
            pending: list[Future[Any]] = []
            buffers[0][: len(rest)] = rest
            filled, received, index = len(rest), len(rest), 0
            while received < size:
                view = memoryview(buffers[index])
                while filled < len(view) and received < size:
                    got = conn.recv_into(view[filled:], min(len(view) - filled, size - received))
                    filled += got
                    received += got
                for future in pending:
                    future.result()
                pending = []
                if mode != "recv":
                    pending.append(hashing.submit(hasher.update, view[:filled]))
                if mode == "hash-write":
                    if filled % 4096:  # an unaligned tail: not through direct I/O
                        fcntl.fcntl(
                            fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT
                        )
                    pending.append(writing.submit(os.write, fd, view[:filled]))
                index, filled = index ^ 1, 0
            for future in pending:
                future.result()
            os.fsync(fd)
            os.close(fd)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")


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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _timed_upload(
    process: subprocess.Popen[bytes], port: int, path: Path, checksum: str, size: int
) -> tuple[float, float]:
    """(seconds, server CPU seconds) of one upload that must answer 204."""
    cpu_before = _cpu_seconds(process.pid)
    status, seconds = _upload(port, path, checksum, size)
    assert status == 204, status
    return seconds, _cpu_seconds(process.pid) - cpu_before


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--floors", action="store_true", help="also measure plain-socket floors")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve-raw", nargs=3, metavar=("PORT", "MODE", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_bare:
        _serve_bare(args.serve_bare)
        return
    if args.serve_raw:
        _serve_raw(int(args.serve_raw[0]), args.serve_raw[1], Path(args.serve_raw[2]))
        return
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
        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)])
        floors: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for mode in _FLOORS if args.floors else ():
            floor_port = _free_port()
            command = [sys.executable, __file__, "--serve-raw", str(floor_port), mode, tmp]
            floors[mode] = (floor_port, subprocess.Popen(command))
        try:
            for waited in (port, bare_port, *(p for p, _ in floors.values())):
                _wait_for_port(waited)
            warm = base / "warm.bin"
            _make_file(warm, 8 << 20)
            warm_sum, _ = _hash(warm)
            _upload(port, warm, warm_sum, 8 << 20)
            ratios: list[float] = []
            bare_ratios: list[float] = []
            cpus: list[float] = []
            growths: list[float] = []
            floor_ratios: dict[str, list[float]] = {mode: [] for mode in floors}
            for run in range(args.runs):
                blob = base / "store" / "stored" / checksum[:2] / checksum[2:] / f"{size}.blob"
                blob.unlink(missing_ok=True)
                rss_before = _memory_kib(server.pid, "VmRSS")
                hwm_before = _memory_kib(server.pid, "VmHWM")
                _, hash_seconds = _hash(source)
                bare_seconds, bare_cpu = _timed_upload(bare, bare_port, source, checksum, size)
                upload_seconds, cpu = _timed_upload(server, port, source, checksum, size)
                peak_growth = max(0, _memory_kib(server.pid, "VmHWM") - max(rss_before, hwm_before))
                ratios.append(hash_seconds / upload_seconds)
                bare_ratios.append(hash_seconds / bare_seconds)
                cpus.append(cpu / args.size_mib * 1024)
                growths.append(peak_growth / 1024)
                floor_text = ""
                for mode, (floor_port, process) in floors.items():
                    seconds, _ = _timed_upload(process, floor_port, source, checksum, size)
                    floor_ratios[mode].append(hash_seconds / seconds)
                    floor_text += f"; floor {mode} {seconds:.3f} s"
                print(
                    f"run {run + 1}: sha256 {hash_seconds:.3f} s "
                    f"({size / hash_seconds / 2**20:.0f} MiB/s), upload {upload_seconds:.3f} s "
                    f"({size / upload_seconds / 2**20:.0f} MiB/s), "
                    f"ratio {ratios[-1]:.2f}, server CPU {cpu:.2f} s; "
                    f"bare endpoint {bare_seconds:.3f} s (ratio {bare_ratios[-1]:.2f}, "
                    f"CPU {bare_cpu:.2f} s){floor_text}; "
                    f"peak RSS growth {peak_growth / 1024:.1f} MiB"
                )
            print(
                f"upload {args.size_mib} MiB, median (min-max) of {args.runs}: "
                f"ratio sha256/upload = {_spread(ratios)} (target >= 0.7); "
                f"sha256/bare endpoint = {_spread(bare_ratios)}; "
                f"server CPU {_spread(cpus)} s/GiB; "
                f"peak RSS growth {max(growths):.1f} MiB (target < 64)"
            )
            for mode, values in floor_ratios.items():
                print(f"floor (plain socket, no HTTP) {mode}: sha256/upload = {_spread(values)}")
        finally:
            for process in (server, bare, *(p for _, p in floors.values())):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
