"""Shared parts of the manager benchmarks: servers in subprocesses, workers, a raw-socket load.

Not run by itself. ``manager_task.py``, ``manager_queue_depth.py`` and ``manager_updates.py``
use it. Everything listens on 127.0.0.1 and stops by itself.

* :func:`serve_manager` / :func:`serve_baseline` start uvicorn (uvloop + httptools, no access
  log) in a subprocess, serving the real manager app or a bare Starlette app with the same flags.
  The bare app answers ``/task`` with a small fixed JSON body and ``/tasks/{id}/update`` and
  ``/tasks/{id}/return`` by reading the body and answering 204. :func:`serve_floor` starts the
  floor: only the durable writes of ``/task`` and updates, with raw ``sqlite3`` (see
  :func:`_run_floor`).
* :func:`seed` fills a manager's data directory through the services (workers, and jobs through
  :meth:`JobService.create_job`, one transaction per job), before its server starts.
* :func:`measure` runs a load generator in another process: one keep-alive connection per
  simulated worker, raw HTTP/1.1 over asyncio (uvloop) sockets, so the client costs far less
  CPU than the server. It reports the requests counted, latency percentiles, and the CPU the
  server and the client used, which says which side was the bottleneck.
* :func:`settle_disk` runs once the data is in place, before the first server: see there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import attrs

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
UVICORN_FLAGS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_level": "warning",
    "lifespan": "on",
}
BARE_TASK = json.dumps(
    {"_id": "0123456789abcdef01234567", "status": "active", "name": "bare"}
).encode()


@attrs.frozen
class Worker:
    """Credentials of a seeded worker."""

    id: str
    secret: str

    @property
    def authorization(self) -> str:
        token = base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()
        return f"Basic {token}"


@attrs.frozen
class Result:
    """One measurement window."""

    requests: int
    """Requests of the measured kind answered in the window."""
    seconds: float
    latencies: list[float]
    """Seconds per measured request."""
    statuses: dict[int, int]
    server_cpu: float
    """Server CPU seconds over the window."""
    client_cpu: float
    """Load generator CPU seconds over the window."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A uvicorn subprocess, stopped on exit."""

    def __init__(self, kind: str, port: int, *extra: object) -> None:
        self.port = port
        args = [sys.executable, str(HERE / "_manager_bench.py"), kind, str(port)]
        args += [str(value) for value in extra]
        self.process = subprocess.Popen(args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"{kind} server exited with {code}") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{kind} server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, limit: float = 120.0) -> None:
        """Wait (bounded) until the server has finished what the last load left queued."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < 0.05:
                return

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_manager(data_dir: Path) -> Server:
    return Server("manager", free_port(), data_dir)


def serve_baseline() -> Server:
    return Server("baseline", free_port())


def _run_manager(port: int, data_dir: Path) -> None:
    import uvicorn

    from flamenco_manager.config import Settings
    from flamenco_manager.manager import Manager
    from flamenco_manager.web.app import create_app

    manager = Manager(Settings(data_dir=data_dir, log_level="warning"))
    try:
        app = create_app(manager, run_loops=False, serving=True)  # as ``serve`` does
        uvicorn.run(app, host=HOST, port=port, **UVICORN_FLAGS)
    finally:
        manager.close()


def serve_floor(data_dir: Path, secret: str) -> Server:
    return Server("floor", free_port(), data_dir, secret)


def _run_floor(port: int, data_dir: Path, secret: str) -> None:
    """The least any manager must do per request, on the manager's own database and log layout.

    Bare Starlette and the standard ``sqlite3`` module on the seeded database file (the real
    schema: its indexes and triggers), with nothing of this project's services or storage layer.
    ``/task`` probes the scheduling index once (the real query, blocklist and failures included)
    and claims the task with a conditional update returning its row, points the worker at it and
    appends the assignment line to the task's log; an update stores status and activity and
    appends its log. What a manager does besides (validating bodies and transitions, job status,
    events for the dashboard, last-seen times, variables) is left out. Writes go into one
    transaction per event-loop turn, committed before any of its answers is sent: the same
    durability as the manager, at the lowest cost per request.
    """
    import sqlite3

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    database = sqlite3.connect(
        data_dir / "flamenco-manager.sqlite", isolation_level=None, check_same_thread=False
    )
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=NORMAL")
    logs_root = str(data_dir / "task-logs")
    # Credentials as the benchmark's workers send them (all share one secret), to the worker's
    # ID and first task type: the manager's remembered-credentials check, at no cost.
    workers = {
        Worker(row[0], secret).authorization: (row[0], json.loads(row[1])[0])
        for row in database.execute("SELECT id, supported_task_types FROM workers")
    }
    next_of_type = """
        SELECT id FROM tasks WHERE runnable = 1 AND task_type = ?
        AND NOT EXISTS (SELECT 1 FROM worker_blocklist AS b
            WHERE b.worker_id = ? AND b.job_id = tasks.job_id AND b.task_type = tasks.task_type)
        AND NOT EXISTS (SELECT 1 FROM task_failures AS f
            WHERE f.task_id = tasks.id AND f.worker_id = ?)
        ORDER BY job_priority DESC, priority DESC, id LIMIT 1"""
    claim = """
        UPDATE tasks SET status = 'active', worker_id = ?, worker_nickname = ?,
            last_worker_ping = ?, last_updated = ?
        WHERE id = ? AND runnable = 1
        RETURNING id, job_id, name, priority, job_priority, job_type, task_type, commands"""
    update = """
        UPDATE tasks SET status = ?, activity = ?, last_worker_ping = ?, last_updated = ?
        WHERE id = ? AND worker_id = ?"""
    pending: list[asyncio.Future[None]] = []

    def commit() -> None:
        database.execute("COMMIT")
        for waiter in pending:
            waiter.set_result(None)
        pending.clear()

    def joined() -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if not pending:
            database.execute("BEGIN IMMEDIATE")
            loop.call_soon(commit)
        waiter = loop.create_future()
        pending.append(waiter)
        return waiter

    def append_log(job: str, task: str, text: str) -> None:
        path = os.path.join(logs_root, f"job-{job[:4]}", job, f"task-{task}.txt")
        flags = os.O_WRONLY | os.O_APPEND
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def worker_of(request: Request) -> tuple[str, str] | None:
        return workers.get(request.headers.get("authorization", ""))

    async def task(request: Request) -> Response:
        known = worker_of(request)
        if known is None:
            return Response(status_code=401)
        worker, task_type = known
        waiter = joined()
        now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
        found = database.execute(next_of_type, (task_type, worker, worker)).fetchone()
        # fetchall: a RETURNING statement left unfinished would keep the commit from happening.
        claimed = found and database.execute(claim, (worker, "w", now, now, found[0])).fetchall()
        row = claimed[0] if claimed else None
        if row:
            database.execute("UPDATE workers SET current_task = ? WHERE id = ?", (row[0], worker))
            append_log(row[1], row[0], f"{now}: Manager assigned task {row[0]} to {worker}\n")
        await waiter
        if not row:
            return Response(status_code=204)
        names = ("_id", "job", "name", "priority", "job_priority", "job_type", "task_type")
        body = dict(zip(names, row, strict=False))
        body["commands"] = json.loads(row[7])
        return Response(json.dumps(body), media_type="application/json")

    async def task_update(request: Request) -> Response:
        known = worker_of(request)
        if known is None:
            return Response(status_code=401)
        worker, task_id = known[0], request.path_params["task_id"]
        update_doc = json.loads(await request.body())
        waiter = joined()
        now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
        values = (update_doc["task_status"], update_doc.get("activity", ""), now, now)
        changed = database.execute(update, (*values, task_id, worker)).rowcount
        if changed and update_doc.get("log"):
            job = database.execute("SELECT job_id FROM tasks WHERE id = ?", (task_id,)).fetchone()
            append_log(job[0], task_id, update_doc["log"])
        await waiter
        return Response(status_code=204 if changed else 409)

    app = Starlette(
        routes=[
            Route("/task", task, methods=["GET", "POST"]),
            Route("/tasks/{task_id}/update", task_update, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host=HOST, port=port, **UVICORN_FLAGS)


def bare_app() -> Any:
    """The bare Starlette app: fixed JSON for ``/task`` and ``/may-i-run``, 204 for the rest."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def task(request: Request) -> Response:
        return Response(BARE_TASK + b"\n", media_type="application/json")

    async def swallow(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/task", task, methods=["GET", "POST"]),
            Route("/tasks/{task_id}/update", swallow, methods=["POST"]),
            Route("/tasks/{task_id}/return", swallow, methods=["POST"]),
            Route("/may-i-run/{task_id}", task, methods=["GET"]),
        ]
    )


