"""Variables: ``{name}`` placeholders in task settings, filled in per platform (spec §12).

A variable has one value per (audience, platform). Audience ``workers`` is what a worker gets in
the commands of its task; audience ``users`` is what people and their tools see. ``all`` (or no
audience) sets both. Platforms are the strings workers register with (``linux``, ``windows``,
``darwin``, or anything else) and match exactly.

Configuration, as a TOML (or YAML) file gives it::

    [variables.render]
    direction = "twoway"          # or "oneway"
    values = [
        { platform = "linux", value = "/shared/render" },
        { platforms = ["windows"], audience = "users", value = "R:/render" },
    ]

Two-way variables also map paths back: a path a user submits from one platform is turned into
``{name}/rest`` by :meth:`Variables.to_variables`, so that every worker can expand it for its own
platform.

Replacement is one pass of one regular expression: the value put in for a placeholder is never
searched for placeholders again, so the result does not depend on the order of the variables (the
Go manager's did, §19.2 item 32).
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from flamenco_protocol.documents import Command, Task

__all__ = [
    "Audience",
    "ConfigProblem",
    "Direction",
    "Variable",
    "VariableValue",
    "Variables",
    "VariablesConfigError",
    "local_platform",
]

_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


class Direction(enum.StrEnum):
    """Whether a variable's values also map back to the variable (``twoway``)."""

    ONEWAY = "oneway"
    TWOWAY = "twoway"


class Audience(enum.StrEnum):
    """Who sees a value: workers, users, or both (``all``)."""

    ALL = "all"
    WORKERS = "workers"
    USERS = "users"


@attrs.frozen
class ConfigProblem:
    """Something wrong with one variable in the configuration."""

    variable: str
    """The variable's name."""
    message: str
    """What is wrong, naming the value when it is about one."""
    is_error: bool = True
    """Errors make the value unusable; warnings only advise."""

    def __str__(self) -> str:
        return f"variable {self.variable!r}: {self.message}"


