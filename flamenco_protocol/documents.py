"""The wire documents of the Flamenco 2.x worker protocol, and the Job document.

Each class is frozen and slotted. Every field has a default, the zero value of its Go type,
because the Go manager fills a missing key with that zero value and so do we when decoding.

Field metadata tells the codec (:mod:`flamenco_protocol.codec`) how the field is spelled:

* ``key``: the JSON key when it differs from the attribute name (``_id``, ``_etag``, ...);
* ``omitempty``: the key is left out of the JSON when the value is empty (``""``, ``0``,
  ``False``, ``None`` or an empty list), as Go's ``omitempty`` tag does.

Empty object IDs are ``None`` in Python; they encode as ``""`` unless the field is ``omitempty``.
Status fields hold the enum member when the status is known and the plain string otherwise (the
Go manager stores any status a worker sends).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from .ids import ObjectId
from .statuses import JobStatus, TaskStatus, WorkerStatus

__all__ = [
    "Command",
    "FileProduced",
    "Job",
    "MayKeepRunningResponse",
    "ScheduleInfo",
    "Task",
    "TaskMetrics",
    "TaskUpdate",
    "TimeOfDay",
    "Worker",
    "WorkerBlacklistEntry",
    "WorkerRef",
    "WorkerRegistration",
    "WorkerSignonDoc",
    "WorkerStatusRequest",
    "field_key",
    "is_omitempty",
]

_KEY: Final = "flamenco.key"
_OMITEMPTY: Final = "flamenco.omitempty"


def _wire(
    default: Any = attrs.NOTHING,
    *,
    factory: Any = None,
    key: str | None = None,
    omitempty: bool = False,
    converter: Any = None,
) -> Any:
    metadata: dict[str, Any] = {_OMITEMPTY: omitempty}
    if key is not None:
        metadata[_KEY] = key
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, converter=converter)
    return attrs.field(default=default, metadata=metadata, converter=converter)


def field_key(field: attrs.Attribute[Any]) -> str:
    """The JSON key of a document field."""
    return str(field.metadata.get(_KEY, field.name))


def is_omitempty(field: attrs.Attribute[Any]) -> bool:
    """Whether a document field is left out of the JSON when empty."""
    return bool(field.metadata.get(_OMITEMPTY, False))


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


_document = attrs.frozen(kw_only=True)


@_document
class Command:
    """One step of a task: a command name the worker knows and its settings."""

    name: str = _wire("")
    """Command name, such as ``blender_render``, ``echo`` or ``exec``."""
    settings: dict[str, Any] = _wire(factory=dict, converter=_dict)
    """Free-form settings; only top-level string values go through variable replacement."""


@_document
class WorkerRef:
    """A worker named in a task's ``failed_by_workers`` list."""

    id: ObjectId | None = _wire(None)
    """The worker's ID."""
    identifier: str = _wire("")
    """Human-readable ``"<address> (<nickname>)"``."""


@_document
class TaskMetrics:
    """Measurements a worker reports about a task."""

    timing: dict[str, float] = _wire(factory=dict, omitempty=True, converter=_dict)
    """Seconds spent per named step of the task."""


