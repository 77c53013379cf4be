"""Flamenco Worker 2.5's request sequences, replayed against the manager.

Each test plays one of the sequences recorded from the real, unmodified worker (spec/worker.md
§10: 01, 02, 03, 04, 05, 07, 12), with that worker's exact request shapes: empty POST bodies
without ``Content-Type``, ``User-Agent: Flamenco-Worker/2.5``, JSON spelled by ``json.dumps``,
the TaskUpdate bodies as recorded, and an HS256 registration token with float ``exp``/``iat``.
Every answer goes through :class:`RealWorker`'s ``reads_*`` methods, which accept exactly what
the real worker accepts; the tests then check what the manager made of it.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import httpx
import jwt
import pytest

from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.storage import jobs as job_store
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.storage.jobs import JobRecord
from flamenco_manager.web.app import create_app

from .harness import FakeClock, Farm, make_settings

pytestmark = pytest.mark.anyio

USER_AGENT: Final = "Flamenco-Worker/2.5"
TASK_TYPES: Final = ("sleep", "file-management", "debug")
MAY_I_RUN_KEYS: Final = frozenset({"may_keep_running", "reason", "status_requested"})
_ALNUM: Final = string.ascii_letters + string.digits


class RealWorker:
    """Speaks to the manager the way Flamenco Worker 2.5 (python-requests) does.

    The ``reads_*`` methods hold what the worker does with an answer: a failed assertion there
    is an answer that would make the real worker misbehave (crash its poller, drop a task, ...).
    """

    def __init__(self, client: httpx.AsyncClient, task_types: tuple[str, ...] = TASK_TYPES) -> None:
        self.client = client
        self.task_types = task_types
        self.id = ""
        self.secret = ""

    # --- requests ------------------------------------------------------------------------------

    def _headers(self, *, basic: bool = True) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if basic:
            token = base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    async def post_empty(self, path: str) -> httpx.Response:
        """``/task``, ``/sign-off``, ``/ack-status-change/*``, ``/tasks/{id}/return``."""
        response = await self.client.post(path, headers=self._headers())
        assert "content-type" not in response.request.headers
        assert response.request.content == b""
        return response

    async def post_json(self, path: str, body: object, **headers: str) -> httpx.Response:
        return await self.client.post(
            path,
            content=json.dumps(body).encode(),
            headers={
                **self._headers(basic=path != "/register-worker"),
                "Content-Type": "application/json",
                **headers,
            },
        )

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=self._headers())

    async def register(self, registration_secret: str = "", clock_ahead: float = 0.0) -> str:
        """``POST /register-worker`` with a fresh 64-character secret; the new worker ID."""
        self.secret = "".join(secrets.choice(_ALNUM) for _ in range(64))
        headers = {}
        if registration_secret:
            now = time.time() + clock_ahead
            token = jwt.encode(
                {"exp": now + 15 * 60, "iat": now}, registration_secret, algorithm="HS256"
            )
            headers["Authorization"] = f"Bearer {token}"
        response = await self.post_json(
            "/register-worker",
            {
                "secret": self.secret,
                "platform": "linux",
                "supported_task_types": list(self.task_types),
                "nickname": "vm",
            },
            **headers,
        )
        assert 200 <= response.status_code < 300, response.text
        worker_id = response.json()["_id"]
        assert isinstance(worker_id, str)
        self.id = worker_id
        return worker_id

    async def sign_on(self) -> httpx.Response:
        return await self.post_json(
            "/sign-on", {"supported_task_types": list(self.task_types), "nickname": "vm"}
        )

    async def update(self, task_id: str, body: dict[str, Any]) -> httpx.Response:
        return await self.post_json(f"/tasks/{task_id}/update", body)

    # --- what the worker makes of the answers ----------------------------------------------------

    @staticmethod
    def reads_task(response: httpx.Response) -> dict[str, Any]:
        """A 200 from ``/task``: ``_id`` (a string) and ``commands`` with object settings."""
        assert response.status_code == 200, response.text
        task = response.json()
        assert isinstance(task, dict)
        assert isinstance(task["_id"], str)
        assert len(task["_id"]) == 24
        assert isinstance(task["commands"], list)
        for command in task["commands"]:
            assert isinstance(command["name"], str)
            assert isinstance(command["settings"], dict)
        return task

    @staticmethod
    def reads_status_request(response: httpx.Response) -> str:
        """A 423 from ``/task``: the body must be exactly ``{"status_requested": S}``."""
        assert response.status_code == 423, response.text
        body = response.json()
        assert list(body) == ["status_requested"]
        assert isinstance(body["status_requested"], str)
        return str(body["status_requested"])

    @staticmethod
    def reads_may_i_run(response: httpx.Response) -> dict[str, Any]:
        """Any ``/may-i-run`` answer, whatever its status: the three-key object only."""
        body = response.json()
        assert isinstance(body, dict)
        assert set(body) <= MAY_I_RUN_KEYS
        assert "may_keep_running" in body
        assert isinstance(body["may_keep_running"], bool)
        for key in ("reason", "status_requested"):
            assert body.get(key) is None or isinstance(body[key], str)
        return body

    @staticmethod
    def reads_returned(response: httpx.Response) -> None:
        """``/tasks/{id}/return``: 204, or a JSON body (decoded inside the may-i-run poller)."""
        if response.status_code != 204:
            response.json()
        assert response.status_code == 204, response.text

    @staticmethod
    def update_delivered(response: httpx.Response) -> bool:
        """Whether the queued update leaves the worker's queue (2xx, or 404/409: dropped)."""
        return 200 <= response.status_code < 300 or response.status_code in (404, 409)


def active(metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """The first update of every task, as recorded."""
    return {
        "activity": "",
        "current_command_idx": 0,
        "task_progress_percentage": 0,
        "command_progress_percentage": 0,
        "metrics": {"timing": metrics or {}},
        "task_status": "active",
    }


def finished(status: str, activity: str, idx: int, log: list[str]) -> dict[str, Any]:
    """The last update of a task, carrying its whole log."""
    return {
        "activity": activity,
        "current_command_idx": idx,
        "task_progress_percentage": 0,
        "command_progress_percentage": 100 if status == "completed" else 0,
        "metrics": {"timing": {"total": 7.0}},
        "task_status": status,
        "log": "\n".join(
            f"2026-11-25T09:00:{i:02}.000000+00:00: {line}" for i, line in enumerate(log)
        ),
    }


def log_only(*lines: str) -> dict[str, Any]:
    return {"log": "\n".join(f"2026-11-25T09:01:00.000000+00:00: {line}" for line in lines)}


def make_job(farm: Farm, name: str, *tasks: tuple[str, str, list[dict[str, Any]]]) -> JobRecord:
    return farm.manager.jobs.create_job(
        name=name,
        job_type="interop-test",
        tasks=[TaskSpec(name=n, task_type=t, commands=c) for n, t, c in tasks],
    )


def task_log(farm: Farm, task: dict[str, Any]) -> str:
    return farm.manager.logs.read_whole(task["job"], task["_id"]).decode()


EXAMPLE_TASKS: Final = [
    (
        "example-1-echo-sleep-exec",
        "sleep",
        [
            {"name": "echo", "settings": {"message": "Hello from the interop test"}},
            {"name": "sleep", "settings": {"time_in_seconds": 2}},
            {"name": "exec", "settings": {"cmd": "/bin/sh -c 'echo line one; echo line two'"}},
        ],
    ),
    (
        "example-2-file-management",
        "file-management",
        [
            {
                "name": "create_python_file",
                "settings": {
                    "filepath": "/srv/farm/interop/job2/made.py",
                    "contents": "print('made by flamenco')\n",
                },
            },
            {
                "name": "copy_file",
                "settings": {
                    "src": "/srv/farm/interop/job2/made.py",
                    "dest": "/srv/farm/interop/job2/copy/made-copy.py",
                },
            },
            {"name": "remove_tree", "settings": {"path": "/srv/farm/interop/job2"}},
        ],
    ),
    (
        "example-3-debug-exec-move",
        "debug",
        [
            {"name": "exec", "settings": {"cmd": "/bin/mkdir -p /srv/farm/interop/job3/frames"}},
            {"name": "log_a_lot", "settings": {"lines": 5}},
            {"name": "remove_tree", "settings": {"path": "/srv/farm/interop/job3"}},
        ],
    ),
]


@pytest.fixture
def worker(farm: Farm) -> RealWorker:
    return RealWorker(farm.client)


# --- 01 ------------------------------------------------------------------------------------------


async def test_01_fresh_registration_idle_then_sigterm(farm: Farm, worker: RealWorker) -> None:
    worker_id = await worker.register()
    record = farm.manager.workers.get(worker_id)
    assert (record.nickname, record.platform, record.supported_task_types) == (
        "vm",
        "linux",
        TASK_TYPES,
    )
    for _ in range(3):
        response = await worker.post_empty("/task")
        assert (response.status_code, response.content) == (204, b"")
        farm.clock.advance(seconds=5)
    assert farm.manager.workers.get(worker_id).status == "awake"
    assert farm.manager.workers.get(worker_id).software == USER_AGENT

    assert (await worker.post_empty("/sign-off")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "offline"


# --- 02 ------------------------------------------------------------------------------------------


async def test_02_restart_with_stored_credentials_runs_one_task(
    farm: Farm, worker: RealWorker
) -> None:
    worker_id = await worker.register()
    await worker.post_empty("/sign-off")
    commands = [
        {"name": "echo", "settings": {"message": "hi"}},
        {"name": "sleep", "settings": {"time_in_seconds": 7}},
        {"name": "exec", "settings": {"cmd": "/bin/echo done"}},
    ]
    job = make_job(farm, "02", ("t", "sleep", commands))

    response = await worker.sign_on()
    assert response.status_code == 204
    assert farm.manager.workers.get(worker_id).status == "starting"

    task = worker.reads_task(await worker.post_empty("/task"))
    assert task["commands"] == commands
    assert farm.task(task["_id"]).status == "active"
    assert farm.task(task["_id"]).worker_id == worker_id
    assert (await worker.update(task["_id"], active())).status_code == 204

    farm.clock.advance(seconds=5)
    answer = worker.reads_may_i_run(await worker.get(f"/may-i-run/{task['_id']}"))
    assert answer == {"may_keep_running": True}

    lines = [f"line {i}" for i in range(17)]
    done = finished("completed", "Task completed", 2, lines)
    assert (await worker.update(task["_id"], done)).status_code == 204
    stored = farm.task(task["_id"])
    assert (stored.status, stored.activity) == ("completed", "Task completed")
    assert farm.job_status(job) == "completed"
    log = task_log(farm, task)
    assert f"Manager assigned task {task['_id']} to worker" in log.splitlines()[0]
    assert all(f": {line}\n" in log for line in lines)

    farm.clock.advance(seconds=3)
    assert (await worker.post_empty("/task")).status_code == 204
    assert (await worker.post_empty("/sign-off")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "offline"


# --- 03 ------------------------------------------------------------------------------------------


async def test_03_failure_may_i_run_no_return_asleep_awake_shutdown(
    farm: Farm, worker: RealWorker
) -> None:
    worker_id = await worker.register()
    job_a = make_job(
        farm,
        "A",
        (
            "A",
            "file-management",
            [
                {"name": "copy_file", "settings": {"src": "/srv/in.txt", "dest": "/srv/out.txt"}},
                {"name": "sleep", "settings": {"time_in_seconds": 20}},
                {"name": "move_to_final", "settings": {"src": "/srv/x", "dest": "/nope/y"}},
            ],
        ),
    )
    job_b = make_job(
        farm,
        "B",
        ("B", "debug", [{"name": "exec", "settings": {"cmd": "/bin/sh -c 'sleep 60'"}}]),
    )

    a = worker.reads_task(await worker.post_empty("/task"))
    produced = await worker.post_json("/output-produced", {"paths": ["/srv/out.txt"]})
    assert produced.status_code == 204  # before the 'active' update, as recorded
    assert (await worker.update(a["_id"], active())).status_code == 204
    for _ in range(3):
        farm.clock.advance(seconds=5)
        assert worker.reads_may_i_run(await worker.get(f"/may-i-run/{a['_id']}")) == {
            "may_keep_running": True
        }
    deferred = {**active(), "activity": "starting sleep", "current_command_idx": 1}
    deferred["log"] = "\n".join(f"2026-11-25T09:00:0{i}+00:00: line {i}" for i in range(7))
    assert (await worker.update(a["_id"], deferred)).status_code == 204
    assert farm.task(a["_id"]).activity == "starting sleep"
    error = f"move_to_final.(task_id={a['_id']}, command_idx=2): Error executing: [Errno 2] nope"
    failed = finished("failed", error, 2, [error])
    assert (await worker.update(a["_id"], failed)).status_code == 204
    assert (farm.task(a["_id"]).status, farm.task(a["_id"]).activity) == ("failed", error)
    assert farm.job_status(job_a) == "failed"

    farm.clock.advance(seconds=3)
    b = worker.reads_task(await worker.post_empty("/task"))
    assert (await worker.update(b["_id"], active())).status_code == 204
    farm.clock.advance(seconds=5)
    assert worker.reads_may_i_run(await worker.get(f"/may-i-run/{b['_id']}"))["may_keep_running"]

    farm.manager.jobs.request_status(str(job_b.id), "cancel-requested")
    answer = worker.reads_may_i_run(await worker.get(f"/may-i-run/{b['_id']}"))
    assert answer["may_keep_running"] is False
    assert answer["reason"]
    assert "status_requested" not in answer  # the worker would change status on it
    stopped = f"Worker {worker_id} (vm) stopped running this task, no longer allowed to run"
    assert worker.update_delivered(await worker.update(b["_id"], log_only(stopped)))
    worker.reads_returned(await worker.post_empty(f"/tasks/{b['_id']}/return"))
    assert farm.task(b["_id"]).status == "canceled"
    assert farm.job_status(job_b) == "canceled"

    farm.manager.workers.request_status(worker_id, "asleep", lazy=False)
    farm.clock.advance(seconds=3)
    assert worker.reads_status_request(await worker.post_empty("/task")) == "asleep"
    assert (await worker.post_empty("/ack-status-change/asleep")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "asleep"

    # The deferred log push of the returned task arrives late, without a status.
    late = {**active(), "log": "2026-11-25T09:02:00+00:00: returned this task to the queue."}
    del late["task_status"]
    assert (await worker.update(b["_id"], late)).status_code == 204
    assert farm.task(b["_id"]).status == "canceled"
    assert "returned this task to the queue." in task_log(farm, b)

    farm.clock.advance(seconds=27)
    assert (await worker.get("/status-change")).status_code == 204
    farm.manager.workers.request_status(worker_id, "awake", lazy=False)
    farm.clock.advance(seconds=30)
    response = await worker.get("/status-change")
    assert (response.status_code, response.json()) == (200, {"status_requested": "awake"})
    assert (await worker.post_empty("/ack-status-change/awake")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "awake"

    farm.manager.workers.request_status(worker_id, "shutdown", lazy=False)
    farm.clock.advance(seconds=3)
    assert worker.reads_status_request(await worker.post_empty("/task")) == "shutdown"
    aborted = log_only("exec: TERMinating subprocess pid=1234")
    assert worker.update_delivered(await worker.update(b["_id"], aborted))
    assert (await worker.post_empty("/sign-off")).status_code == 204  # no ack for shutdown
    record = farm.manager.workers.get(worker_id)
    assert (record.status, record.status_requested) == ("offline", "")


# --- 04 ------------------------------------------------------------------------------------------


async def test_04_example_tasks_complete_and_false_fails(farm: Farm, worker: RealWorker) -> None:
    worker_id = await worker.register()
    examples = make_job(farm, "examples", *EXAMPLE_TASKS)
    failing = make_job(
        farm, "false", ("false", "debug", [{"name": "exec", "settings": {"cmd": "/bin/false"}}])
    )

    for name, task_type, commands in EXAMPLE_TASKS:
        task = worker.reads_task(await worker.post_empty("/task"))
        assert (task["name"], task["task_type"], task["commands"]) == (name, task_type, commands)
        if task_type == "file-management":
            paths = {"paths": ["/srv/farm/interop/job2/copy/made-copy.py"]}
            assert (await worker.post_json("/output-produced", paths)).status_code == 204
        assert (await worker.update(task["_id"], active())).status_code == 204
        done = finished("completed", "Task completed", len(commands) - 1, ["ok"])
        assert (await worker.update(task["_id"], done)).status_code == 204
        farm.clock.advance(seconds=3)
    assert farm.job_status(examples) == "completed"

    task = worker.reads_task(await worker.post_empty("/task"))
    assert task["commands"] == [{"name": "exec", "settings": {"cmd": "/bin/false"}}]
    assert (await worker.update(task["_id"], active())).status_code == 204
    error = (
        f"exec.(task_id={task['_id']}, command_idx=0): Error executing: "
        "Command /bin/false (pid=4242) failed with status 1"
    )
    response = await worker.update(task["_id"], finished("failed", error, 0, [error]))
    assert response.status_code == 204
    assert farm.task(task["_id"]).status == "failed"
    assert farm.job_status(failing) == "failed"

    farm.manager.workers.request_status(worker_id, "shutdown", lazy=True)
    farm.clock.advance(seconds=3)
    assert worker.reads_status_request(await worker.post_empty("/task")) == "shutdown"
    assert worker.update_delivered(await worker.update(task["_id"], log_only("Aggregated")))
    assert (await worker.post_empty("/sign-off")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "offline"


# --- 05 ------------------------------------------------------------------------------------------


async def test_05_stored_credentials_rejected_means_401_then_registration(
    farm: Farm, worker: RealWorker
) -> None:
    worker.id, worker.secret = "5f1e0c0a2b3c4d5e6f708192", "x" * 64  # from another manager
    response = await worker.sign_on()
    assert response.status_code == 401  # the only answer that makes it register again
    assert response.headers["www-authenticate"].startswith("Basic")
    await worker.register()
    assert (await worker.sign_on()).status_code == 204


async def test_05_worker_deleted_behind_the_credential_cache_gets_401(
    farm: Farm, worker: RealWorker
) -> None:
    """Observed with the real worker: deleted by another process, it got 403 and exited."""
    old_id = await worker.register()
    assert (await worker.sign_on()).status_code == 204  # the credentials are now remembered
    with farm.manager.database.transaction() as connection:
        worker_store.delete(connection, old_id)  # as another manager process would

    response = await worker.sign_on()
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Basic")
    # The worker's recovery: register anew, sign on again.
    new_id = await worker.register()
    assert new_id != old_id
    assert (await worker.sign_on()).status_code == 204
    # The old credentials are not remembered any more either.
    worker.id = old_id
    assert (await worker.post_empty("/task")).status_code == 401


async def test_05_error_answers_the_worker_survives(farm: Farm, worker: RealWorker) -> None:
    lazy = RealWorker(farm.client, task_types=())
    await lazy.register()
    response = await lazy.post_empty("/task")
    assert (response.status_code, response.text) == (406, "You do not support any task types.\n")

    await worker.register()
    make_job(farm, "05", ("t", "sleep", [{"name": "sleep", "settings": {"time_in_seconds": 12}}]))
    task = worker.reads_task(await worker.post_empty("/task"))
    other = RealWorker(farm.client)
    await other.register()
    conflict = await other.update(task["_id"], active())
    assert conflict.status_code == 409
    assert worker.update_delivered(conflict)
    unknown = await worker.update("5f1e0c0a2b3c4d5e6f70ffff", active())
    assert unknown.status_code == 404
    assert worker.update_delivered(unknown)
    assert farm.task(task["_id"]).worker_id == worker.id


async def test_05_may_i_run_refusals_are_the_three_key_document(
    farm: Farm, worker: RealWorker
) -> None:
    """A text body here kills the real worker's poller and, at exit, its sign-off."""
    await worker.register()
    make_job(farm, "05", ("t", "sleep", [{"name": "sleep", "settings": {"time_in_seconds": 12}}]))
    task = worker.reads_task(await worker.post_empty("/task"))

    secret, worker.secret = worker.secret, "wrong"
    refused = await worker.get(f"/may-i-run/{task['_id']}")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert worker.reads_may_i_run(refused)["may_keep_running"] is False
    worker.secret = secret

    malformed = await worker.get("/may-i-run/not-an-id")
    assert malformed.status_code == 404
    assert worker.reads_may_i_run(malformed)["may_keep_running"] is False

    with farm.manager.database.transaction() as connection:
        worker_store.delete(connection, worker.id)  # behind the credential cache
    vanished = await worker.get(f"/may-i-run/{task['_id']}")
    assert worker.reads_may_i_run(vanished)["may_keep_running"] is False


async def test_05_returning_a_task_of_a_deleted_job_is_204(farm: Farm, worker: RealWorker) -> None:
    """Observed with the real worker: a 404 text body here crashed its may-i-run poller."""
    await worker.register()
    job = make_job(
        farm, "gone", ("t", "sleep", [{"name": "sleep", "settings": {"time_in_seconds": 40}}])
    )
    task = worker.reads_task(await worker.post_empty("/task"))
    assert (await worker.update(task["_id"], active())).status_code == 204
    with farm.manager.database.transaction() as connection:
        job_store.delete(connection, str(job.id))
    answer = worker.reads_may_i_run(await worker.get(f"/may-i-run/{task['_id']}"))
    assert answer["may_keep_running"] is False
    assert worker.update_delivered(await worker.update(task["_id"], log_only("stopped")))
    worker.reads_returned(await worker.post_empty(f"/tasks/{task['_id']}/return"))

    # Refused credentials on /return are JSON too (the poller decodes them).
    worker.secret = "wrong"
    refused = await worker.post_empty(f"/tasks/{task['_id']}/return")
    assert refused.status_code == 401
    assert isinstance(refused.json(), dict)


# --- 07 ------------------------------------------------------------------------------------------


@pytest.fixture
async def psk_client(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[Manager, httpx.AsyncClient]]:
    """A manager that wants registrations signed with the pre-shared secret ``psk-secret``."""
    settings = make_settings(
        tmp_path, worker_registration_secret="psk-secret", database=database_url
    )
    manager = Manager(settings, clock=FakeClock())
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
        yield manager, client
    manager.close()


async def test_07_registration_secret_test_mode_single_task(
    psk_client: tuple[Manager, httpx.AsyncClient],
) -> None:
    manager, client = psk_client
    worker = RealWorker(client, task_types=("test-blender-render",))
    worker_id = await worker.register(registration_secret="psk-secret")
    assert (await worker.post_empty("/ack-status-change/testing")).status_code == 204
    assert manager.workers.get(worker_id).status == "testing"
    manager.jobs.create_job(
        name="07",
        job_type="interop-test",
        tasks=[
            TaskSpec(
                name="t",
                task_type="test-blender-render",
                commands=[{"name": "sleep", "settings": {"time_in_seconds": 1}}],
            )
        ],
    )
    task = worker.reads_task(await worker.post_empty("/task"))
    assert (await worker.update(task["_id"], active())).status_code == 204
    done = finished("completed", "Task completed", 0, ["sleep: Finished"])
    assert (await worker.update(task["_id"], done)).status_code == 204
    assert (await worker.post_empty("/sign-off")).status_code == 204
    assert manager.workers.get(worker_id).status == "offline"


async def test_07_registration_token_from_a_clock_a_little_ahead(
    psk_client: tuple[Manager, httpx.AsyncClient],
) -> None:
    """The worker stamps ``iat`` with its own clock; a 403 makes it exit for good."""
    manager, client = psk_client
    worker = RealWorker(client)
    await worker.register(registration_secret="psk-secret", clock_ahead=5.0)
    assert len(manager.workers.list()) == 1
    with pytest.raises(AssertionError):
        await worker.register(registration_secret="psk-secret", clock_ahead=3600.0)
    with pytest.raises(AssertionError):
        await worker.register(registration_secret="not-the-secret")
    assert len(manager.workers.list()) == 1


# --- 12 ------------------------------------------------------------------------------------------


async def test_12_asleep_through_may_i_run_then_signals(farm: Farm, worker: RealWorker) -> None:
    worker_id = await worker.register()
    sleep_40 = [{"name": "sleep", "settings": {"time_in_seconds": 40}}]
    job = make_job(farm, "12", ("A", "sleep", sleep_40), ("B", "sleep", sleep_40))

    a = worker.reads_task(await worker.post_empty("/task"))
    assert (await worker.update(a["_id"], active())).status_code == 204
    farm.manager.workers.request_status(worker_id, "asleep", lazy=True)
    farm.clock.advance(seconds=5)
    lazily = worker.reads_may_i_run(await worker.get(f"/may-i-run/{a['_id']}"))
    assert lazily["may_keep_running"] is True  # a lazy request lets the task finish

    farm.manager.workers.request_status(worker_id, "asleep", lazy=False)
    farm.clock.advance(seconds=5)
    answer = worker.reads_may_i_run(await worker.get(f"/may-i-run/{a['_id']}"))
    assert answer["may_keep_running"] is False
    assert answer["status_requested"] == "asleep"
    assert (await worker.post_empty("/ack-status-change/asleep")).status_code == 204
    stopped = f"Worker {worker_id} (vm) stopped running this task, no longer allowed to run"
    assert worker.update_delivered(await worker.update(a["_id"], log_only(stopped)))
    worker.reads_returned(await worker.post_empty(f"/tasks/{a['_id']}/return"))
    assert farm.task(a["_id"]).status == "claimed-by-manager"  # back in the queue, not canceled
    assert farm.manager.workers.get(worker_id).status == "asleep"

    # SIGUSR2: awake on its own, fetches 3 s later.
    assert (await worker.post_empty("/ack-status-change/awake")).status_code == 204
    farm.clock.advance(seconds=3)
    again = worker.reads_task(await worker.post_empty("/task"))
    assert again["_id"] == a["_id"]
    assert (await worker.update(again["_id"], active())).status_code == 204

    # SIGUSR1: asleep on its own; the running task is reported canceled.
    assert (await worker.post_empty("/ack-status-change/asleep")).status_code == 204
    canceled = finished("canceled", "Task was canceled", 0, ["sleep: Starting"])
    assert (await worker.update(again["_id"], canceled)).status_code == 204
    # Nobody asked for it: back in the queue. Taken as canceled, it ended its job canceled
    # once the other tasks were done.
    assert farm.task(again["_id"]).status == "claimed-by-manager"
    assert farm.job_status(job) == "queued"  # both tasks to do, neither running

    assert (await worker.post_empty("/sign-off")).status_code == 204
    assert farm.manager.workers.get(worker_id).status == "offline"
