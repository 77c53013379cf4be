"""A page of a big job's tasks, against the whole job, read through the job service.

Run by hand: ``python benchmarks/job_task_pages.py [--tasks 100000] [--runs 5]``.

Stores a job of ``--tasks`` tasks (one in ten starts a chain of ten, so tasks have parents) on
SQLite in a scratch data directory, then reads, ``--runs`` times each, what
``GET /api/jobs/{id}/tasks`` asks the service for: the whole job (the baseline), its first and
its last page of 500 tasks, and the page of its failed tasks (none). Prints the median seconds
of each and its ratio to the whole job's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec

PAGE = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pages-") as scratch:
        manager = Manager(Settings(data_dir=Path(scratch), log_level="warning"))
        try:
            sleep = [{"name": "sleep", "settings": {"time_in_seconds": 1}}]
            specs = [
                TaskSpec(
                    name=f"t{n}", task_type="t", commands=sleep, parents=(n - 1,) if n % 10 else ()
                )
                for n in range(args.tasks)
            ]
            job_id = str(manager.jobs.create_job(name="big", job_type="bench", tasks=specs).id)
            reads: dict[str, dict[str, Any]] = {
                "whole job": {},
                "first page": {"limit": PAGE},
                "last page": {"limit": PAGE, "offset": args.tasks - PAGE},
                "failed tasks": {"statuses": ["failed"], "limit": PAGE},
            }
            medians: dict[str, float] = {}
            for label, options in reads.items():
                seconds = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    manager.jobs.tasks(job_id, **options)
                    seconds.append(time.perf_counter() - started)
                medians[label] = statistics.median(seconds)
        finally:
            manager.close()
    whole = medians["whole job"]
    print(f"{args.tasks} tasks; median of {args.runs} reads, and its ratio to the whole job's")
    for label, seconds in medians.items():
        print(f"{label:14} {seconds:8.3f} s  {seconds / whole:6.3f}")


if __name__ == "__main__":
    main()
