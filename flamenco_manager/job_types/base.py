"""The job type interface, the compile context, and a base class for schema-driven job types."""

from __future__ import annotations

import abc
import math
import re
import shlex
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from flamenco_manager.services.jobs import TaskSpec

from .errors import JobSettingsError, SettingProblem
from .frames import MAX_FRAMES, FrameRangeError, frame_range_count
from .schema import SettingsSchema

__all__ = [
    "MAX_TASKS",
    "CompileContext",
    "JobType",
    "SchemaJobType",
    "TaskListBuilder",
    "command",
    "command_line_check",
    "frame_range_check",
    "task_count_problem",
]

MAX_TASKS: Final = 100_000
"""The most tasks one job may compile into."""

_LEADING_VARIABLE: Final = re.compile(r"\{[^{}/\\]+\}")


def _same_path(path: str) -> str:
    return path


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class CompileContext:
    """What a compiler needs to know from the manager about the job and the farm."""

    job_name: str = ""
    priority: int = 50
    """The job's priority (1..100); tasks get it as ``job_priority`` when stored."""
    created: datetime = attrs.field(factory=_utc_now)
    """When the job was created; names blender-render's intermediate directory (in UTC)."""
    worker_task_types: frozenset[str] = frozenset()
    """Every task type some registered worker supports; ``video-encoding`` enables videos."""
    to_variables: Callable[[str], str] = _same_path
    """Makes a submitted path portable (``/render/x`` -> ``{render}/x``); identity by default."""

    def portable(self, path: str) -> str:
        """``path`` through :attr:`to_variables`; ``\\`` becomes ``/`` after a leading variable.

        ``R:\\shot\\f-###`` from a Windows user becomes ``{render}/shot/f-###``: with its
        backslashes, a Linux worker would get ``/shared/render\\shot\\f-###``, one file name.
        Every platform's worker takes ``/``. Paths without a variable keep their separators.
        """
        converted = self.to_variables(path)
        if _LEADING_VARIABLE.match(converted) is None:
            return converted
        return converted.replace("\\", "/")


@runtime_checkable
class JobType(Protocol):
    """What the registry needs of a job type; plug-ins may implement it without a base class."""

    @property
    def name(self) -> str:
        """The ``job_type`` string jobs name, e.g. ``blender-render``."""

    @property
    def description(self) -> str:
        """One paragraph for people choosing a job type."""

    def settings_schema(self) -> dict[str, Any]:
        """The settings as a JSON Schema object."""

    def validate(self, settings: Any, *, waiting_for_files: bool = False) -> dict[str, Any]:
        """The validated settings (defaults filled in); :class:`JobSettingsError` if bad.

        With ``waiting_for_files``, settings the files will supply (``filepath``) may be missing.
        """

    def compile(self, settings: Any, context: CompileContext) -> list[TaskSpec]:
        """The tasks of a job with these settings, in creation order.

        Raises :class:`JobSettingsError` for settings it cannot compile.
        """


def command(name: str, **settings: Any) -> dict[str, Any]:
    """A task command as the Server stored it: ``{"name": ..., "settings": {...}}``."""
    return {"name": name, "settings": settings}


class TaskListBuilder:
    """Collects tasks in creation order; parents are given as indices returned by :meth:`add`."""

    def __init__(self) -> None:
        self.tasks: list[TaskSpec] = []

    def add(
        self,
        name: str,
        task_type: str,
        commands: Sequence[dict[str, Any]],
        *,
        parents: Sequence[int] = (),
        priority: int = 50,
    ) -> int:
        """Append a task; its index, for later tasks' parents."""
        self.tasks.append(
            TaskSpec(
                name=name,
                task_type=task_type,
                commands=list(commands),
                priority=priority,
                parents=tuple(parents),
            )
        )
        return len(self.tasks) - 1


def command_line_check(value: str) -> str | None:
    """Why the worker could not run ``value`` as a command line, or ``None``.

    Flamenco Worker 2.x splits ``exec``'s ``cmd`` and ``blender_cmd`` like a shell
    (``shlex.split``) and runs the first word: an unclosed quote failed the task with an
    uncaught exception, and nothing at all had nothing to run.
    """
    try:
        words = shlex.split(value)
    except ValueError as error:
        return f"cannot be split into words like a shell would: {error}"
    if not words:
        return "is empty; give a command line, e.g. 'echo hello' or '{blender}'"
    return None


def frame_range_check(value: str) -> str | None:
    """Why ``value`` is not a usable ``frames`` setting, or ``None``."""
    try:
        count = frame_range_count(value)
    except FrameRangeError as error:
        return str(error)
    if count == 0:
        return "selects no frames; give frames like 1-250 or 1,5,10-20"
    if count > MAX_FRAMES:
        # Checked here, not only when compiling: there it would store a construction-failed job.
        return f"selects {count} frames; at most {MAX_FRAMES} are allowed"
    return None


def task_count_problem(
    settings: dict[str, Any], per_chunk: int = 1, extra: int = 0, *, limit: int = MAX_TASKS
) -> SettingProblem | None:
    """A problem if ``frames`` in chunks of ``chunk_size`` makes more tasks than ``limit``."""
    frames, chunk_size = settings.get("frames"), settings.get("chunk_size")
    if not isinstance(frames, str) or not isinstance(chunk_size, int):
        return None
    try:
        count = frame_range_count(frames)
    except FrameRangeError:
        return None
    tasks = math.ceil(count / chunk_size) * per_chunk + extra
    if tasks <= limit:
        return None
    return SettingProblem(
        "chunk_size",
        f"{count} frames in chunks of {chunk_size} make {tasks} tasks; at most {limit} are "
        "allowed (use a larger chunk_size)",
    )


class SchemaJobType(abc.ABC):
    """A job type whose settings are a :class:`SettingsSchema`.

    Subclasses set ``name``, ``description`` and ``schema``, may add cross-setting checks in
    :meth:`check`, and build tasks in :meth:`build` from settings that passed validation.
    """

    name: str
    description: str
    schema: SettingsSchema

    def settings_schema(self) -> dict[str, Any]:
        """The settings as a JSON Schema object."""
        return self.schema.json_schema(title=self.name, description=self.description)

    def validate(self, settings: Any, *, waiting_for_files: bool = False) -> dict[str, Any]:
        """The settings with defaults filled in; :class:`JobSettingsError` naming every problem."""
        validated, problems = self.schema.collect(settings, waiting_for_files=waiting_for_files)
        problems.extend(self.check(validated))
        if problems:
            raise JobSettingsError(self.name, problems)
        return validated

    def check(self, settings: dict[str, Any]) -> list[SettingProblem]:
        """Problems involving several settings; ``settings`` holds only the well-formed ones."""
        return []

    def compile(self, settings: Any, context: CompileContext) -> list[TaskSpec]:
        """Validate ``settings`` (all of them now, files included) and build the tasks."""
        return self.build(self.validate(settings), context)

    @abc.abstractmethod
    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """The tasks for validated settings."""
