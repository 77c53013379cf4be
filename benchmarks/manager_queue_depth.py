"""``/task`` latency with 100,000 queued tasks against 100 queued tasks, same run.

Run by hand: ``python benchmarks/manager_queue_depth.py [--workers 10] [--seconds 5] [--runs 3]``.

Two managers, each under uvicorn (uvloop, httptools) in a subprocess on 127.0.0.1: one with
100 queued tasks, one with 100,000, seeded through the storage layer (one bulk insert per job,
before the server starts). A load generator in another process runs ``--workers`` workers, each
looping: ``POST /task``, then returning the task it got, so the queue keeps its depth.

Prints ``/task`` latency percentiles and rates for both and the ratio of the median latencies,
deep / shallow (target <= 1.5).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _manager_bench import describe, measure, median_result, seed, serve_manager, settle_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deep", type=int, default=100_000)
    parser.add_argument("--shallow", type=int, default=100)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-depth-") as scratch:
        for depth in (args.shallow, args.deep):
            data_dir = Path(scratch) / str(depth)
            print(f"seeding {depth} tasks ...", flush=True)
            workers = seed(data_dir, workers=args.workers, tasks=depth)
            settle_disk()
            with serve_manager(data_dir) as manager:
                results[depth] = [
                    measure(manager, workers, "return", seconds=args.seconds)
                    for _ in range(args.runs)
                ]

    print(f"\n/task latency, {args.workers} workers each taking and returning a task:")
    for depth, runs in results.items():
        print(describe(f"{depth:>7} queued tasks", runs))
    shallow = median_result(results[args.shallow]).percentile(0.5)
    deep = median_result(results[args.deep]).percentile(0.5)
    print(f"ratio of median latency deep / shallow: {deep / shallow:.2f}  (target <= 1.5)")
    shallow99 = median_result(results[args.shallow]).percentile(0.99)
    deep99 = median_result(results[args.deep]).percentile(0.99)
    print(f"ratio of p99 latency deep / shallow: {deep99 / shallow99:.2f}")


if __name__ == "__main__":
    main()
