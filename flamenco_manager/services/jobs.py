"""Jobs: creating them with their tasks, user actions on them, and keeping their status right.

A job's status follows from its tasks (:func:`flamenco_protocol.job_states.derive_job_status`):
every service that changes a task's status calls :func:`refresh_job_status` in the same
transaction, so a job never disagrees with its tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.storage import jobs as job_store
from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage.jobs import JobRecord
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.job_states import JobEvent, derive_job_status, plan_job_action
from flamenco_protocol.statuses import JobStatus, TaskStatus
from flamenco_protocol.task_states import TaskEvent

from .context import ServiceContext
from .errors import Invalid, NotFound
from .events import Event, EventBus, stage

__all__ = ["JobService", "TaskSpec", "refresh_job_status"]

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
    job = job_store.get(connection, job_id)
    if job is None:
        return None
    status: JobStatus | str = job.status
    for _ in range(_MAX_SETTLE_STEPS):
        counts = task_store.status_counts(connection, job_id)
        change = derive_job_status(status, counts, failed_ratio=failed_ratio)
        if change is None:
            break
        reason = change.reason and f"Failing job {job_id} because {change.reason}"
        job_store.set_status(connection, job_id, change.status, reason or job.status_reason, now)
        if change.task_event is not None:
            task_store.apply_event_to_job(
                connection,
                job_id,
                change.task_event,
                now,
                activity=f"Job {change.status}: {change.reason}" if change.reason else "",
            )
        status = change.status
        if events is not None:
            stage(
                connection,
                events,
                Event(
                    "job",
                    job_id,
                    {"status": str(status), "reason": reason or job.status_reason},
                ),
            )
    return status


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
        job_id = ObjectId.new()
        ids = [ObjectId.new() for _ in tasks]
        status = JobStatus.PAUSED if start_paused else JobStatus.QUEUED
        record = JobRecord(
            id=job_id,
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
        with self.context.database.transaction() as connection:
            job_store.insert(connection, record)
            task_store.insert_many(
                connection,
                job_id=str(job_id),
                job_type=job_type,
                job_priority=priority,
                status=TaskStatus.PAUSED if start_paused else TaskStatus.QUEUED,
                new_tasks=[
                    task_store.NewTask(
                        id=task_id,
                        name=spec.name,
                        task_type=spec.task_type,
                        commands=spec.commands,
                        priority=spec.priority,
                        parents=tuple(ids[parent] for parent in spec.parents),
                    )
                    for task_id, spec in zip(ids, tasks, strict=True)
                ],
                now=now,
            )
            self._refresh(connection, str(job_id), now)
            stored = job_store.get(connection, str(job_id))
        assert stored is not None
        return stored

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
            self._refresh(connection, job_id, now)
            updated = job_store.get(connection, job_id)
        assert updated is not None
        return updated

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
