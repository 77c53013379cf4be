"""Task updates, returns and may-i-run (spec/manager-behaviour.md §4.5-§4.7, §8, §10, §17.2)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flamenco_manager.services.errors import Conflict
from tests.support import open_files_under

from .harness import Farm, WorkerHandle, database_lost, fail_next_commit, spec

pytestmark = pytest.mark.anyio


async def _running(farm: Farm, nickname: str = "w") -> tuple[WorkerHandle, str]:
    job = farm.job(spec())
    worker = await farm.register(nickname)
    task_id = (await farm.fetch(worker)).json()["_id"]
    assert task_id == farm.task_ids(job)[0]
    return worker, task_id


async def test_an_update_is_taken_and_its_log_appended(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    response = await farm.update(
        worker,
        task_id,
        task_status="active",
        activity="rendering frame 3",
        task_progress_percentage=30,
        current_command_idx=1,
        command_progress_percentage=60,
        metrics={"timing": {"total": 1.5}},
        log="line one\nline two",
    )
    assert response.status_code == 204
    task = farm.task(task_id)
    assert task.activity == "rendering frame 3"
    assert (task.task_progress_percentage, task.current_command_idx) == (30, 1)
    assert task.command_progress_percentage == 60
    assert task.metrics == {"timing": {"total": 1.5}}
    log = farm.manager.logs.read_whole(str(task.job_id), task_id).decode()
    assert log.endswith("line one\nline two\n")
    # A second update appends.
    await farm.update(worker, task_id, log="line three\n")
    log = farm.manager.logs.read_whole(str(task.job_id), task_id).decode()
    assert log.endswith("line one\nline two\nline three\n")


async def test_a_manager_on_sqlite_keeps_logs_open_between_updates(farm: Farm) -> None:
    # Only one process writes the logs of a manager on SQLite; with PostgreSQL another process
    # may rotate a log under an open descriptor, so each append opens the log by name.
    worker, task_id = await _running(farm)
    for number in range(3):
        assert (await farm.update(worker, task_id, log=f"line {number}")).status_code == 204
    logs = farm.manager.settings.logs_dir
    job_id = str(farm.task(task_id).job_id)
    kept = [str(farm.manager.logs.path(job_id, task_id))] if farm.manager.database.is_sqlite else []
    assert open_files_under(logs) == kept
    assert farm.manager.logs.read_whole(job_id, task_id).endswith(b"line 0\nline 1\nline 2\n")
    farm.manager.close()
    assert open_files_under(logs) == []


async def test_the_worker_records_what_it_sent(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    farm.clock.advance(seconds=5)
    await farm.update(worker, task_id, task_status="completed")
    record = farm.worker(worker)
    assert record.current_task_status == "completed"
    assert record.current_task_updated == farm.clock()


async def test_progress_moves_the_workers_update_time_in_one_second_steps(farm: Farm) -> None:
    """A busy worker's progress updates write its row at most once a second; a new status at
    once."""
    worker, task_id = await _running(farm)
    await farm.update(worker, task_id, task_status="active", activity="frame 1")
    first = farm.clock()
    farm.clock.advance(seconds=0.5)
    await farm.update(worker, task_id, task_status="active", activity="frame 2")
    assert farm.worker(worker).current_task_updated == first
    assert farm.task(task_id).activity == "frame 2"
    farm.clock.advance(seconds=0.5)
    await farm.update(worker, task_id, task_status="active", activity="frame 3")
    assert farm.worker(worker).current_task_updated == farm.clock()
    farm.clock.advance(seconds=0.1)
    await farm.update(worker, task_id, task_status="completed")
    record = farm.worker(worker)
    assert (record.current_task_status, record.current_task_updated) == ("completed", farm.clock())


async def test_a_new_address_or_program_is_recorded_at_once_between_steps(farm: Farm) -> None:
    """Between the one-second steps, progress updates leave the worker's row alone, unless
    it would change: another address, another program, another status."""
    worker, task_id = await _running(farm)
    await farm.update(worker, task_id, task_status="active", activity="frame 1")
    assert (farm.worker(worker).address, farm.worker(worker).software) == (
        "10.0.0.5",
        "Flamenco-Worker/2.5",
    )
    farm.clock.advance(seconds=0.2)
    app = farm.client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as moved:
        path = f"/tasks/{task_id}/update"
        response = await moved.post(path, headers=worker.auth, json={"activity": "frame 2"})
        assert response.status_code == 204
        assert farm.worker(worker).address == "10.0.0.9"
        farm.clock.advance(seconds=0.2)
        upgraded = {**worker.auth, "User-Agent": "Flamenco-Worker/2.6"}
        response = await moved.post(path, headers=upgraded, json={"activity": "frame 3"})
        assert response.status_code == 204
        assert farm.worker(worker).software == "Flamenco-Worker/2.6"
        farm.clock.advance(seconds=0.2)
        response = await moved.post(path, headers=upgraded, json={"task_status": "completed"})
        assert response.status_code == 204
    record = farm.worker(worker)
    assert (record.current_task_status, record.current_task_updated) == ("completed", farm.clock())
    assert farm.task(task_id).status == "completed"


async def test_progress_moves_the_task_ping_in_one_second_steps(farm: Farm) -> None:
    """``last_worker_ping`` (indexed, for the task timeout) moves with the worker's update time:
    at most once a second for progress, at once for a new status; other columns every time."""
    worker, task_id = await _running(farm)
    await farm.update(worker, task_id, task_status="active", activity="frame 1")
    first = farm.clock()
    assert farm.task(task_id).last_worker_ping == first
    farm.clock.advance(seconds=0.5)
    await farm.update(worker, task_id, task_status="active", activity="frame 2")
    task = farm.task(task_id)
    assert (task.last_worker_ping, task.last_updated) == (first, farm.clock())
    farm.clock.advance(seconds=0.5)
    await farm.update(worker, task_id, activity="frame 3")
    assert farm.task(task_id).last_worker_ping == farm.clock()
    farm.clock.advance(seconds=0.1)
    await farm.update(worker, task_id, task_status="completed")
    assert farm.task(task_id).last_worker_ping == farm.clock()


async def test_progress_of_a_task_id_found_in_another_job_goes_to_that_job(farm: Farm) -> None:
    """The job of a running task is remembered between its updates; a task ID that turns up in
    another job (its row rewritten here, as a deleted and re-created task would) is not
    mistaken for the old one: the log and the event go to the job the database names."""
    worker, task_id = await _running(farm)
    first_job = str(farm.task(task_id).job_id)
    await farm.update(worker, task_id, activity="frame 1", log="first job")
    other_job = str(farm.job(spec(), name="other").id)
    from flamenco_manager.storage.schema import tasks

    with farm.manager.database.transaction() as connection:
        connection.execute(tasks.update().where(tasks.c.id == task_id).values(job_id=other_job))
    events = farm.manager.context.events.subscribe(["task"])
    assert (
        await farm.update(worker, task_id, activity="frame 2", log="other job")
    ).status_code == 204
    event = await asyncio.wait_for(events.get(), 10)
    assert event is not None
    assert (event.data["job"], event.data["activity"]) == (other_job, "frame 2")
    assert farm.manager.logs.read_whole(other_job, task_id) == b"other job\n"
    assert farm.manager.logs.read_whole(first_job, task_id).endswith(b"first job\n")


async def test_progress_for_a_task_that_stopped_running_keeps_its_status(farm: Farm) -> None:
    """The quick path for progress of a running task must not take an update for a task that
    is no longer active: the rules for that status apply (activity dropped, log kept)."""
    worker, task_id = await _running(farm)
    await farm.update(worker, task_id, task_status="completed", activity="done")
    response = await farm.update(
        worker, task_id, task_status="active", activity="late progress", log="late line"
    )
    assert response.status_code == 204
    task = farm.task(task_id)
    assert (task.status, task.activity) == ("completed", "done")
    log = farm.manager.logs.read_whole(str(task.job_id), task_id).decode()
    assert log.endswith("late line\n")


async def test_an_update_for_an_unassigned_active_task_claims_it(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    from flamenco_manager.storage import tasks as task_store

    with farm.manager.database.transaction() as connection:
        task_store.update(connection, task_id, worker_id=None)
    other = await farm.register("other")
    assert (await farm.update(other, task_id, activity="mine now")).status_code == 204
    assert str(farm.task(task_id).worker_id) == other.id
    assert farm.task(task_id).activity == "mine now"
    # Now the first worker is the other one.
    response = await farm.update(worker, task_id, activity="no, mine")
    assert response.status_code == 409
    assert response.text == f"Task {task_id} is assigned to another worker.\n"
    assert farm.task(task_id).activity == "mine now"


@pytest.mark.parametrize("stopped", ["cancel-requested", "failed"])
async def test_status_and_activity_of_a_stopped_task_are_dropped(farm: Farm, stopped: str) -> None:
    worker, task_id = await _running(farm)
    from flamenco_manager.storage import tasks as task_store
    from flamenco_protocol.statuses import TaskStatus

    with farm.manager.database.transaction() as connection:
        record = task_store.get(connection, task_id)
        assert record is not None
        task_store.set_status(connection, record, TaskStatus(stopped), activity="stopped")
    response = await farm.update(
        worker, task_id, task_status="active", activity="still going", log="late line"
    )
    assert response.status_code == 204
    task = farm.task(task_id)
    assert (task.status, task.activity) == (stopped, "stopped")
    assert str(task.worker_id) == worker.id
    assert "late line" in farm.manager.logs.read_whole(str(task.job_id), task_id).decode()


async def test_unknown_and_malformed_tasks(farm: Farm) -> None:
    worker = await farm.register()
    missing = "5f1e0c0a2b3c4d5e6f70a101"
    response = await farm.update(worker, missing, task_status="active")
    assert response.status_code == 404
    assert response.text == f"Task {missing} is unknown.\n"
    response = await farm.update(worker, "not-an-id", task_status="active")
    assert response.status_code == 404
    assert response.text == "Invalid ObjectID used for task-id: not-an-id\n"


async def test_garbage_bodies_are_400_naming_the_field(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    response = await farm.call(
        worker, "POST", f"/tasks/{task_id}/update", content=b'{"task_progress_percentage": 1.5}'
    )
    assert response.status_code == 400
    assert "$.task_progress_percentage" in response.text
    response = await farm.call(worker, "POST", f"/tasks/{task_id}/update", content=b"{nope")
    assert response.status_code == 400
    assert response.text.startswith("Unable to decode JSON:")
    assert farm.task(task_id).status == "active"
    deep = b'{"metrics": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for raw in (b'{"log": "frame 1\\udc80\\n"}', deep):
        response = await farm.call(worker, "POST", f"/tasks/{task_id}/update", content=raw)
        assert response.status_code == 400, raw[:40]
        assert "surrogate" in response.text or "nested" in response.text
    log = farm.manager.logs.read_whole(str(farm.task(task_id).job_id), task_id)
    assert b"frame 1" not in log


async def test_statuses_a_worker_may_not_report_are_400(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    response = await farm.update(worker, task_id, task_status="queued")
    assert response.status_code == 400
    assert "task_status 'queued' cannot be reported by a worker" in response.text
    response = await farm.update(worker, task_id, task_status="rendering")
    assert "task_status 'rendering' cannot be reported by a worker" in response.text
    assert farm.task(task_id).status == "active"


async def test_bad_credentials_are_401_with_the_realm(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    wrong = WorkerHandle(worker.id, "not the secret", worker.nickname)
    response = await farm.update(wrong, task_id, task_status="completed")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="Flamenco Manager"'
    assert response.text == "401 Unauthorized\n"
    response = await farm.client.post("/task")
    assert response.status_code == 401
    assert farm.task(task_id).status == "active"


async def test_completion_completes_the_job(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    await farm.update(worker, task_id, task_status="completed", activity="Task completed")
    task = farm.task(task_id)
    assert task.status == "completed"
    assert farm.job_status(farm.manager.jobs.get(str(task.job_id))) == "completed"


# --- return and may-i-run ----------------------------------------------------------------------


async def test_returning_requeues_and_keeps_the_worker(farm: Farm) -> None:
    worker, task_id = await _running(farm, "render-07")
    response = await farm.call(worker, "POST", f"/tasks/{task_id}/return")
    assert response.status_code == 204
    task = farm.task(task_id)
    assert task.status == "claimed-by-manager"
    assert str(task.worker_id) == worker.id
    assert task.activity.endswith("returned by worker")
    log = farm.manager.logs.read_whole(str(task.job_id), task_id).decode()
    assert "re-queued task after unassigning it from worker 10.0.0.5 (render-07)" in log


async def test_returning_someone_elses_or_a_stopped_task_does_nothing(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    other = await farm.register("other")
    assert (await farm.call(other, "POST", f"/tasks/{task_id}/return")).status_code == 204
    assert farm.task(task_id).status == "active"
    await farm.update(worker, task_id, task_status="completed")
    assert (await farm.call(worker, "POST", f"/tasks/{task_id}/return")).status_code == 204
    assert farm.task(task_id).status == "completed"
    # An unknown task (its job deleted) has nothing to give back either: Go's 404 with a text
    # body crashes the real worker's may-i-run poller (test_real_worker_sequences).
    response = await farm.call(worker, "POST", "/tasks/5f1e0c0a2b3c4d5e6f70a101/return")
    assert response.status_code == 204


async def test_may_i_run(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    farm.clock.advance(seconds=30)
    assert await farm.may_i_run(worker, task_id) == {"may_keep_running": True}
    assert farm.task(task_id).last_worker_ping == farm.clock()
    # Byte for byte as Go's encoder writes it, and as every other answer is encoded.
    again = await farm.call(worker, "GET", f"/may-i-run/{task_id}")
    assert again.content == b'{"may_keep_running":true}\n'
    assert again.headers["content-length"] == str(len(again.content))
    other = await farm.register("other")
    answer = await farm.may_i_run(other, task_id)
    assert answer == {
        "may_keep_running": False,
        "reason": f"task {task_id} reassigned to another worker",
    }
    missing = "5f1e0c0a2b3c4d5e6f70a101"
    assert (await farm.may_i_run(worker, missing))["reason"] == f"unable to find task {missing}"


async def test_may_i_run_tells_status_requests(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    farm.manager.workers.request_status(worker.id, "asleep", lazy=True)
    assert await farm.may_i_run(worker, task_id) == {
        "may_keep_running": True,
        "status_requested": "asleep",
    }
    farm.manager.workers.request_status(worker.id, "asleep", lazy=False)
    assert await farm.may_i_run(worker, task_id) == {
        "may_keep_running": False,
        "reason": "worker status change to asleep requested",
        "status_requested": "asleep",
    }


async def test_a_canceled_job_stops_its_running_task_through_may_i_run(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    job_id = str(farm.task(task_id).job_id)
    farm.manager.jobs.request_status(job_id, "cancel-requested", "user asked")
    answer = await farm.may_i_run(worker, task_id)
    assert answer["may_keep_running"] is False
    assert answer["reason"] == f"task {task_id} in non-runnable status cancel-requested"
    # The real worker then returns the task: it is canceled, and so is the job.
    await farm.call(worker, "POST", f"/tasks/{task_id}/return")
    assert farm.task(task_id).status == "canceled"
    assert farm.job_status(farm.manager.jobs.get(job_id)) == "canceled"


# --- failure policy (§10, TU-17..TU-21) --------------------------------------------------------


async def test_failures_blocklist_and_hard_fail_as_in_the_worked_example(farm: Farm) -> None:
    # 40 tasks, so that three failures (7.5 %) do not fail the whole job.
    job = farm.job(*(spec(f"t{i}") for i in range(40)), priority=50)
    ids = farm.task_ids(job)
    a = await farm.register("a")
    b = await farm.register("b")
    for index in range(3):
        assert (await farm.fetch(a)).json()["_id"] == ids[index]
        await farm.update(a, ids[index], task_status="failed")
        # Soft: b is still there, even after a's third failure blocklists a.
        assert farm.task(ids[index]).status == "soft-failed"
    from flamenco_manager.storage import workers as worker_store

    with farm.manager.database.transaction() as connection:
        assert worker_store.blocked_workers(connection, str(job.id), "sleep") == {a.id}
    for index in range(3):
        assert (await farm.fetch(b)).json()["_id"] == ids[index]
        await farm.update(b, ids[index], task_status="failed")
        assert farm.task(ids[index]).status == "failed"
    with farm.manager.database.transaction() as connection:
        assert worker_store.blocked_workers(connection, str(job.id), "sleep") == {a.id, b.id}
    assert farm.task(ids[3]).status == "queued"
    assert farm.job_status(job) == "active"


async def test_soft_then_hard_with_two_workers(farm: Farm) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(20)))
    first_id = farm.task_ids(job)[0]
    a = await farm.register("a")
    b = await farm.register("b")
    await farm.fetch(a)
    await farm.update(a, first_id, task_status="failed")
    assert farm.task(first_id).status == "soft-failed"
    assert (await farm.fetch(b)).json()["_id"] == first_id
    await farm.update(b, first_id, task_status="failed")
    assert farm.task(first_id).status == "failed"


async def test_the_softfail_limit_makes_the_third_failure_hard(farm: Farm) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(30)))
    task_id = farm.task_ids(job)[0]
    workers = [await farm.register(f"w{i}") for i in range(4)]
    statuses = []
    for worker in workers[:3]:
        assert (await farm.fetch(worker)).json()["_id"] == task_id
        await farm.update(worker, task_id, task_status="failed")
        statuses.append(farm.task(task_id).status)
    assert statuses == ["soft-failed", "soft-failed", "failed"]


async def test_one_failed_task_in_four_fails_the_job_and_cancels_the_rest(farm: Farm) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(4)))
    ids = farm.task_ids(job)
    only = await farm.register("only")
    await farm.fetch(only)
    # Nobody else can run it: a hard failure, 1 of 4 tasks, so the job fails.
    await farm.update(only, ids[0], task_status="failed")
    assert farm.task(ids[0]).status == "failed"
    assert farm.job_status(job) == "failed"
    assert [farm.task(task_id).status for task_id in ids[1:]] == ["canceled"] * 3
    assert (await farm.fetch(only)).status_code == 204


async def test_requeueing_one_task_that_would_fail_the_job_again_is_refused_saying_why(
    farm: Farm,
) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(4)))
    failed, canceled, *_ = farm.task_ids(job)
    only = await farm.register("only")
    await farm.fetch(only)
    await farm.update(only, failed, task_status="failed")
    assert (farm.job_status(job), farm.task(canceled).status) == ("failed", "canceled")
    # 1 of 4 tasks still failed: the job would fail at once and cancel the task again. It used
    # to answer with the task, canceled, as if it had been requeued.
    with pytest.raises(Conflict, match=r"would fail its job again at once: .*1 of its 4 tasks"):
        farm.manager.jobs.requeue_task(canceled)
    assert (farm.job_status(job), farm.task(canceled).status) == ("failed", "canceled")
    # Requeueing the failed task first brings the job back; then the other one may follow.
    assert farm.manager.jobs.requeue_task(failed).status == "queued"
    assert farm.manager.jobs.requeue_task(canceled).status == "queued"
    assert farm.job_status(job) == "active"


async def test_an_update_whose_writes_fail_leaves_no_log_behind(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database lost in the middle of a completion (PostgreSQL restarted) answers 503 and the
    # worker sends the update again: its log lines were appended before the writes that failed,
    # and so went into the log twice.
    from flamenco_manager.services import task_updates

    worker, task_id = await _running(farm)
    job_id = str(farm.task(task_id).job_id)

    with monkeypatch.context() as patched:
        patched.setattr(task_updates, "refresh_job_status", database_lost)
        answer = await farm.update(worker, task_id, task_status="completed", log="Task completed")
    assert answer.status_code == 503
    assert b"Task completed" not in farm.manager.logs.read_whole(job_id, task_id)
    answer = await farm.update(worker, task_id, task_status="completed", log="Task completed")
    assert answer.status_code == 204
    assert farm.manager.logs.read_whole(job_id, task_id).count(b"Task completed") == 1
    assert farm.task(task_id).status == "completed"


@pytest.mark.parametrize("status", ["active", "completed"])
async def test_an_update_whose_commit_fails_takes_its_log_lines_back(
    farm: Farm, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """The worker is answered 503 and sends the update again: its lines go in once."""
    worker, task_id = await _running(farm)
    job_id = str(farm.task(task_id).job_id)
    assert (await farm.update(worker, task_id, log="frame 1 started")).status_code == 204
    before = farm.manager.logs.read_whole(job_id, task_id)

    fail_next_commit(farm.manager.database.engine, monkeypatch)
    answer = await farm.update(worker, task_id, task_status=status, log="frame 1 done\nsaved")
    assert answer.status_code == 503
    assert farm.manager.logs.read_whole(job_id, task_id) == before
    answer = await farm.update(worker, task_id, task_status=status, log="frame 1 done\nsaved")
    assert answer.status_code == 204
    assert farm.manager.logs.read_whole(job_id, task_id) == before + b"frame 1 done\nsaved\n"
    assert farm.task(task_id).status == status


async def test_a_job_whose_waiting_task_has_a_failed_parent_fails_once_nothing_runs(
    farm: Farm,
) -> None:
    # 1 hard failure in 20 tasks is under the 10 % limit, but the failed task's child can never
    # start: the job used to stay active for ever, the child queued.
    job = farm.job(spec("parent"), spec("child", parents=(0,)), *(spec(f"t{i}") for i in range(18)))
    parent, child, *others = farm.task_ids(job)
    only = await farm.register("only")
    assert (await farm.fetch(only)).json()["_id"] == parent
    await farm.update(only, parent, task_status="failed")  # nobody else may run it: hard
    assert farm.task(parent).status == "failed"
    for task_id in others:
        assert farm.job_status(job) == "active"
        assert (await farm.fetch(only)).json()["_id"] == task_id
        await farm.update(only, task_id, task_status="completed")
    assert farm.job_status(job) == "failed"
    record = farm.manager.jobs.get(str(job.id))
    assert record.status_reason == (
        f"Failing job {job.id} because 1 of its tasks wait for a parent that failed or was canceled"
    )
    assert farm.task(child).status == "canceled"
    assert (await farm.fetch(only)).status_code == 204


async def test_canceling_a_task_whose_children_wait_fails_the_job_when_nothing_runs(
    farm: Farm,
) -> None:
    job = farm.job(spec("a"), spec("b", parents=(0,)), spec("c", parents=(1,)), spec("d"))
    a, b, c, d = farm.task_ids(job)
    worker = await farm.register()
    assert (await farm.fetch(worker)).json()["_id"] == a
    await farm.update(worker, a, task_status="completed")
    assert (await farm.fetch(worker)).json()["_id"] == b
    farm.manager.jobs.cancel_task(b)  # running: cancel-requested until its worker stops
    await farm.update(worker, b, task_status="canceled")
    # d waits and may start: the job goes on.
    assert farm.job_status(job) == "active"
    assert (await farm.fetch(worker)).json()["_id"] == d
    await farm.update(worker, d, task_status="completed")
    assert farm.job_status(job) == "failed"
    assert [farm.task(task_id).status for task_id in (a, b, c, d)] == [
        "completed",
        "canceled",
        "canceled",
        "completed",
    ]
