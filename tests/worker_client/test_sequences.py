"""Our worker's request sequences for the scenarios of spec/worker.md §10, against the real one's.

A fake manager answers as the spec's stubs did; the recorded requests are compared with the
real worker's: same endpoints, methods, auth, body keys and answers, in the same order. Timings
are the real worker's divided by about 100, keeping their ratios.

Compared loosely, as timing decides them and the real worker's own runs vary:
* ``/may-i-run`` polls are counted separately (how many fit in a task depends on the clock);
* ``/output-produced`` is checked separately (it raced the ``active`` update in the real
  worker too);
* consecutive identical requests count once (``/task`` answered 204 every few seconds).

Where we differ on purpose, the comment says so (docs/compatibility.md lists why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from flamenco_protocol import ObjectId
from flamenco_worker_client import Credentials, CredentialStore
from flamenco_worker_client.reporter import ReportIntervals
from flamenco_worker_client.worker import EXIT_OK, EXIT_REFUSED, Worker

from .fake_manager import WORKER_ID, FakeManager, Recorded, task, wait_for
from .helpers import fast_timings, make_worker

TASK_A = "5f1e0c0a2b3c4d5e6f70a101"
TASK_B = "5f1e0c0a2b3c4d5e6f70a102"
TASK_C = "5f1e0c0a2b3c4d5e6f70a103"
TASK_D = "5f1e0c0a2b3c4d5e6f70a104"

REGISTRATION = ("nickname", "platform", "secret", "supported_task_types")
SIGN_ON = ("nickname", "supported_task_types")
UPDATE = (
    "activity",
    "command_progress_percentage",
    "current_command_idx",
    "metrics",
    "task_progress_percentage",
    "task_status",
)
UPDATE_LOG = tuple(sorted((*UPDATE, "log")))
LOG_ONLY = ("log",)
BASIC = f"basic:{WORKER_ID}"


@attrs.frozen
class Step:
    """One expected request: method, path template, auth, body keys, answer status."""

    method: str
    path: str
    auth: str = BASIC
    keys: tuple[str, ...] | None = None
    status: int = 204


@attrs.frozen
class AnyOrder:
    """Expected requests that may come in any order among themselves."""

    steps: tuple[Step, ...]


def _step(request: Recorded) -> Step:
    auth = "bearer" if request.auth == "bearer" else request.auth
    return Step(request.method, request.template, auth, request.keys, request.status)


def observed(manager: FakeManager) -> list[Step]:
    steps: list[Step] = []
    for request in manager.requests:
        if request.endpoint in ("may_i_run", "output_produced"):
            continue
        step = _step(request)
        if not steps or steps[-1] != step:
            steps.append(step)
    return steps


def assert_sequence(manager: FakeManager, expected: Sequence[Step | AnyOrder]) -> None:
    actual = observed(manager)
    position = 0
    for item in expected:
        group = item.steps if isinstance(item, AnyOrder) else (item,)
        chunk = actual[position : position + len(group)]
        assert sorted(chunk, key=repr) == sorted(group, key=repr), (
            f"at request {position}: expected {group}, got {chunk}\nwhole sequence: {actual}"
        )
        position += len(group)
    assert position == len(actual), f"unexpected extra requests: {actual[position:]}"


REGISTER = Step("POST", "/register-worker", "none", REGISTRATION, 200)
TASK_204 = Step("POST", "/task", status=204)
TASK_200 = Step("POST", "/task", status=200)
UPDATE_ACTIVE = Step("POST", "/tasks/{task_id}/update", keys=UPDATE)
UPDATE_WITH_LOG = Step("POST", "/tasks/{task_id}/update", keys=UPDATE_LOG)
UPDATE_LOG_ONLY = Step("POST", "/tasks/{task_id}/update", keys=LOG_ONLY)
SIGN_OFF = Step("POST", "/sign-off")
RETURN = Step("POST", "/tasks/{task_id}/return")


def ack(status: str) -> Step:
    return Step("POST", "/ack-status-change/{status}")


def shutdown_after(manager: FakeManager, worker: Worker, endpoint: str, count: int) -> None:
    def hook(request: Recorded) -> None:
        if request.endpoint == endpoint and len(manager.calls(endpoint)) >= count:
            worker.request_shutdown()

    manager.on_request = hook


async def run(worker: Worker, timeout: float = 20.0) -> int:
    return await asyncio.wait_for(worker.run_async(), timeout)


def store_credentials(data_dir: Path) -> None:
    CredentialStore(data_dir / "credentials.json").save(Credentials(ObjectId(WORKER_ID), "s" * 64))


def updates_of(manager: FakeManager, task_id: str) -> list[dict[str, Any]]:
    return [r.body for r in manager.calls("update_task") if task_id in r.path]


@pytest.mark.anyio
async def test_01_fresh_registration_idle_then_sigterm(tmp_path: Path) -> None:
    manager = FakeManager()
    worker = make_worker(manager, tmp_path)
    shutdown_after(manager, worker, "fetch_task", 3)
    assert await run(worker) == EXIT_OK
    assert_sequence(manager, [REGISTER, TASK_204, SIGN_OFF])
    registration = manager.calls("register_worker")[0].body
    assert len(registration["secret"]) == 64
    assert registration["supported_task_types"] == ["sleep", "file-management", "debug"]
    stored = CredentialStore(tmp_path / "credentials.json").load()
    assert stored == Credentials(ObjectId(WORKER_ID), registration["secret"])
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.anyio
async def test_02_stored_credentials_one_task(tmp_path: Path) -> None:
    store_credentials(tmp_path)
    manager = FakeManager()
    manager.tasks.append(
        task(
            TASK_A,
            ("echo", {"message": "hello"}),
            ("sleep", {"time_in_seconds": 0.3}),
            ("exec", {"cmd": "/bin/sh -c 'echo line one; echo line two'"}),
        )
    )
    # As in the real run, the task is shorter than both push intervals.
    timings = fast_timings(report=ReportIntervals(activity_interval=5, log_interval=5))
    worker = make_worker(manager, tmp_path, timings=timings)
    shutdown_after(manager, worker, "fetch_task", 4)
    assert await run(worker) == EXIT_OK
    assert_sequence(
        manager,
        [
            Step("POST", "/sign-on", keys=SIGN_ON),
            TASK_200,
            UPDATE_ACTIVE,
            UPDATE_WITH_LOG,
            TASK_204,
            SIGN_OFF,
        ],
    )
    assert manager.calls("may_i_run"), "the task ran long enough to be polled"
    active, completed = updates_of(manager, TASK_A)
    assert active["task_status"] == "active"
    assert active["activity"] == ""
    assert completed["task_status"] == "completed"
    assert completed["activity"] == "Task completed"
    assert completed["current_command_idx"] == 2
    assert completed["command_progress_percentage"] == 100
    assert "total" in completed["metrics"]["timing"]
    assert "> line two" in completed["log"]
    assert all(": " in line for line in completed["log"].splitlines())


@pytest.mark.anyio
async def test_03_long_task_may_i_run_no_asleep_awake_shutdown(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    manager = FakeManager()
    task_a = task(
        TASK_A,
        ("copy_file", {"src": str(tmp_path / "input.txt"), "dest": str(run_dir / "copied.txt")}),
        ("sleep", {"time_in_seconds": 0.45}),
        ("create_python_file", {"filepath": str(run_dir / "made.py"), "contents": "print(1)"}),
        ("move_to_final", {"src": str(run_dir), "dest": str(tmp_path / "no" / "such" / "dir")}),
        ("remove_file", {"path": str(run_dir / "made.py")}),
    )
    task_b = task(TASK_B, ("exec", {"cmd": "/bin/sh -c 'echo start; sleep 60; echo never'"}))
    (tmp_path / "input.txt").write_text("data")
    manager.script(
        "fetch_task",
        (200, task_a),
        (200, task_b),
        (423, {"status_requested": "asleep"}),
        (423, {"status_requested": "shutdown"}),
    )
    manager.script("status_change", (200, {"status_requested": "awake"}))
    refusal = {"may_keep_running": False, "reason": "interop test: task no longer assigned"}

    def may_i_run_answer() -> tuple[int, Any]:
        running_b = any(TASK_B in r.path for r in manager.calls("update_task"))
        polls_of_b = sum(TASK_B in r.path for r in manager.calls("may_i_run"))
        if running_b and polls_of_b >= 2:
            return 200, refusal
        return 200, {"may_keep_running": True}

    manager.script("may_i_run", *([may_i_run_answer] * 200))
    timings = fast_timings(report=ReportIntervals(activity_interval=0.3, log_interval=0.6))
    worker = make_worker(manager, tmp_path / "data", timings=timings)
    assert await run(worker) == EXIT_OK
    # The real worker also sent a late log-only update for task B while asleep (#19) and one
    # at shutdown (#23): log lines left over from a finished task. Ours sends each task's lines
    # with that task's last update, so neither appears.
    assert_sequence(
        manager,
        [
            REGISTER,
            TASK_200,
            UPDATE_ACTIVE,
            UPDATE_WITH_LOG,  # the deferred push during `sleep`, then `failed` (counted below)
            TASK_200,
            UPDATE_ACTIVE,
            UPDATE_LOG_ONLY,
            RETURN,
            Step("POST", "/task", status=423),
            ack("asleep"),
            Step("GET", "/status-change", status=200),
            ack("awake"),
            Step("POST", "/task", status=423),
            SIGN_OFF,
        ],
    )
    acks = [r.path for r in manager.calls("ack_status_change")]
    assert acks == ["/ack-status-change/asleep", "/ack-status-change/awake"]
    (produced,) = manager.calls("output_produced")
    assert produced.body == {"paths": [str(run_dir / "copied.txt")]}
    _active, deferred, failed = updates_of(manager, TASK_A)
    assert deferred["task_status"] == "active"
    assert deferred["activity"] == "starting sleep"
    assert deferred["current_command_idx"] == 1
    assert failed["task_status"] == "failed"
    assert failed["activity"].startswith(f"move_to_final.(task_id={TASK_A}, command_idx=3): ")
    assert "Error executing: " in failed["activity"]
    stopped = updates_of(manager, TASK_B)[-1]
    assert "stopped running this task, no longer allowed to run by Manager" in stopped["log"]


@pytest.mark.anyio
async def test_04_example_tasks_a_failing_one_and_shutdown(tmp_path: Path) -> None:
    base = tmp_path / "interop"
    job2, job3 = base / "job2", base / "job3"
    manager = FakeManager()
    manager.tasks.extend(
        [
            task(
                TASK_A,
                ("echo", {"message": "Hello from the interop test"}),
                ("sleep", {"time_in_seconds": 0.02}),
                ("exec", {"cmd": "/bin/sh -c 'echo line one; echo line two'"}),
            ),
            task(
                TASK_B,
                ("create_python_file", {"filepath": f"{job2}/made.py", "contents": "print()\n"}),
                ("copy_file", {"src": f"{job2}/made.py", "dest": f"{job2}/copy/made-copy.py"}),
                ("move_out_of_way", {"src": f"{job2}/copy"}),
                (
                    "move_with_counter",
                    {"src": f"{job2}/made.py", "dest": f"{job2}/final/2020_01_01-made.py"},
                ),
                ("remove_file", {"path": f"{job2}/final/2020_01_01_001-made.py"}),
                ("remove_tree", {"path": str(job2)}),
            ),
            task(
                TASK_C,
                ("exec", {"cmd": f"/bin/mkdir -p {job3}/frames"}),
                (
                    "exec",
                    {
                        "cmd": f"/bin/sh -c 'for i in 1 2 3; do echo frame $i > "
                        f"{job3}/frames/000$i.txt; done'"
                    },
                ),
                ("move_to_final", {"src": f"{job3}/frames", "dest": f"{job3}/final"}),
                ("log_a_lot", {"lines": 5}),
                ("remove_tree", {"path": str(job3)}),
            ),
            task(TASK_D, ("exec", {"cmd": "/bin/false"})),
        ]
    )
    manager.script("fetch_task", *[lambda: (200, manager.tasks.popleft())] * 4)
    manager.script("fetch_task", (423, {"status_requested": "shutdown"}))
    timings = fast_timings(report=ReportIntervals(activity_interval=5, log_interval=5))
    worker = make_worker(manager, tmp_path / "data", timings=timings)
    assert await run(worker) == EXIT_OK
    one_task = [TASK_200, UPDATE_ACTIVE, UPDATE_WITH_LOG]
    assert_sequence(manager, [REGISTER, *one_task * 4, Step("POST", "/task", status=423), SIGN_OFF])
    statuses = [updates_of(manager, t)[-1]["task_status"] for t in (TASK_A, TASK_B, TASK_C)]
    assert statuses == ["completed"] * 3
    failed = updates_of(manager, TASK_D)[-1]
    assert failed["task_status"] == "failed"
    assert failed["activity"].startswith(
        f"exec.(task_id={TASK_D}, command_idx=0): Error executing: Command /bin/false (pid="
    )
    assert failed["activity"].endswith("failed with status 1")
    assert len(manager.calls("output_produced")) == 1, "the second one is throttled"
    assert not job2.exists()
    assert not job3.exists()


@pytest.mark.anyio
async def test_05_error_codes(tmp_path: Path) -> None:
    store_credentials(tmp_path)
    manager = FakeManager()
    manager.script("sign_on", (401, "401 Unauthorized\n"))
    manager.script(
        "fetch_task",
        (406, "You do not support any task types.\n"),
        (500, ""),
        (200, task(TASK_A, ("sleep", {"time_in_seconds": 0.3}))),
    )
    manager.script("update_task", (500, ""), (409, "Task is assigned to another worker."))
    manager.script("may_i_run", (500, "oops\n"))
    timings = fast_timings(report=ReportIntervals(activity_interval=5, log_interval=5))
    worker = make_worker(manager, tmp_path, timings=timings)
    shutdown_after(manager, worker, "fetch_task", 6)
    assert await run(worker) == EXIT_OK
    update_active = attrs.evolve(UPDATE_ACTIVE, status=500)
    # Unlike the real worker, a bad may-i-run answer does not kill the poller, and the worker
    # still signs off at the end.
    assert_sequence(
        manager,
        [
            Step("POST", "/sign-on", keys=SIGN_ON, status=401),
            REGISTER,
            Step("POST", "/sign-on", keys=SIGN_ON),
            Step("POST", "/task", status=406),
            Step("POST", "/task", status=500),
            TASK_200,
            update_active,
            attrs.evolve(UPDATE_ACTIVE, status=409),
            UPDATE_WITH_LOG,
            TASK_204,
            SIGN_OFF,
        ],
    )
    assert len(manager.calls("may_i_run")) >= 2, "the poller survived the 500"
    new_secret = manager.calls("register_worker")[0].body["secret"]
    assert CredentialStore(tmp_path / "credentials.json").load() == Credentials(
        ObjectId(WORKER_ID), new_secret
    )


@pytest.mark.anyio
async def test_06_registration_refused(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.script("register_worker", (403, "Invalid Bearer token for registration\n"))
    worker = make_worker(manager, tmp_path, registration_secret="wrong")
    assert await run(worker) == EXIT_REFUSED
    assert_sequence(manager, [Step("POST", "/register-worker", "bearer", REGISTRATION, 403)])
    assert not (tmp_path / "credentials.json").exists()


@pytest.mark.anyio
async def test_07_registration_secret_test_mode_single_task(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.tasks.append(task(TASK_A, ("sleep", {"time_in_seconds": 0.05})))
    timings = fast_timings(report=ReportIntervals(activity_interval=5, log_interval=5))
    worker = make_worker(
        manager,
        tmp_path,
        task_types=("test-blender-render",),
        registration_secret="psk",
        test_mode=True,
        single=True,
        timings=timings,
    )
    assert await run(worker) == EXIT_OK
    assert_sequence(
        manager,
        [
            Step("POST", "/register-worker", "bearer", REGISTRATION, 200),
            ack("testing"),
            TASK_200,
            UPDATE_ACTIVE,
            UPDATE_WITH_LOG,
            SIGN_OFF,
        ],
    )
    assert manager.calls("ack_status_change")[0].path == "/ack-status-change/testing"
    body = manager.calls("register_worker")[0].body
    assert body["supported_task_types"] == ["test-blender-render"]


@pytest.mark.anyio
async def test_08_manager_failing_at_start(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.script("register_worker", (500, ""), (500, ""))
    worker = make_worker(manager, tmp_path)
    shutdown_after(manager, worker, "fetch_task", 1)
    assert await run(worker) == EXIT_OK
    assert_sequence(
        manager,
        [attrs.evolve(REGISTER, status=500), REGISTER, TASK_204, SIGN_OFF],
    )
    secrets = {r.body["secret"] for r in manager.calls("register_worker")}
    assert len(secrets) == 1, "one registration attempt keeps its secret across retries"


@pytest.mark.anyio
async def test_12_asleep_through_may_i_run_then_signals(tmp_path: Path) -> None:
    store_credentials(tmp_path)
    manager = FakeManager()
    manager.script(
        "fetch_task",
        (200, task(TASK_A, ("sleep", {"time_in_seconds": 5}))),
        (200, task(TASK_B, ("sleep", {"time_in_seconds": 5}))),
    )
    manager.script(
        "may_i_run",
        (200, {"may_keep_running": False, "reason": "sleep now", "status_requested": "asleep"}),
    )
    timings = fast_timings(
        status_poll_interval=30, report=ReportIntervals(activity_interval=5, log_interval=5)
    )
    worker = make_worker(manager, tmp_path, timings=timings)
    running = asyncio.create_task(run(worker))
    await wait_for(lambda: len(manager.calls("return_task")) == 1)
    worker.request_status("awake")  # what SIGUSR2 does
    await wait_for(lambda: len(updates_of(manager, TASK_B)) == 1)
    worker.request_status("asleep")  # what SIGUSR1 does
    await wait_for(lambda: len(updates_of(manager, TASK_B)) == 2)
    worker.request_shutdown()
    assert await running == EXIT_OK
    assert_sequence(
        manager,
        [
            Step("POST", "/sign-on", keys=SIGN_ON),
            TASK_200,
            UPDATE_ACTIVE,
            AnyOrder((UPDATE_LOG_ONLY, ack("asleep"))),
            RETURN,
            ack("awake"),
            TASK_200,
            UPDATE_ACTIVE,
            AnyOrder((ack("asleep"), UPDATE_WITH_LOG)),
            SIGN_OFF,
        ],
    )
    canceled = updates_of(manager, TASK_B)[-1]
    assert canceled["task_status"] == "canceled"
    assert canceled["activity"] == "Task was canceled"
    assert all("task_status" not in body for body in updates_of(manager, TASK_A)[1:])


@pytest.mark.anyio
async def test_forgotten_then_refused_registration_stops_the_worker(tmp_path: Path) -> None:
    # The manager forgot the worker (401 on /task) and no longer takes its registration secret:
    # the worker stops, saying so, rather than asking for work for ever.
    manager = FakeManager()
    manager.script("fetch_task", (401, "Unknown worker\n"))
    manager.script("register_worker", (403, "Invalid Bearer token for registration\n"))
    store_credentials(tmp_path)
    worker = make_worker(manager, tmp_path, registration_secret="changed")
    assert await run(worker) == EXIT_REFUSED
    assert [(r.endpoint, r.status) for r in manager.requests] == [
        ("sign_on", 204),
        ("fetch_task", 401),
        ("register_worker", 403),
        ("sign_off", 204),
    ]
