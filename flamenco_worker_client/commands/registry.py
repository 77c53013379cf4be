"""The command registry: command names mapped to async functions, settings checked by signature.

A command is an ``async def`` whose first parameter is the
:class:`~flamenco_worker_client.commands.context.TaskContext` and whose other parameters are
its settings, by name::

    registry = CommandRegistry()

    @registry.command("greet")
    async def greet(ctx: TaskContext, name: str, times: int = 1) -> None:
        ...

The parameters' annotations are the settings' types; a parameter with a default is an optional
setting; a ``**settings`` parameter receives the keys no parameter names (others are ignored,
as the real worker ignores them). Before the command runs its settings are checked against
that signature, and every mistake is reported at once as :class:`InvalidSettings`.

Supported annotations: ``str``, ``int``, ``float`` (an int is accepted), ``bool``, ``list``,
``list[str]``, ``dict``, ``Any``, and any of these ``| None``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar, Union

import attrs

from .context import TaskContext

__all__ = [
    "CommandError",
    "CommandFailed",
    "CommandFunction",
    "CommandRegistry",
    "CommandSpec",
    "InvalidSettings",
]

CommandFunction = Callable[..., Awaitable[None]]
F = TypeVar("F", bound=CommandFunction)


class CommandError(Exception):
    """Base of the errors a command reports; the task fails with its message."""


class InvalidSettings(CommandError):
    """The command's settings are missing, of the wrong type or meaningless."""


class CommandFailed(CommandError):
    """The command ran and failed (a subprocess exited non-zero, a file was missing, ...)."""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _checker(annotation: Any) -> tuple[Callable[[Any], bool], str]:
    """A type test for a setting, and how to name the type in an error."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = typing.get_args(annotation)
        tests = [_checker(member) for member in members]
        return (
            lambda value: any(test(value) for test, _ in tests),
            " or ".join(name for _, name in tests),
        )
    if annotation is type(None) or annotation is None:
        return (lambda value: value is None), "null"
    if annotation is Any:
        return (lambda value: True), "anything"
    if annotation is str:
        return (lambda value: isinstance(value, str)), "a string"
    if annotation is bool:
        return (lambda value: isinstance(value, bool)), "a boolean"
    if annotation is int:
        return (lambda value: isinstance(value, int) and not isinstance(value, bool)), "an integer"
    if annotation is float:
        return (
            lambda value: isinstance(value, int | float) and not isinstance(value, bool)
        ), "a number"
    if annotation is list or origin is list:
        args = typing.get_args(annotation)
        if args:
            item_test, item_name = _checker(args[0])
            return (
                lambda value: isinstance(value, list) and all(item_test(item) for item in value)
            ), f"a list of {item_name.removeprefix('a ').removeprefix('an ')}s"
        return (lambda value: isinstance(value, list)), "a list"
    if annotation is dict or origin is dict:
        return (lambda value: isinstance(value, dict)), "an object"
    raise TypeError(f"unsupported setting annotation {annotation!r}")


@attrs.frozen
class _Setting:
    name: str
    required: bool
    test: Callable[[Any], bool]
    type_name: str


@attrs.frozen
class CommandSpec:
    """A registered command: its name, function and the settings its signature declares."""

    name: str
    """The command name tasks use."""
    function: CommandFunction
    """The async function that runs it."""
    settings: tuple[_Setting, ...]
    """The declared settings, in parameter order."""
    takes_extra: bool
    """Whether unknown settings are passed on (a ``**settings`` parameter)."""

    @classmethod
    def from_function(cls, name: str, function: CommandFunction) -> CommandSpec:
        """Read the settings from ``function``'s signature."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"command {name!r}: {function!r} must be an async function")
        hints = typing.get_type_hints(function)
        parameters = list(inspect.signature(function).parameters.values())
        if not parameters or parameters[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(f"command {name!r}: the first parameter must take the TaskContext")
        settings = []
        takes_extra = False
        for parameter in parameters[1:]:
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                takes_extra = True
                continue
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"command {name!r}: *{parameter.name} cannot hold settings")
            test, type_name = _checker(hints.get(parameter.name, Any))
            required = parameter.default is inspect.Parameter.empty
            settings.append(_Setting(parameter.name, required, test, type_name))
        return cls(name, function, tuple(settings), takes_extra)

    def bind(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for ``settings``; :class:`InvalidSettings` names every mistake."""
        if not isinstance(settings, Mapping):
            raise InvalidSettings(f"settings must be an object, not {_describe(settings)}")
        arguments: dict[str, Any] = {}
        problems = []
        for setting in self.settings:
            if setting.name not in settings:
                if setting.required:
                    problems.append(f"{setting.name!r} is required")
                continue
            value = settings[setting.name]
            if not setting.test(value):
                problems.append(
                    f"{setting.name!r} must be {setting.type_name}, not {_describe(value)}"
                )
                continue
            arguments[setting.name] = value
        if problems:
            raise InvalidSettings("; ".join(problems))
        if self.takes_extra:
            declared = {setting.name for setting in self.settings}
            arguments.update({k: v for k, v in settings.items() if k not in declared})
        return arguments

    async def run(self, context: TaskContext, settings: Mapping[str, Any]) -> None:
        """Check ``settings`` and run the command."""
        await self.function(context, **self.bind(settings))


class CommandRegistry:
    """Command names mapped to their :class:`CommandSpec`; register with :meth:`command`."""

    def __init__(self, commands: Mapping[str, CommandSpec] | None = None) -> None:
        self._commands: dict[str, CommandSpec] = dict(commands or {})

    def command(self, name: str) -> Callable[[F], F]:
        """Decorator: register an async function as the command ``name``, replacing any."""

        def register(function: F) -> F:
            self._commands[name] = CommandSpec.from_function(name, function)
            return function

        return register

    def add(self, name: str, function: CommandFunction) -> None:
        """Register ``function`` as the command ``name`` (the decorator's plain form)."""
        self._commands[name] = CommandSpec.from_function(name, function)

    def get(self, name: str) -> CommandSpec | None:
        """The command called ``name``, or ``None``."""
        return self._commands.get(name)

    def copy(self) -> CommandRegistry:
        """A registry with the same commands, to add to without changing this one."""
        return CommandRegistry(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._commands))

    def __len__(self) -> int:
        return len(self._commands)
