"""Task updates each carrying 2 KiB of log: updates/s against a bare endpoint on the same stack.

Run by hand: ``python benchmarks/manager_updates.py [--workers 200] [--seconds 5] [--runs 3]``.

The manager and a bare Starlette app (which reads the body and answers 204) each run under
uvicorn (uvloop, httptools) in a subprocess on 127.0.0.1. A load generator in another process
runs ``--workers`` workers: each takes one task with ``POST /task`` and then loops
``POST /tasks/{id}/update`` with status ``active``, an activity and 2 KiB of log (appended to
the task's log file on disk by the manager).

A third server, the floor (``_manager_bench._run_floor``), stores each update and appends its
log with raw ``sqlite3`` on a copy of the manager's seeded database and nothing else: it bounds
the ratio any manager keeping the same promises could reach on this machine.

Prints updates/s with latency percentiles and CPU use for the three, and the ratios manager /
bare (target >= 0.5), floor / bare and manager / floor.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _manager_bench import (
    Result,
    Server,
    describe,
    measure,
    ratios,
    seed,
    serve_baseline,
    serve_floor,
    serve_manager,
    settle_disk,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--log-bytes", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-updates-") as scratch:
        data_dir = Path(scratch)
        print(f"seeding {args.workers} workers and their tasks ...", flush=True)
        workers = seed(data_dir, workers=args.workers, tasks=args.workers)
        floor_dir = Path(scratch) / "floor"
        shutil.copytree(data_dir, floor_dir)
        settle_disk()

        def run(server: Server) -> list[Result]:
            return [
                measure(server, workers, "update", seconds=args.seconds, log_bytes=args.log_bytes)
                for _ in range(args.runs)
            ]

        with serve_baseline() as baseline:
            bare = run(baseline)
        with serve_floor(floor_dir, workers[0].secret) as floor:
            least = run(floor)
        with serve_manager(data_dir) as manager:
            ours = run(manager)

    print(f"\ntask updates with {args.log_bytes} bytes of log, {args.workers} workers:")
    print(describe("bare endpoint (read body, 204)", bare))
    print(describe("floor /tasks/{id}/update", least))
    print(describe("manager /tasks/{id}/update", ours))
    print(ratios(bare, least, ours))


if __name__ == "__main__":
    main()
