"""``POST /task``: the scheduler conformance checklist (spec/manager-behaviour.md §17.1)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import pytest

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.scheduler import Assigned
from flamenco_manager.services.workers import Peer
from flamenco_manager.storage import tasks as task_store
from flamenco_protocol.documents import WorkerRegistration

from .harness import Farm, database_lost, fail_next_commit, spec

pytestmark = pytest.mark.anyio


async def test_a_worker_gets_its_task_type_with_variables_replaced(farm: Farm) -> None:
    blender = [{"name": "blender_render", "settings": {"blender_cmd": "{blender} --bg", "n": 3}}]
    job = farm.job(
        spec("render", task_type="blender-render", commands=blender),
        spec("sleep", task_type="sleep"),
    )
    linux = await farm.register("linux", ["blender-render"], platform="linux")
    windows = await farm.register("windows", ["sleep", "blender-render"], platform="windows")

    response = await farm.fetch(linux)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content.endswith(b"\n")
    task = response.json()
    assert task["_id"] == farm.task_ids(job)[0]
    assert task["status"] == "active"
    assert task["job_type"] == "test"
    assert task["commands"][0]["settings"] == {
        "blender_cmd": "/farm/path/to/blender --bg",
        "n": 3,
    }
    # The stored task keeps its placeholder.
    assert farm.task(task["_id"]).commands == blender

    second = (await farm.fetch(windows)).json()
    assert second["name"] == "sleep"


async def test_higher_priority_first_then_job_priority_dominates(farm: Farm) -> None:
    low = farm.job(spec("low", priority=10), spec("high", priority=90), priority=5)
    top = farm.job(spec("job-top", priority=50), priority=10)
    worker = await farm.register()
    names = [(await farm.fetch(worker)).json()["name"]]
    await farm.update(worker, farm.task_ids(top)[0], task_status="completed")
    names.append((await farm.fetch(worker)).json()["name"])
    await farm.update(worker, farm.task_ids(low)[1], task_status="completed")
    names.append((await farm.fetch(worker)).json()["name"])
    assert names == ["job-top", "high", "low"]


async def test_a_worker_of_several_task_types_gets_the_best_task_of_any(farm: Farm) -> None:
    # One probe per task type; the best of their candidates wins: job priority, then task
    # priority, then the oldest.
    first = farm.job(spec("sleep-low", task_type="sleep", priority=90), priority=10)
    second = farm.job(
        spec("render-top", task_type="blender-render", priority=10),
        spec("render-high", task_type="blender-render", priority=80),
        priority=50,
    )
    third = farm.job(
        spec("debug-high", task_type="debug", priority=80),
        spec("sleep-high", task_type="sleep", priority=80),
        priority=50,
    )
    worker = await farm.register("many", ["sleep", "debug", "blender-render"])
    names = []
    for _ in range(5):
        task = (await farm.fetch(worker)).json()
        names.append(task["name"])
        await farm.update(worker, task["_id"], task_status="completed")
    assert names == ["render-high", "debug-high", "sleep-high", "render-top", "sleep-low"]
    assert {farm.job_status(job) for job in (first, second, third)} == {"completed"}


async def test_equal_priorities_go_oldest_first(farm: Farm) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(5)))
    seen = []
    for index in range(5):
        worker = await farm.register(f"w{index}")
        seen.append((await farm.fetch(worker)).json()["_id"])
    assert seen == farm.task_ids(job)


async def test_a_task_runs_only_when_all_parents_completed(farm: Farm) -> None:
    job = farm.job(spec("a"), spec("b"), spec("child", parents=(0, 1)))
    a, b, child = farm.task_ids(job)
    one, two, three = [await farm.register(f"w{i}") for i in range(3)]
    assert (await farm.fetch(one)).json()["_id"] == a
    assert (await farm.fetch(two)).json()["_id"] == b
    # Both parents running: nothing for the third worker.
    assert (await farm.fetch(three)).status_code == 204
    await farm.update(one, a, task_status="completed")
    # One parent completed, one active: still nothing.
    assert (await farm.fetch(three)).status_code == 204
    await farm.update(two, b, task_status="completed")
    response = await farm.fetch(three)
    assert response.json()["_id"] == child
    assert response.json()["parents"] == [a, b]


async def test_a_requeued_completed_parent_blocks_its_child_again(farm: Farm) -> None:
    job = farm.job(spec("parent"), spec("child", parents=(0,)))
    parent, child = farm.task_ids(job)
    worker = await farm.register()
    await farm.fetch(worker)
    await farm.update(worker, parent, task_status="completed")
    assert farm.task(child).runnable
    await farm.fetch(worker)
    await farm.update(worker, child, task_status="completed")
    assert farm.job_status(job) == "completed"
    # Requeueing a completed job runs every task again, the child after its parent.
    farm.manager.jobs.request_status(str(job.id), "requeued")
    assert [farm.task(task_id).status for task_id in (parent, child)] == ["queued", "queued"]
    assert farm.task(parent).runnable
    assert not farm.task(child).runnable
    assert (await farm.fetch(worker)).json()["_id"] == parent


async def test_a_worker_with_a_running_task_gets_that_task_again(farm: Farm) -> None:
    job = farm.job(spec("first", priority=10))
    worker = await farm.register()
    first = (await farm.fetch(worker)).json()
    farm.job(spec("urgent", priority=100), priority=100)
    again = (await farm.fetch(worker)).json()
    assert again["_id"] == first["_id"] == farm.task_ids(job)[0]


@pytest.mark.parametrize(("final", "then"), [("completed", 1), ("failed", 1), ("canceled", 0)])
async def test_finished_tasks_do_not_count_as_running(farm: Farm, final: str, then: int) -> None:
    job = farm.job(spec("one"), spec("two"))
    ids = farm.task_ids(job)
    worker = await farm.register()
    await farm.register("other")  # so that a failure is soft
    assert (await farm.fetch(worker)).json()["_id"] == ids[0]
    await farm.update(worker, ids[0], task_status=final)
    # A task its worker canceled on its own, nobody asking, is queued again, first in line.
    assert (await farm.fetch(worker)).json()["_id"] == ids[then]


async def test_no_task_types_is_406_and_a_pending_request_423_first(farm: Farm) -> None:
    worker = await farm.register(task_types=[])
    response = await farm.fetch(worker)
    assert response.status_code == 406
    assert response.text == "You do not support any task types.\n"
    farm.manager.workers.request_status(worker.id, "asleep", lazy=True)
    response = await farm.fetch(worker)
    assert response.status_code == 423
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status_requested": "asleep"}


async def test_get_is_accepted_too(farm: Farm) -> None:
    farm.job(spec())
    worker = await farm.register()
    assert (await farm.call(worker, "GET", "/task")).status_code == 200


async def test_blocklisted_job_types_are_skipped(farm: Farm) -> None:
    blocked_job = farm.job(spec("blocked"), priority=90)
    other_job = farm.job(spec("other"), priority=10)
    worker = await farm.register()
    bystander = await farm.register("bystander")
    from flamenco_manager.storage import workers as worker_store

    with farm.manager.database.transaction() as connection:
        worker_store.block(connection, worker.id, str(blocked_job.id), "sleep", farm.clock())
    assert (await farm.fetch(worker)).json()["_id"] == farm.task_ids(other_job)[0]
    # Another worker's blocklist does not matter.
    assert (await farm.fetch(bystander)).json()["_id"] == farm.task_ids(blocked_job)[0]


async def test_a_soft_failed_task_goes_to_another_worker_with_its_failures(farm: Farm) -> None:
    job = farm.job(spec("fragile"), spec("later"))
    fragile, later = farm.task_ids(job)
    first = await farm.register("first")
    second = await farm.register("second")
    assert (await farm.fetch(first)).json()["_id"] == fragile
    await farm.update(first, fragile, task_status="failed")
    assert farm.task(fragile).status == "soft-failed"
    # The worker that failed it gets another task; the other worker gets the soft-failed one.
    assert (await farm.fetch(first)).json()["_id"] == later
    retried = (await farm.fetch(second)).json()
    assert retried["_id"] == fragile
    assert retried["status"] == "active"
    assert retried["failed_by_workers"] == [{"id": first.id, "identifier": "10.0.0.5 (first)"}]
    assert (await farm.may_i_run(second, fragile))["may_keep_running"] is True


async def test_assignment_is_logged_and_shown_as_activity(farm: Farm) -> None:
    job = farm.job(spec())
    worker = await farm.register("render-07")
    task_id = farm.task_ids(job)[0]
    await farm.fetch(worker)
    expected = f"Manager assigned task {task_id} to worker 10.0.0.5 (render-07)"
    assert farm.task(task_id).activity == expected
    assert expected in farm.manager.logs.read_whole(str(job.id), task_id).decode()
    assert farm.worker(worker).current_task == task_id
    assert farm.job_status(job) == "active"


async def test_fetching_wakes_a_worker_even_when_answered_423(farm: Farm) -> None:
    worker = await farm.register()
    farm.manager.workers.acknowledge(worker.id, "asleep")
    farm.manager.workers.request_status(worker.id, "shutdown", lazy=False)
    assert (await farm.fetch(worker)).status_code == 423
    record = farm.worker(worker)
    assert record.status == "awake"
    assert record.software == "Flamenco-Worker/2.5"
    assert record.address == "10.0.0.5"


async def test_concurrent_fetches_never_share_a_task(farm: Farm) -> None:
    job = farm.job(*(spec(f"t{i}") for i in range(30)))
    workers = [await farm.register(f"w{i}") for i in range(40)]
    responses = await asyncio.gather(*(farm.fetch(worker) for worker in workers))
    given = [response.json()["_id"] for response in responses if response.status_code == 200]
    assert sorted(given) == sorted(farm.task_ids(job))
    assert sum(response.status_code == 204 for response in responses) == 10


def test_two_managers_on_one_database_never_share_a_task(tmp_path: Path, database_url: str) -> None:
    """Two manager objects (two connection pools) claiming from one database in threads."""
    data = tmp_path / "data"
    first = Manager(Settings(data_dir=data, database=database_url))
    second = Manager(Settings(data_dir=data, database=database_url))
    job = first.jobs.create_job(name="j", job_type="t", tasks=[spec(f"t{i}") for i in range(60)])
    registration = WorkerRegistration(secret="s", supported_task_types=("sleep",), nickname="w")
    pairs = [
        (manager, str(manager.workers.register(registration, "127.0.0.1:1").id))
        for manager in [first, second] * 40
    ]

    def fetch(pair: tuple[Manager, str]) -> str | None:
        manager, worker_id = pair
        result = manager.scheduler.fetch_task(worker_id, Peer("127.0.0.1"))
        return str(result.task.id) if isinstance(result, Assigned) else None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        given = [task for task in pool.map(fetch, pairs) if task is not None]
    with first.database.transaction() as connection:
        expected = {str(task.id) for task in task_store.list_of_job(connection, str(job.id))}
    assert len(given) == len(set(given)) == 60
    assert set(given) == expected
    first.close()
    second.close()


async def test_a_task_run_again_and_again_keeps_its_newest_older_logs(farm: Farm) -> None:
    # The default keeps 20 older runs: rotation stays cheap however often a task is re-run.
    job = farm.job(spec("flaky"))
    (task_id,) = farm.task_ids(job)
    worker = await farm.register()
    for _ in range(23):
        assert (await farm.fetch(worker)).json()["_id"] == task_id
        assert (await farm.call(worker, "POST", f"/tasks/{task_id}/return")).status_code == 204
    logs = farm.manager.logs
    assert [number for number, _ in logs.rotated(str(job.id), task_id)] == list(range(1, 21))
    first_line = logs.read_whole(str(job.id), task_id, 20).splitlines()[0]
    assert b"Manager assigned task" in first_line


async def test_a_claim_whose_writes_fail_starts_no_run_of_the_tasks_log(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database lost in the middle of a claim (PostgreSQL restarted) answers 503 and the
    # worker asks again: the log's run, started before the failure, was rotated out as a run
    # of its own when the same task was claimed again.
    from flamenco_manager.services import scheduler

    job = farm.job(spec())
    worker = await farm.register("w")

    with monkeypatch.context() as patched:
        patched.setattr(scheduler, "refresh_job_status", database_lost)
        assert (await farm.fetch(worker)).status_code == 503
    (task_id,) = farm.task_ids(job)
    assert not farm.manager.logs.path(str(job.id), task_id).exists()
    assert (await farm.fetch(worker)).json()["_id"] == task_id
    assert farm.manager.logs.rotated(str(job.id), task_id) == []


async def test_a_claim_whose_commit_fails_leaves_no_run_behind(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run's log goes; a re-run's previous run stays as the one before the next."""
    job = farm.job(spec())
    (task_id,) = farm.task_ids(job)
    logs, job_id = farm.manager.logs, str(job.id)
    worker = await farm.register("w")

    fail_next_commit(farm.manager.database.engine, monkeypatch)
    assert (await farm.fetch(worker)).status_code == 503
    assert not logs.path(job_id, task_id).exists()
    assert (await farm.fetch(worker)).json()["_id"] == task_id
    assert logs.read_whole(job_id, task_id).count(b"Manager assigned task") == 1
    assert logs.rotated(job_id, task_id) == []

    first_run = logs.read_whole(job_id, task_id)
    assert (await farm.call(worker, "POST", f"/tasks/{task_id}/return")).status_code == 204
    fail_next_commit(farm.manager.database.engine, monkeypatch)
    assert (await farm.fetch(worker)).status_code == 503
    assert (await farm.fetch(worker)).json()["_id"] == task_id
    assert logs.read_whole(job_id, task_id).count(b"Manager assigned task") == 1
    assert [number for number, _ in logs.rotated(job_id, task_id)] == [1]
    assert logs.read_whole(job_id, task_id, run=1).startswith(first_run)


