"""The task state machine: every way a task's status may change, and the rules around it.

Everything that decides a task's next status lives here; the manager only stores the results.
The transitions are data, :data:`TASK_TRANSITIONS`, a table from status to event to the next
status; :func:`next_task_status` looks an event up and raises :class:`InvalidTransition` naming
the status and event when the table has no entry. The docs draw their diagram from the same
table.

The rules are those of the Go manager and the Flamenco 2 server's task handling, for a manager
that has no server above it. Where the two differ from this table, docs/compatibility.md says why:

* a task whose job is canceled while no worker runs it becomes ``canceled`` at once, not
  ``cancel-requested`` (nobody would ever confirm it);
* a ``cancel-requested`` task becomes ``canceled`` when its worker stops it (returns it, signs off,
  times out), and takes a final status its worker reports (``completed``, ``failed``,
  ``canceled``): the Go manager left such tasks ``cancel-requested`` for ever;
* a task whose worker stops pinging is re-queued, not failed: the worker, not the task, is at
  fault;
* a worker may report only ``active``, ``completed``, ``failed`` and ``canceled``, the statuses the
  real worker sends; the Go manager stored any string.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

import attrs

from .errors import InvalidTransition
from .ids import ObjectId
from .statuses import SCHEDULABLE_TASK_STATUSES, TaskStatus

__all__ = [
    "REPORTABLE_TASK_STATUSES",
    "TASK_TRANSITIONS",
    "TaskEvent",
    "TaskUpdateOutcome",
    "UpdateVerdict",
    "can_happen",
    "decide_failure",
    "decide_task_update",
    "next_task_status",
    "schedulable",
    "should_blocklist",
]

S = TaskStatus


class TaskEvent(Enum):
    """Things that happen to a task."""

    COMPILED = "compiled"
    """Its job finished compiling."""
    COMPILED_PAUSED = "compiled-paused"
    """Its job finished compiling and was submitted paused."""
    ASSIGNED = "assigned"
    """``/task`` handed it to a worker."""
    WORKER_REPORTED_ACTIVE = "worker-reported-active"
    """Its worker says it is running it."""
    WORKER_REPORTED_COMPLETED = "worker-reported-completed"
    """Its worker finished it."""
    WORKER_REPORTED_CANCELED = "worker-reported-canceled"
    """Its worker stopped it on its own (for example when sent to sleep by a signal)."""
    SOFT_FAILED = "soft-failed"
    """Its worker failed it, and another worker may retry it."""
    HARD_FAILED = "hard-failed"
    """Its worker failed it, and no other may retry it."""
    WORKER_STOPPED = "worker-stopped"
    """Its worker gave it back: ``/return``, sign-off, worker timeout, or the worker removed."""
    PING_TIMEOUT = "ping-timeout"
    """Its worker has not said anything about it for too long."""
    BLOCKLIST_CASCADE = "blocklist-cascade"
    """The last worker able to run it was blocklisted."""
    JOB_CANCELED = "job-canceled"
    """Its job is being canceled or failed."""
    JOB_PAUSED = "job-paused"
    """Its job was paused."""
    JOB_RESUMED = "job-resumed"
    """Its paused job was resumed."""
    USER_CANCELED = "user-canceled"
    """A user canceled this one task (its job goes on)."""
    REQUEUED = "requeued"
    """A user requeued it or its job."""


# Every status a worker may run or that waits to run; used to keep the table compact.
_WAITING: Final = (S.QUEUED, S.CLAIMED_BY_MANAGER, S.SOFT_FAILED)
_FINISHED: Final = (S.COMPLETED, S.FAILED, S.CANCELED)

E = TaskEvent


def _table() -> dict[TaskStatus, dict[TaskEvent, TaskStatus]]:
    table: dict[TaskStatus, dict[TaskEvent, TaskStatus]] = {status: {} for status in TaskStatus}
    table[S.UNDER_CONSTRUCTION] = {
        E.COMPILED: S.QUEUED,
        E.COMPILED_PAUSED: S.PAUSED,
        E.JOB_CANCELED: S.CANCELED,
    }
    table[S.PAUSED] = {
        E.JOB_RESUMED: S.QUEUED,
        E.REQUEUED: S.QUEUED,
        E.JOB_CANCELED: S.CANCELED,
        E.USER_CANCELED: S.CANCELED,
    }
    for waiting in _WAITING:
        table[waiting].update(
            {
                E.ASSIGNED: S.ACTIVE,
                E.JOB_CANCELED: S.CANCELED,
                E.USER_CANCELED: S.CANCELED,
                E.JOB_PAUSED: S.PAUSED,
                E.REQUEUED: S.QUEUED,
            }
        )
    table[S.SOFT_FAILED][E.BLOCKLIST_CASCADE] = S.FAILED
    table[S.ACTIVE] = {
        E.WORKER_REPORTED_ACTIVE: S.ACTIVE,
        E.WORKER_REPORTED_COMPLETED: S.COMPLETED,
        # Nobody asked: its worker stopped it on its own (the real worker does when a signal
        # puts it to sleep). The task still has to be done.
        E.WORKER_REPORTED_CANCELED: S.CLAIMED_BY_MANAGER,
        E.SOFT_FAILED: S.SOFT_FAILED,
        E.HARD_FAILED: S.FAILED,
        E.WORKER_STOPPED: S.CLAIMED_BY_MANAGER,
        E.PING_TIMEOUT: S.CLAIMED_BY_MANAGER,
        E.JOB_CANCELED: S.CANCEL_REQUESTED,
        E.USER_CANCELED: S.CANCEL_REQUESTED,
        E.REQUEUED: S.QUEUED,
    }
    table[S.CANCEL_REQUESTED] = {
        E.WORKER_REPORTED_COMPLETED: S.COMPLETED,
        E.WORKER_REPORTED_CANCELED: S.CANCELED,
        E.SOFT_FAILED: S.FAILED,
        E.HARD_FAILED: S.FAILED,
        E.WORKER_STOPPED: S.CANCELED,
        E.PING_TIMEOUT: S.CANCELED,
        # Its worker still runs it: queued, it could go to a second worker at once.
        E.REQUEUED: S.ACTIVE,
    }
    for finished in _FINISHED:
        table[finished][E.REQUEUED] = S.QUEUED
    return table


TASK_TRANSITIONS: Final[Mapping[TaskStatus, Mapping[TaskEvent, TaskStatus]]] = _table()
"""Status -> event -> next status. An event missing under a status is not allowed there."""

REPORTABLE_TASK_STATUSES: Final = {
    S.ACTIVE: E.WORKER_REPORTED_ACTIVE,
    S.COMPLETED: E.WORKER_REPORTED_COMPLETED,
    S.CANCELED: E.WORKER_REPORTED_CANCELED,
}
"""The statuses a worker may report, except ``failed`` (see :func:`decide_failure`)."""


def next_task_status(status: TaskStatus | str, event: TaskEvent) -> TaskStatus:
    """The status a task in ``status`` takes on ``event``; :class:`InvalidTransition` if none."""
    try:
        return TASK_TRANSITIONS[TaskStatus(status)][event]
    except (KeyError, ValueError):
        raise InvalidTransition("task", str(status), event.value) from None


def can_happen(status: TaskStatus | str, event: TaskEvent) -> bool:
    """Whether ``event`` is allowed for a task in ``status``."""
    try:
        return event in TASK_TRANSITIONS[TaskStatus(status)]
    except ValueError:
        return False


# --- worker task updates -----------------------------------------------------------------------


class UpdateVerdict(Enum):
    """What the manager does with a worker's task update."""

    CONFLICT = "conflict"
    """The task belongs to another worker: answer 409 and change nothing."""
    UNKNOWN_STATUS = "unknown-status"
    """The worker reported a status it may not report: answer 400 and change nothing."""
    APPLY = "apply"
    """Take the update (log, metrics, and the status when ``new_status`` is set)."""