@_document
class Task:
    """A unit of work, as ``POST /task`` sends it to a worker."""

    id: ObjectId | None = _wire(None, key="_id", omitempty=True)
    """The task ID; the worker uses it in URLs."""
    etag: str = _wire("", key="_etag", omitempty=True)
    """Entity tag of the task's current version."""
    job: ObjectId | None = _wire(None)
    """The job the task belongs to."""
    manager: ObjectId | None = _wire(None)
    """The manager the job belongs to."""
    project: ObjectId | None = _wire(None)
    """The project the job belongs to."""
    user: ObjectId | None = _wire(None)
    """The user who submitted the job."""
    name: str = _wire("")
    """Human-readable task name."""
    status: TaskStatus | str = _wire("")
    """Status; always ``active`` in an answer to ``/task``."""
    priority: int = _wire(0)
    """Task priority; higher runs first within a job priority."""
    job_priority: int = _wire(0)
    """Priority of the task's job; sorted before the task priority."""
    job_type: str = _wire("")
    """The job type that produced the task."""
    task_type: str = _wire("")
    """Matched against the worker's supported task types."""
    commands: tuple[Command, ...] = _wire(factory=tuple, converter=_tuple)
    """The commands to run, in order."""
    log: str = _wire("", omitempty=True)
    """The last lines of the task log."""
    activity: str = _wire("", omitempty=True)
    """What the worker last said it was doing."""
    parents: tuple[ObjectId, ...] = _wire(factory=tuple, omitempty=True, converter=_tuple)
    """Tasks that must complete before this one may run."""
    worker: str = _wire("", omitempty=True)
    """Nickname of the worker that last held the task."""
    failed_by_workers: tuple[WorkerRef, ...] = _wire(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Workers that failed this task."""
    metrics: TaskMetrics | None = _wire(None, omitempty=True)
    """Timing measurements from the last update that carried them."""


@_document
class TaskUpdate:
    """A worker's report on a task: status, activity, progress, log lines and metrics.

    The manager overwrites ``id``, ``task_id``, ``received_on_manager``, ``log_tail`` and
    ``worker`` on receipt, whatever the worker sent.
    """

    id: ObjectId | None = _wire(None, key="_id")
    """ID of the update itself."""
    task_id: ObjectId | None = _wire(None, omitempty=True)
    """The task the update is about."""
    task_status: TaskStatus | str = _wire("", omitempty=True)
    """New task status, when the worker has one."""
    received_on_manager: datetime | None = _wire(None)
    """When the manager received the update."""
    activity: str = _wire("", omitempty=True)
    """What the worker is doing now."""
    task_progress_percentage: int = _wire(0)
    """Progress of the whole task (the real worker always sends 0)."""
    current_command_idx: int = _wire(0)
    """Index of the command last started."""
    command_progress_percentage: int = _wire(0)
    """Progress of the current command."""
    log: str = _wire("", omitempty=True)
    """New log lines, joined with newlines."""
    log_tail: str = _wire("", omitempty=True)
    """The last lines of ``log``."""
    worker: str = _wire("")
    """Identifier of the worker that sent the update."""
    failed_by_workers: tuple[WorkerRef, ...] = _wire(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Workers that failed the task, when the update fails it."""
    metrics: TaskMetrics | None = _wire(None, omitempty=True)
    """Timing measurements."""


@_document
class WorkerRegistration:
    """Body of ``POST /register-worker``."""

    secret: str = _wire("")
    """Secret the worker will authenticate with; stored hashed."""
    platform: str = _wire("")
    """``linux``, ``windows`` or ``darwin``."""
    supported_task_types: tuple[str, ...] = _wire(factory=tuple, converter=_str_tuple)
    """Task types the worker accepts."""
    nickname: str = _wire("")
    """Human-readable name, usually the host name."""


@_document
class WorkerSignonDoc:
    """Body of ``POST /sign-on``: what changed since the worker registered."""

    supported_task_types: tuple[str, ...] = _wire(factory=tuple, omitempty=True, converter=_tuple)
    """Task types the worker accepts now."""
    nickname: str = _wire("", omitempty=True)
    """The worker's nickname now."""


@_document
class WorkerStatusRequest:
    """Body of a 423 from ``/task`` and of a 200 from ``/status-change``.

    Go calls this document ``WorkerStatus``; here that name is the status enum.
    """

    status_requested: WorkerStatus | str = _wire("")
    """The status the worker should take."""


_TIME_OF_DAY: Final = re.compile(r"\s*([+-]?\d+):([+-]?\d+)")


@attrs.frozen(order=True)
class TimeOfDay:
    """A time of day, hours and minutes, as used by sleep schedules.

    Hour 24 with minute 0 stands for the next midnight, the end of a window that runs until the
    day is over.
    """

    hour: int = attrs.field()
    """0 to 24."""
    minute: int = attrs.field()
    """0 to 59."""

    @hour.validator
    def _check_hour(self, _: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= 24:
            raise ValueError(f"hour must be between 0 and 24, not {value}")

    @minute.validator
    def _check_minute(self, _: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= 59 or (self.hour == 24 and value != 0):
            raise ValueError(f"minute must be between 0 and 59 (0 at hour 24), not {value}")

    @classmethod
    def parse(cls, text: str) -> TimeOfDay:
        """Read ``"HH:MM"`` as Go's ``fmt.Sscanf("%d:%d")`` does.

        One-digit fields are accepted (``"16:4"``) and text after the minutes is ignored
        (``"16:34:44"`` is 16:34); ``"16:"`` or non-numeric text is an error.
        """
        match = _TIME_OF_DAY.match(text)
        if match is None:
            raise ValueError(f"not a time of day (HH:MM): {text!r}")
        return cls(int(match[1]), int(match[2]))

    @property
    def minutes(self) -> int:
        """Minutes since midnight."""
        return self.hour * 60 + self.minute

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


@_document
class ScheduleInfo:
    """A worker's sleep schedule: asleep outside ``time_start``..``time_end`` on the given days."""

    schedule_active: bool = _wire(False)
    """Whether the sleep scheduler acts on this worker."""
    days_of_week: str = _wire("", omitempty=True)
    """Space-separated two-letter day names (``mo tu we th fr sa su``); empty means every day."""
    time_start: TimeOfDay | None = _wire(None, omitempty=True)
    """Start of the awake window."""
    time_end: TimeOfDay | None = _wire(None, omitempty=True)
    """End of the awake window; may be earlier than the start, for windows across midnight."""
    next_check: datetime | None = _wire(None, omitempty=True)
    """When the sleep scheduler looks at this worker again."""


@_document
class WorkerBlacklistEntry:
    """A worker that may not run tasks of one type of one job any more."""

    created: datetime | None = _wire(None, key="_created")
    """When the entry was made."""
    worker_id: ObjectId | None = _wire(None, omitempty=True)
    """The blocked worker."""
    job_id: ObjectId | None = _wire(None)
    """The job it is blocked from."""
    task_type: str = _wire("")
    """The task type it is blocked from within that job."""


@_document
class Worker:
    """A worker as the manager describes it: answer to ``/register-worker``, dashboard entries.

    The hashed secret is never part of the document.
    """

    id: ObjectId | None = _wire(None, key="_id", omitempty=True)
    """The worker ID, its Basic-auth user name."""
    nickname: str = _wire("")
    """Human-readable name."""
    address: str = _wire("")
    """Network address it was last seen from."""
    status: WorkerStatus | str = _wire(WorkerStatus.NEW)
    """Current status."""
    platform: str = _wire("")
    """``linux``, ``windows`` or ``darwin``."""
    current_task: ObjectId | None = _wire(None, omitempty=True)
    """The task last assigned to it."""
    time_cost: int = _wire(0)
    """Unused; always 0."""
    last_activity: datetime | None = _wire(None, omitempty=True)
    """When it was last seen."""
    supported_task_types: tuple[str, ...] = _wire(factory=tuple, converter=_str_tuple)
    """Task types it accepts."""
    software: str = _wire("")
    """Its last ``User-Agent``."""
    current_task_status: TaskStatus | str = _wire("", omitempty=True)
    """Last status it reported for its task."""
    current_task_updated: datetime | None = _wire(None, omitempty=True)
    """When it last reported on a task."""
    current_job: ObjectId | None = _wire(None, omitempty=True)
    """Job of its current task (dashboard only)."""
    status_requested: WorkerStatus | str = _wire("")
    """Status it was asked to take; empty when none."""
    lazy_status_request: bool = _wire(False)
    """Whether the request waits for the current task to finish."""
    sleep_schedule: ScheduleInfo = _wire(factory=ScheduleInfo)
    """Its sleep schedule."""
    blacklist: tuple[WorkerBlacklistEntry, ...] = _wire(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Jobs and task types it is blocked from (dashboard only)."""


@_document
class MayKeepRunningResponse:
    """Answer to ``/may-i-run``. Exactly these three keys: the real worker fails on any other."""

    may_keep_running: bool = _wire(False)
    """Whether the worker may go on running the task."""
    reason: str = _wire("", omitempty=True)
    """Why not, when it may not."""
    status_requested: WorkerStatus | str = _wire("", omitempty=True)
    """A status the worker was asked to take, lazily or not."""


@_document
class FileProduced:
    """Body of ``/output-produced``: files a command just wrote."""

    paths: tuple[str, ...] = _wire(factory=tuple, converter=_str_tuple)
    """Absolute paths on the worker's machine."""


@_document
class Job:
    """A job: what a user submits, compiled into tasks by its job type."""

    id: ObjectId | None = _wire(None, key="_id", omitempty=True)
    """The job ID."""
    created: datetime | None = _wire(None, key="_created", omitempty=True)
    """When the job was submitted."""
    updated: datetime | None = _wire(None, key="_updated", omitempty=True)
    """When the job last changed."""
    etag: str = _wire("", key="_etag", omitempty=True)
    """Entity tag of the job's current version."""
    name: str = _wire("")
    """Human-readable name."""
    job_type: str = _wire("")
    """The job type that compiles it: ``blender-render``, ``sleep``, ..."""
    description: str = _wire("", omitempty=True)
    """Free text."""
    project: ObjectId | None = _wire(None, omitempty=True)
    """Project the job belongs to."""
    user: ObjectId | None = _wire(None, omitempty=True)
    """User who submitted it."""
    manager: ObjectId | None = _wire(None, omitempty=True)
    """Manager that runs it."""
    status: JobStatus | str = _wire(JobStatus.UNDER_CONSTRUCTION)
    """Current status."""
    status_reason: str = _wire("", omitempty=True)
    """Why the job has its status."""
    start_paused: bool = _wire(False, omitempty=True)
    """Whether the compiled job waits for a requeue before it runs."""
    priority: int = _wire(50)
    """1 to 100; higher runs first. Copied into every task as ``job_priority``."""
    settings: dict[str, Any] = _wire(factory=dict, converter=_dict)
    """Input of the job type's compiler."""
