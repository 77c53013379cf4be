"""``/task``: which task a worker runs next.

In one transaction: the worker is marked seen and awake; a pending status request answers first
(423), then a worker without task types (406); a worker that already runs a task gets that task
again; otherwise the best runnable task is claimed
(:func:`flamenco_manager.storage.tasks.select_next`, an index probe per task type). Claiming
is a conditional update of a runnable row, so two requests never get the same task, within one
process or across processes on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.storage.tasks import TaskRecord
from flamenco_manager.storage.workers import WorkerRecord
from flamenco_protocol.documents import Task
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TaskStatus, WorkerStatus
from flamenco_protocol.worker_states import (
    FetchVerdict,
    WorkerEvent,
    decide_fetch,
    next_worker_status,
)

from .context import ServiceContext, log_change, log_timestamp
from .errors import UnknownWorker
from .jobs import TaskDetails, refresh_job_status
from .variables import Variables
from .workers import Peer, mark_seen, return_task

__all__ = ["Assigned", "FetchResult", "NoTask", "NoTaskTypes", "Scheduler", "StatusChange"]

# Another request may claim the chosen task between selection and claim; try again this often.
_CLAIM_ATTEMPTS: Final = 5
_ASKED_FOR_WORK: Final = "the worker asked for new work"


@attrs.frozen
class Assigned:
    """Run this task (its commands have the worker's variables filled in)."""

    task: Task


@attrs.frozen
class NoTask:
    """Nothing to run now."""


@attrs.frozen
class NoTaskTypes:
    """The worker supports no task types."""


@attrs.frozen
class StatusChange:
    """The worker must change status first."""

    status: WorkerStatus


FetchResult = Assigned | NoTask | NoTaskTypes | StatusChange


def task_document(
    connection: Connection,
    task: TaskRecord,
    variables: Variables,
    platform: str,
    *,
    activity: str,
) -> Task:
    """The protocol document of a task handed to a worker: ``active``, with this activity, and
    variables replaced for ``platform``."""
    details = TaskDetails(
        task,
        task_store.parents_of(connection, str(task.id)),
        task_store.failed_by(connection, str(task.id)),
    )
    document = Task(
        id=task.id,
        job=task.job_id,
        name=task.name,
        status=TaskStatus.ACTIVE,
        priority=task.priority,
        job_priority=task.job_priority,
        job_type=task.job_type,
        task_type=task.task_type,
        commands=details.commands,
        activity=activity,
        parents=details.parents,
        worker=task.worker_nickname,
        failed_by_workers=details.failed_by_workers,
    )
    return variables.replace_in_task(document, platform)


class Scheduler:
    """Hands tasks to workers."""

    def __init__(self, context: ServiceContext, variables: Variables) -> None:
        self.context = context
        self.variables = variables

    def fetch_task(self, worker_id: str, peer: Peer) -> FetchResult:
        """What ``/task`` answers this worker."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                raise UnknownWorker(f"Unable to find worker: {worker_id}", worker_id)
            status = next_worker_status(worker.status, WorkerEvent.ASKED_FOR_WORK)
            if status != worker.status:
                self.context.announce(
                    connection, "worker", worker.id, status=str(status), nickname=worker.nickname
                )
            worker = mark_seen(connection, worker, peer, now, status=status.value)
            verdict = decide_fetch(worker.request, worker.supported_task_types)
            if verdict is FetchVerdict.STATUS_CHANGE:
                assert worker.request is not None
                return StatusChange(worker.request.status)
            if verdict is FetchVerdict.NO_TASK_TYPES:
                return NoTaskTypes()

            task = self._running(connection, worker)
            claimed = task is None
            if task is None:
                task = self._claim(connection, worker, now)
                if task is None:
                    return NoTask()
            if worker.current_task != task.id:
                worker_store.update(connection, worker_id, current_task=str(task.id))
            message = _assignment(task.id, worker)
            self.context.announce(
                connection,
                "task",
                task.id,
                job=str(task.job_id),
                status=TaskStatus.ACTIVE.value,
                activity=message,
                worker=worker_id,
            )
            line = f"{log_timestamp(now)}: {message}"
            # A task sent again is worth a line too: a worker that asks for work while it holds
            # a task lost it, or finished it and has yet to send the update saying so (after a
            # manager restart, say), and runs it again.
            log_change(
                connection,
                "task assigned" if claimed else "task sent again to the worker holding it",
                task=str(task.id),
                job=str(task.job_id),
                worker=worker_id,
                nickname=worker.nickname,
            )
            if claimed:
                # A newly claimed task may start its job; a task sent again changes nothing.
                refresh_job_status(
                    connection,
                    str(task.job_id),
                    now,
                    failed_ratio=self.context.settings.failed_task_ratio,
                    events=self.context.events,
                )
            else:
                task_store.update(connection, str(task.id), activity=message)
            # The answer names the worker that held the task before, as the Go manager's does.
            document = task_document(
                connection, task, self.variables, worker.platform, activity=message
            )
            # The log last, so that a statement failing (the database lost) leaves no run to
            # take back; a commit failing takes the run back (ServiceContext.start_log_run), and
            # the worker asks again.
            if claimed:
                # A new run of the task starts a new log file; the previous run's is kept.
                self.context.start_log_run(connection, str(task.job_id), str(task.id), line)
            else:
                self.context.append_log(connection, str(task.job_id), str(task.id), line)
            return Assigned(document)

    def _running(self, connection: Connection, worker: WorkerRecord) -> TaskRecord | None:
        """The task the worker already runs, if any.

        A worker asking for work runs none of its ``cancel-requested`` tasks (one that restarted
        after its task was canceled, say): they are canceled now. Handed a new task instead, it
        would hold both, and the old one's timeout would take the new one from it too.
        """
        running = None
        for task_id, status in task_store.running_tasks_of(connection, str(worker.id)):
            if status == TaskStatus.CANCEL_REQUESTED:
                return_task(self.context, connection, str(task_id), worker, _ASKED_FOR_WORK)
            elif running is None:
                running = task_id
        return None if running is None else task_store.get(connection, str(running))

    def _claim(
        self, connection: Connection, worker: WorkerRecord, now: datetime
    ) -> TaskRecord | None:
        """The best runnable task for the worker, made ``active`` for it (as it was before)."""
        skip_locked = not self.context.database.is_sqlite
        for _ in range(_CLAIM_ATTEMPTS):
            candidate = task_store.select_next(
                connection, str(worker.id), worker.supported_task_types, skip_locked=skip_locked
            )
            if candidate is None:
                return None
            claimed = task_store.claim(
                connection,
                str(candidate.id),
                str(worker.id),
                worker.nickname,
                now,
                activity=_assignment(candidate.id, worker),
            )
            if claimed:
                return candidate
        return None


def _assignment(task_id: ObjectId, worker: WorkerRecord) -> str:
    """The activity and log line of a task handed to a worker."""
    return f"Manager assigned task {task_id} to worker {worker.identifier}"
