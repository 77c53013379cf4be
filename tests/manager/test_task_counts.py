"""A job's task counts per status (``job_task_counts``), kept by the database's triggers: right
after every kind of statement, on both backends, and through migration 0004 both ways."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.storage.database import MIGRATIONS
from flamenco_manager.storage.schema import job_task_counts, tasks


def _specs(count: int) -> list[TaskSpec]:
    sleep = [{"name": "sleep", "settings": {"time_in_seconds": 1}}]
    return [TaskSpec(name=f"t{index}", task_type="sleep", commands=sleep) for index in range(count)]


def _counts_match_the_tasks(manager: Manager) -> dict[str, dict[str, int]]:
    """The kept counts, after checking them against a count of the tasks themselves."""
    with manager.database.reading() as connection:
        kept: dict[str, dict[str, int]] = {}
        for job_id, status, count in connection.execute(sa.select(job_task_counts)).all():
            if count:
                kept.setdefault(str(job_id), {})[status] = count
        counted: dict[str, Counter[str]] = {}
        for job_id, status in connection.execute(sa.select(tasks.c.job_id, tasks.c.status)):
            counted.setdefault(str(job_id), Counter())[status] += 1
    assert kept == {job: dict(statuses) for job, statuses in counted.items()}
    return kept


def _migrate(manager: Manager, revision: str) -> None:
    with manager.database.engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        if revision == "head":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)


def test_counts_follow_bulk_changes_of_big_jobs_and_both_ways_of_the_migration(
    tmp_path: Path, database_url: str
) -> None:
    # On PostgreSQL the counts were kept row by row: changing a job's 60,000 tasks changed one
    # count 60,000 times in one transaction, which took 17 to 42 s per action (migration 0004).
    manager = Manager(Settings(data_dir=tmp_path, database=database_url, log_level="warning"))
    try:
        for revision in ("head", "0003", "head"):  # 0003 has the row triggers of 0002
            _migrate(manager, revision)
            big = str(manager.jobs.create_job(name="big", job_type="t", tasks=_specs(3000)).id)
            small = str(manager.jobs.create_job(name="small", job_type="t", tasks=_specs(3)).id)
            assert _counts_match_the_tasks(manager)[big] == {"queued": 3000}
            manager.jobs.request_status(big, "cancel-requested")
            assert _counts_match_the_tasks(manager)[big] == {"canceled": 3000}
            manager.jobs.request_status(big, "requeued")
            assert _counts_match_the_tasks(manager)[big] == {"queued": 3000}
            manager.jobs.delete(big)
            assert big not in _counts_match_the_tasks(manager)
            manager.jobs.delete(small)
            assert _counts_match_the_tasks(manager) == {}
    finally:
        manager.close()
