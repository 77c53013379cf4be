"""``/task`` throughput with 200 concurrent workers, against a bare JSON endpoint on the same stack.

Run by hand: ``python benchmarks/manager_task.py [--workers 200] [--seconds 5] [--runs 3]``.

Both servers run under uvicorn (uvloop, httptools, no access log) in subprocesses on 127.0.0.1;
the load generator is a third process with one keep-alive connection per simulated worker.
Each worker loops: ``POST /task``, then completes the task it got with an update; the bare
server answers ``/task`` with a small fixed JSON body and the update with 204, so both sides
serve the same request pattern. Enough tasks are queued that every ``/task`` finds one.

A third server, the floor, does only the database writes and log appends the protocol makes
durable, with raw ``sqlite3`` on a copy of the manager's seeded database (see
``_manager_bench._run_floor``): no manager can do less per request on this stack and keep the
same promises, so floor / bare bounds the ratio any manager could reach on this machine.

Prints, for the bare endpoint, the floor and the manager, the median over the runs of ``/task``
answers per second with latency percentiles and CPU use, then the ratios manager / bare (target
>= 0.5), floor / bare and manager / floor. Then the same for an empty queue (every ``/task``
answers 204) with workers that only poll.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _manager_bench import (
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
    # The floor claims up to 7,000 tasks a second here: three runs of 7 s must not empty the queue.
    parser.add_argument("--tasks", type=int, default=150_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-task-") as scratch:
        data_dir = Path(scratch)
        print(f"seeding {args.workers} workers and {args.tasks} tasks ...", flush=True)
        busy = seed(data_dir, workers=args.workers, tasks=args.tasks)
        idle = seed(
            data_dir, workers=args.workers, task_types=("nothing-queued",), secret=busy[0].secret
        )
        floor_dir = Path(scratch) / "floor"
        shutil.copytree(data_dir, floor_dir)
        settle_disk()

        with serve_baseline() as baseline:
            bare = [
                measure(baseline, busy, "complete", seconds=args.seconds) for _ in range(args.runs)
            ]
            bare_empty = [
                measure(baseline, idle, "fetch", seconds=args.seconds) for _ in range(args.runs)
            ]
        with serve_floor(floor_dir, busy[0].secret) as floor:
            least = [
                measure(floor, busy, "complete", seconds=args.seconds) for _ in range(args.runs)
            ]
            least_empty = [
                measure(floor, idle, "fetch", seconds=args.seconds) for _ in range(args.runs)
            ]
        with serve_manager(data_dir) as manager:
            ours = [
                measure(manager, busy, "complete", seconds=args.seconds) for _ in range(args.runs)
            ]
            ours_empty = [
                measure(manager, idle, "fetch", seconds=args.seconds) for _ in range(args.runs)
            ]

    print(f"\n/task with a task for every request ({args.workers} workers, task then complete):")
    print(describe("bare JSON endpoint", bare))
    print(describe("floor /task (200)", least))
    print(describe("manager /task (200)", ours))
    print(ratios(bare, least, ours))
    if any(set(result.statuses) != {200} for result in (*least, *ours)):
        print("warning: the queue ran dry during a run (answers other than 200): raise --tasks")

    print(f"\n/task with an empty queue ({args.workers} workers, /task only):")
    print(describe("bare JSON endpoint", bare_empty))
    print(describe("floor /task (204)", least_empty))
    print(describe("manager /task (204)", ours_empty))
    print(ratios(bare_empty, least_empty, ours_empty))


if __name__ == "__main__":
    main()
