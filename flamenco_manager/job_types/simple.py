"""The job types that need no Blender: ``sleep`` and ``exec-command`` (spec/jobs.md §2.1, §2.2)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from flamenco_manager.services.jobs import TaskSpec

from .base import (
    CompileContext,
    SchemaJobType,
    TaskListBuilder,
    command,
    command_line_check,
    frame_range_check,
    task_count_problem,
)
from .errors import SettingProblem
from .frames import frame_range_merge, iter_frame_range
from .schema import Kind, Setting, SettingsSchema

__all__ = ["ExecCommandJobType", "SleepJobType"]

FRAMES = Setting(
    name="frames",
    kind=Kind.STRING,
    required=True,
    doc="frames to do, e.g. '1-250' or '1-10,20,30-40'",
    max_length=10_000,
    check=frame_range_check,
)
CHUNK_SIZE = Setting(
    name="chunk_size",
    kind=Kind.INTEGER,
    required=True,
    minimum=1,
    doc="most frames per task",
)


class SleepJobType(SchemaJobType):
    """``sleep``: one task per frame chunk that echoes and sleeps; tests the farm's plumbing."""

    name = "sleep"
    description = (
        "Testing: one task per chunk of frames, each logging a message and sleeping for "
        "time_in_seconds. Runs on every worker (task type 'sleep'), no Blender needed."
    )
    schema = SettingsSchema(
        (
            FRAMES,
            CHUNK_SIZE,
            Setting(
                name="time_in_seconds",
                kind=Kind.NUMBER,
                required=True,
                minimum=0,
                doc="how long each task sleeps, in seconds",
            ),
        )
    )

    def check(self, settings: dict[str, Any]) -> list[SettingProblem]:
        """Refuse frame ranges that would make too many tasks."""
        problem = task_count_problem(settings)
        return [] if problem is None else [problem]

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """One ``sleep-<chunk>`` task per chunk: ``echo`` then ``sleep``."""
        tasks = TaskListBuilder()
        for chunk in iter_frame_range(settings["frames"], settings["chunk_size"]):
            tasks.add(
                f"sleep-{frame_range_merge(chunk)}",
                "sleep",
                [
                    command("echo", message="Preparing to sleep"),
                    command("sleep", time_in_seconds=settings["time_in_seconds"]),
                ],
            )
        return tasks.tasks


_WHOLE_PLACEHOLDER = re.compile(r"\{[^{}\s'\"\\]+\}")


def _requote(word: str) -> str:
    # A word that is one {variable} stays bare, as in blender_cmd's '{blender}': the value is
    # a command-line fragment the worker splits itself ('"C:/Program Files/.../blender.exe"',
    # '/opt/blender --factory-startup'); quoted, it would reach the worker as one literal word.
    if _WHOLE_PLACEHOLDER.fullmatch(word):
        return word
    return shlex.quote(word)


def normalise_command_line(cmd: str) -> str:
    """``cmd`` split like a shell would, each word re-quoted, joined by single spaces.

    Words that are exactly one ``{variable}`` are left unquoted, so the variable's value is
    split by the worker like ``blender_cmd``'s.
    """
    return " ".join(_requote(word) for word in shlex.split(cmd))


class ExecCommandJobType(SchemaJobType):
    """``exec-command``: one task that runs one command line on a worker, without a shell."""

    name = "exec-command"
    description = (
        "Runs one command line in one task (command 'exec'), split like a shell would but "
        "without a shell: pipes and redirections need 'sh -c ...'. The task type is 'debug', "
        "which Flamenco Worker 2.x only accepts when its task_types setting lists it; the "
        "task_type setting (a local extension) picks another."
    )
    schema = SettingsSchema(
        (
            Setting(
                name="cmd",
                kind=Kind.STRING,
                required=True,
                max_length=100_000,
                doc='the command line, e.g. "blender --version"',
                check=command_line_check,
            ),
            Setting(
                name="task_type",
                kind=Kind.STRING,
                default="debug",
                max_length=100,
                doc="task type of the task (local extension; upstream always used 'debug')",
                check=lambda value: None if value.strip() else "must not be empty",
            ),
        )
    )

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """The single ``exec-command`` task."""
        tasks = TaskListBuilder()
        tasks.add(
            "exec-command",
            settings["task_type"],
            [command("exec", cmd=normalise_command_line(settings["cmd"]))],
        )
        return tasks.tasks