def _run_baseline(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host=HOST, port=port, **UVICORN_FLAGS)


def log_text(size: int) -> bytes:
    """``size`` bytes of render log, in lines as Blender prints them."""
    line = b"%04d frame rendered, sample 128/128, memory 1.2G peak\n"
    log = b"".join(line % number for number in range(size // len(line) + 2))
    return log[:size]


# --- seeding -------------------------------------------------------------------------------------


def seed(
    data_dir: Path,
    *,
    workers: int,
    task_types: Sequence[str] = ("sleep",),
    tasks: int = 0,
    tasks_per_job: int = 100_000,
    secret: str | None = None,
) -> list[Worker]:
    """Register ``workers`` workers and queue ``tasks`` tasks of the first type, via the services.

    The workers share one secret (``secret``, or a new one), hashed once with cheap scrypt
    parameters: each worker's first request pays one check before the manager caches it, and
    warm-up should not take minutes. Measurements only see the cached path, as a long-running
    farm does.
    """
    import hashlib
    import secrets

    from flamenco_manager.config import Settings
    from flamenco_manager.manager import Manager
    from flamenco_manager.services.jobs import TaskSpec
    from flamenco_protocol.documents import WorkerRegistration

    secret = secret or secrets.token_urlsafe(24)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**10, r=8, p=1)
    encoded = [base64.b64encode(raw).decode() for raw in (salt, digest)]
    cheap_hash = "$".join(["scrypt", str(2**10), "8", "1", *encoded])
    manager = Manager(Settings(data_dir=data_dir, log_level="warning"))
    try:
        seeded = []
        with mock.patch("flamenco_manager.services.workers.hash_secret", return_value=cheap_hash):
            for number in range(workers):
                registration = WorkerRegistration(
                    secret=secret,
                    platform="linux",
                    supported_task_types=tuple(task_types),
                    nickname=f"bench-{number}",
                )
                document = manager.workers.register(registration, f"{HOST}:1")
                seeded.append(Worker(str(document.id), secret))
        command = [{"name": "sleep", "settings": {"time_in_seconds": 1}}]
        left = tasks
        while left > 0:
            size = min(left, tasks_per_job)
            specs = [
                TaskSpec(name=f"t{index}", task_type=task_types[0], commands=command)
                for index in range(size)
            ]
            manager.jobs.create_job(name="bench", job_type="bench", tasks=specs)
            left -= size
    finally:
        manager.close()
    return seeded


def settle_disk() -> None:
    """Write dirty buffers to disk and wait 6 seconds, so that creating a file costs what it should.

    On these machines (ext4 without a journal), right after many files were deleted, creating
    a file cost 0.2 to 0.75 ms of kernel time instead of 14 µs, for minutes unless the
    deletions were written to disk: ``perf`` puts the time in inode allocation
    (``find_inode_bit``, ``recently_deleted``). The previous benchmark's scratch directory,
    removed a moment before, is such a deletion, and a claim creates a log file: the first
    server measured would pay it, the next ones less. Measured with 20,000 files created
    after 40,000 were deleted: 14 µs each after a sync and 6 seconds; 0.7 ms after a sync
    and 3 seconds, or after 8 seconds without a sync.
    """
    os.sync()
    time.sleep(6)


# --- load ----------------------------------------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(
        self, method: str, path: str, authorization: str, body: bytes = b""
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {authorization}\r\n"
            f"User-Agent: bench/1\r\nContent-Length: {len(body)}\r\n"
        )
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload


