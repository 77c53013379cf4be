"""Status values of tasks, workers and jobs, exactly as they are spelled on the wire.

The Go manager stores whatever status string a worker sends, so documents keep statuses they do
not know as plain strings; :func:`parse_task_status` and friends return the enum member when there
is one and the string unchanged otherwise.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "REQUESTABLE_WORKER_STATUSES",
    "RUNNABLE_TASK_STATUSES",
    "SCHEDULABLE_TASK_STATUSES",
    "TIMEOUT_PRONE_WORKER_STATUSES",
    "JobStatus",
    "TaskStatus",
    "WorkerStatus",
    "parse_job_status",
    "parse_task_status",
    "parse_worker_status",
]


class TaskStatus(StrEnum):
    """Every task status the manager, the server-side job logic and the worker use."""

    UNDER_CONSTRUCTION = "under-construction"
    """The job is being compiled; the task is not handed out yet."""
    PAUSED = "paused"
    """The job was created paused; the task waits for a requeue."""
    QUEUED = "queued"
    """Runnable, never handed out."""
    CLAIMED_BY_MANAGER = "claimed-by-manager"
    """Runnable again: it was returned by a worker, or its worker went away."""
    ACTIVE = "active"
    """Assigned to a worker and running; the only status a worker may change."""
    COMPLETED = "completed"
    """Done."""
    FAILED = "failed"
    """Failed for good; counts toward failing the job."""
    SOFT_FAILED = "soft-failed"
    """Failed on some workers; another worker will retry it."""
    CANCEL_REQUESTED = "cancel-requested"
    """Its job is being canceled while a worker runs it; the worker is told to stop."""
    CANCELED = "canceled"
    """Stopped on request."""


class WorkerStatus(StrEnum):
    """Every worker status; ``NEW`` is the empty string a worker has before it does anything."""

    NEW = ""
    """Registered, has not asked for work or signed on yet."""
    STARTING = "starting"
    """Signed on."""
    AWAKE = "awake"
    """Asking for and running tasks."""
    ASLEEP = "asleep"
    """Acknowledged a request to sleep; polls for a status change."""
    SHUTDOWN = "shutdown"
    """Only ever requested: the worker signs off instead of acknowledging it."""
    OFFLINE = "offline"
    """Signed off."""
    TIMEOUT = "timeout"
    """Was awake but has not been seen for too long."""
    TESTING = "testing"
    """Started in test mode."""
    ERROR = "error"
    """Its pre-task check failed."""


class JobStatus(StrEnum):
    """Every job status of the Flamenco 2 server's job state machine."""

    WAITING_FOR_FILES = "waiting-for-files"
    UNDER_CONSTRUCTION = "under-construction"
    CONSTRUCTION_FAILED = "construction-failed"
    QUEUED = "queued"
    PAUSED = "paused"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCEL_REQUESTED = "cancel-requested"
    CANCELED = "canceled"
    FAIL_REQUESTED = "fail-requested"
    FAILED = "failed"
    REQUEUED = "requeued"
    ARCHIVING = "archiving"
    ARCHIVED = "archived"


SCHEDULABLE_TASK_STATUSES: Final = frozenset(
    {TaskStatus.QUEUED, TaskStatus.CLAIMED_BY_MANAGER, TaskStatus.SOFT_FAILED}
)
"""Statuses from which ``/task`` may hand a task out."""

RUNNABLE_TASK_STATUSES: Final = frozenset({TaskStatus.ACTIVE})
"""Statuses in which a worker may run and update a task."""

FINISHED_JOB_STATUSES: Final = frozenset(
    {JobStatus.COMPLETED, JobStatus.CANCELED, JobStatus.FAILED}
)
"""Statuses of a job nothing will run again unless a user asks for it."""

REQUESTABLE_WORKER_STATUSES: Final = frozenset(
    {WorkerStatus.ASLEEP, WorkerStatus.AWAKE, WorkerStatus.SHUTDOWN}
)
"""Statuses a user or the sleep scheduler may ask a worker to take."""

TIMEOUT_PRONE_WORKER_STATUSES: Final = frozenset({WorkerStatus.AWAKE})
"""Only awake workers time out; sleeping, starting and offline ones never do."""

_TASK_BY_VALUE: Final = {s.value: s for s in TaskStatus}
_WORKER_BY_VALUE: Final = {s.value: s for s in WorkerStatus}
_JOB_BY_VALUE: Final = {s.value: s for s in JobStatus}


def parse_task_status(value: str) -> TaskStatus | str:
    """The :class:`TaskStatus` spelled ``value``, or ``value`` itself when it is unknown."""
    return _TASK_BY_VALUE.get(value, value)


def parse_worker_status(value: str) -> WorkerStatus | str:
    """The :class:`WorkerStatus` spelled ``value``, or ``value`` itself when it is unknown."""
    return _WORKER_BY_VALUE.get(value, value)


def parse_job_status(value: str) -> JobStatus | str:
    """The :class:`JobStatus` spelled ``value``, or ``value`` itself when it is unknown."""
    return _JOB_BY_VALUE.get(value, value)
