"""What a running command sees of its worker and task: :class:`TaskContext`."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import TYPE_CHECKING

import attrs

from flamenco_protocol import Task

if TYPE_CHECKING:
    from flamenco_worker_client.reporter import TaskReporter

__all__ = ["ProcessLimits", "TaskContext"]


@attrs.frozen
class ProcessLimits:
    """How subprocesses of commands are watched and stopped (seconds)."""

    terminate_grace: float = 5.0
    """After SIGTERM, how long a subprocess may take to exit before it gets SIGKILL."""
    line_timeout: float = 3600.0
    """A subprocess silent for this long is killed and its command fails."""
    input_file_wait: float = 5.0
    """How long a command waits for a missing input file to appear (shared storage lags)."""


@attrs.define
class TaskContext:
    """The channel between a command and its worker: log, activity, progress, output files.

    Everything a command reports goes into the task's updates, batched by the worker; nothing
    here blocks or talks to the manager directly.
    """

    task: Task
    """The task being run."""
    command_index: int
    """Index of the running command in ``task.commands``."""
    command_name: str
    """Name of the running command."""
    worker_id: str
    """The worker's ID."""
    nickname: str
    """The worker's nickname."""
    limits: ProcessLimits
    """How subprocesses are watched and stopped."""
    _reporter: TaskReporter = attrs.field(alias="reporter")
    _output: Callable[[list[str]], None] = attrs.field(alias="output")

    @property
    def task_id(self) -> str:
        """The task's ID."""
        return str(self.task.id)

    def log(self, text: str) -> None:
        """Add a line (or several) to the task log."""
        self._reporter.log(text)

    def set_activity(self, activity: str) -> None:
        """Say what the command does now, in a short sentence the dashboard shows."""
        self._reporter.set_activity(activity)

    def set_progress(self, percentage: float) -> None:
        """The running command's progress, 0 to 100."""
        self._reporter.set_progress(int(percentage))

    def output_produced(self, *paths: str | PathLike[str]) -> None:
        """Tell the manager these files were written (candidates for its latest image)."""
        self._output([str(path) for path in paths])
