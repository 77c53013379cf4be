"""The job state machine: user actions on jobs, and the job status that follows from its tasks.

A job's status moves in two ways, both kept here:

* a **user action** (cancel, pause, resume, requeue) changes the job and sends a task event to
  its tasks: :func:`plan_job_action`;
* a **task change** may move the job on (the first task starts, the last one completes, too many
  fail, the last canceled task stops): :func:`derive_job_status`, a function of the job's status
  and the count of its tasks per status, so the job status always matches its tasks.

:data:`JOB_TRANSITIONS` is the table of both, status -> event -> next status. The rules follow the
Flamenco 2 server's job handling, adapted to a manager without a server (docs/compatibility.md):

* canceling moves tasks that no worker runs straight to ``canceled``, and the job to ``canceled``
  as soon as no task runs, whichever status the last running task ends in;
* pausing holds the waiting tasks (``paused``) and lets running ones finish; resuming queues them.
  A running task that waits again while the job is paused (returned, timed out, soft-failed) is
  held too;
* a job whose tasks have all finished, not all completed, ends ``failed`` (some failed) or
  ``canceled``, instead of staying ``active`` for ever;
* a job where nothing runs and every waiting task has a parent that failed or was canceled, so
  that none can ever start, ends ``failed`` and its waiting tasks ``canceled``, as soon as that
  is so (the Flamenco 2 server found such jobs with a check every ten minutes, and canceled
  their running tasks too).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

import attrs

from .errors import InvalidTransition
from .statuses import FINISHED_JOB_STATUSES, JobStatus, TaskStatus
from .task_states import TaskEvent

__all__ = [
    "DEFAULT_FAILED_TASK_RATIO",
    "JOB_TRANSITIONS",
    "USER_ACTIONS",
    "JobChange",
    "JobEvent",
    "derive_job_status",
    "needs_runnable",
    "next_job_status",
    "plan_job_action",
]

J = JobStatus
T = TaskStatus

DEFAULT_FAILED_TASK_RATIO: Final = 0.1
"""A job fails once this share of its tasks has failed (the Flamenco 2 server's 10 %)."""


class JobEvent(Enum):
    """Things that happen to a job."""

    COMPILED = "compiled"
    """Its tasks were made and queued."""
    COMPILED_PAUSED = "compiled-paused"
    """Its tasks were made and held: the job was submitted paused."""
    COMPILE_FAILED = "compile-failed"
    """Its job type could not make tasks from its settings."""
    CANCEL = "cancel"
    """A user cancels it."""
    PAUSE = "pause"
    """A user pauses it."""
    RESUME = "resume"
    """A user resumes it after a pause."""
    REQUEUE = "requeue"
    """A user runs it again: every task not completed (all of them if the job completed)."""
    TASKS_STARTED = "tasks-started"
    """A task started, or some finished while others wait."""
    TASKS_IDLE = "tasks-idle"
    """No task runs or has run; the job waits for workers."""
    ALL_COMPLETED = "all-completed"
    """Every task completed."""
    TOO_MANY_FAILED = "too-many-failed"
    """The share of failed tasks reached the limit, or every task finished with some failed."""
    HOLD_TASKS = "hold-tasks"
    """A task of the paused job waits again (its worker returned it, timed out or failed it
    softly): it is paused too, or ``/task`` would hand it out."""
    ALL_STOPPED = "all-stopped"
    """Nothing runs or waits any more and not all completed: a canceling (or live) job is
    canceled, a failing one failed."""
    TASKS_BLOCKED = "tasks-blocked"
    """Nothing runs, and every waiting task has a parent that failed or was canceled: none of
    them can ever start."""


E = JobEvent

_LIVE: Final = (J.QUEUED, J.ACTIVE)


def _table() -> dict[JobStatus, dict[JobEvent, JobStatus]]:
    table: dict[JobStatus, dict[JobEvent, JobStatus]] = {status: {} for status in JobStatus}
    table[J.UNDER_CONSTRUCTION] = {
        E.COMPILED: J.QUEUED,
        E.COMPILED_PAUSED: J.PAUSED,
        E.COMPILE_FAILED: J.CONSTRUCTION_FAILED,
    }
    table[J.WAITING_FOR_FILES] = dict(table[J.UNDER_CONSTRUCTION])
    for live in _LIVE:
        table[live] = {
            E.CANCEL: J.CANCEL_REQUESTED,
            E.PAUSE: J.PAUSED,
            E.TASKS_STARTED: J.ACTIVE,
            E.TASKS_IDLE: J.QUEUED,
            E.ALL_COMPLETED: J.COMPLETED,
            E.TOO_MANY_FAILED: J.FAILED,
            E.ALL_STOPPED: J.CANCELED,
            E.TASKS_BLOCKED: J.FAILED,
        }
    table[J.PAUSED] = {
        E.CANCEL: J.CANCEL_REQUESTED,
        E.RESUME: J.QUEUED,
        E.REQUEUE: J.QUEUED,
        E.HOLD_TASKS: J.PAUSED,
        E.ALL_COMPLETED: J.COMPLETED,
        E.TOO_MANY_FAILED: J.FAILED,
    }
    for done in FINISHED_JOB_STATUSES:
        table[done] = {
            E.REQUEUE: J.QUEUED,
            # A user requeued single tasks of a finished job.
            E.TASKS_STARTED: J.ACTIVE,
            E.TASKS_IDLE: J.QUEUED,
        }
    table[J.FAILED][E.CANCEL] = J.CANCEL_REQUESTED
    table[J.CONSTRUCTION_FAILED] = {E.REQUEUE: J.QUEUED}
    table[J.CANCEL_REQUESTED] = {E.ALL_STOPPED: J.CANCELED}
    table[J.FAIL_REQUESTED] = {E.ALL_STOPPED: J.FAILED}
    return table


JOB_TRANSITIONS: Final[Mapping[JobStatus, Mapping[JobEvent, JobStatus]]] = _table()
"""Status -> event -> next status. An event missing under a status is not allowed there."""

USER_ACTIONS: Final = {
    J.CANCEL_REQUESTED: E.CANCEL,
    J.PAUSED: E.PAUSE,
    J.QUEUED: E.RESUME,
    J.REQUEUED: E.REQUEUE,
}
"""The job statuses a user may ask for, and the event each one is."""

# What each user action does to the job's tasks.
_TASK_EVENTS: Final = {
    E.CANCEL: TaskEvent.JOB_CANCELED,
    E.PAUSE: TaskEvent.JOB_PAUSED,
    E.RESUME: TaskEvent.JOB_RESUMED,
    E.REQUEUE: TaskEvent.REQUEUED,
    E.TOO_MANY_FAILED: TaskEvent.JOB_CANCELED,
    E.TASKS_BLOCKED: TaskEvent.JOB_CANCELED,
    E.HOLD_TASKS: TaskEvent.JOB_PAUSED,
}


def next_job_status(status: JobStatus | str, event: JobEvent) -> JobStatus:
    """The status a job in ``status`` takes on ``event``; :class:`InvalidTransition` if none."""
    try:
        return JOB_TRANSITIONS[JobStatus(status)][event]
    except (KeyError, ValueError):
        raise InvalidTransition("job", str(status), event.value) from None


@attrs.frozen
class JobChange:
    """A change of a job's status and what it does to the job's tasks."""

    event: JobEvent
    """What happened."""
    status: JobStatus
    """The job's new status."""
    task_event: TaskEvent | None = None
    """The event every task of the job receives; tasks whose status has no such transition
    keep their status (see :data:`flamenco_protocol.task_states.TASK_TRANSITIONS`)."""
    requeue_completed: bool = False
    """With a requeue: whether completed tasks run again too (only when the job completed)."""
    reason: str = ""
    """Why, for the job's ``status_reason``."""


def plan_job_action(status: JobStatus | str, requested: JobStatus | str) -> JobChange:
    """What happens when a user asks for ``requested`` on a job in ``status``.

    ``requested`` is one of :data:`USER_ACTIONS`: ``cancel-requested``, ``paused``, ``queued``
    (resume) or ``requeued``. Raises :class:`InvalidTransition` otherwise, or when the job's
    status does not allow it.
    """
    try:
        event = USER_ACTIONS[JobStatus(requested)]
    except (KeyError, ValueError):
        raise InvalidTransition("job", str(status), f"request status {requested!r}") from None
    return JobChange(
        event=event,
        status=next_job_status(status, event),
        task_event=_TASK_EVENTS[event],
        requeue_completed=event is E.REQUEUE and status == J.COMPLETED,
    )


def derive_job_status(
    status: JobStatus | str,
    task_counts: Mapping[TaskStatus | str, int],
    *,
    failed_ratio: float = DEFAULT_FAILED_TASK_RATIO,
    any_runnable: bool = True,
) -> JobChange | None:
    """The change its tasks make to a job, or ``None`` when nothing changes.

    The change may keep the job's status and only send its tasks an event: a paused job holds
    a task that waits again.

    ``task_counts`` is the number of the job's tasks per status, after the task change.
    ``any_runnable`` says whether some waiting task has every parent completed, so that it may
    start: callers need to find out only when no task runs (``active`` or ``cancel-requested``)
    and some wait (``queued``, ``claimed-by-manager`` or ``soft-failed``).
    """
    try:
        current = JobStatus(status)
    except ValueError:
        return None
    count = task_counts.get
    total = sum(task_counts.values())
    running, waiting = _running_and_waiting(task_counts)
    failed = count(T.FAILED, 0)

    event: JobEvent | None
    reason = ""
    if current in (J.CANCEL_REQUESTED, J.FAIL_REQUESTED):
        event = E.ALL_STOPPED if running == 0 else None
    elif current not in (*_LIVE, J.PAUSED, *FINISHED_JOB_STATUSES):
        event = None
    elif current in FINISHED_JOB_STATUSES:
        # Only a user requeueing some of its tasks brings a finished job back.
        event = _progress_event(running, waiting, total - waiting - running) if waiting else None
    elif count(T.COMPLETED, 0) == total:
        # A job without tasks is complete at once, as it was on the Flamenco 2 server.
        event = E.ALL_COMPLETED
    elif failed and (failed >= failed_ratio * total or (running == 0 and waiting == 0)):
        event = E.TOO_MANY_FAILED
        percentage = round(100 * failed / total)
        reason = f"{failed} of its {total} tasks ({percentage}%) failed"
    elif current is J.PAUSED:
        event = E.HOLD_TASKS if waiting else None
    elif running == 0 and waiting == 0:
        # Everything finished, nothing failed, not all completed: some were canceled.
        event = E.ALL_STOPPED
    elif running == 0 and not any_runnable:
        event = E.TASKS_BLOCKED
        reason = f"{waiting} of its tasks wait for a parent that failed or was canceled"
    else:
        event = _progress_event(running, waiting, total - waiting - running)

    if event is None:
        return None
    new_status = next_job_status(current, event)
    with_tasks = (E.TOO_MANY_FAILED, E.TASKS_BLOCKED, E.HOLD_TASKS)
    task_event = _TASK_EVENTS.get(event) if event in with_tasks else None
    if new_status is current and task_event is None:
        return None
    return JobChange(event=event, status=new_status, task_event=task_event, reason=reason)


def needs_runnable(task_counts: Mapping[TaskStatus | str, int]) -> bool:
    """Whether :func:`derive_job_status` needs to know ``any_runnable`` for these counts: no
    task runs and some wait, so that the job may be one whose waiting tasks can never start."""
    running, waiting = _running_and_waiting(task_counts)
    return running == 0 and waiting > 0


def _running_and_waiting(task_counts: Mapping[TaskStatus | str, int]) -> tuple[int, int]:
    count = task_counts.get
    running = count(T.ACTIVE, 0) + count(T.CANCEL_REQUESTED, 0)
    waiting = count(T.QUEUED, 0) + count(T.CLAIMED_BY_MANAGER, 0) + count(T.SOFT_FAILED, 0)
    return running, waiting


def _progress_event(running: int, waiting: int, finished: int) -> JobEvent:
    if running or (finished and waiting):
        return E.TASKS_STARTED
    return E.TASKS_IDLE
