"""Declarative settings schemas: what a job type accepts, checked and described in one place.

A :class:`SettingsSchema` is a tuple of :class:`Setting` declarations. The same declarations
validate submitted settings (every problem collected, none raised half-way) and describe them as
JSON Schema for the OpenAPI document and the docs, so the two cannot drift apart.

Types follow JSON, not Python: ``true`` is not an integer, ``1.5`` is not an integer, and a
number must be finite.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from .errors import JobSettingsError, SettingProblem

__all__ = ["NO_DEFAULT", "Kind", "Setting", "SettingsSchema", "check_type"]


class _NoDefault(enum.Enum):
    NO_DEFAULT = "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault.NO_DEFAULT
"""Marks a setting without a default: left out when it was not given."""


class Kind(enum.StrEnum):
    """The JSON type of a setting."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRING_LIST = "string-list"
    """A JSON array of strings."""
    ARRAY = "array"
    """A JSON array; its items are checked by the setting's ``check``."""


_JSON_TYPE: Final[dict[Kind, dict[str, Any]]] = {
    Kind.STRING: {"type": "string"},
    Kind.INTEGER: {"type": "integer"},
    Kind.NUMBER: {"type": "number"},
    Kind.BOOLEAN: {"type": "boolean"},
    Kind.STRING_LIST: {"type": "array", "items": {"type": "string"}},
    Kind.ARRAY: {"type": "array"},
}

_TYPE_WORDS: Final = {
    Kind.STRING: "a string",
    Kind.INTEGER: "an integer",
    Kind.NUMBER: "a number",
    Kind.BOOLEAN: "true or false",
    Kind.STRING_LIST: "a list of strings",
    Kind.ARRAY: "a list",
}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_type(kind: Kind, value: Any) -> str | None:
    """Why ``value`` is not of ``kind``, or ``None`` if it is."""
    ok: bool
    if kind is Kind.STRING:
        ok = isinstance(value, str)
    elif kind is Kind.INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is Kind.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is Kind.BOOLEAN:
        ok = isinstance(value, bool)
    elif kind is Kind.STRING_LIST:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, list)
    if not ok:
        return f"must be {_TYPE_WORDS[kind]}, not {_describe(value)}"
    if kind in (Kind.STRING, Kind.STRING_LIST) and any("\x00" in text for text in _texts(value)):
        # No path, command line or Python line can hold one; the worker would crash on it.
        return "must not contain NUL characters (\\u0000)"
    return None


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


Check = Callable[[Any], "str | list[SettingProblem] | None"]
"""An extra check of a well-typed value: a message, problems with sub-paths, or ``None``."""


@attrs.frozen(kw_only=True)
class Setting:
    """One setting a job type accepts."""

    name: str
    kind: Kind
    doc: str
    """One line for people: what the setting means, with an example where it helps."""
    required: bool = False
    default: Any = NO_DEFAULT
    """Filled in when the setting is missing (only for optional settings)."""
    choices: tuple[Any, ...] = ()
    """If not empty, the only values allowed."""
    minimum: int | float | None = None
    """Smallest value allowed (integers and numbers)."""
    exclusive_minimum: int | float | None = None
    """The value must be larger than this (integers and numbers)."""
    maximum: int | float | None = None
    """Largest value allowed (integers and numbers)."""
    max_length: int | None = None
    """Longest string, or most items of a list."""
    deferred: bool = False
    """May be missing while the job waits for its files (``waiting-for-files``)."""
    check: Check | None = None
    json_schema_extra: Mapping[str, Any] = attrs.field(factory=dict)
    """More JSON Schema keywords (``pattern``, ``items``, ...) for the description."""

    def problems(self, value: Any) -> list[SettingProblem]:
        """Every problem of ``value`` for this setting (empty when it is fine)."""
        message = check_type(self.kind, value)
        if message is not None:
            return [SettingProblem(self.name, message)]
        if self.choices and value not in self.choices:
            allowed = ", ".join(repr(choice) for choice in self.choices)
            return [SettingProblem(self.name, f"must be one of {allowed}, not {_describe(value)}")]
        if self.minimum is not None and value < self.minimum:
            return [SettingProblem(self.name, f"must be at least {self.minimum}, not {value}")]
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            return [
                SettingProblem(
                    self.name, f"must be more than {self.exclusive_minimum}, not {value}"
                )
            ]
        if self.maximum is not None and value > self.maximum:
            return [SettingProblem(self.name, f"must be at most {self.maximum}, not {value}")]
        if self.max_length is not None and len(value) > self.max_length:
            unit = "characters" if self.kind is Kind.STRING else "items"
            return [SettingProblem(self.name, f"is too long: at most {self.max_length} {unit}")]
        if self.check is None:
            return []
        found = self.check(value)
        if found is None:
            return []
        if isinstance(found, str):
            return [SettingProblem(self.name, found)]
        return found

    def json_schema(self) -> dict[str, Any]:
        """This setting as a JSON Schema property."""
        schema: dict[str, Any] = {**_JSON_TYPE[self.kind], "description": self.doc}
        if self.default is not NO_DEFAULT:
            schema["default"] = self.default
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.exclusive_minimum is not None:
            schema["exclusiveMinimum"] = self.exclusive_minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["maxLength" if self.kind is Kind.STRING else "maxItems"] = self.max_length
        schema.update(self.json_schema_extra)
        return schema


