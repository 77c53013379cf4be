"""A hypothesis state machine: users and simulated workers drive jobs through the HTTP API.

Jobs are submitted through ``POST /api/jobs``; simulated workers register, fetch tasks, report
them completed, failed or canceled, ask may-i-run and return what they may not keep; a user
cancels, pauses, resumes and requeues jobs and single tasks at random points. After every step,
read back through the API:

* every job's status is stable for its tasks (:func:`derive_job_status` has nothing to change)
  and its ``task_counts`` match its task list;
* every change of a job's status since the last step is a path through
  :data:`~flamenco_protocol.job_states.JOB_TRANSITIONS`;
* no task of a canceled, canceling or paused job is ever handed out by ``/task``.
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
from collections import Counter, deque
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient

from flamenco_manager.manager import Manager
from flamenco_manager.web.app import create_app
from flamenco_protocol.job_states import JOB_TRANSITIONS, derive_job_status
from flamenco_protocol.statuses import JobStatus
from tests.manager.harness import BACKENDS, database_server, fresh_database, make_settings

HOLDING = {"canceled", "cancel-requested", "paused"}
ACTIONS = ("cancel-requested", "paused", "queued", "requeued")


def _reachable(start: str, end: str) -> bool:
    """Whether the job table leads from ``start`` to ``end`` in one or more transitions."""
    try:
        first = JobStatus(start)
    except ValueError:
        return False
    seen = {first}
    queue = deque([first])
    while queue:
        status = queue.popleft()
        for target in JOB_TRANSITIONS[status].values():
            if target.value == end:
                return True
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return False


class JobsThroughTheApi(RuleBasedStateMachine):
    """The farm as users and workers see it over HTTP."""

    jobs = Bundle("jobs")
    workers = Bundle("workers")

    def __init__(self, server: str = "") -> None:
        super().__init__()
        # A database of its own for each example.
        self.resources = contextlib.ExitStack()
        directory = self.resources.enter_context(tempfile.TemporaryDirectory())
        database = self.resources.enter_context(fresh_database(server))
        try:
            self.manager = Manager(make_settings(Path(directory), database=database))
        except BaseException:
            self.resources.close()  # Hypothesis calls teardown only on a machine it got.
            raise
        self.client = TestClient(create_app(self.manager, run_loops=False))
        token = self.manager.mint_user_token("tester", timedelta(hours=1))
        self.user = {"Authorization": f"Bearer {token}"}
        self.credentials: dict[str, dict[str, str]] = {}
        self.running: dict[str, str] = {}  # worker -> task it believes it runs
        self.statuses: dict[str, str] = {}  # job -> status seen after the last step
        self.failed_ratio = self.manager.settings.failed_task_ratio

    def teardown(self) -> None:
        self.client.close()
        self.manager.close()
        self.resources.close()

    # --- helpers ---------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=self.user, **kwargs)
        assert response.status_code < 500, response.text
        return response

    def job_status(self, job_id: str) -> str:
        status: str = self.api("GET", f"/api/jobs/{job_id}").json()["status"]
        return status

    def task_ids(self, job_id: str) -> list[str]:
        return [
            task["_id"] for task in self.api("GET", f"/api/jobs/{job_id}/tasks").json()["tasks"]
        ]

    # --- rules -----------------------------------------------------------------------------

    @initialize(target=workers)
    def first_worker(self) -> str:
        return self._register()

    @rule(target=workers)
    @precondition(lambda self: len(self.credentials) < 3)
    def another_worker(self) -> str:
        return self._register()

    def _register(self) -> str:
        secret = f"secret-{len(self.credentials)}"
        answer = self.client.post(
            "/register-worker",
            json={
                "secret": secret,
                "platform": "linux",
                "supported_task_types": ["sleep"],
                "nickname": f"w{len(self.credentials)}",
            },
        ).json()
        basic = base64.b64encode(f"{answer['_id']}:{secret}".encode()).decode()
        self.credentials[answer["_id"]] = {"Authorization": f"Basic {basic}"}
        return str(answer["_id"])

    @rule(target=jobs, frames=st.integers(1, 4), paused=st.booleans())
    def submit(self, frames: int, paused: bool) -> str:
        response = self.api(
            "POST",
            "/api/jobs",
            json={
                "name": "job",
                "type": "sleep",
                "start_paused": paused,
                "settings": {"frames": f"1-{frames}", "chunk_size": 1, "time_in_seconds": 1},
            },
        )
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["status"] == ("paused" if paused else "queued")
        self.statuses[job["_id"]] = job["status"]
        return str(job["_id"])

    @rule(worker=workers)
    def fetch(self, worker: str) -> None:
        before = {job_id: self.job_status(job_id) for job_id in self.statuses}
        response = self.client.post("/task", headers=self.credentials[worker])
        assert response.status_code in (200, 204), response.text
        if response.status_code == 204:
            return
        task = response.json()
        if task["_id"] != self.running.get(worker):  # Not the task it runs already: a new one.
            assert before[task["job"]] not in HOLDING, (
                f"a {before[task['job']]} job handed out task {task['_id']}"
            )
        self.running[worker] = task["_id"]

    @rule(worker=workers, outcome=st.sampled_from(["completed", "failed", "canceled", "active"]))
    def report(self, worker: str, outcome: str) -> None:
        task_id = self.running.get(worker)
        if task_id is None:
            return
        response = self.client.post(
            f"/tasks/{task_id}/update",
            headers=self.credentials[worker],
            json={"task_status": outcome, "activity": outcome},
        )
        assert response.status_code in (204, 409), response.text
        if outcome != "active" or response.status_code == 409:
            del self.running[worker]

    @rule(worker=workers)
    def ask_may_i_run(self, worker: str) -> None:
        task_id = self.running.get(worker)
        if task_id is None:
            return
        answer = self.client.get(f"/may-i-run/{task_id}", headers=self.credentials[worker]).json()
        if not answer["may_keep_running"]:
            self.client.post(f"/tasks/{task_id}/return", headers=self.credentials[worker])
            del self.running[worker]

    @rule(job=jobs, requested=st.sampled_from(ACTIONS))
    def job_action(self, job: str, requested: str) -> None:
        response = self.api("POST", f"/api/jobs/{job}/status", json={"status": requested})
        assert response.status_code in (200, 409), response.text

    @rule(job=jobs, data=st.data(), action=st.sampled_from(["requeue", "cancel"]))
    def task_action(self, job: str, data: st.DataObject, action: str) -> None:
        task_id = data.draw(st.sampled_from(self.task_ids(job)))
        response = self.api("POST", f"/api/tasks/{task_id}/{action}")
        assert response.status_code in (200, 409), response.text

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def jobs_match_their_tasks_and_follow_the_table(self) -> None:
        for job_id, previous in self.statuses.items():
            job = self.api("GET", f"/api/jobs/{job_id}").json()
            tasks = self.api("GET", f"/api/jobs/{job_id}/tasks").json()["tasks"]
            counts = Counter(task["status"] for task in tasks)
            assert job["task_counts"] == dict(counts)
            change = derive_job_status(job["status"], counts, failed_ratio=self.failed_ratio)
            assert change is None, f"job {job['status']} with tasks {dict(counts)}: {change}"
            if job["status"] != previous:
                assert _reachable(previous, job["status"]), f"{previous} -> {job['status']}"
            self.statuses[job_id] = job["status"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_jobs_through_the_api(backend: str) -> None:
    server = database_server(backend)
    run_state_machine_as_test(
        lambda: JobsThroughTheApi(server),
        settings=settings(
            # PostgreSQL pays a schema per example and a round trip per statement.
            max_examples=12 if backend == "sqlite" else 6,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
