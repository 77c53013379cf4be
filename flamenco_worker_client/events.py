"""What a running worker tells its listener (a console display, a test, a GUI)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TypeAlias

import attrs

from flamenco_protocol import Task, TaskStatus

__all__ = [
    "StateChanged",
    "TaskFinished",
    "TaskProgress",
    "TaskStarted",
    "WorkerEvent",
    "WorkerListener",
    "WorkerState",
]


class WorkerState(StrEnum):
    """The worker's own state; the values that are also worker statuses are spelled alike."""

    STARTING = "starting"
    """Registering or signing on."""
    AWAKE = "awake"
    """Fetching and running tasks."""
    TESTING = "testing"
    """Like awake, in test mode."""
    ASLEEP = "asleep"
    """Polling for a status change, running nothing."""
    ERROR = "error"
    """Resting after an error; awake again after a while."""
    SHUTTING_DOWN = "shutting-down"
    """Stopping: last updates, then sign-off."""


@attrs.frozen
class StateChanged:
    """The worker took a new state."""

    state: WorkerState


@attrs.frozen
class TaskStarted:
    """The worker began a task."""

    task: Task


@attrs.frozen
class TaskProgress:
    """The running task's activity or progress changed."""

    task_id: str
    activity: str
    command_index: int
    command_count: int
    percentage: int


@attrs.frozen
class TaskFinished:
    """The worker stopped running a task; ``status`` is ``None`` when it reported none
    (returned to the manager, or abandoned at shutdown)."""

    task_id: str
    status: TaskStatus | None
    activity: str


WorkerEvent: TypeAlias = StateChanged | TaskStarted | TaskProgress | TaskFinished
"""Everything a listener may receive."""

WorkerListener: TypeAlias = Callable[[WorkerEvent], None]
"""Receives the worker's events; it must not block."""
