"""A hypothesis state machine: many workers and a user against the manager's services.

The rules call the same service functions the routes call (registration, sign-on and -off,
``/task``, updates, returns, ``/may-i-run``, status requests and acks, job submission and user
actions on jobs) and move a fake clock on, letting the timeout checker run. After every step the
invariants read the whole database back and check:

* no task is lost: every task created exists, its job exists, its status is a known one;
* every task's status change since the last step is one transition of
  :data:`flamenco_protocol.task_states.TASK_TRANSITIONS`, possibly followed by its job's reaction
  (a paused job holds a task that waits again; a failing job cancels the waiting ones);
* a worker runs at most one ``active`` task, and ``/task`` never hands out a task that another
  worker runs (the test remembers which task each worker believes it runs);
* every job's status is the stable one :func:`derive_job_status` gives for its tasks, and the
  per-job task counts the triggers keep match the tasks;
* the stored readiness is right: ``unfinished_parents`` counts the parents not completed and
  ``runnable`` holds exactly for waiting tasks whose parents all completed;
* a canceled, canceling or paused job never hands out a task; ``/task`` says "nothing" only when
  no runnable task is there for the worker.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import pytest
import sqlalchemy as sa
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

from flamenco_manager.manager import Manager
from flamenco_manager.services.errors import Conflict
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.services.scheduler import Assigned, NoTask, NoTaskTypes, StatusChange
from flamenco_manager.services.workers import Peer
from flamenco_manager.storage.schema import (
    job_task_counts,
    jobs,
    task_failures,
    task_parents,
    tasks,
    worker_blocklist,
    workers,
)
from flamenco_protocol.documents import TaskUpdate, WorkerRegistration, WorkerSignonDoc
from flamenco_protocol.errors import InvalidTransition
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.job_states import derive_job_status
from flamenco_protocol.statuses import (
    SCHEDULABLE_TASK_STATUSES,
    JobStatus,
    TaskStatus,
    WorkerStatus,
)
from flamenco_protocol.task_states import TASK_TRANSITIONS, TaskEvent

from .harness import BACKENDS, FakeClock, database_server, fresh_database, make_settings, spec

TASK_TYPES = ("sleep", "render")
PEER = Peer("10.0.0.5", "Flamenco-Worker/2.5")
FAILED_TASK_RATIO = 0.5
RUNNING = (TaskStatus.ACTIVE.value, TaskStatus.CANCEL_REQUESTED.value)
SCHEDULABLE = frozenset(status.value for status in SCHEDULABLE_TASK_STATUSES)
# A job in one of these never hands out a task.
HOLDING_JOB_STATUSES = frozenset(
    {JobStatus.CANCELED.value, JobStatus.CANCEL_REQUESTED.value, JobStatus.PAUSED.value}
)


@attrs.frozen
class TaskRow:
    job_id: str
    status: str
    task_type: str
    worker_id: str | None
    last_worker_ping: datetime | None
    unfinished_parents: int
    runnable: bool


@attrs.frozen
class WorkerRow:
    status: str
    status_requested: str
    lazy: bool
    task_types: tuple[str, ...]
    last_activity: datetime | None


@attrs.frozen
class Snapshot:
    """Everything the invariants look at, read in one transaction."""

    tasks: dict[str, TaskRow]
    parents: dict[str, list[str]]
    failed_by: set[tuple[str, str]]
    blocked: set[tuple[str, str, str]]
    jobs: dict[str, str]
    workers: dict[str, WorkerRow]
    counts: dict[tuple[str, str], int]

    def candidates_for(self, worker_id: str) -> list[str]:
        """Tasks ``/task`` could hand to this worker now."""
        worker = self.workers[worker_id]
        return [
            task_id
            for task_id, task in self.tasks.items()
            if task.runnable
            and task.task_type in worker.task_types
            and (task_id, worker_id) not in self.failed_by
            and (worker_id, task.job_id, task.task_type) not in self.blocked
        ]

    def running_of(self, worker_id: str) -> list[str]:
        return [
            task_id
            for task_id, task in self.tasks.items()
            if task.worker_id == worker_id and task.status == TaskStatus.ACTIVE.value
        ]


def read_snapshot(manager: Manager) -> Snapshot:
    with manager.database.transaction() as connection:
        task_rows = connection.execute(sa.select(tasks)).all()
        parent_rows = connection.execute(
            sa.select(task_parents).order_by(task_parents.c.position)
        ).all()
        failure_rows = connection.execute(sa.select(task_failures)).all()
        block_rows = connection.execute(sa.select(worker_blocklist)).all()
        job_rows = connection.execute(sa.select(jobs.c.id, jobs.c.status)).all()
        worker_rows = connection.execute(sa.select(workers)).all()
        count_rows = connection.execute(sa.select(job_task_counts)).all()
    parents: dict[str, list[str]] = {}
    for row in parent_rows:
        parents.setdefault(row.task_id, []).append(row.parent_id)
    return Snapshot(
        tasks={
            row.id: TaskRow(
                job_id=row.job_id,
                status=row.status,
                task_type=row.task_type,
                worker_id=row.worker_id,
                last_worker_ping=row.last_worker_ping,
                unfinished_parents=row.unfinished_parents,
                runnable=bool(row.runnable),
            )
            for row in task_rows
        },
        parents=parents,
        failed_by={(row.task_id, row.worker_id) for row in failure_rows},
        blocked={(row.worker_id, row.job_id, row.task_type) for row in block_rows},
        jobs={row.id: row.status for row in job_rows},
        workers={
            row.id: WorkerRow(
                status=row.status,
                status_requested=row.status_requested,
                lazy=bool(row.lazy_status_request),
                task_types=tuple(row.supported_task_types),
                last_activity=row.last_activity,
            )
            for row in worker_rows
        },
        counts={(row.job_id, row.status): row.task_count for row in count_rows if row.task_count},
    )


# What a job does to its tasks when one of them changes (it fails or stays paused).
JOB_REACTIONS = (TaskEvent.JOB_CANCELED, TaskEvent.JOB_PAUSED)


def one_transition(old: str, new: str) -> bool:
    """Whether one event of the task table moves ``old`` to ``new``, maybe followed by the job's
    reaction to it (a task its worker gave back in a paused job is paused in the same step)."""
    for middle in TASK_TRANSITIONS[TaskStatus(old)].values():
        if middle.value == new:
            return True
        reactions = TASK_TRANSITIONS[middle]
        if any(reactions.get(event) == new for event in JOB_REACTIONS):
            return True
    return False


@st.composite
def job_specs(draw: st.DrawFn) -> list[TaskSpec]:
    """A small job: tasks of both types, each depending on some earlier ones."""
    count = draw(st.integers(1, 5))
    specs = []
    for index in range(count):
        parents = draw(st.sets(st.integers(0, index - 1), max_size=2)) if index else set()
        specs.append(
            TaskSpec(
                name=f"t{index}",
                task_type=draw(st.sampled_from(TASK_TYPES)),
                commands=[{"name": "sleep", "settings": {"time_in_seconds": 1}}],
                priority=draw(st.sampled_from([10, 50, 90])),
                parents=tuple(sorted(parents)),
            )
        )
    return specs


class ManagerMachine(RuleBasedStateMachine):
    """Workers, a user and the clock against one manager.

    Each example gets a database of its own on ``server`` (see :func:`fresh_database`).
    """

    worker_ids = Bundle("workers")
    job_ids = Bundle("jobs")

    def __init__(self, server: str = "") -> None:
        super().__init__()
        self.resources = contextlib.ExitStack()
        directory = self.resources.enter_context(tempfile.TemporaryDirectory())
        database = self.resources.enter_context(fresh_database(server))
        self.clock = FakeClock()
        settings = make_settings(
            Path(directory),
            database=database,
            blacklist_threshold=2,
            task_fail_after_softfail_count=3,
            failed_task_ratio=FAILED_TASK_RATIO,
        )
        try:
            self.manager = Manager(settings, clock=self.clock)
        except BaseException:
            self.resources.close()  # Hypothesis calls teardown only on a machine it got.
            raise
        # The task each worker believes it runs, as the real worker would after /task.
        self.believes: dict[str, str | None] = {}
        self.created_tasks: set[str] = set()
        self.snapshot = read_snapshot(self.manager)

    def teardown(self) -> None:
        self.manager.close()
        self.resources.close()

    # --- workers ---------------------------------------------------------------------------------

    @initialize(target=worker_ids)
    def first_worker(self) -> str:
        return self._register(TASK_TYPES)

    @precondition(lambda self: len(self.believes) < 6)
    @rule(
        target=worker_ids,
        task_types=st.sampled_from([("sleep",), ("render",), ("sleep", "render"), ()]),
    )
    def register(self, task_types: tuple[str, ...]) -> str:
        return self._register(task_types)

    def _register(self, task_types: tuple[str, ...]) -> str:
        worker = self.manager.workers.register(
            WorkerRegistration(
                secret="s", platform="linux", supported_task_types=task_types, nickname="w"
            ),
            "10.0.0.5:1234",
        )
        worker_id = str(worker.id)
        self.believes[worker_id] = None
        return worker_id

    @rule(worker=worker_ids)
    def sign_on(self, worker: str) -> None:
        self.manager.workers.sign_on(worker, WorkerSignonDoc(), PEER)
        # A worker that starts again has forgotten what it ran.
        self.believes[worker] = None

    @rule(worker=worker_ids)
    def fetch(self, worker: str) -> None:
        before = self.snapshot
        result = self.manager.scheduler.fetch_task(worker, PEER)
        me = before.workers[worker]
        match result:
            case StatusChange(status):
                assert me.status_requested == status
            case NoTaskTypes():
                assert not me.task_types
                assert not me.status_requested
            case NoTask():
                assert not me.status_requested
                assert before.running_of(worker) == []
                assert before.candidates_for(worker) == [], "a runnable task was not handed out"
            case Assigned(document):
                assert not me.status_requested
                task_id = str(document.id)
                task = before.tasks[task_id]
                assert document.status == TaskStatus.ACTIVE
                running = before.running_of(worker)
                if running:
                    # The task it runs already, never a second one.
                    assert running == [task_id]
                else:
                    assert task.status in SCHEDULABLE, f"handed out a {task.status} task"
                    assert task.runnable
                    assert task_id in before.candidates_for(worker)
                    assert before.jobs[task.job_id] not in HOLDING_JOB_STATUSES, (
                        f"a {before.jobs[task.job_id]} job handed out a task"
                    )
                    for other, believed in self.believes.items():
                        if other != worker and believed == task_id:
                            # The other worker lost it (re-queued); it may no longer run it.
                            assert task.status != TaskStatus.ACTIVE.value
                self.believes[worker] = task_id

    @precondition(lambda self: any(self.believes.values()))
    @rule(
        data=st.data(),
        status=st.sampled_from(["", "active", "completed", "failed", "canceled"]),
    )
    def report(self, data: st.DataObject, status: str) -> None:
        worker = data.draw(st.sampled_from(sorted(w for w, t in self.believes.items() if t)))
        task_id = self.believes[worker]
        assert task_id is not None
        before = self.snapshot.tasks[task_id]
        update = TaskUpdate(task_status=status, activity=f"reporting {status}", log="a line\n")
        try:
            self.manager.task_updates.update(worker, task_id, update, PEER)
        except Conflict:
            assert before.worker_id not in (None, worker)
            self.believes[worker] = None
            return
        assert before.worker_id in (None, worker), "another worker's task took an update"
        after = read_snapshot(self.manager).tasks[task_id]
        if before.status == TaskStatus.ACTIVE.value and status == "completed":
            assert after.status == TaskStatus.COMPLETED.value
        if status in ("completed", "failed", "canceled"):
            self.believes[worker] = None

    @precondition(lambda self: any(self.believes.values()))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(w for w, t in self.believes.items() if t)))
        task_id = self.believes[worker]
        assert task_id is not None
        before = self.snapshot.tasks[task_id]
        self.manager.task_updates.return_task(worker, task_id, PEER)
        self.believes[worker] = None
        after = read_snapshot(self.manager)
        if before.worker_id == worker and before.status == TaskStatus.ACTIVE.value:
            held = after.jobs[before.job_id] == JobStatus.PAUSED
            expected = TaskStatus.PAUSED if held else TaskStatus.CLAIMED_BY_MANAGER
            assert after.tasks[task_id].status == expected

    @precondition(lambda self: any(self.believes.values()))
    @rule(data=st.data())
    def may_i_run(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(w for w, t in self.believes.items() if t)))
        task_id = self.believes[worker]
        assert task_id is not None
        before = self.snapshot.tasks[task_id]
        answer = self.manager.task_updates.may_i_run(worker, ObjectId(task_id), PEER)
        if before.worker_id not in (None, worker) or before.status != TaskStatus.ACTIVE.value:
            assert not answer.may_keep_running
        if not answer.may_keep_running:
            # The real worker stops the task and gives it back.
            self.manager.task_updates.return_task(worker, task_id, PEER)
            self.believes[worker] = None

    @rule(worker=worker_ids)
    def sign_off(self, worker: str) -> None:
        self.manager.workers.sign_off(worker)
        self.believes[worker] = None
        after = read_snapshot(self.manager)
        assert after.workers[worker].status == WorkerStatus.OFFLINE.value
        assert not [
            t for t in after.tasks.values() if t.worker_id == worker and t.status in RUNNING
        ]

    @rule(worker=worker_ids)
    def poll_status_change(self, worker: str) -> None:
        request = self.manager.workers.status_change(worker, PEER)
        expected = self.snapshot.workers[worker].status_requested
        assert (request.status.value if request else "") == expected

    @rule(
        worker=worker_ids,
        status=st.sampled_from(["asleep", "awake", "shutdown"]),
        lazy=st.booleans(),
    )
    def request_status(self, worker: str, status: str, lazy: bool) -> None:
        self.manager.workers.request_status(worker, status, lazy=lazy)

    @rule(
        worker=worker_ids,
        other=st.sampled_from(["awake", "asleep", "error", "testing", "offline", "bogus"]),
        as_asked=st.booleans(),
    )
    def acknowledge(self, worker: str, other: str, as_asked: bool) -> None:
        requested = self.snapshot.workers[worker].status_requested
        acked = requested if as_asked and requested else other
        self.manager.workers.acknowledge(worker, acked)
        if acked == WorkerStatus.SHUTDOWN.value:
            self.manager.workers.sign_off(worker)
            self.believes[worker] = None

    # --- time --------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([10, 45, 90, 11 * 60]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)
        self.manager.housekeeping.check_timeouts()
        after = read_snapshot(self.manager)
        now = self.clock()
        settings = self.manager.settings
        for task in after.tasks.values():
            if task.status in RUNNING:
                assert task.last_worker_ping is not None
                assert task.last_worker_ping > now - settings.active_task_timeout_interval
        for worker in after.workers.values():
            if worker.status == WorkerStatus.AWAKE.value:
                assert worker.last_activity is not None
                assert worker.last_activity > now - settings.active_worker_timeout_interval

    # --- jobs --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.snapshot.jobs) < 8)
    @rule(
        target=job_ids,
        specs=job_specs(),
        priority=st.sampled_from([10, 50, 90]),
        start_paused=st.booleans(),
    )
    def submit_job(self, specs: list[TaskSpec], priority: int, start_paused: bool) -> str:
        job = self.manager.jobs.create_job(
            name="job", job_type="test", tasks=specs, priority=priority, start_paused=start_paused
        )
        with self.manager.database.transaction() as connection:
            ids = connection.execute(sa.select(tasks.c.id).where(tasks.c.job_id == str(job.id)))
            created = {row.id for row in ids}
        assert len(created) == len(specs)
        self.created_tasks |= created
        return str(job.id)

    @rule(
        job=job_ids,
        requested=st.sampled_from(["cancel-requested", "paused", "queued", "requeued"]),
    )
    def job_action(self, job: str, requested: str) -> None:
        before = self.snapshot.jobs[job]
        try:
            self.manager.jobs.request_status(job, requested)
        except InvalidTransition:
            assert read_snapshot(self.manager).jobs[job] == before

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def database_is_consistent(self) -> None:
        now = read_snapshot(self.manager)
        previous = self.snapshot
        known = {status.value for status in TaskStatus}

        assert set(now.tasks) == self.created_tasks, "a task was lost or appeared"
        for task_id, task in now.tasks.items():
            assert task.job_id in now.jobs
            assert task.status in known, task.status
            old = previous.tasks.get(task_id)
            if old is not None and old.status != task.status:
                assert one_transition(old.status, task.status), (
                    f"task {task_id}: {old.status} -> {task.status} is not one transition"
                )
            parents = now.parents.get(task_id, [])
            unfinished = sum(
                1 for parent in parents if now.tasks[parent].status != TaskStatus.COMPLETED
            )
            assert task.unfinished_parents == unfinished, task_id
            assert task.runnable == (task.status in SCHEDULABLE and unfinished == 0), task_id

        active_per_worker = Counter(
            task.worker_id for task in now.tasks.values() if task.status == TaskStatus.ACTIVE
        )
        assert all(count == 1 for count in active_per_worker.values()), active_per_worker

        by_job: dict[str, Counter[str]] = {job_id: Counter() for job_id in now.jobs}
        for task in now.tasks.values():
            by_job[task.job_id][task.status] += 1
        kept = {
            (job_id, status): count for job_id, c in by_job.items() for status, count in c.items()
        }
        assert now.counts == kept, "the per-job task counts drifted from the tasks"
        for job_id, status in now.jobs.items():
            change = derive_job_status(status, dict(by_job[job_id]), failed_ratio=FAILED_TASK_RATIO)
            assert change is None, f"job {job_id} is {status} but its tasks say {change}"
            if status in (JobStatus.CANCELED, JobStatus.COMPLETED):
                assert not by_job[job_id].keys() & SCHEDULABLE, (status, by_job[job_id])
        self.snapshot = now


@pytest.mark.usefixtures("cheap_secrets")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_paused_job_does_not_hand_out_a_task_whose_worker_timed_out(backend: str) -> None:
    # Found by the state machine: the task went back to claimed-by-manager and was runnable.
    machine = ManagerMachine(database_server(backend))
    try:
        worker = machine.first_worker()
        machine.database_is_consistent()
        job = machine.submit_job(specs=[spec("t0")], priority=50, start_paused=False)
        machine.database_is_consistent()
        machine.fetch(worker)
        machine.database_is_consistent()
        machine.job_action(job, "paused")
        machine.database_is_consistent()
        machine.time_passes(seconds=11 * 60)
        machine.database_is_consistent()
        assert set(machine.snapshot.tasks.values()) == {
            attrs.evolve(task, status="paused", runnable=False)
            for task in machine.snapshot.tasks.values()
        }
        machine.manager.workers.acknowledge(worker, "awake")
        assert isinstance(machine.manager.scheduler.fetch_task(worker, PEER), NoTask)
        machine.job_action(job, "queued")
        assert isinstance(machine.manager.scheduler.fetch_task(worker, PEER), Assigned)
    finally:
        machine.teardown()


@pytest.fixture
def cheap_secrets() -> Iterator[None]:
    """Registration hashes the secret with scrypt on purpose; these workers never log in."""
    with mock.patch("flamenco_manager.services.workers.hash_secret", return_value="x"):
        yield


def _run(backend: str, **options: Any) -> None:
    server = database_server(backend)
    run_state_machine_as_test(
        lambda: ManagerMachine(server),
        settings=settings(
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            **options,
        ),
    )


# Examples per backend: PostgreSQL pays a schema and a round trip per statement, so it runs
# fewer; the rules and invariants are the same.
EXAMPLES = {"sqlite": 40, "postgresql": 15}


@pytest.mark.usefixtures("cheap_secrets")
@pytest.mark.parametrize("backend", BACKENDS)
def test_many_workers_against_the_manager(backend: str) -> None:
    _run(backend, max_examples=EXAMPLES[backend], stateful_step_count=40)


@pytest.mark.slow
@pytest.mark.usefixtures("cheap_secrets")
@pytest.mark.parametrize("backend", BACKENDS)
def test_many_workers_against_the_manager_at_length(backend: str) -> None:
    # Longer runs are worth a hand run now and then (300 x 80 found the paused-job bug); CI
    # keeps to about a minute.
    _run(backend, max_examples=EXAMPLES[backend] * 5 // 2, stateful_step_count=60)
