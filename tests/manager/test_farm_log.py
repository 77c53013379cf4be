"""The manager's log tells the farm's story: one line per change, and only committed ones."""

from __future__ import annotations

import logging

import pytest

from .harness import Farm, interrupt_next_commit, spec

pytestmark = pytest.mark.anyio


def _told(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [line for line in caplog.records if line.name == "flamenco_manager.farm"]


async def test_a_job_from_worker_sign_on_to_completion(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    worker = await farm.register("w1")
    await farm.call(worker, "POST", "/sign-on", json={})
    job = farm.job(spec("first"), spec("second"), name="shot 010")
    for _ in range(2):
        task_id = (await farm.fetch(worker)).json()["_id"]
        assert (await farm.update(worker, task_id, task_status="completed")).status_code == 204

    told = _told(caplog)
    assert [line.getMessage() for line in told] == [
        "worker registered",
        "worker signed on",
        "job created",
        "task assigned",
        "job status changed",  # queued -> active
        "task completed",
        "task assigned",
        "task completed",
        "job status changed",  # active -> completed
    ]
    registered, _, created, assigned, started, *_, finished = told
    assert (registered.worker, registered.nickname) == (worker.id, "w1")  # type: ignore[attr-defined]
    assert (created.job, created.job_name, created.tasks) == (str(job.id), "shot 010", 2)  # type: ignore[attr-defined]
    assert (assigned.job, assigned.worker) == (str(job.id), worker.id)  # type: ignore[attr-defined]
    assert (started.previous, started.status) == ("queued", "active")  # type: ignore[attr-defined]
    assert (finished.previous, finished.status) == ("active", "completed")  # type: ignore[attr-defined]
    assert {line.levelno for line in told} == {logging.INFO}


async def test_a_task_sent_again_to_the_worker_holding_it_is_told(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker asks for work while it holds a task: after a manager restart, the real worker may
    # still have the update completing it queued. It gets the same task again, and the log says so.
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    worker = await farm.register("w1")
    farm.job(spec())
    task_id = (await farm.fetch(worker)).json()["_id"]
    caplog.clear()
    assert (await farm.fetch(worker)).json()["_id"] == task_id
    told = _told(caplog)
    assert [line.getMessage() for line in told] == ["task sent again to the worker holding it"]
    assert (told[0].task, told[0].worker) == (task_id, worker.id)  # type: ignore[attr-defined]
    assert told[0].levelno == logging.INFO


async def test_failures_are_warnings(farm: Farm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    worker = await farm.register("w1")
    farm.job(spec())
    task_id = (await farm.fetch(worker)).json()["_id"]
    assert (await farm.update(worker, task_id, task_status="failed")).status_code == 204

    warnings = [line for line in _told(caplog) if line.levelno == logging.WARNING]
    # The only capable worker failed it: no other could try it, so it failed for good.
    assert [line.getMessage() for line in warnings][:1] == ["task failed"]
    assert warnings[0].task == task_id  # type: ignore[attr-defined]


async def test_a_change_rolled_back_leaves_no_line(
    farm: Farm, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if database_url:
        pytest.skip("interrupts a commit the SQLite way")
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    worker = await farm.register("w1")
    farm.job(spec())
    caplog.clear()
    interrupt_next_commit(farm.manager.database.engine)
    assert (await farm.fetch(worker)).status_code >= 500
    assert _told(caplog) == []
    assert (await farm.fetch(worker)).status_code == 200
    assert [line.getMessage() for line in _told(caplog)][:1] == ["task assigned"]


async def test_status_requests_and_their_acknowledgements(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    worker = await farm.register("w1")
    await farm.fetch(worker)  # awake
    caplog.clear()
    farm.manager.workers.request_status(worker.id, "asleep", lazy=False)
    assert (await farm.fetch(worker)).status_code == 423
    assert (await farm.call(worker, "POST", "/ack-status-change/asleep")).status_code == 204

    asked, acknowledged = _told(caplog)
    assert asked.getMessage() == "worker asked to change status"
    assert (asked.worker, asked.status, asked.lazy) == (worker.id, "asleep", False)  # type: ignore[attr-defined]
    assert acknowledged.getMessage() == "worker acknowledged a status change"
    assert (acknowledged.status, acknowledged.previous) == ("asleep", "awake")  # type: ignore[attr-defined]
