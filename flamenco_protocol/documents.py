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
from typing import Any, Final, TypeVar

import attrs

from .ids import ObjectId
from .statuses import JobStatus, TaskStatus, WorkerStatus

__all__ = [
    "Command",
    "ErrorMessage",
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
    "has_strict_keys",
    "is_document",
    "is_omitempty",
    "strict_keys",
    "wire_field",
]

_KEY: Final = "flamenco.key"
_OMITEMPTY: Final = "flamenco.omitempty"


def wire_field(
    default: Any = attrs.NOTHING,
    *,
    factory: Any = None,
    key: str | None = None,
    omitempty: bool = False,
    converter: Any = None,
) -> Any:
    """Declare a document field: its default, JSON key and ``omitempty`` rule.

    Use it in your own ``attrs`` classes to make them documents the codec knows.
    """
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


_STRICT: Final = "__flamenco_strict_keys__"

T = TypeVar("T", bound=type)


def strict_keys(cls: T) -> T:
    """Class decorator: decoding this document refuses keys it does not know.

    The worker protocol's documents ignore unknown keys, as Go does; an API of one's own may
    rather tell a client that ``"priorty"`` is no field than drop it without a word.
    """
    setattr(cls, _STRICT, True)
    return cls


def has_strict_keys(cls: type) -> bool:
    """Whether :func:`strict_keys` marked this document."""
    return bool(getattr(cls, _STRICT, False))


def is_document(cls: Any) -> bool:
    """Whether ``cls`` is an ``attrs`` class whose fields are declared with :func:`wire_field`."""
    return (
        isinstance(cls, type)
        and attrs.has(cls)
        and all(_OMITEMPTY in field.metadata for field in attrs.fields(cls))
    )


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class Command:
    """One step of a task: a command name the worker knows and its settings."""

    name: str = wire_field("")
    """Command name, such as ``blender_render``, ``echo`` or ``exec``."""
    settings: dict[str, Any] = wire_field(factory=dict, converter=_dict)
    """Free-form settings; only top-level string values go through variable replacement."""


@attrs.frozen(kw_only=True)
class WorkerRef:
    """A worker named in a task's ``failed_by_workers`` list."""

    id: ObjectId | None = wire_field(None)
    """The worker's ID."""
    identifier: str = wire_field("")
    """Human-readable ``"<address> (<nickname>)"``."""


@attrs.frozen(kw_only=True)
class TaskMetrics:
    """Measurements a worker reports about a task."""

    timing: dict[str, float] = wire_field(factory=dict, omitempty=True, converter=_dict)
    """Seconds spent per named step of the task."""


