"""End-to-end (testing ladder level 4): ``flamenco-manager serve`` under uvicorn and two
``flamenco-worker`` processes on 127.0.0.1, running a job of built-in commands.

The workers run with their waits made short (config keys, see ``farm.FAST_WORKER_CONFIG``); the
manager with its own defaults unless a test asks for short timeouts. Jobs are submitted through
the manager's services against its database (SQLite, or PostgreSQL for the tests that take
``database_url``) from this process, and the state is read back the same way and from the task
log files.
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path

import pytest

from flamenco_manager.services.jobs import TaskSpec
from flamenco_protocol.statuses import JobStatus, TaskStatus, WorkerStatus

from .farm import Farm, wait_for

pytestmark = pytest.mark.slow

TASK_TYPES = "sleep file-management"
RENDER_SECONDS = 3.0
ASSIGNED = "Manager assigned task"


def shell(script: str) -> dict[str, object]:
    """An ``exec`` command running ``script`` with /bin/sh."""
    return {"name": "exec", "settings": {"cmd": f"/bin/sh -c {shlex.quote(script)}"}}


def fan_out_fan_in(work: Path) -> tuple[list[TaskSpec], dict[str, list[str]]]:
    """Six tasks: prepare -> four renders -> merge; and the output lines each must log."""
    script = work / "scene.py"
    frames = work / "frames"
    tasks = [
        TaskSpec(
            name="prepare",
            task_type="file-management",
            commands=[
                {
                    "name": "create_python_file",
                    "settings": {"filepath": str(script), "contents": "print('frame')\n"},
                },
                shell("echo prepare-output"),
            ],
        )
    ]
    expected = {"prepare": ["prepare-output", f"Creating Python file {script}"]}
    for index in range(1, 5):
        name = f"render-{index}"
        tasks.append(
            TaskSpec(
                name=name,
                task_type="sleep",
                parents=(0,),
                commands=[
                    {"name": "echo", "settings": {"message": f"{name} begins"}},
                    {"name": "sleep", "settings": {"time_in_seconds": RENDER_SECONDS}},
                    shell(f"echo {name}-output"),
                    {
                        "name": "copy_file",
                        "settings": {"src": str(script), "dest": str(frames / f"{name}.py")},
                    },
                ],
            )
        )
        expected[name] = [f"{name} begins", f"{name}-output", f"Sleeping for {RENDER_SECONDS}"]
    tasks.append(
        TaskSpec(
            name="merge",
            task_type="file-management",
            parents=(1, 2, 3, 4),
            commands=[
                shell(f"echo frames: $(ls {shlex.quote(str(frames))} | wc -l)"),
                {"name": "echo", "settings": {"message": "merge done"}},
            ],
        )
    )
    expected["merge"] = ["frames: 4", "merge done"]
    for lines in expected.values():
        lines.append("Task completed")
    return tasks, expected


def test_manager_killed_mid_job_loses_no_update(
    database_url: str, farm: Farm, tmp_path: Path
) -> None:
    # database_url comes first: its schema is dropped after the farm's processes are killed.
    started = time.monotonic()
    farm.database = database_url
    farm.start_manager()
    specs, expected = fan_out_fan_in(tmp_path / "work")
    job = farm.manager.jobs.create_job(name="e2e fan-out", job_type="e2e", tasks=specs)
    job_id = str(job.id)
    workers = {name: farm.start_worker(name, TASK_TYPES) for name in ("w1", "w2")}

    # Both workers render when the manager dies.
    def two_renders_running() -> list[str]:
        running = [
            str(task.id)
            for task in farm.tasks(job_id)
            if task.status == TaskStatus.ACTIVE and task.name.startswith("render")
        ]
        return running if len(running) == 2 else []

    in_flight = set(wait_for("two render tasks to run", two_renders_running, timeout=30))
    time.sleep(1.0)  # let some log lines reach the manager first
    farm.kill_manager()
    killed_at = time.monotonic()

    # The outage: the renders finish, and their updates wait in each worker's queue.
    def queues_hold_completions() -> bool:
        return all(
            any(row.get("task_status") == "completed" for row in farm.queued_updates(name))
            for name in workers
        )

    wait_for("completed updates queued by both workers", queues_hold_completions, timeout=20)
    for name in workers:
        assert all(row["task_id"] in in_flight for row in farm.queued_updates(name))
    time.sleep(1.0)  # the workers also fail to fetch a task for a while
    outage = time.monotonic() - killed_at
    farm.start_manager()

    # After the restart: everything queued is delivered and the job completes.
    wait_for(
        "the job to complete",
        lambda: farm.job_status(job_id) == JobStatus.COMPLETED,
        timeout=60,
    )
    wait_for(
        "both queues to drain",
        lambda: not any(farm.queued_updates(name) for name in workers),
        timeout=10,
    )
    job_seconds = time.monotonic() - started

    tasks = farm.tasks(job_id)
    assert [task.status for task in tasks] == [TaskStatus.COMPLETED] * 6
    assert {task.worker_nickname for task in tasks} == {"w1", "w2"}, "both workers worked"
    for task in tasks:
        runs = farm.log_runs(job_id, str(task.id))
        assigned = sum(run.count(ASSIGNED) for run in runs)
        # Each task runs once, also those running at the kill: they went on on their workers,
        # whose updates (the final `completed` among them) reached the restarted manager.
        # Until that `completed` arrives the manager still counts the task as its worker's, so
        # a worker asking for work before delivering its queue got the same task again and ran
        # it a second time; it delivers first now (test_no_task_is_fetched_while_a_finished_
        # tasks_updates_wait in tests/worker_client/test_update_queue.py).
        assert assigned == 1, f"{task.name} was assigned {assigned} times:\n" + "\n".join(runs)
        log = runs[-1]
        for line in expected[task.name]:
            assert line in log, f"{line!r} not in the log of {task.name}:\n{log}"
        assert log.count("Task completed") == 1, log
        lines = log.splitlines()
        assert len(lines) == len(set(lines)), f"an update was stored twice:\n{log}"

    # The workers stop cleanly: exit 0 after signing off; the manager shows them offline.
    for child in workers.values():
        child.signal(signal.SIGTERM)
    for child in workers.values():
        assert child.wait_exit(timeout=15) == 0, child.text()
        assert "signed off" in child.text()
    statuses = {worker.nickname: worker.status for worker in farm.manager.workers.list()}
    assert statuses == {"w1": WorkerStatus.OFFLINE, "w2": WorkerStatus.OFFLINE}
    print(f"job done in {job_seconds:.1f} s, manager away for {outage:.1f} s")


def test_worker_killed_mid_task_its_task_goes_to_the_other(
    database_url: str, farm: Farm, tmp_path: Path
) -> None:
    # On PostgreSQL the timeout checker runs in the process that holds the leadership: the
    # served manager, not this process's view of its database. (database_url comes first: its
    # schema is dropped after the farm's processes are killed.)
    farm.database = database_url
    farm.start_manager(
        "--active-worker-timeout-interval",
        "2s",
        "--active-task-timeout-interval",
        "10s",
        "--timeout-check-initial-delay",
        "0s",
        "--timeout-check-interval",
        "0.5s",
    )
    job = farm.manager.jobs.create_job(
        name="e2e worker lost",
        job_type="e2e",
        tasks=[
            TaskSpec(
                name="long",
                task_type="sleep",
                commands=[
                    {"name": "sleep", "settings": {"time_in_seconds": 3}},
                    shell("echo long-output"),
                ],
            )
        ],
    )
    job_id = str(job.id)
    doomed = farm.start_worker("w1", TASK_TYPES)
    (task,) = farm.tasks(job_id)
    wait_for(
        "w1 to run the task",
        lambda: farm.tasks(job_id)[0].status == TaskStatus.ACTIVE,
        timeout=20,
    )
    survivor = farm.start_worker("w2", TASK_TYPES)
    wait_for(
        "w2 to ask for work",
        lambda: any(
            worker.nickname == "w2" and worker.status == WorkerStatus.AWAKE
            for worker in farm.manager.workers.list()
        ),
        timeout=20,
    )
    assert farm.tasks(job_id)[0].worker_nickname == "w1"

    doomed.kill_group()
    killed_at = time.monotonic()
    wait_for(
        "the job to complete",
        lambda: farm.job_status(job_id) == JobStatus.COMPLETED,
        timeout=30,
    )
    recovery = time.monotonic() - killed_at

    (task,) = farm.tasks(job_id)
    assert task.worker_nickname == "w2"
    first, *_, last = farm.log_runs(job_id, str(task.id))
    assert "to worker 127.0.0.1 (w1)" in first
    assert "re-queued task after unassigning it from worker 127.0.0.1 (w1)" in first
    assert "timed out" in first
    assert "to worker 127.0.0.1 (w2)" in last
    assert "long-output" in last
    assert "Task completed" in last
    statuses = {worker.nickname: worker.status for worker in farm.manager.workers.list()}
    assert statuses["w1"] == WorkerStatus.TIMEOUT

    survivor.signal(signal.SIGTERM)
    assert survivor.wait_exit(timeout=15) == 0, survivor.text()
    print(f"task re-run by w2, done {recovery:.1f} s after w1 was killed")


def test_a_worker_the_manager_forgot_registers_again_and_works_on(farm: Farm) -> None:
    # A worker the manager no longer knows got 401 for ever: its running task went on (though
    # the manager had queued it again), its updates waited in its queue, which held back every
    # fetch, and nothing ever told it to register again.
    import shutil
    from datetime import timedelta

    import httpx

    farm.start_manager()
    job = farm.manager.jobs.create_job(
        name="forgotten",
        job_type="e2e",
        tasks=[
            TaskSpec(
                name="long",
                task_type="sleep",
                commands=[{"name": "sleep", "settings": {"time_in_seconds": 4}}],
            )
        ],
    )
    job_id = str(job.id)
    worker = farm.start_worker("w1", TASK_TYPES)

    # Forgotten while it runs a task (an operator's "forget worker"): the task is queued again,
    # the worker stops it, registers anew and gets it back.
    (task,) = wait_for(
        "the task to run",
        lambda: [t for t in farm.tasks(job_id) if t.status == TaskStatus.ACTIVE],
        timeout=30,
    )
    first_id = str(task.worker_id)
    token = farm.manager.mint_user_token("operator", timedelta(hours=1))
    forgot = httpx.delete(
        f"{farm.url}api/workers/{first_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert forgot.status_code == 204, forgot.text
    wait_for("the job to complete", lambda: farm.job_status(job_id) == JobStatus.COMPLETED, 30)
    (done,) = farm.tasks(job_id)
    second_id = str(done.worker_id)
    assert second_id != first_id
    assert [w.nickname for w in farm.manager.workers.list()] == ["w1"]

    # The manager's database replaced (a new data directory): the worker joins the new one.
    farm.kill_manager()
    farm.close_services()
    shutil.rmtree(farm.data_dir)
    farm.start_manager()
    again = farm.manager.jobs.create_job(
        name="after the new database",
        job_type="e2e",
        tasks=[TaskSpec(name="quick", task_type="sleep", commands=[shell("echo again")])],
    )
    wait_for(
        "the job to complete",
        lambda: farm.job_status(str(again.id)) == JobStatus.COMPLETED,
        timeout=30,
    )
    (third,) = [w for w in farm.manager.workers.list() if w.nickname == "w1"]
    assert str(third.id) not in (first_id, second_id)
    assert worker.text().count("registering again") == 2, worker.text()
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=15) == 0, worker.text()