@attrs.frozen
class SettingsSchema:
    """The settings of one job type."""

    settings: tuple[Setting, ...]
    removed: Mapping[str, str] = attrs.field(factory=dict)
    """Settings that old clients send and that are refused with a specific message."""

    def __attrs_post_init__(self) -> None:
        names = [setting.name for setting in self.settings]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate setting names in {names}")

    @property
    def names(self) -> list[str]:
        """The names of the settings, in declaration order."""
        return [setting.name for setting in self.settings]

    def validate(
        self, job_type: str, raw: Any, *, waiting_for_files: bool = False
    ) -> dict[str, Any]:
        """The settings with defaults filled in; :class:`JobSettingsError` listing every problem.

        With ``waiting_for_files``, settings declared ``deferred`` may be missing.
        """
        validated, problems = self.collect(raw, waiting_for_files=waiting_for_files)
        if problems:
            raise JobSettingsError(job_type, problems)
        return validated

    def collect(
        self, raw: Any, *, waiting_for_files: bool = False
    ) -> tuple[dict[str, Any], list[SettingProblem]]:
        """The well-formed settings (defaults filled in) and the problems of the others."""
        if not isinstance(raw, Mapping):
            return {}, [SettingProblem("settings", f"must be an object, not {_describe(raw)}")]
        problems: list[SettingProblem] = []
        known = {setting.name for setting in self.settings}
        for key in raw:
            if not isinstance(key, str):
                problems.append(SettingProblem(repr(key), "setting names must be strings"))
            elif key in self.removed:
                problems.append(SettingProblem(key, self.removed[key]))
            elif key not in known:
                problems.append(
                    SettingProblem(key, f"unknown setting; known settings: {', '.join(self.names)}")
                )
        validated: dict[str, Any] = {}
        missing: list[str] = []
        for setting in self.settings:
            if setting.name in raw:
                value = raw[setting.name]
                found = setting.problems(value)
                problems.extend(found)
                if not found:
                    validated[setting.name] = value
            elif setting.required and not (waiting_for_files and setting.deferred):
                missing.append(setting.name)
            elif setting.default is not NO_DEFAULT:
                validated[setting.name] = setting.default
        problems.extend(SettingProblem(name, "is required but missing") for name in missing)
        return validated, problems

    def json_schema(self, *, title: str = "", description: str = "") -> dict[str, Any]:
        """The settings as a JSON Schema object (draft 2020-12, as OpenAPI 3.1 uses)."""
        schema: dict[str, Any] = {"type": "object"}
        if title:
            schema["title"] = title
        if description:
            schema["description"] = description
        schema["properties"] = {setting.name: setting.json_schema() for setting in self.settings}
        required = [setting.name for setting in self.settings if setting.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema
