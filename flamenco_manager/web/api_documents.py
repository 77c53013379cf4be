"""The documents of the user REST API (``/api/…``), declared like the protocol's.

They are attrs classes whose fields use :func:`~flamenco_protocol.documents.wire_field`, so the
protocol codec decodes and encodes them with its rules (unknown keys ignored, types checked and
every bad field named, Go-style ``omitempty``), and the OpenAPI generator describes them from
the same declarations. Workers and sleep schedules reuse the protocol's own documents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from flamenco_protocol.documents import (
    Command,
    TaskMetrics,
    Worker,
    WorkerBlacklistEntry,
    WorkerRef,
    strict_keys,
    wire_field,
)
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import JobStatus, TaskStatus

__all__ = [
    "ApiError",
    "ApiJob",
    "ApiTask",
    "Blocklist",
    "BlocklistCleared",
    "DeletedJobs",
    "FarmStatusDoc",
    "HealthDoc",
    "JobList",
    "JobPriorityChange",
    "JobStatusChange",
    "JobSubmissionDoc",
    "JobTypeInfo",
    "JobTypeList",
    "TaskAction",
    "TaskList",
    "WorkerList",
    "WorkerStatusChange",
]


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class ApiError:
    """Every 4xx answer of the user API: what was wrong, and each bad field when there are many."""

    message: str = wire_field("")
    """What was wrong, in one sentence."""
    errors: tuple[str, ...] = wire_field(factory=tuple, omitempty=True, converter=_tuple)
    """One entry per bad field, as ``<field>: <problem>``."""


@strict_keys
@attrs.frozen(kw_only=True)
class JobSubmissionDoc:
    """Body of ``POST /api/jobs``.

    ``type`` and ``job_type`` are synonyms (the Flamenco 2 Server called it ``job_type``).
    """

    name: str = wire_field("")
    """Human-readable name; required."""
    type: str = wire_field("")
    """The job type, e.g. ``sleep``, ``exec-command``, ``blender-render``; required."""
    job_type: str = wire_field("")
    """Synonym of ``type``."""
    settings: dict[str, Any] = wire_field(factory=dict, converter=_dict)
    """The job type's settings (``GET /api/job-types`` gives their schema)."""
    priority: int = wire_field(50)
    """1 to 100, higher runs first; default 50."""
    description: str = wire_field("")
    """Free text."""
    start_paused: bool = wire_field(False)
    """Compile the job but hold its tasks until it is resumed."""
    platform: str = wire_field("")
    """The submitter's platform (``linux``, ``windows``, ``darwin``), for turning paths into
    variables; default the manager's."""


@attrs.frozen(kw_only=True)
class ApiJob:
    """A job as the user API shows it."""

    id: ObjectId | None = wire_field(None, key="_id")
    """The job ID."""
    created: datetime | None = wire_field(None, key="_created")
    """When it was submitted."""
    updated: datetime | None = wire_field(None, key="_updated")
    """When it last changed."""
    name: str = wire_field("")
    """Human-readable name."""
    job_type: str = wire_field("")
    """The job type that compiled it."""
    description: str = wire_field("")
    """Free text."""
    status: JobStatus | str = wire_field("")
    """Current status (spec/jobs.md §3.1)."""
    status_reason: str = wire_field("")
    """Why it has that status."""
    priority: int = wire_field(50)
    """1 to 100."""
    start_paused: bool = wire_field(False)
    """Whether it was submitted paused."""
    submitter: str = wire_field("")
    """The name in the submitter's token."""
    settings: dict[str, Any] = wire_field(factory=dict, converter=_dict)
    """Its settings, defaults filled in."""
    task_counts: dict[str, int] = wire_field(factory=dict, converter=_dict)
    """Its tasks per status."""


@attrs.frozen(kw_only=True)
class JobList:
    """A page of jobs, newest first."""

    jobs: tuple[ApiJob, ...] = wire_field(factory=tuple, converter=_tuple)
    """The jobs of this page."""
    next_cursor: str = wire_field("")
    """Pass as ``cursor`` for the next page; empty on the last page."""


@strict_keys
@attrs.frozen(kw_only=True)
class JobStatusChange:
    """Body of ``POST /api/jobs/{job_id}/status``."""

    status: str = wire_field("")
    """``cancel-requested`` (cancel), ``paused``, ``queued`` (resume) or ``requeued``."""
    reason: str = wire_field("")
    """Why, kept as the job's ``status_reason``."""


@strict_keys
@attrs.frozen(kw_only=True)
class JobPriorityChange:
    """Body of ``POST /api/jobs/{job_id}/priority``."""

    priority: int = wire_field()
    """1 to 100; required."""


@strict_keys
@attrs.frozen(kw_only=True)
class TaskAction:
    """Body of the task actions (optional)."""

    reason: str = wire_field("")
    """Why, shown as the task's activity."""