async def test_a_worker_asking_for_work_runs_none_of_its_canceling_tasks(farm: Farm) -> None:
    # A worker restarted while its task was being canceled asks for work without stopping it.
    job = farm.job(spec("first"), spec("second"))
    first, second = farm.task_ids(job)
    worker = await farm.register()
    assert (await farm.fetch(worker)).json()["_id"] == first
    farm.manager.jobs.cancel_task(first)
    assert farm.task(first).status == "cancel-requested"
    assert (await farm.fetch(worker)).json()["_id"] == second
    assert farm.task(first).status == "canceled"
    assert "the worker asked for new work" in farm.task(first).activity
    # It used to hold both: the canceled task's timeout then took the running one from it.
    for _ in range(3):
        farm.clock.advance(minutes=4)
        await farm.update(worker, second, task_status="active", activity="rendering")
        farm.manager.housekeeping.check_timeouts()
    assert (farm.task(second).status, farm.task(second).worker_id) == ("active", worker.id)
    assert farm.worker(worker).status == "awake"


async def test_a_requeued_job_gives_its_canceling_tasks_back_to_the_workers_running_them(
    farm: Farm,
) -> None:
    job = farm.job(spec("a", task_type="a"), *(spec(f"b{i}", task_type="b") for i in range(3)))
    a, b0, b1, _ = farm.task_ids(job)
    only_a, runs_b = await farm.register("a", ("a",)), await farm.register("b", ("b",))
    assert (await farm.fetch(only_a)).json()["_id"] == a
    assert (await farm.fetch(runs_b)).json()["_id"] == b0
    await farm.update(only_a, a, task_status="failed")  # nobody else runs type a: 1 in 4 failed
    assert (farm.job_status(job), farm.task(b0).status) == ("failed", "cancel-requested")
    farm.manager.jobs.request_status(str(job.id), "requeued")
    # b0 goes back to the worker still running it; queued, it went to a second worker at once.
    assert (farm.task(b0).status, farm.task(b0).worker_id) == ("active", runs_b.id)
    assert (await farm.may_i_run(runs_b, b0))["may_keep_running"] is True
    another_b = await farm.register("b2", ("b",))
    assert (await farm.fetch(another_b)).json()["_id"] == b1
    await farm.update(runs_b, b0, task_status="completed")
    assert farm.task(b0).status == "completed"


async def test_a_canceling_task_requeued_alone_goes_back_to_its_worker(farm: Farm) -> None:
    job = farm.job(spec("first"), spec("second"))
    first, _ = farm.task_ids(job)
    worker = await farm.register()
    assert (await farm.fetch(worker)).json()["_id"] == first
    farm.manager.jobs.cancel_task(first)
    assert farm.manager.jobs.requeue_task(first).status == "active"
    assert (await farm.may_i_run(worker, first))["may_keep_running"] is True
    # A worker that had stopped it returns it: it waits for the next worker.
    assert (await farm.call(worker, "POST", f"/tasks/{first}/return")).status_code == 204
    assert farm.task(first).status == "claimed-by-manager"
