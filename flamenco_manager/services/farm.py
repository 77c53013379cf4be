"""The farm as a user sees it: its overall state, and the workers' blocklists.

The farm's state is one word for the dashboard and the CLI, decided from the workers' statuses
and whether any task runs (:func:`decide_farm_state`):

============  ===========================================================================
``active``    some task is running (``active``, or ``cancel-requested`` while it stops)
``idle``      nothing runs, and some worker is awake (or starting) and could take work
``asleep``    nothing runs, no worker is awake, and some worker is asleep
``inoperative`` no worker could run anything: none registered, or all offline, timed out
              or in error
============  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Final

import attrs

from flamenco_manager.storage import jobs as job_store
from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage import workers as worker_store
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TaskStatus, WorkerStatus

from .context import ServiceContext
from .errors import NotFound

__all__ = ["BlocklistEntry", "FarmService", "FarmState", "FarmStatus", "decide_farm_state"]

_RUNNING: Final = (TaskStatus.ACTIVE.value, TaskStatus.CANCEL_REQUESTED.value)
_WAITING: Final = (
    TaskStatus.QUEUED.value,
    TaskStatus.CLAIMED_BY_MANAGER.value,
    TaskStatus.SOFT_FAILED.value,
)
_SHOWN_TASKS: Final = (*_RUNNING, *_WAITING)
_READY_WORKERS: Final = (WorkerStatus.AWAKE.value, WorkerStatus.STARTING.value)


class FarmState(StrEnum):
    """One word for the whole farm."""

    ACTIVE = "active"
    IDLE = "idle"
    ASLEEP = "asleep"
    INOPERATIVE = "inoperative"


def decide_farm_state(workers: Mapping[str, int], running_tasks: int) -> FarmState:
    """The farm's state from its number of workers per status and of running tasks."""
    if running_tasks:
        return FarmState.ACTIVE
    if any(workers.get(status, 0) for status in _READY_WORKERS):
        return FarmState.IDLE
    if workers.get(WorkerStatus.ASLEEP.value, 0):
        return FarmState.ASLEEP
    return FarmState.INOPERATIVE


@attrs.frozen
class FarmStatus:
    """The farm at a glance."""

    state: FarmState
    workers: dict[str, int]
    """Workers per status (a new worker's status is ``""``)."""
    jobs: dict[str, int]
    """Jobs per status."""
    tasks: dict[str, int]
    """Tasks per status: running and waiting ones, or every status when asked."""


@attrs.frozen
class BlocklistEntry:
    """A worker may not run tasks of this type of this job any more."""

    worker_id: ObjectId
    job_id: ObjectId
    task_type: str
    created: datetime


class FarmService:
    """Farm-wide views and the blocklist."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def status(self, *, every_task_status: bool = False) -> FarmStatus:
        """Counts of workers, jobs and tasks, and the farm's state.

        Tasks are counted in the statuses of running and waiting ones, or in every status with
        ``every_task_status``.
        """
        shown = [status.value for status in TaskStatus] if every_task_status else _SHOWN_TASKS
        with self.context.database.transaction() as connection:
            workers = worker_store.status_counts(connection)
            jobs = job_store.status_counts(connection)
            tasks = task_store.status_counts_all(connection, shown)
        running = sum(tasks.get(status, 0) for status in _RUNNING)
        return FarmStatus(decide_farm_state(workers, running), workers, jobs, tasks)

    def database_kind(self) -> str:
        """``sqlite`` or ``postgresql``, once a query has gone through the database.

        Raises the driver's error when the database cannot be reached.
        """
        self.context.database.check()
        return self.context.database.backend

    def blocklist(self, worker_id: str) -> list[BlocklistEntry]:
        """A worker's blocklist, oldest first; :class:`NotFound` for an unknown worker."""
        with self.context.database.transaction() as connection:
            if worker_store.get(connection, worker_id) is None:
                raise NotFound(f"Worker {worker_id} is unknown.")
            rows = worker_store.blocklist_of(connection, [worker_id])
        return [
            BlocklistEntry(
                worker_id=ObjectId(row["worker_id"]),
                job_id=ObjectId(row["job_id"]),
                task_type=row["task_type"],
                created=row["created"],
            )
            for row in rows
        ]

    def clear_blocklist(
        self, worker_id: str, *, job_id: str | None = None, task_type: str | None = None
    ) -> int:
        """Remove a worker's blocklist entries (or the one of ``job_id`` and ``task_type``).

        Returns how many went; :class:`NotFound` for an unknown worker or entry.
        """
        with self.context.database.transaction() as connection:
            if worker_store.get(connection, worker_id) is None:
                raise NotFound(f"Worker {worker_id} is unknown.")
            if job_id is None or task_type is None:
                removed = worker_store.clear_blocklist(connection, worker_id)
            elif worker_store.unblock(connection, worker_id, job_id, task_type):
                removed = 1
            else:
                raise NotFound(
                    f"Worker {worker_id} is not blocked from task type {task_type!r} of job "
                    f"{job_id}."
                )
            if removed:
                self.context.announce(connection, "worker", worker_id, blocklist_cleared=removed)
        return removed