@attrs.frozen(kw_only=True)
class ApiTask:
    """A task as the user API shows it."""

    id: ObjectId | None = wire_field(None, key="_id")
    """The task ID."""
    job: ObjectId | None = wire_field(None)
    """Its job."""
    name: str = wire_field("")
    """Human-readable name."""
    status: TaskStatus | str = wire_field("")
    """Current status (spec/jobs.md §3.3)."""
    priority: int = wire_field(0)
    """Priority within the job."""
    job_priority: int = wire_field(0)
    """The job's priority."""
    job_type: str = wire_field("")
    """Its job's type."""
    task_type: str = wire_field("")
    """Matched against the workers' task types."""
    commands: tuple[Command, ...] = wire_field(factory=tuple, converter=_tuple)
    """What the worker runs, before variable replacement."""
    parents: tuple[ObjectId, ...] = wire_field(factory=tuple, converter=_tuple)
    """Tasks that must complete first."""
    activity: str = wire_field("")
    """What its worker last said it was doing."""
    worker: str = wire_field("")
    """Nickname of the worker that last held it."""
    worker_id: ObjectId | None = wire_field(None, omitempty=True)
    """ID of that worker."""
    failed_by_workers: tuple[WorkerRef, ...] = wire_field(factory=tuple, converter=_tuple)
    """Workers that failed it."""
    task_progress_percentage: int = wire_field(0)
    """Progress of the whole task."""
    current_command_idx: int = wire_field(0)
    """Index of the command last started."""
    command_progress_percentage: int = wire_field(0)
    """Progress of that command."""
    metrics: TaskMetrics | None = wire_field(None, omitempty=True)
    """Timing measurements."""
    last_updated: datetime | None = wire_field(None)
    """When it last changed."""
    log: str = wire_field("", omitempty=True)
    """The last lines of its log (``GET /api/tasks/{task_id}`` only)."""


@attrs.frozen(kw_only=True)
class TaskList:
    """The tasks of a job, in creation order."""

    tasks: tuple[ApiTask, ...] = wire_field(factory=tuple, converter=_tuple)
    """The tasks."""


@attrs.frozen(kw_only=True)
class WorkerList:
    """Every worker, by nickname."""

    workers: tuple[Worker, ...] = wire_field(factory=tuple, converter=_tuple)
    """The workers."""


@strict_keys
@attrs.frozen(kw_only=True)
class WorkerStatusChange:
    """Body of ``POST /api/workers/{worker_id}/status``."""

    status: str = wire_field("")
    """``asleep``, ``awake`` or ``shutdown``."""
    lazy: bool = wire_field(False)
    """Let the current task finish first."""


@attrs.frozen(kw_only=True)
class Blocklist:
    """The job and task types a worker may not run any more."""

    entries: tuple[WorkerBlacklistEntry, ...] = wire_field(factory=tuple, converter=_tuple)
    """Oldest first."""


@attrs.frozen(kw_only=True)
class BlocklistCleared:
    """Answer to clearing a blocklist."""

    removed: int = wire_field(0)
    """How many entries went."""


@attrs.frozen(kw_only=True)
class DeletedJobs:
    """Answer to deleting the jobs finished before a time."""

    deleted: tuple[ObjectId, ...] = wire_field(factory=tuple, converter=_tuple)
    """The jobs deleted, the longest unchanged first."""


@attrs.frozen(kw_only=True)
class FarmStatusDoc:
    """The farm at a glance."""

    state: str = wire_field("")
    """``active``, ``idle``, ``asleep`` or ``inoperative``."""
    workers: dict[str, int] = wire_field(factory=dict, converter=_dict)
    """Workers per status (a new worker's status is the empty string)."""
    jobs: dict[str, int] = wire_field(factory=dict, converter=_dict)
    """Jobs per status."""
    tasks: dict[str, int] = wire_field(factory=dict, converter=_dict)
    """Running and waiting tasks per status."""


@attrs.frozen(kw_only=True)
class HealthDoc:
    """This manager process answers, and its database with it."""

    status: str = wire_field("ok")
    """Always ``ok``: a process that cannot reach its database answers ``503`` instead."""
    version: str = wire_field("")
    """The manager's version."""
    database: str = wire_field("")
    """``sqlite`` or ``postgresql``."""


@attrs.frozen(kw_only=True)
class JobTypeInfo:
    """A job type and its settings."""

    name: str = wire_field("")
    """The ``type`` to submit."""
    description: str = wire_field("")
    """What it does."""
    settings_schema: dict[str, Any] = wire_field(factory=dict, converter=_dict)
    """Its settings, as JSON Schema."""


@attrs.frozen(kw_only=True)
class JobTypeList:
    """The job types this manager can compile."""

    job_types: tuple[JobTypeInfo, ...] = wire_field(factory=tuple, converter=_tuple)
    """By name."""
