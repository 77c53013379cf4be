"""A job's logs go with the job, never before it: a deletion that does not commit (a failed
commit, a process killed before the commit) leaves the job its logs, and the logs of a job whose
deletion committed just before the process died are removed by the next housekeeping pass."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.storage import jobs as job_store

from .harness import Farm, interrupt_next_commit, spec

pytestmark = pytest.mark.anyio


async def _job_with_a_log(farm: Farm, name: str) -> tuple[str, str]:
    job = farm.job(spec(name=name), name=name)
    worker = await farm.register(nickname=name)
    task_id = (await farm.fetch(worker)).json()["_id"]
    answer = await farm.update(worker, task_id, task_status="completed", log=f"{name} rendered")
    assert answer.status_code == 204
    return str(job.id), task_id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_deletion_that_does_not_commit_leaves_the_job_its_logs(farm: Farm) -> None:
    job_id, task_id = await _job_with_a_log(farm, "kept")
    token = farm.manager.mint_user_token("alice", timedelta(hours=1))
    # The deletion is a savepoint of a commit group (SQLite): the group's commit fails, as it
    # does when the process is killed before it.
    interrupt_next_commit(farm.manager.database.engine)
    answer = await farm.client.delete(
        f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 503
    assert farm.manager.jobs.get(job_id).status == "completed"
    farm.manager.logs.flush()  # a removal queued on the store's thread would be done now
    assert "kept rendered" in farm.manager.logs.read_whole(job_id, task_id).decode()


async def test_logs_of_a_job_deleted_just_before_a_crash_are_removed_later(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    gone, _ = await _job_with_a_log(farm, "gone")
    kept, kept_task = await _job_with_a_log(farm, "kept")
    # The process committed the deletion and was killed before it removed the logs.
    with farm.manager.database.transaction() as connection:
        assert job_store.delete(connection, gone)
    assert farm.manager.logs.job_dir(gone).is_dir()
    with caplog.at_level(logging.WARNING, logger="flamenco_manager.services.housekeeping"):
        assert farm.manager.housekeeping.remove_abandoned_builds() == 0
    farm.manager.logs.flush()
    assert not farm.manager.logs.job_dir(gone).exists()
    assert "kept rendered" in farm.manager.logs.read_whole(kept, kept_task).decode()
    assert any(
        record.getMessage() == "removed the task logs of deleted jobs"
        and getattr(record, "count", None) == 1
        for record in caplog.records
    )
    assert farm.manager.housekeeping.remove_abandoned_builds() == 0  # nothing left to remove


def test_logs_a_stopped_removal_left_are_removed_at_start_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A job's logs are moved into .deleted, then removed on a thread: a manager stopped between
    # the two left them there, and the next start removed them without a word.
    left = tmp_path / "task-logs" / ".deleted" / "job-0123"
    left.mkdir(parents=True)
    (left / "task-0123.txt").write_text("rendered\n")
    caplog.set_level(logging.INFO, logger="flamenco_manager")
    manager = Manager(Settings(data_dir=tmp_path, log_level="warning"))
    manager.close()  # waits for the removal
    assert not left.exists()
    (record,) = [r for r in caplog.records if "stopped manager left" in r.getMessage()]
    assert record.count == 1  # type: ignore[attr-defined]
