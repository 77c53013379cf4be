"""The worker state machine and status-change requests.

A worker's status is what it last told the manager (or what the manager concluded, such as
``timeout``). A *status request* is what a user or the sleep scheduler wants it to become: the
pair (requested status, lazy). An immediate request stops the running task at the next
``/may-i-run``; a lazy one lets it finish. Both block ``/task`` with a 423 until the worker
acknowledges.

:data:`WORKER_TRANSITIONS` is the table, status -> event -> next status; the functions below
decide what ``/task``, ``/may-i-run``, ``/ack-status-change`` and ``/sign-off`` do with a
request. Everything here is pure: the manager loads a worker, asks, and stores the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

import attrs

from .documents import MayKeepRunningResponse
from .errors import InvalidTransition
from .ids import ObjectId
from .statuses import REQUESTABLE_WORKER_STATUSES, TaskStatus, WorkerStatus, parse_worker_status

__all__ = [
    "WORKER_TRANSITIONS",
    "AckDecision",
    "FetchVerdict",
    "StatusRequest",
    "WorkerEvent",
    "decide_ack",
    "decide_fetch",
    "decide_may_keep_running",
    "decide_sign_off",
    "next_worker_status",
    "validate_request",
]

W = WorkerStatus


class WorkerEvent(Enum):
    """Things that happen to a worker."""

    SIGNED_ON = "signed-on"
    """``/sign-on``."""
    ASKED_FOR_WORK = "asked-for-work"
    """``/task`` or ``/may-i-run``: the worker is working, so it is awake."""
    ACKED_AWAKE = "acked-awake"
    """``/ack-status-change/awake``."""
    ACKED_ASLEEP = "acked-asleep"
    """``/ack-status-change/asleep``."""
    ACKED_ERROR = "acked-error"
    """``/ack-status-change/error``: its pre-task check failed."""
    ACKED_TESTING = "acked-testing"
    """``/ack-status-change/testing``: started in test mode."""
    SIGNED_OFF = "signed-off"
    """``/sign-off``."""
    TIMED_OUT = "timed-out"
    """Awake but not seen for too long."""
    TIMEOUT_ACKNOWLEDGED = "timeout-acknowledged"
    """A user acknowledged the timeout."""


E = WorkerEvent

_ACK_EVENTS: Final[Mapping[str, WorkerEvent]] = {
    W.AWAKE: E.ACKED_AWAKE,
    W.ASLEEP: E.ACKED_ASLEEP,
    W.ERROR: E.ACKED_ERROR,
    W.TESTING: E.ACKED_TESTING,
}


def _table() -> dict[WorkerStatus, dict[WorkerEvent, WorkerStatus]]:
    table: dict[WorkerStatus, dict[WorkerEvent, WorkerStatus]] = {}
    for status in WorkerStatus:
        row = {
            E.SIGNED_ON: W.STARTING,
            E.SIGNED_OFF: W.OFFLINE,
            # Awake and testing workers stay as they are when they ask for work.
            E.ASKED_FOR_WORK: status if status in (W.AWAKE, W.TESTING) else W.AWAKE,
        }
        row.update({event: WorkerStatus(acked) for acked, event in _ACK_EVENTS.items()})
        if status is W.AWAKE:
            row[E.TIMED_OUT] = W.TIMEOUT
        if status is W.TIMEOUT:
            row[E.TIMEOUT_ACKNOWLEDGED] = W.OFFLINE
        table[status] = row
    return table


WORKER_TRANSITIONS: Final[Mapping[WorkerStatus, Mapping[WorkerEvent, WorkerStatus]]] = _table()
"""Status -> event -> next status. An event missing under a status is not allowed there."""


def next_worker_status(status: WorkerStatus | str, event: WorkerEvent) -> WorkerStatus:
    """The status a worker in ``status`` takes on ``event``; :class:`InvalidTransition` if none.

    A status the table does not know (a string some other manager stored) is treated like a
    fresh worker's.
    """
    known = parse_worker_status(status)
    row = WORKER_TRANSITIONS[known if isinstance(known, WorkerStatus) else W.NEW]
    try:
        return row[event]
    except KeyError:
        raise InvalidTransition("worker", str(status), event.value) from None


@attrs.frozen
class StatusRequest:
    """A pending request for a worker to change status."""

    status: WorkerStatus
    """The status asked for: ``asleep``, ``awake`` or ``shutdown``."""
    lazy: bool = False
    """Whether the worker may finish its current task first."""

    @property
    def stops_running_task(self) -> bool:
        """Whether the request stops the task the worker runs now."""
        return not self.lazy and self.status in (W.ASLEEP, W.SHUTDOWN)


def validate_request(status: str, lazy: bool = False) -> StatusRequest:
    """A request for ``status``; :class:`InvalidTransition` unless it is one users may ask."""
    known = parse_worker_status(status)
    if known not in REQUESTABLE_WORKER_STATUSES:
        raise InvalidTransition("worker", "any", f"request status {status!r}")
    return StatusRequest(WorkerStatus(known), lazy)


class FetchVerdict(Enum):
    """What ``/task`` answers before it looks for a task."""

    STATUS_CHANGE = 423
    """A status change is pending: answer 423 with the requested status."""
    NO_TASK_TYPES = 406
    """The worker supports no task types."""
    SCHEDULE = 200
    """Look for a task."""


def decide_fetch(
    request: StatusRequest | None, supported_task_types: tuple[str, ...]
) -> FetchVerdict:
    """What ``/task`` does for a worker: any pending request, lazy or not, comes first."""
    if request is not None:
        return FetchVerdict.STATUS_CHANGE
    if not supported_task_types:
        return FetchVerdict.NO_TASK_TYPES
    return FetchVerdict.SCHEDULE


def decide_may_keep_running(
    *,
    task_id: ObjectId,
    task_status: TaskStatus | str | None,
    task_worker: ObjectId | None,
    worker: ObjectId,
    request: StatusRequest | None,
) -> MayKeepRunningResponse:
    """The answer to ``/may-i-run/{task_id}``; ``task_status`` is ``None`` for a missing task.

    The first failing check gives the reason; the pending request, lazy or not, is always told.
    """
    requested = request.status if request is not None else ""
    if task_status is None:
        reason = f"unable to find task {task_id}"
    elif task_worker is not None and task_worker != worker:
        reason = f"task {task_id} reassigned to another worker"
    elif task_status != TaskStatus.ACTIVE:
        reason = f"task {task_id} in non-runnable status {task_status}"
    elif request is not None and request.stops_running_task:
        reason = f"worker status change to {request.status} requested"
    else:
        return MayKeepRunningResponse(may_keep_running=True, status_requested=requested)
    return MayKeepRunningResponse(may_keep_running=False, reason=reason, status_requested=requested)


@attrs.frozen
class AckDecision:
    """What an acknowledgement does."""

    status: WorkerStatus | None
    """The worker's new status, or ``None`` when the ack changes nothing."""
    clears_request: bool
    """Whether the pending request is removed."""
    matches_request: bool
    """Whether the worker acknowledged what was asked (a mismatch is worth a warning)."""


def decide_ack(
    current: WorkerStatus | str, request: StatusRequest | None, acked: str
) -> AckDecision:
    """What ``/ack-status-change/{acked}`` does.

    Acknowledging ``shutdown`` changes nothing (the worker signs off next); a status the worker
    may not take (``offline``, ``timeout``, ``starting`` or an unknown word) changes nothing
    either. Anything else becomes the status and clears the request, even when it is not the
    status asked for.
    """
    matches = request is not None and request.status == acked
    event = _ACK_EVENTS.get(acked)
    if event is None:
        return AckDecision(None, clears_request=False, matches_request=matches)
    return AckDecision(next_worker_status(current, event), True, matches)


def decide_sign_off(
    current: WorkerStatus | str, request: StatusRequest | None
) -> StatusRequest | None:
    """The request a worker keeps after ``/sign-off`` (its status becomes ``offline``).

    A sleeping worker with no request, or a shutdown request, is asked to sleep again
    (immediately) so that it is still asleep when it comes back; every other request goes.
    """
    if current == W.ASLEEP and (request is None or request.status == W.SHUTDOWN):
        return StatusRequest(W.ASLEEP, lazy=False)
    return None
