"""``custom``: the user spells out the tasks, their commands and their dependencies.

For pipelines that know what they want run: nothing is derived, everything is checked. Settings::

    {"tasks": [
        {"name": "fetch", "task_type": "file-management",
         "commands": [{"name": "copy_file", "settings": {"src": "...", "dest": "..."}}]},
        {"name": "render", "task_type": "blender-render", "priority": 60,
         "commands": [...], "parents": ["fetch"]}
    ]}

Parents name *earlier* tasks, so the dependencies cannot form a cycle and creation order is a
valid run order. Command settings are passed to the worker as given: ``{variable}`` placeholders
in them are expanded per worker, but paths are not made portable (nothing says which are paths).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from flamenco_manager.services.jobs import TaskSpec

from .base import CompileContext, SchemaJobType, TaskListBuilder
from .errors import SettingProblem
from .schema import Kind, Setting, SettingsSchema, check_type

__all__ = ["CustomJobType"]

MAX_TASKS: Final = 1000
MAX_COMMANDS: Final = 100
MAX_NAME: Final = 200
MAX_PRIORITY: Final = 1000
MAX_COMMAND_SETTINGS_BYTES: Final = 64 * 1024
MAX_TOTAL_BYTES: Final = 4 * 1024 * 1024

_TASK_KEYS: Final = ("name", "task_type", "commands", "priority", "parents")
_COMMAND_KEYS: Final = ("name", "settings")

_COMMAND_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "worker command name"},
        "settings": {"type": "object", "description": "the command's settings"},
    },
    "required": ["name", "settings"],
    "additionalProperties": False,
}
_TASK_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
        "task_type": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME,
            "description": "workers only take task types they list, e.g. 'blender-render'",
        },
        "commands": {
            "type": "array",
            "items": _COMMAND_SCHEMA,
            "minItems": 1,
            "maxItems": MAX_COMMANDS,
        },
        "priority": {
            "type": "integer",
            "default": 50,
            "minimum": -MAX_PRIORITY,
            "maximum": MAX_PRIORITY,
        },
        "parents": {
            "type": "array",
            "items": {"type": "string"},
            "description": "names of earlier tasks that must complete first",
        },
    },
    "required": ["name", "task_type", "commands"],
    "additionalProperties": False,
}


def _name_problem(path: str, value: Any) -> SettingProblem | None:
    message = check_type(Kind.STRING, value)
    if message is None and not value.strip():
        message = "must not be empty"
    if message is None and len(value) > MAX_NAME:
        message = f"is too long: at most {MAX_NAME} characters"
    return None if message is None else SettingProblem(path, message)


def _unknown_keys(path: str, item: dict[Any, Any], known: tuple[str, ...]) -> list[SettingProblem]:
    return [
        SettingProblem(f"{path}.{key}", f"unknown field; known fields: {', '.join(known)}")
        for key in item
        if key not in known
    ]


def _json_size(value: Any) -> int | None:
    """Bytes of ``value`` as JSON, or ``None`` if it is not JSON (NaN, non-string keys...)."""
    try:
        return len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        return None


def _command_problems(path: str, item: Any) -> list[SettingProblem]:
    if not isinstance(item, dict):
        return [SettingProblem(path, "must be an object with 'name' and 'settings'")]
    problems = _unknown_keys(path, item, _COMMAND_KEYS)
    if "name" not in item:
        problems.append(SettingProblem(f"{path}.name", "is required but missing"))
    else:
        problem = _name_problem(f"{path}.name", item["name"])
        if problem is not None:
            problems.append(problem)
    if "settings" not in item:
        problems.append(SettingProblem(f"{path}.settings", "is required but missing"))
    elif not isinstance(item["settings"], dict):
        problems.append(SettingProblem(f"{path}.settings", "must be an object"))
    else:
        size = _json_size(item["settings"])
        if size is None:
            problems.append(SettingProblem(f"{path}.settings", "must be plain JSON"))
        elif size > MAX_COMMAND_SETTINGS_BYTES:
            problems.append(
                SettingProblem(
                    f"{path}.settings",
                    f"is too large: {size} bytes as JSON, at most {MAX_COMMAND_SETTINGS_BYTES}",
                )
            )
    return problems


def _task_problems(path: str, item: Any, earlier: dict[str, int]) -> list[SettingProblem]:
    if not isinstance(item, dict):
        return [SettingProblem(path, "must be an object with name, task_type and commands")]
    problems = _unknown_keys(path, item, _TASK_KEYS)
    for field in ("name", "task_type"):
        if field not in item:
            problems.append(SettingProblem(f"{path}.{field}", "is required but missing"))
        else:
            problem = _name_problem(f"{path}.{field}", item[field])
            if problem is not None:
                problems.append(problem)
    commands = item.get("commands")
    if "commands" not in item:
        problems.append(SettingProblem(f"{path}.commands", "is required but missing"))
    elif not isinstance(commands, list) or not commands:
        problems.append(SettingProblem(f"{path}.commands", "must be a non-empty list"))
    elif len(commands) > MAX_COMMANDS:
        problems.append(
            SettingProblem(f"{path}.commands", f"has {len(commands)} items; at most {MAX_COMMANDS}")
        )
    else:
        for index, cmd in enumerate(commands):
            problems.extend(_command_problems(f"{path}.commands[{index}]", cmd))
    if "priority" in item:
        priority = item["priority"]
        message = check_type(Kind.INTEGER, priority)
        if message is None and not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            message = f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, not {priority}"
        if message is not None:
            problems.append(SettingProblem(f"{path}.priority", message))
    if "parents" in item:
        problems.extend(_parent_problems(f"{path}.parents", item["parents"], item, earlier))
    return problems


def _parent_problems(
    path: str, parents: Any, item: dict[Any, Any], earlier: dict[str, int]
) -> list[SettingProblem]:
    message = check_type(Kind.STRING_LIST, parents)
    if message is not None:
        return [SettingProblem(path, message + " (names of earlier tasks)")]
    problems: list[SettingProblem] = []
    seen: set[str] = set()
    for index, parent in enumerate(parents):
        if parent in seen:
            problems.append(SettingProblem(f"{path}[{index}]", f"lists {parent!r} twice"))
        seen.add(parent)
        if parent in earlier:
            continue
        if parent == item.get("name"):
            problems.append(SettingProblem(f"{path}[{index}]", "a task cannot depend on itself"))
        else:
            problems.append(
                SettingProblem(
                    f"{path}[{index}]",
                    f"no earlier task is named {parent!r} (parents must come before the task, "
                    "which also rules out cycles)",
                )
            )
    return problems


def _tasks_check(tasks: list[Any]) -> list[SettingProblem] | None:
    if not tasks:
        return [SettingProblem("tasks", "must list at least one task")]
    size = _json_size(tasks)
    if size is not None and size > MAX_TOTAL_BYTES:
        return [SettingProblem("tasks", f"is too large: {size} bytes, at most {MAX_TOTAL_BYTES}")]
    problems: list[SettingProblem] = []
    earlier: dict[str, int] = {}
    for index, item in enumerate(tasks):
        path = f"tasks[{index}]"
        problems.extend(_task_problems(path, item, earlier))
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in earlier:
                problems.append(
                    SettingProblem(
                        f"{path}.name", f"{name!r} is already the name of tasks[{earlier[name]}]"
                    )
                )
            else:
                earlier[name] = index
    return problems or None


class CustomJobType(SchemaJobType):
    """``custom``: tasks, commands and dependencies given explicitly (local extension)."""

    name = "custom"
    description = (
        "Local extension for pipelines: the settings list the tasks themselves, each with a "
        "name, a task_type, worker commands, an optional priority (default 50) and the names "
        "of earlier tasks it depends on. Tasks are created in the order given."
    )
    schema = SettingsSchema(
        (
            Setting(
                name="tasks",
                kind=Kind.ARRAY,
                required=True,
                max_length=MAX_TASKS,
                doc="the tasks, in order; parents name earlier tasks",
                check=_tasks_check,
                json_schema_extra={"items": _TASK_SCHEMA, "minItems": 1},
            ),
        )
    )

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """The tasks as given, parents turned from names into indices."""
        tasks = TaskListBuilder()
        index_of: dict[str, int] = {}
        for item in settings["tasks"]:
            index_of[item["name"]] = tasks.add(
                item["name"],
                item["task_type"],
                [
                    {"name": cmd["name"], "settings": copy.deepcopy(cmd["settings"])}
                    for cmd in item["commands"]
                ],
                parents=tuple(index_of[parent] for parent in item.get("parents", ())),
                priority=item.get("priority", 50),
            )
        return tasks.tasks