class VariablesConfigError(ValueError):
    """The ``variables`` configuration has errors; ``problems`` lists each of them."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        """Every error and warning found."""
        errors = [str(problem) for problem in self.problems if problem.is_error]
        super().__init__("invalid variables configuration:\n  " + "\n  ".join(errors))


@attrs.frozen
class VariableValue:
    """One value of a variable, for one platform and audience."""

    platform: str
    value: str
    audience: Audience = Audience.ALL


@attrs.frozen
class Variable:
    """A named variable: its direction and its values."""

    name: str
    direction: Direction
    values: tuple[VariableValue, ...]


def local_platform() -> str:
    """The platform name of the machine we run on, spelled as workers register it."""
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    return sys.platform.rstrip("0123456789") or sys.platform


class Variables:
    """The configured variables and their lookup table, audience -> platform -> name -> value."""

    def __init__(
        self, variables: Iterable[Variable], problems: Iterable[ConfigProblem] = ()
    ) -> None:
        self.variables: dict[str, Variable] = {var.name: var for var in variables}
        """The variables by name."""
        self.problems = tuple(problems)
        """Warnings (and, when not strict, errors) found in the configuration."""
        self._lookup: dict[Audience, dict[str, dict[str, str]]] = {
            Audience.WORKERS: {},
            Audience.USERS: {},
        }
        for var in self.variables.values():
            for value in var.values:
                audiences = (
                    (Audience.WORKERS, Audience.USERS)
                    if value.audience is Audience.ALL
                    else (value.audience,)
                )
                for audience in audiences:
                    # Later values win, as in the Go manager.
                    self._lookup[audience].setdefault(value.platform, {})[var.name] = value.value

    # Building

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, strict: bool = True) -> Variables:
        """Build from the ``variables`` table of the configuration (Go config version 2).

        Every error is collected, each naming its variable and value; with ``strict`` they are
        raised together as :class:`VariablesConfigError`, otherwise the bad values are left out
        and the errors kept in :attr:`problems`, like the Go manager, which only logs them.
        """
        problems: list[ConfigProblem] = []
        variables = []
        if not isinstance(config, Mapping):
            problems.append(ConfigProblem("*", "the variables must be a table of names"))
            config = {}
        for name, spec in config.items():
            variable = _parse_variable(str(name), spec, problems)
            if variable is not None:
                variables.append(variable)
        if strict and any(problem.is_error for problem in problems):
            raise VariablesConfigError(problems)
        return cls(variables, problems)

    @classmethod
    def from_legacy(
        cls,
        variables: Mapping[str, Mapping[str, str]] | None = None,
        path_replacement: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Variables:
        """Build from a version 1 configuration: ``{name: {platform: value}}`` tables.

        ``variables`` become one-way and ``path_replacement`` two-way variables, for everyone;
        empty values are skipped.
        """
        result = []
        for table, direction in (
            (variables or {}, Direction.ONEWAY),
            (path_replacement or {}, Direction.TWOWAY),
        ):
            for name, per_platform in table.items():
                values = tuple(
                    VariableValue(platform, _clean(value, direction))
                    for platform, value in per_platform.items()
                    if value
                )
                result.append(Variable(name, direction, values))
        return cls(result)

    @classmethod
    def defaults(cls) -> Variables:
        """The variables of a manager whose configuration defines none (spec §12.3)."""
        linux, windows, darwin = "linux", "windows", "darwin"
        jobs = (
            (linux, "/shared/flamenco/jobs"),
            (windows, "S:/flamenco/jobs"),
            (darwin, "/Volumes/Shared/flamenco/jobs"),
        )
        render = (
            (linux, "/shared/flamenco/render"),
            (windows, "S:/flamenco/render"),
            (darwin, "/Volumes/Shared/flamenco/render"),
        )

        def values(pairs: Iterable[tuple[str, str]]) -> tuple[VariableValue, ...]:
            return tuple(VariableValue(platform, value) for platform, value in pairs)

        blender = (
            VariableValue(linux, "/linux/path/to/blender", Audience.USERS),
            VariableValue(linux, "/farm/path/to/blender", Audience.WORKERS),
            VariableValue(windows, "C:/windows/path/to/blender.exe"),
            VariableValue(darwin, "/Volumes/Applications/Blender/blender"),
        )
        ffmpeg = (
            (linux, "/usr/bin/ffmpeg"),
            (windows, "C:/windows/path/to/ffmpeg.exe"),
            (darwin, "/Volumes/Applications/FFmpeg/ffmpeg"),
        )
        return cls(
            [
                Variable("blender", Direction.ONEWAY, blender),
                Variable("ffmpeg", Direction.ONEWAY, values(ffmpeg)),
                Variable("shaman", Direction.ONEWAY, values(jobs)),
                Variable("render", Direction.TWOWAY, values(render)),
                Variable("job_storage", Direction.TWOWAY, values(jobs)),
            ]
        )

    # Looking up and replacing

    def lookup(self, name: str, platform: str, audience: str = Audience.WORKERS) -> str | None:
        """The value of ``name`` for a platform and audience, or ``None`` when it has none."""
        return self._table(platform, audience).get(name)

    def for_platform(self, platform: str, audience: str = Audience.WORKERS) -> dict[str, str]:
        """Every variable with a value for this platform and audience, by name."""
        return dict(self._table(platform, audience))

    def replace(self, text: str, platform: str, audience: str = Audience.WORKERS) -> str:
        """``text`` with each known ``{name}`` replaced; unknown placeholders stay as they are."""
        table = self._table(platform, audience)
        if not table or "{" not in text:
            return text
        return _PLACEHOLDER.sub(lambda match: table.get(match[1], match[0]), text)

    def replace_local(self, text: str) -> str:
        """Replacement for the manager's own paths: audience workers, the manager's platform."""
        return self.replace(text, local_platform(), Audience.WORKERS)

    def replace_in_settings(
        self, settings: Mapping[str, Any], platform: str, audience: str = Audience.WORKERS
    ) -> dict[str, Any]:
        """A copy of command settings with placeholders replaced in top-level strings only.

        Keys are never touched, and neither are numbers, lists or nested tables, even when they
        hold strings (spec VR-02).
        """
        return {
            key: self.replace(value, platform, audience) if isinstance(value, str) else value
            for key, value in settings.items()
        }

    def replace_in_command(
        self, command: Command, platform: str, audience: str = Audience.WORKERS
    ) -> Command:
        """The command with its settings replaced (the same command when nothing changes)."""
        settings = self.replace_in_settings(command.settings, platform, audience)
        if all(settings[key] is value for key, value in command.settings.items()):
            return command
        return attrs.evolve(command, settings=settings)

    def replace_in_task(self, task: Task, platform: str, audience: str = Audience.WORKERS) -> Task:
        """The task as sent to a worker on ``platform``; the task passed in keeps placeholders.

        The same task when no placeholder was replaced."""
        commands = tuple(self.replace_in_command(cmd, platform, audience) for cmd in task.commands)
        if all(new is old for new, old in zip(commands, task.commands, strict=True)):
            return task
        return attrs.evolve(task, commands=commands)

    def to_variables(self, path: str, platform: str, audience: str = Audience.USERS) -> str:
        """A path made portable: the longest matching two-way value becomes ``{name}``.

        A value matches only whole path components (``/render`` matches ``/render/x`` and not
        ``/renders``); on Windows the comparison ignores case and takes ``\\`` for ``/``. Paths
        no value matches come back unchanged.
        """
        windows = platform == "windows"
        separators = "/\\" if windows else "/"

        def comparable(text: str) -> str:
            # Both changes keep the length, so offsets in `path` stay valid.
            if not windows:
                return text
            return "".join(c.lower() if len(c.lower()) == 1 else c for c in text.replace("\\", "/"))

        candidates = comparable(path)
        best: tuple[int, str] | None = None
        for name, value in self._table(platform, audience).items():
            variable = self.variables.get(name)
            if variable is None or variable.direction is not Direction.TWOWAY or not value:
                continue
            if not candidates.startswith(comparable(value)):
                continue
            if len(path) > len(value) and path[len(value)] not in separators:
                continue
            if best is None or len(value) > best[0]:
                best = (len(value), name)
        if best is None:
            return path
        return "{" + best[1] + "}" + path[best[0] :]

    def _table(self, platform: str, audience: str) -> dict[str, str]:
        return self._lookup.get(Audience(audience), {}).get(platform, {})


def _parse_variable(name: str, spec: Any, problems: list[ConfigProblem]) -> Variable | None:
    if not isinstance(spec, Mapping):
        problems.append(ConfigProblem(name, "must be a table with direction and values"))
        return None
    direction_text = spec.get("direction")
    try:
        direction = Direction(str(direction_text))
    except ValueError:
        problems.append(
            ConfigProblem(name, f"direction must be 'oneway' or 'twoway', not {direction_text!r}")
        )
        return None
    raw_values = spec.get("values", [])
    if not isinstance(raw_values, list | tuple):
        problems.append(ConfigProblem(name, "values must be a list of tables"))
        return None
    values: list[VariableValue] = []
    for index, raw in enumerate(raw_values):
        values.extend(_parse_value(name, index, raw, direction, problems))
    return Variable(name, direction, tuple(values))


def _parse_value(
    name: str, index: int, raw: Any, direction: Direction, problems: list[ConfigProblem]
) -> list[VariableValue]:
    where = f"value {index + 1}"
    if not isinstance(raw, Mapping):
        problems.append(ConfigProblem(name, f"{where} must be a table"))
        return []
    value = raw.get("value", "")
    if not isinstance(value, str):
        problems.append(ConfigProblem(name, f"{where}: value must be a string, not {value!r}"))
        return []
    audience_text = raw.get("audience") or Audience.ALL
    try:
        audience = Audience(audience_text)
    except ValueError:
        problems.append(
            ConfigProblem(
                name, f"{where}: audience must be all, workers or users, not {audience_text!r}"
            )
        )
        return []
    platforms: list[str] = []
    platform = raw.get("platform")
    many = raw.get("platforms")
    if platform is not None and many is not None:
        problems.append(
            ConfigProblem(name, f"{where} has both platform and platforms; using both", False)
        )
    if platform is not None:
        if not isinstance(platform, str) or not platform:
            problems.append(ConfigProblem(name, f"{where}: platform must be a non-empty string"))
            return []
        platforms.append(platform)
    if many is not None:
        if not isinstance(many, list | tuple) or not all(isinstance(p, str) and p for p in many):
            problems.append(ConfigProblem(name, f"{where}: platforms must be a list of names"))
            return []
        platforms.extend(many)
    if not platforms:
        problems.append(ConfigProblem(name, f"{where} ({value!r}) has no platform or platforms"))
        return []
    if "\\" in value:
        problems.append(
            ConfigProblem(name, f"{where} ({value!r}) has backslashes; use forward slashes", False)
        )
    cleaned = _clean(value, direction)
    return [VariableValue(p, cleaned, audience) for p in platforms]


def _clean(value: str, direction: Direction) -> str:
    # Two-way values are prefixes of paths: a trailing slash would stop them matching "x/...".
    return value.rstrip("/") if direction is Direction.TWOWAY else value