@attrs.frozen
class TaskUpdateOutcome:
    """The decision on one task update, as :func:`decide_task_update` makes it."""

    verdict: UpdateVerdict
    """Whether and how the update is taken."""
    event: TaskEvent | None = None
    """The transition to apply, when the reported status changes the task."""
    new_status: TaskStatus | None = None
    """The status the task takes, when the update changes it."""
    keep_activity: bool = False
    """Whether the update's activity text is stored (only while the task runs)."""
    claims_task: bool = False
    """Whether the task had no worker and now belongs to the sender."""
    failed_from: TaskStatus | None = None
    """Set when the worker reported ``failed`` for a task in this status: the caller asks
    :func:`decide_failure` whether it is soft or hard, then calls :meth:`with_failure`."""

    def with_failure(self, hard: bool) -> TaskUpdateOutcome:
        """This outcome, with the reported failure decided soft or hard."""
        if self.failed_from is None:
            raise ValueError("the update does not report a failure")
        event = E.HARD_FAILED if hard else E.SOFT_FAILED
        return attrs.evolve(self, event=event, new_status=next_task_status(self.failed_from, event))


def decide_task_update(
    *,
    task_status: TaskStatus | str,
    task_worker: ObjectId | None,
    sender: ObjectId,
    reported_status: TaskStatus | str,
) -> TaskUpdateOutcome:
    """Decide what a worker's ``/tasks/{id}/update`` does to the task.

    * Another worker holds the task: conflict (409), nothing changes.
    * A status the worker may not report: refused (400), nothing changes.
    * The task is ``active``: the reported status and the activity are taken.
    * The task is ``cancel-requested``: a final status (completed, failed, canceled) is taken,
      anything else is dropped.
    * Any other task status: status and activity are dropped; log and metrics still go through.
    * A task without a worker is claimed by the sender.

    A reported ``failed`` comes back with ``failed_from`` set; the failure policy
    (:func:`decide_failure`) then picks soft or hard with :meth:`TaskUpdateOutcome.with_failure`.
    """
    if task_worker is not None and task_worker != sender:
        return TaskUpdateOutcome(UpdateVerdict.CONFLICT)
    claims = task_worker is None
    if reported_status == "":
        return TaskUpdateOutcome(
            UpdateVerdict.APPLY, keep_activity=task_status == S.ACTIVE, claims_task=claims
        )
    if reported_status != S.FAILED and reported_status not in REPORTABLE_TASK_STATUSES:
        return TaskUpdateOutcome(UpdateVerdict.UNKNOWN_STATUS)
    if task_status not in (S.ACTIVE, S.CANCEL_REQUESTED):
        return TaskUpdateOutcome(UpdateVerdict.APPLY, claims_task=claims)
    running = task_status == S.ACTIVE
    if reported_status == S.FAILED:
        return TaskUpdateOutcome(
            UpdateVerdict.APPLY,
            keep_activity=running,
            claims_task=claims,
            failed_from=TaskStatus(task_status),
        )
    event = REPORTABLE_TASK_STATUSES[TaskStatus(reported_status)]
    if not can_happen(task_status, event):
        return TaskUpdateOutcome(UpdateVerdict.APPLY, keep_activity=running, claims_task=claims)
    return TaskUpdateOutcome(
        UpdateVerdict.APPLY,
        event=event,
        new_status=next_task_status(task_status, event),
        keep_activity=running,
        claims_task=claims,
    )


# --- failure policy ----------------------------------------------------------------------------


def should_blocklist(failures_in_job_and_type: int, threshold: int) -> bool:
    """Whether a worker is blocklisted for a job's task type.

    ``failures_in_job_and_type`` counts the tasks of that job and type that the worker last held
    and that are ``failed`` or ``soft-failed``, this failure included.
    """
    return failures_in_job_and_type >= threshold


def decide_failure(
    *,
    failed_by: frozenset[ObjectId],
    capable_workers: frozenset[ObjectId],
    softfail_limit: int,
) -> bool:
    """Whether a reported failure is hard (``True``) or soft (``False``).

    ``failed_by`` holds every worker that failed the task, this one included;
    ``capable_workers`` every worker that supports the task type and is not blocklisted for the
    task's job and type. The failure is hard when ``softfail_limit`` workers have failed the
    task, or when no capable worker that has not failed it is left.
    """
    if len(failed_by) >= softfail_limit:
        return True
    return not (capable_workers - failed_by)


def schedulable(status: TaskStatus | str) -> bool:
    """Whether ``/task`` may hand out a task in ``status``."""
    return status in SCHEDULABLE_TASK_STATUSES
