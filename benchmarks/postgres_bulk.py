"""Actions on a big job on PostgreSQL, against the same on SQLite, in the same run.

Run by hand: ``python benchmarks/postgres_bulk.py [--tasks 60000] [--url postgresql://…]``.

After single-task changes (cancel and requeue of the tasks of a small job, thirty times each),
submits a job of ``--tasks`` tasks through the job service, cancels it, requeues it and
deletes it, each one transaction, timing each: on SQLite in a scratch data directory (the
baseline), then on a scratch PostgreSQL database (made and dropped on the server of ``--url``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``) twice: with the task counts kept by
statement triggers (migration 0004, the schema of now) and by 0002's row triggers (the schema
migrated down to 0003). Prints the seconds of each action and their ratio to SQLite's.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.storage.database import MIGRATIONS

ACTIONS = ("submit", "cancel", "requeue", "delete")


def run_actions(database: str, tasks: int, revision: str = "head") -> dict[str, float]:
    """Seconds of each action on a job of ``tasks`` tasks, with the schema at ``revision``."""
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as scratch:
        manager = Manager(Settings(data_dir=Path(scratch), database=database, log_level="warning"))
        try:
            if revision != "head":
                with manager.database.engine.begin() as connection:
                    config = Config()
                    config.set_main_option("script_location", str(MIGRATIONS))
                    config.attributes["connection"] = connection
                    command.downgrade(config, revision)
            sleep = [{"name": "sleep", "settings": {"time_in_seconds": 1}}]
            # A farm changes single tasks all day first: database sessions whose cached plans
            # were made for one-row changes (a join in such a plan took over 30 s for 20,000).
            few = [TaskSpec(name=f"w{n}", task_type="t", commands=sleep) for n in range(10)]
            warm = manager.jobs.create_job(name="warm-up", job_type="bench", tasks=few)
            for task in manager.jobs.tasks(str(warm.id)) * 3:
                manager.jobs.cancel_task(str(task.task.id))
                manager.jobs.requeue_task(str(task.task.id))
            specs = [TaskSpec(name=f"t{n}", task_type="t", commands=sleep) for n in range(tasks)]
            seconds: dict[str, float] = {}
            started = time.perf_counter()
            job_id = str(manager.jobs.create_job(name="big", job_type="bench", tasks=specs).id)
            seconds["submit"] = time.perf_counter() - started
            for action, status in (("cancel", "cancel-requested"), ("requeue", "requeued")):
                started = time.perf_counter()
                manager.jobs.request_status(job_id, status)
                seconds[action] = time.perf_counter() - started
            started = time.perf_counter()
            manager.jobs.delete(job_id)
            seconds["delete"] = time.perf_counter() - started
            return seconds
        finally:
            manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    server = sa.make_url(args.url)
    name = f"bench_bulk_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        database = server.set(database=name).render_as_string(hide_password=False)
        print(f"{args.tasks} tasks; seconds per action, and their ratio to SQLite's", flush=True)
        results = {"SQLite": run_actions("", args.tasks)}
        results["PostgreSQL, statement triggers"] = run_actions(database, args.tasks)
        results["PostgreSQL, row triggers (0003)"] = run_actions(database, args.tasks, "0003")
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    baseline = results["SQLite"]
    print(f"{'':34}" + "".join(f"{action:>18}" for action in ACTIONS))
    for label, seconds in results.items():
        cells = "".join(
            f"{seconds[action]:8.2f} s ({seconds[action] / baseline[action]:5.1f}x)"
            for action in ACTIONS
        )
        print(f"{label:34}{cells}")


if __name__ == "__main__":
    main()