@attrs.frozen(kw_only=True)
class Task:
    """A unit of work, as ``POST /task`` sends it to a worker."""

    id: ObjectId | None = wire_field(None, key="_id", omitempty=True)
    """The task ID; the worker uses it in URLs."""
    etag: str = wire_field("", key="_etag", omitempty=True)
    """Entity tag of the task's current version."""
    job: ObjectId | None = wire_field(None)
    """The job the task belongs to."""
    manager: ObjectId | None = wire_field(None)
    """The manager the job belongs to."""
    project: ObjectId | None = wire_field(None)
    """The project the job belongs to."""
    user: ObjectId | None = wire_field(None)
    """The user who submitted the job."""
    name: str = wire_field("")
    """Human-readable task name."""
    status: TaskStatus | str = wire_field("")
    """Status; always ``active`` in an answer to ``/task``."""
    priority: int = wire_field(0)
    """Task priority; higher runs first within a job priority."""
    job_priority: int = wire_field(0)
    """Priority of the task's job; sorted before the task priority."""
    job_type: str = wire_field("")
    """The job type that produced the task."""
    task_type: str = wire_field("")
    """Matched against the worker's supported task types."""
    commands: tuple[Command, ...] = wire_field(factory=tuple, converter=_tuple)
    """The commands to run, in order."""
    log: str = wire_field("", omitempty=True)
    """The last lines of the task log."""
    activity: str = wire_field("", omitempty=True)
    """What the worker last said it was doing."""
    parents: tuple[ObjectId, ...] = wire_field(factory=tuple, omitempty=True, converter=_tuple)
    """Tasks that must complete before this one may run."""
    worker: str = wire_field("", omitempty=True)
    """Nickname of the worker that last held the task."""
    failed_by_workers: tuple[WorkerRef, ...] = wire_field(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Workers that failed this task."""
    metrics: TaskMetrics | None = wire_field(None, omitempty=True)
    """Timing measurements from the last update that carried them."""


@attrs.frozen(kw_only=True)
class TaskUpdate:
    """A worker's report on a task: status, activity, progress, log lines and metrics.

    The manager overwrites ``id``, ``task_id``, ``received_on_manager``, ``log_tail`` and
    ``worker`` on receipt, whatever the worker sent.
    """

    id: ObjectId | None = wire_field(None, key="_id")
    """ID of the update itself."""
    task_id: ObjectId | None = wire_field(None, omitempty=True)
    """The task the update is about."""
    task_status: TaskStatus | str = wire_field("", omitempty=True)
    """New task status, when the worker has one."""
    received_on_manager: datetime | None = wire_field(None)
    """When the manager received the update."""
    activity: str = wire_field("", omitempty=True)
    """What the worker is doing now."""
    task_progress_percentage: int = wire_field(0)
    """Progress of the whole task (the real worker always sends 0)."""
    current_command_idx: int = wire_field(0)
    """Index of the command last started."""
    command_progress_percentage: int = wire_field(0)
    """Progress of the current command."""
    log: str = wire_field("", omitempty=True)
    """New log lines, joined with newlines."""
    log_tail: str = wire_field("", omitempty=True)
    """The last lines of ``log``."""
    worker: str = wire_field("")
    """Identifier of the worker that sent the update."""
    failed_by_workers: tuple[WorkerRef, ...] = wire_field(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Workers that failed the task, when the update fails it."""
    metrics: TaskMetrics | None = wire_field(None, omitempty=True)
    """Timing measurements."""


@attrs.frozen(kw_only=True)
class WorkerRegistration:
    """Body of ``POST /register-worker``."""

    secret: str = wire_field("")
    """Secret the worker will authenticate with; stored hashed."""
    platform: str = wire_field("")
    """``linux``, ``windows`` or ``darwin``."""
    supported_task_types: tuple[str, ...] = wire_field(factory=tuple, converter=_str_tuple)
    """Task types the worker accepts."""
    nickname: str = wire_field("")
    """Human-readable name, usually the host name."""


@attrs.frozen(kw_only=True)
class WorkerSignonDoc:
    """Body of ``POST /sign-on``: what changed since the worker registered."""

    supported_task_types: tuple[str, ...] = wire_field(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Task types the worker accepts now."""
    nickname: str = wire_field("", omitempty=True)
    """The worker's nickname now."""


@attrs.frozen(kw_only=True)
class WorkerStatusRequest:
    """Body of a 423 from ``/task`` and of a 200 from ``/status-change``.

    Go calls this document ``WorkerStatus``; here that name is the status enum.
    """

    status_requested: WorkerStatus | str = wire_field("")
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


@attrs.frozen(kw_only=True)
class ScheduleInfo:
    """A sleep schedule: the worker sleeps from ``time_start`` to ``time_end`` on the given days."""

    schedule_active: bool = wire_field(False)
    """Whether the sleep scheduler acts on this worker."""
    days_of_week: str = wire_field("", omitempty=True)
    """Space-separated two-letter day names (``mo tu we th fr sa su``); empty means every day."""
    time_start: TimeOfDay | None = wire_field(None, omitempty=True)
    """Start of the sleep window; none means from midnight."""
    time_end: TimeOfDay | None = wire_field(None, omitempty=True)
    """End of the sleep window; none means until midnight. Earlier than the start for a window
    across midnight."""
    next_check: datetime | None = wire_field(None, omitempty=True)
    """When the sleep scheduler looks at this worker again."""


@attrs.frozen(kw_only=True)
class WorkerBlacklistEntry:
    """A worker that may not run tasks of one type of one job any more."""

    created: datetime | None = wire_field(None, key="_created")
    """When the entry was made."""
    worker_id: ObjectId | None = wire_field(None, omitempty=True)
    """The blocked worker."""
    job_id: ObjectId | None = wire_field(None)
    """The job it is blocked from."""
    task_type: str = wire_field("")
    """The task type it is blocked from within that job."""


@attrs.frozen(kw_only=True)
class Worker:
    """A worker as the manager describes it: answer to ``/register-worker``, dashboard entries.

    The hashed secret is never part of the document.
    """

    id: ObjectId | None = wire_field(None, key="_id", omitempty=True)
    """The worker ID, its Basic-auth user name."""
    nickname: str = wire_field("")
    """Human-readable name."""
    address: str = wire_field("")
    """Network address it was last seen from."""
    status: WorkerStatus | str = wire_field(WorkerStatus.NEW)
    """Current status."""
    platform: str = wire_field("")
    """``linux``, ``windows`` or ``darwin``."""
    current_task: ObjectId | None = wire_field(None, omitempty=True)
    """The task last assigned to it."""
    time_cost: int = wire_field(0)
    """Unused; always 0."""
    last_activity: datetime | None = wire_field(None, omitempty=True)
    """When it was last seen."""
    supported_task_types: tuple[str, ...] = wire_field(factory=tuple, converter=_str_tuple)
    """Task types it accepts."""
    software: str = wire_field("")
    """Its last ``User-Agent``."""
    current_task_status: TaskStatus | str = wire_field("", omitempty=True)
    """Last status it reported for its task."""
    current_task_updated: datetime | None = wire_field(None, omitempty=True)
    """When it last reported on a task."""
    current_job: ObjectId | None = wire_field(None, omitempty=True)
    """Job of its current task (user API only)."""
    current_task_name: str = wire_field("", omitempty=True)
    """Name of its current task (user API only)."""
    status_requested: WorkerStatus | str = wire_field("")
    """Status it was asked to take; empty when none."""
    lazy_status_request: bool = wire_field(False)
    """Whether the request waits for the current task to finish."""
    sleep_schedule: ScheduleInfo = wire_field(factory=ScheduleInfo)
    """Its sleep schedule."""
    blacklist: tuple[WorkerBlacklistEntry, ...] = wire_field(
        factory=tuple, omitempty=True, converter=_tuple
    )
    """Jobs and task types it is blocked from (dashboard only)."""


@attrs.frozen(kw_only=True)
class MayKeepRunningResponse:
    """Answer to ``/may-i-run``. Exactly these three keys: the real worker fails on any other."""

    may_keep_running: bool = wire_field(False)
    """Whether the worker may go on running the task."""
    reason: str = wire_field("", omitempty=True)
    """Why not, when it may not."""
    status_requested: WorkerStatus | str = wire_field("", omitempty=True)
    """A status the worker was asked to take, lazily or not."""


@attrs.frozen(kw_only=True)
class ErrorMessage:
    """A refusal as JSON, where the real worker parses every answer (``/tasks/{id}/return``)."""

    message: str = wire_field("")
    """Why the request was refused."""


@attrs.frozen(kw_only=True)
class FileProduced:
    """Body of ``/output-produced``: files a command just wrote."""

    paths: tuple[str, ...] = wire_field(factory=tuple, converter=_str_tuple)
    """Absolute paths on the worker's machine."""


@attrs.frozen(kw_only=True)
class Job:
    """A job: what a user submits, compiled into tasks by its job type."""

    id: ObjectId | None = wire_field(None, key="_id", omitempty=True)
    """The job ID."""
    created: datetime | None = wire_field(None, key="_created", omitempty=True)
    """When the job was submitted."""
    updated: datetime | None = wire_field(None, key="_updated", omitempty=True)
    """When the job last changed."""
    etag: str = wire_field("", key="_etag", omitempty=True)
    """Entity tag of the job's current version."""
    name: str = wire_field("")
    """Human-readable name."""
    job_type: str = wire_field("")
    """The job type that compiles it: ``blender-render``, ``sleep``, ..."""
    description: str = wire_field("", omitempty=True)
    """Free text."""
    project: ObjectId | None = wire_field(None, omitempty=True)
    """Project the job belongs to."""
    user: ObjectId | None = wire_field(None, omitempty=True)
    """User who submitted it."""
    manager: ObjectId | None = wire_field(None, omitempty=True)
    """Manager that runs it."""
    status: JobStatus | str = wire_field(JobStatus.UNDER_CONSTRUCTION)
    """Current status."""
    status_reason: str = wire_field("", omitempty=True)
    """Why the job has its status."""
    start_paused: bool = wire_field(False, omitempty=True)
    """Whether the compiled job waits for a requeue before it runs."""
    priority: int = wire_field(50)
    """1 to 100; higher runs first. Copied into every task as ``job_priority``."""
    settings: dict[str, Any] = wire_field(factory=dict, converter=_dict)
    """Input of the job type's compiler."""
