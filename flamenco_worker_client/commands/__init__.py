"""Commands: the registry, the task context, and the built-in Flamenco Worker 2.x commands.

:func:`builtin_commands` gives a registry holding every built-in command, under the names and
with the settings of Flamenco Worker 2.x.
"""

from __future__ import annotations

from . import basic, blender, ffmpeg, files, processes
from .context import ProcessLimits, TaskContext
from .processes import run_process
from .registry import (
    CommandError,
    CommandFailed,
    CommandFunction,
    CommandRegistry,
    CommandSpec,
    InvalidSettings,
)

__all__ = [
    "CommandError",
    "CommandFailed",
    "CommandFunction",
    "CommandRegistry",
    "CommandSpec",
    "InvalidSettings",
    "ProcessLimits",
    "TaskContext",
    "builtin_commands",
    "run_process",
]


def builtin_commands() -> CommandRegistry:
    """A new registry with every built-in command."""
    registry = CommandRegistry()
    for module in (basic, files, processes, blender, ffmpeg):
        module.register(registry)
    return registry