async def _worker_loop(
    port: int,
    worker: Worker,
    scenario: str,
    warm_until: float,
    stop_at: float,
    out: dict[str, Any],
    log: bytes,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    connection = _Connection(reader, writer)
    auth = worker.authorization
    held: str | None = None
    update_body = json.dumps({"task_status": "completed"}).encode()
    log_body = json.dumps(
        {"task_status": "active", "activity": "rendering frame", "log": log.decode()}
    ).encode()
    try:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                break
            if scenario == "update" and held is not None:
                status, _ = await connection.request(
                    "POST", f"/tasks/{held}/update", auth, log_body
                )
                took = time.perf_counter() - start
            else:
                status, payload = await connection.request("POST", "/task", auth)
                took = time.perf_counter() - start
                if status == 200 and scenario != "fetch":
                    task_id = json.loads(payload)["_id"]
                    if scenario == "complete":
                        await connection.request(
                            "POST", f"/tasks/{task_id}/update", auth, update_body
                        )
                    elif scenario == "return":
                        await connection.request("POST", f"/tasks/{task_id}/return", auth)
                    elif scenario == "update":
                        held = task_id
                        continue
            # Counted when the answer arrives inside the window, whenever it was asked: under
            # overload latencies can be longer than the window itself.
            if warm_until <= start + took <= stop_at:
                out["latencies"].append(took)
                out["statuses"][status] = out["statuses"].get(status, 0) + 1
    finally:
        writer.close()


def _load_process(
    port: int,
    workers: list[Worker],
    scenario: str,
    warmup: float,
    seconds: float,
    log_bytes: int,
    queue: Any,
) -> None:
    import resource

    import uvloop

    out: dict[str, Any] = {"latencies": [], "statuses": {}}
    log = log_text(log_bytes)

    async def main() -> None:
        now = time.perf_counter()
        warm_until, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(
            *(_worker_loop(port, w, scenario, warm_until, stop_at, out, log) for w in workers)
        )

    before = resource.getrusage(resource.RUSAGE_SELF)
    uvloop.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    queue.put((out["latencies"], out["statuses"], cpu))


def measure(
    server: Server,
    workers: list[Worker],
    scenario: str,
    *,
    warmup: float = 2.0,
    seconds: float = 5.0,
    log_bytes: int = 2048,
) -> Result:
    """Drive ``server`` with one connection per worker; the measured window follows a warm-up.

    Scenarios (the measured request in brackets): ``fetch`` [/task]; ``complete`` [/task], each
    200 followed by an update completing the task; ``return`` [/task], each 200 followed by
    returning the task, so the queue keeps its depth; ``update`` [/tasks/{id}/update with
    ``log_bytes`` of log], after one /task.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_load_process,
        args=(server.port, workers, scenario, warmup, seconds, log_bytes, queue),
    )
    process.start()
    time.sleep(warmup)
    cpu_before = server.cpu_seconds()
    latencies, statuses, client_cpu = queue.get(timeout=warmup + seconds + 120)
    server_cpu = server.cpu_seconds() - cpu_before
    process.join(30)
    server.wait_idle()
    return Result(len(latencies), seconds, latencies, statuses, server_cpu, client_cpu)


def median_result(results: list[Result]) -> Result:
    """The run with the median rate."""
    return sorted(results, key=lambda result: result.rate)[len(results) // 2]


def describe(label: str, results: list[Result]) -> str:
    """One line: median req/s over the runs, its latency percentiles and CPU use."""
    middle = median_result(results)
    rates = ", ".join(f"{result.rate:.0f}" for result in results)
    return (
        f"{label:<34} {middle.rate:8.0f} req/s (runs: {rates})  "
        f"p50 {1000 * middle.percentile(0.5):6.2f} ms  p90 {1000 * middle.percentile(0.9):6.2f} ms"
        f"  p99 {1000 * middle.percentile(0.99):6.2f} ms  "
        f"server CPU {middle.server_cpu / middle.seconds:4.0%}  "
        f"client CPU {middle.client_cpu / (middle.seconds + 2):4.0%}  statuses {middle.statuses}"
    )


def ratios(bare: list[Result], floor: list[Result], ours: list[Result]) -> str:
    """Manager / bare (the target), floor / bare and manager / floor, of median rates."""
    rate_bare, rate_floor, rate_ours = (median_result(runs).rate for runs in (bare, floor, ours))
    return (
        f"ratio manager / bare: {rate_ours / rate_bare:.2f}  (target >= 0.5)   "
        f"floor / bare: {rate_floor / rate_bare:.2f}   "
        f"manager / floor: {rate_ours / rate_floor:.2f}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    # The server side: ``_manager_bench.py manager PORT DATA_DIR`` or ``... baseline PORT``.
    if sys.argv[1] == "manager":
        _run_manager(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "floor":
        _run_floor(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    else:
        _run_baseline(int(sys.argv[2]))
