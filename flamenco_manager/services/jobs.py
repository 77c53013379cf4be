"""Jobs: creating them with their tasks, user actions on them, and keeping their status right.

A job's status follows from its tasks (:func:`flamenco_protocol.job_states.derive_job_status`):
every service that changes a task's status calls :func:`refresh_job_status` in the same
transaction, so a job never disagrees with its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.storage import jobs as job_store
from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage.database import AFTER_COMMIT
from flamenco_manager.storage.jobs import JobRecord
from flamenco_manager.storage.tasks import TaskRecord
from flamenco_protocol.documents import Command, WorkerRef
from flamenco_protocol.errors import InvalidTransition
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.job_states import (
    JobEvent,
    derive_job_status,
    needs_runnable,
    plan_job_action,
)
from flamenco_protocol.statuses import FINISHED_JOB_STATUSES, JobStatus, TaskStatus
from flamenco_protocol.task_states import TaskEvent, next_task_status

from .context import ServiceContext, log_change
from .errors import Conflict, Invalid, NotFound
from .events import Event, EventBus, stage

__all__ = [
    "JobPage",
    "JobService",
    "JobSummary",
    "TaskDetails",
    "TaskSpec",
    "refresh_job_status",
]

# A single task may be requeued only in a job that runs or has finished: in a paused or
# canceling job it would be handed out behind the user's back.
_TASK_REQUEUE_JOB_STATUSES: Final = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.ACTIVE,
        JobStatus.COMPLETED,
        JobStatus.CANCELED,
        JobStatus.FAILED,
    }
)
_RUNNING_TASK_STATUSES: Final = (TaskStatus.ACTIVE.value, TaskStatus.CANCEL_REQUESTED.value)

# A job settles in at most a few steps (e.g. too many failures -> failed -> tasks canceled).
_MAX_SETTLE_STEPS = 5


@attrs.frozen(kw_only=True)
class TaskSpec:
    """A task of a new job. ``parents`` are indices of earlier tasks in the same job."""

    name: str
    task_type: str
    commands: list[dict[str, Any]]
    priority: int = 50
    parents: tuple[int, ...] = ()


@attrs.frozen
class JobSummary:
    """A job with the number of its tasks in each status."""

    job: JobRecord
    task_counts: dict[str, int]


@attrs.frozen
class JobPage:
    """One page of a job listing; ``next_cursor`` continues it (``""`` on the last page)."""

    jobs: list[JobSummary]
    next_cursor: str


@attrs.frozen
class TaskDetails:
    """A task with its parents, the workers that failed it and, when asked, its log's tail."""

    task: TaskRecord
    parents: tuple[ObjectId, ...]
    failed_by: list[tuple[ObjectId, str]]
    log_tail: str = ""

    @property
    def commands(self) -> tuple[Command, ...]:
        """The stored commands as protocol documents (placeholders not replaced)."""
        return tuple(
            Command(name=command.get("name", ""), settings=command.get("settings") or {})
            for command in self.task.commands
        )

    @property
    def failed_by_workers(self) -> tuple[WorkerRef, ...]:
        """The workers that failed the task, as protocol documents."""
        return tuple(
            WorkerRef(id=worker_id, identifier=identifier)
            for worker_id, identifier in self.failed_by
        )


def refresh_job_status(
    connection: Connection,
    job_id: str,
    now: datetime,
    *,
    failed_ratio: float = 0.1,
    events: EventBus | None = None,
) -> JobStatus | str | None:
    """Bring a job's status in line with its tasks; its new status, or ``None`` if unknown.

    With ``events``, a change of the job's status is announced there when the transaction
    commits.
    """
    stored = job_store.status_of(connection, job_id)
    if stored is None:
        return None
    status, stored_reason = stored
    for _ in range(_MAX_SETTLE_STEPS):
        counts = task_store.status_counts(connection, job_id)
        change = derive_job_status(
            status,
            counts,
            failed_ratio=failed_ratio,
            any_runnable=not needs_runnable(counts)
            or task_store.has_runnable_task(connection, job_id),
        )
        if change is None:
            break
        reason = change.reason and f"Failing job {job_id} because {change.reason}"
        job_store.set_status(connection, job_id, change.status, reason or stored_reason, now)
        if change.task_event is not None:
            task_store.apply_event_to_job(
                connection,
                job_id,
                change.task_event,
                now,
                activity=f"Job {change.status}: {change.reason}" if change.reason else "",
            )
        log_change(
            connection,
            "job status changed",
            logging.WARNING if change.status == JobStatus.FAILED else logging.INFO,
            job=job_id,
            status=str(change.status),
            previous=str(status),
            reason=reason or stored_reason,
        )
        status = change.status
        if events is not None:
            stage(
                connection,
                events,
                Event(
                    "job",
                    job_id,
                    {"status": str(status), "reason": reason or stored_reason},
                ),
            )
    return status


