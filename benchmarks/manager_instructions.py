"""Instructions per worker request, manager against the bare endpoint, counted by callgrind.

Run by hand: ``python benchmarks/manager_instructions.py [--workers 200] [--scenarios ...]``.
Needs ``valgrind`` (Debian's package).

Times on a shared 2-core machine move by half from one run to the next; instruction counts do
not. This benchmark drives the ASGI apps in-process (no sockets, no HTTP parsing: what is left
is the app's own work) with ``--workers`` concurrent simulated workers, under
``valgrind --tool=callgrind``, and counts the instructions each request costs: the count of a run
of 7 requests per worker minus that of a run of 2, divided by the 5 times ``--workers`` requests
between them, so start-up, seeding and first-request credential checks cancel out.

Scenarios (manager and bare app each):

* ``update``: ``POST /tasks/{id}/update`` with status ``active`` and 2 KiB of log, after one
  ``/task`` each (the manager stores it and appends the log);
* ``poll``: ``POST /task`` with an empty queue (the manager answers 204);
* ``may-i-run``: ``GET /may-i-run/{id}`` of the task the worker runs;
* ``claim``: ``POST /task``, then the update that completes the task it got, counted as one
  request (the manager claims the task, starts its log, and completes it).

The bare app is ``_manager_bench.bare_app``. The manager runs ``create_app(manager,
run_loops=False)`` on a seeded SQLite database. Its clock advances 150 µs per reading, as at
about 3,000 requests per second, so that the one-second steps of "last seen" write a worker's
row as often (per request) as under real load; under callgrind's slowdown the real clock would
make every request write it.

Prints instructions per request for both apps and their ratio, bare / manager: the throughput
ratio the manager would reach where both are CPU-bound, before the HTTP server's own cost, which
is the same for both and so brings the ratio over HTTP closer to 1. System calls (commits, log
appends) are not instructions of the process: their time is not counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _manager_bench import Worker, bare_app, log_text, seed

HERE = Path(__file__).resolve().parent
ROUNDS = (2, 7)
SCENARIOS = ("update", "poll", "may-i-run", "claim")
CLOCK_STEP = timedelta(microseconds=150)
_COLLECTED = re.compile(rb"Collected : (\d+)")


# --- the child: one app, one scenario, a fixed number of rounds ---------------------------------


class _Driver:
    """Calls an ASGI app as a server would, one worker's requests at a time."""

    def __init__(self, app: Any, worker: Worker) -> None:
        self.app = app
        self.headers = [
            (b"host", b"127.0.0.1"),
            (b"authorization", worker.authorization.encode()),
            (b"user-agent", b"bench/1"),
        ]

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = [*self.headers, (b"content-length", str(len(body)).encode())]
        if body:
            headers.append((b"content-type", b"application/json"))
        scope = {
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
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await asyncio.Event().wait()  # no disconnect: the client stays
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def _child(scenario: str, kind: str, rounds: int, data_dir: Path) -> None:
    import uvloop

    workers: list[Worker] = pickle.loads((data_dir / "workers.pickle").read_bytes())
    body = json.dumps(
        {"task_status": "active", "activity": "rendering frame", "log": log_text(2048).decode()}
    ).encode()
    completed = json.dumps(
        {"task_status": "completed", "activity": "done", "log": "frame rendered\n"}
    ).encode()

    async def main() -> None:
        manager = None
        if kind == "manager":
            from flamenco_manager.config import Settings
            from flamenco_manager.manager import Manager
            from flamenco_manager.web.app import create_app

            moment = [datetime.now(UTC)]

            def clock() -> datetime:
                moment[0] += CLOCK_STEP
                return moment[0]

            manager = Manager(Settings(data_dir=data_dir, log_level="warning"), clock=clock)
            app = create_app(manager, run_loops=False)
        else:
            app = bare_app()

        async def fetch(driver: _Driver) -> str:
            status, payload = await driver.request("POST", "/task")
            if status != 200:
                raise SystemExit(f"/task answered {status}: no task to work on")
            task: str = json.loads(payload)["_id"]
            return task

        async def worker(credentials: Worker) -> None:
            driver = _Driver(app, credentials)
            task = "0123456789abcdef01234567"
            if scenario in ("update", "may-i-run"):
                task = await fetch(driver)
            expected = {"update": 204, "poll": 204 if manager else 200, "may-i-run": 200}
            for _ in range(rounds):
                if scenario == "update":
                    status, _ = await driver.request("POST", f"/tasks/{task}/update", body)
                elif scenario == "poll":
                    status, _ = await driver.request("POST", "/task")
                elif scenario == "may-i-run":
                    status, _ = await driver.request("GET", f"/may-i-run/{task}")
                else:
                    task = await fetch(driver)
                    status, _ = await driver.request("POST", f"/tasks/{task}/update", completed)
                if status != expected.get(scenario, 204):
                    raise SystemExit(f"{scenario} answered {status}")

        try:
            await asyncio.gather(*(worker(credentials) for credentials in workers))
        finally:
            if manager is not None:
                manager.close()

    uvloop.run(main())


# --- the parent: seeding, valgrind runs, the table ----------------------------------------------


def _instructions(scenario: str, kind: str, rounds: int, seeded: Path) -> int:
    # Each run starts from the seeded state, so that its first requests (claims) cost the same.
    data_dir = Path(tempfile.mkdtemp(prefix=f"{seeded.name}-", dir=seeded.parent))
    shutil.copytree(seeded, data_dir, dirs_exist_ok=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        scenario,
        kind,
        str(rounds),
        str(data_dir),
    ]
    try:
        done = subprocess.run(command, capture_output=True, check=False)
    finally:
        shutil.rmtree(data_dir)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
    return int(found[1])


def _per_request(scenario: str, kind: str, data_dir: Path, workers: int) -> float:
    low, high = (_instructions(scenario, kind, rounds, data_dir) for rounds in ROUNDS)
    return (high - low) / ((ROUNDS[1] - ROUNDS[0]) * workers)


def _seeded(root: Path, name: str, workers: int, tasks: int) -> Path:
    data_dir = root / name
    seeded = seed(data_dir, workers=workers, tasks=tasks)
    (data_dir / "workers.pickle").write_bytes(pickle.dumps(seeded))
    return data_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")

    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as scratch:
        print(f"seeding {args.workers} workers (with tasks, and without) ...", flush=True)
        busy = _seeded(Path(scratch), "busy", args.workers, tasks=20 * args.workers)
        idle = _seeded(Path(scratch), "idle", args.workers, tasks=0)
        runs = [
            (scenario, kind, idle if scenario == "poll" else busy)
            for scenario in args.scenarios
            for kind in ("manager", "bare")
        ]
        print(f"{len(runs) * len(ROUNDS)} runs under callgrind, {args.jobs} at a time ...")
        with ThreadPoolExecutor(args.jobs) as pool:
            counts = list(
                pool.map(lambda run: _per_request(run[0], run[1], run[2], args.workers), runs)
            )

    results = dict(zip(((scenario, kind) for scenario, kind, _ in runs), counts, strict=True))
    print(f"\ninstructions per request, {args.workers} concurrent workers, in-process ASGI:")
    for scenario in args.scenarios:
        ours, bare = results[scenario, "manager"], results[scenario, "bare"]
        print(
            f"{scenario:<10} manager {ours:>11,.0f}   bare {bare:>9,.0f}   "
            f"bare / manager {bare / ours:.3f}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