BUILD_STEP: Final = 1000
"""Tasks per transaction when :meth:`JobService.build_job` stores a bigger job in steps."""


@attrs.frozen
class _NewJob:
    """A job about to be stored: its row and its tasks, IDs given."""

    record: JobRecord
    tasks: list[task_store.NewTask]
    status: JobStatus
    """What it becomes once built: queued, or paused."""
    task_status: TaskStatus
    """What its tasks become once built."""


class JobService:
    """Creates jobs and acts on them on a user's behalf."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def create_job(
        self,
        *,
        name: str,
        job_type: str,
        tasks: Sequence[TaskSpec],
        priority: int = 50,
        settings: dict[str, Any] | None = None,
        start_paused: bool = False,
        submitter: str = "",
        description: str = "",
    ) -> JobRecord:
        """Store a job and its tasks in one transaction, queued (or paused), and return it.

        Tasks get IDs in the order given, so the scheduler's tie-break follows that order.
        """
        return self._store_at_once(
            self._new_job(
                name, job_type, tasks, priority, settings, start_paused, submitter, description
            )
        )

    async def build_job(
        self,
        *,
        name: str,
        job_type: str,
        tasks: Sequence[TaskSpec],
        priority: int = 50,
        settings: dict[str, Any] | None = None,
        start_paused: bool = False,
        submitter: str = "",
        description: str = "",
    ) -> JobRecord:
        """The job :meth:`create_job` stores, without holding the farm for a big one.

        A job of more than :data:`BUILD_STEP` tasks goes in one step of that many tasks per
        transaction, the event loop turning between steps: under construction meanwhile, its
        tasks too, so that nothing of it is handed out; then one transaction makes it queued
        (or paused) whole. Storing 10,000 tasks in one transaction held every worker's request
        for about 0.4 s. A job deleted while being built raises :class:`NotFound`; on any
        failure the part built is removed (or, if even that fails, by
        :meth:`remove_abandoned_builds`).
        """
        job = self._new_job(
            name, job_type, tasks, priority, settings, start_paused, submitter, description
        )
        if len(job.tasks) <= BUILD_STEP:
            return self._store_at_once(job)
        job = attrs.evolve(
            job, record=attrs.evolve(job.record, status=JobStatus.UNDER_CONSTRUCTION)
        )
        job_id = str(job.record.id)
        try:
            priority = job.record.priority
            for start in range(0, len(job.tasks), BUILD_STEP):
                with self.context.database.transaction() as connection:
                    if start == 0:
                        job_store.insert(connection, job.record)
                    else:
                        # A user may have changed the priority since the last step.
                        priority = self._still_building(connection, job_id).priority
                    step = job.tasks[start : start + BUILD_STEP]
                    self._insert_tasks(
                        connection, job, step, TaskStatus.UNDER_CONSTRUCTION, priority
                    )
                await asyncio.sleep(0)
            compiled = TaskEvent.COMPILED_PAUSED if start_paused else TaskEvent.COMPILED
            with self.context.database.transaction() as connection:
                self._still_building(connection, job_id)
                now = self.context.clock()
                task_store.apply_event_to_job(connection, job_id, compiled, now)
                job_store.set_status(connection, job_id, job.status, "", now)
                return self._created(connection, job)
        except BaseException:
            with contextlib.suppress(Exception):
                self._delete_unbuilt(job_id)
            raise

    def remove_abandoned_builds(self, before: datetime | None) -> int:
        """Delete the jobs still under construction with no step since before ``before`` (all
        of them, when ``None``): a process stopped while building them (see
        :meth:`build_job`); how many."""
        statuses = [JobStatus.UNDER_CONSTRUCTION.value]
        with self.context.database.reading() as connection:
            abandoned = job_store.changed_before(connection, statuses, before)
        return sum(self._delete_unbuilt(job_id, before) for job_id in abandoned)

    def remove_orphan_logs(self) -> int:
        """Remove the logs of the jobs that are gone (a process stopped between committing a
        job's deletion and removing its logs, or a worker's update wrote to a job another
        process was deleting); for how many jobs."""
        root = self.context.settings.logs_dir
        # Listed before the jobs are read: a job created meanwhile is not listed.
        on_disk = [
            directory.name
            for directory in root.glob("job-*/*")
            if ObjectId.is_valid(directory.name) and directory.is_dir()
        ]
        if not on_disk:
            return 0
        with self.context.database.reading() as connection:
            orphans = set(on_disk) - job_store.existing(connection, on_disk)
        for job_id in sorted(orphans):
            self.context.logs.delete_job(job_id)
        return len(orphans)

    def _new_job(
        self,
        name: str,
        job_type: str,
        tasks: Sequence[TaskSpec],
        priority: int,
        settings: dict[str, Any] | None,
        start_paused: bool,
        submitter: str,
        description: str,
    ) -> _NewJob:
        if not 1 <= priority <= 100:
            raise Invalid(f"priority must be between 1 and 100, not {priority}")
        for index, spec in enumerate(tasks):
            bad = [parent for parent in spec.parents if not 0 <= parent < index]
            if bad:
                raise Invalid(
                    f"task {index} ({spec.name!r}): parents must be earlier tasks, not {bad}"
                )
            if not spec.task_type:
                raise Invalid(f"task {index} ({spec.name!r}): task_type is empty")
        now = self.context.clock()
        ids = [ObjectId.new() for _ in tasks]
        status = JobStatus.PAUSED if start_paused else JobStatus.QUEUED
        record = JobRecord(
            id=ObjectId.new(),
            name=name,
            job_type=job_type,
            description=description,
            status=status,
            status_reason="",
            priority=priority,
            settings=dict(settings or {}),
            start_paused=start_paused,
            submitter=submitter,
            created=now,
            updated=now,
        )
        new_tasks = [
            task_store.NewTask(
                id=task_id,
                name=spec.name,
                task_type=spec.task_type,
                commands=spec.commands,
                priority=spec.priority,
                parents=tuple(ids[parent] for parent in spec.parents),
            )
            for task_id, spec in zip(ids, tasks, strict=True)
        ]
        task_status = TaskStatus.PAUSED if start_paused else TaskStatus.QUEUED
        return _NewJob(record, new_tasks, status, task_status)

    def _store_at_once(self, job: _NewJob) -> JobRecord:
        with self.context.database.transaction() as connection:
            job_store.insert(connection, job.record)
            self._insert_tasks(connection, job, job.tasks, job.task_status, job.record.priority)
            return self._created(connection, job)

    def _insert_tasks(
        self,
        connection: Connection,
        job: _NewJob,
        new_tasks: Sequence[task_store.NewTask],
        status: TaskStatus,
        job_priority: int,
    ) -> None:
        task_store.insert_many(
            connection,
            job_id=str(job.record.id),
            job_type=job.record.job_type,
            job_priority=job_priority,
            status=status,
            new_tasks=new_tasks,
            now=job.record.created,
        )

    def _created(self, connection: Connection, job: _NewJob) -> JobRecord:
        """The stored job, once its tasks are in: its status settled, announced and logged."""
        job_id = str(job.record.id)
        self._refresh(connection, job_id, job.record.created)
        stored = job_store.get(connection, job_id)
        assert stored is not None
        self._announce(connection, stored)
        log_change(
            connection,
            "job created",
            job=job_id,
            job_name=stored.name,
            job_type=stored.job_type,
            tasks=len(job.tasks),
            status=str(stored.status),
            submitter=stored.submitter,
        )
        return stored

    def _still_building(self, connection: Connection, job_id: str) -> JobRecord:
        """Mark a build step (so the build is not taken as abandoned) and give the job as it is
        now; :class:`NotFound` when the job was deleted meanwhile."""
        job = job_store.get(connection, job_id, for_update=True)
        if job is None or job.status != JobStatus.UNDER_CONSTRUCTION:
            raise NotFound(f"Job {job_id} was deleted while it was being built.")
        job_store.set_status(
            connection, job_id, JobStatus.UNDER_CONSTRUCTION, "", self.context.clock()
        )
        return job

    def _delete_unbuilt(self, job_id: str, before: datetime | None = None) -> bool:
        """Delete a job still under construction (and untouched since ``before``, if given)."""
        with self.context.database.transaction() as connection:
            job = job_store.get(connection, job_id, for_update=True)
            if job is None or job.status != JobStatus.UNDER_CONSTRUCTION:
                return False
            if before is not None and job.updated >= before:
                return False
            job_store.delete(connection, job_id)
        return True

    def get(self, job_id: str) -> JobRecord:
        """A job; :class:`NotFound` if there is none."""
        with self.context.database.transaction() as connection:
            job = job_store.get(connection, job_id)
        if job is None:
            raise NotFound(f"Job {job_id} is unknown.")
        return job

    def request_status(self, job_id: str, requested: str, reason: str = "") -> JobRecord:
        """A user asks for ``requested`` (cancel-requested, paused, queued, requeued)."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            job = job_store.get(connection, job_id, for_update=True)
            if job is None:
                raise NotFound(f"Job {job_id} is unknown.")
            change = plan_job_action(job.status, requested)
            job_store.set_status(connection, job_id, change.status, reason, now)
            if change.event is JobEvent.REQUEUE:
                requeued = task_store.ids_of_job_in(
                    connection,
                    job_id,
                    [
                        status
                        for status in TaskStatus
                        if status is not TaskStatus.COMPLETED or change.requeue_completed
                    ],
                )
                task_store.clear_failures(connection, requeued)
            if change.task_event is not None:
                task_store.apply_event_to_job(
                    connection,
                    job_id,
                    change.task_event,
                    now,
                    include_completed=change.requeue_completed,
                    activity=_ACTIVITY.get(change.task_event, ""),
                )
            log_change(
                connection,
                "job status change asked",
                job=job_id,
                requested=requested,
                status=str(change.status),
                previous=str(job.status),
            )
            self._refresh(connection, job_id, now)
            updated = job_store.get(connection, job_id)
            assert updated is not None
            self._announce(connection, updated)
        return updated

    def record_failed_job(
        self,
        *,
        name: str,
        job_type: str,
        settings: dict[str, Any],
        reason: str,
        priority: int = 50,
        submitter: str = "",
        description: str = "",
    ) -> JobRecord:
        """Store a job whose job type could not compile it: ``construction-failed``, no tasks."""
        now = self.context.clock()
        record = JobRecord(
            id=ObjectId.new(),
            name=name,
            job_type=job_type,
            description=description,
            status=JobStatus.CONSTRUCTION_FAILED,
            status_reason=reason,
            priority=priority,
            settings=dict(settings),
            start_paused=False,
            submitter=submitter,
            created=now,
            updated=now,
        )
        with self.context.database.transaction() as connection:
            job_store.insert(connection, record)
            self._announce(connection, record)
            log_change(
                connection,
                "job could not be compiled",
                logging.WARNING,
                job=str(record.id),
                job_name=name,
                job_type=job_type,
                reason=reason,
                submitter=submitter,
            )
        return record

    def page(
        self,
        *,
        statuses: list[str] | None = None,
        job_types: list[str] | None = None,
        name_contains: str = "",
        limit: int = 50,
        cursor: str = "",
    ) -> JobPage:
        """Jobs newest first, filtered, ``limit`` at a time; ``cursor`` is a previous page's."""
        if cursor and not ObjectId.is_valid(cursor):
            raise Invalid(f"cursor: not a cursor from a previous page: {cursor!r}")
        with self.context.database.transaction() as connection:
            records = job_store.list_jobs(
                connection,
                statuses=statuses,
                job_types=job_types,
                name_contains=name_contains,
                limit=limit + 1,
                before=cursor.lower() or None,
            )
            shown = records[:limit]
            counts = task_store.status_counts_of_jobs(connection, [str(job.id) for job in shown])
        next_cursor = str(shown[-1].id) if len(records) > limit else ""
        return JobPage(
            [JobSummary(job, counts[str(job.id)]) for job in shown],
            next_cursor,
        )

    def summary(self, job_id: str) -> JobSummary:
        """A job with its task counts; :class:`NotFound` if there is none."""
        with self.context.database.transaction() as connection:
            job = job_store.get(connection, job_id)
            if job is None:
                raise NotFound(f"Job {job_id} is unknown.")
            return JobSummary(job, task_store.status_counts(connection, job_id))

    def tasks(
        self,
        job_id: str,
        task_ids: Collection[str] | None = None,
        *,
        statuses: Collection[str] = (),
        offset: int = 0,
        limit: int | None = None,
    ) -> list[TaskDetails]:
        """Every task of a job, in creation order; :class:`NotFound` for an unknown job.

        With ``task_ids``, only those of them that are tasks of the job: what a page showing a
        busy job asks for when its tasks change (a job of 10,000 tasks is 5 MB of JSON). With
        ``statuses``, only those in one of them; with ``limit``, that many after the first
        ``offset``: one page of a big job is read, not the job.

        It only reads, without the write lock: callers may run it on a thread of their own.
        """
        with self.context.database.reading() as connection:
            if job_store.get(connection, job_id) is None:
                raise NotFound(f"Job {job_id} is unknown.")
            records = task_store.list_of_job(
                connection, job_id, task_ids, statuses=statuses, offset=offset, limit=limit
            )
            if statuses or limit is not None:
                task_ids = [str(task.id) for task in records]  # the parents of the page only
            parents = task_store.parents_in_job(connection, job_id, task_ids)
            failures = task_store.failures_in_job(connection, job_id, task_ids)
        return [
            TaskDetails(task, parents.get(str(task.id), ()), failures.get(str(task.id), []))
            for task in records
        ]

    def task(self, task_id: str, *, log_lines: int = 10) -> TaskDetails:
        """One task with the last ``log_lines`` lines of its log; :class:`NotFound` if none."""
        with self.context.database.transaction() as connection:
            task = task_store.get(connection, task_id)
            if task is None:
                raise NotFound(f"Task {task_id} is unknown.")
            parents = task_store.parents_of(connection, task_id)
            failed_by = task_store.failed_by(connection, task_id)
        tail = self.context.logs.tail(str(task.job_id), task_id, log_lines)
        return TaskDetails(task, parents, failed_by, tail)

    def names_and_jobs(self, task_ids: Collection[str]) -> dict[str, tuple[str, str]]:
        """The name and job ID of each of ``task_ids`` that is a task (for a list of workers,
        each showing its current task by name): one query for them all."""
        if not task_ids:
            return {}
        with self.context.database.transaction() as connection:
            return task_store.names_and_jobs(connection, task_ids)

    def set_priority(self, job_id: str, priority: int) -> JobRecord:
        """Change a job's priority (1..100); its tasks' ``job_priority`` follows."""
        if not 1 <= priority <= 100:
            raise Invalid(f"priority: must be between 1 and 100, not {priority}")
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            if job_store.get(connection, job_id, for_update=True) is None:
                raise NotFound(f"Job {job_id} is unknown.")
            job_store.set_priority(connection, job_id, priority, now)
            job = job_store.get(connection, job_id)
            assert job is not None
            self._announce(connection, job)
        return job

    def delete(self, job_id: str) -> None:
        """Delete a job, its tasks and their logs.

        A job with a running task is refused (:class:`Conflict`): cancel it first, so that no
        worker is left running a task the manager forgot.
        """
        if not self._delete(job_id):
            raise NotFound(f"Job {job_id} is unknown.")

    def finished_before(self, before: datetime) -> list[str]:
        """IDs of the finished jobs (completed, canceled, failed) unchanged since before
        ``before``, the longest unchanged first."""
        statuses = [status.value for status in FINISHED_JOB_STATUSES]
        with self.context.database.reading() as connection:
            return job_store.changed_before(connection, statuses, before)

    async def delete_finished(self, before: datetime) -> list[str]:
        """Delete the jobs finished (completed, canceled, failed) and unchanged since before
        ``before``, with their tasks and logs (see :meth:`delete_if_finished`); their IDs.

        One job per transaction, and the event loop turns between jobs: workers are answered
        while a year of jobs goes.
        """
        deleted = []
        for job_id in self.finished_before(before):
            if self.delete_if_finished(job_id, before):
                deleted.append(job_id)
            await asyncio.sleep(0)
        return deleted

    def delete_if_finished(self, job_id: str, before: datetime) -> bool:
        """Delete a job as :meth:`delete` does if it is still finished and unchanged since before
        ``before`` (a user may have requeued it meanwhile) and none of its tasks still runs;
        whether it was deleted."""
        try:
            return self._delete(job_id, finished_before=before)
        except Conflict:
            return False  # a canceled task still stopping on its worker: deleted a pass later

    def _delete(self, job_id: str, finished_before: datetime | None = None) -> bool:
        with self.context.database.transaction() as connection:
            job = job_store.get(connection, job_id, for_update=True)
            if job is None:
                return False
            if finished_before is not None and not (
                job.status in FINISHED_JOB_STATUSES and job.updated < finished_before
            ):
                return False
            counts = task_store.status_counts(connection, job_id)
            running = sum(counts.get(status, 0) for status in _RUNNING_TASK_STATUSES)
            if running:
                raise Conflict(
                    f"Job {job_id} has {running} running task(s); cancel it and wait for them "
                    "to stop before deleting it."
                )
            job_store.delete(connection, job_id)
            self.context.announce(connection, "job", job_id, deleted=True)
            log_change(connection, "job deleted", job=job_id, job_name=job.name)
            # The logs go once the deletion is committed, not before: inside a commit group the
            # block above is only a savepoint, and a process killed (or a commit failing) before
            # the commit would leave the job without its logs. A process killed between the
            # commit and this leaves them to remove_orphan_logs.
            connection.info[AFTER_COMMIT].append(
                functools.partial(self.context.logs.delete_job, job_id)
            )
        return True

    def requeue_task(self, task_id: str, reason: str = "") -> TaskRecord:
        """Run one task again (whatever its status); who failed it is forgotten.

        Refused (:class:`Conflict`) while its job is paused, canceling or being built.
        """
        return self._task_action(task_id, TaskEvent.REQUEUED, reason or "Requeued by a user")

    def cancel_task(self, task_id: str, reason: str = "") -> TaskRecord:
        """Cancel one task: a waiting one at once, a running one through its worker.

        The job goes on; :class:`Conflict` if the task has already finished.
        """
        return self._task_action(task_id, TaskEvent.USER_CANCELED, reason or "Canceled by a user")

    def _task_action(self, task_id: str, event: TaskEvent, activity: str) -> TaskRecord:
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            task = task_store.get(connection, task_id, for_update=True)
            if task is None:
                raise NotFound(f"Task {task_id} is unknown.")
            job = job_store.get(connection, str(task.job_id), for_update=True)
            assert job is not None
            if event is TaskEvent.REQUEUED and job.status not in _TASK_REQUEUE_JOB_STATUSES:
                raise Conflict(
                    f"Task {task_id} cannot be requeued while its job is {job.status}"
                    + ("; resume the job instead." if job.status == JobStatus.PAUSED else ".")
                )
            try:
                new_status = next_task_status(task.status, event)
            except InvalidTransition:
                raise Conflict(
                    f"Task {task_id} is {task.status}: it cannot be "
                    f"{'requeued' if event is TaskEvent.REQUEUED else 'canceled'}."
                ) from None
            task_store.set_status(connection, task, new_status, activity=activity, last_updated=now)
            if event is TaskEvent.REQUEUED:
                task_store.clear_failures(connection, [task_id])
            self.context.announce(
                connection, "task", task_id, job=str(task.job_id), status=new_status.value
            )
            log_change(
                connection,
                "task requeued by a user"
                if event is TaskEvent.REQUEUED
                else "task canceled by a user",
                task=task_id,
                job=str(task.job_id),
                status=new_status.value,
                previous=str(task.status),
            )
            self._refresh(connection, str(task.job_id), now)
            updated = task_store.get(connection, task_id)
            assert updated is not None
            if updated.status != new_status:
                # The job's rules undid the requeue at once (the job failed again): say so.
                _, reason = job_store.status_of(connection, str(task.job_id)) or ("", "")
                raise Conflict(
                    f"Requeueing task {task_id} alone would fail its job again at once: {reason}. "
                    "Requeue the job, or its failed tasks first."
                )
        return updated

    def _announce(self, connection: Connection, job: JobRecord) -> None:
        self.context.announce(
            connection,
            "job",
            job.id,
            status=str(job.status),
            reason=job.status_reason,
            priority=job.priority,
            name=job.name,
        )

    def _refresh(self, connection: Connection, job_id: str, now: datetime) -> None:
        refresh_job_status(
            connection,
            job_id,
            now,
            failed_ratio=self.context.settings.failed_task_ratio,
            events=self.context.events,
        )


_ACTIVITY = {
    TaskEvent.JOB_CANCELED: "Canceled: the job was canceled",
    TaskEvent.JOB_PAUSED: "Paused: the job was paused",
}
