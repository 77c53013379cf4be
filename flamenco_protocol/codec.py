"""JSON codec for the protocol documents, with the Go manager's rules.

Decoding is lenient where Go is lenient and strict where Go is strict:

* unknown keys are ignored, and keys match field names case-insensitively (an exact match wins;
  when two keys name one field, the later one wins, as in Go);
* ``null`` or a missing key gives the field's zero value; ``""`` or ``null`` is an empty ID, and
  ``{"$oid": "…"}`` is accepted for an ID;
* types are checked, not coerced: a float for an int, a number for a string, a string for a bool
  are all errors. Every mistake in a document is collected, and one :class:`DecodeError` names the
  path of each (``$.commands[1].name: expected a string, got 5``).

Encoding writes what the Go manager writes: the same keys, ``omitempty`` fields left out when
empty, empty IDs as ``""``, times in RFC 3339 UTC with the fraction trimmed of trailing zeros.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, override

from .documents import TimeOfDay, field_key, has_strict_keys, is_document, is_omitempty
from .errors import DecodeError, InvalidObjectId
from .ids import ObjectId
from .statuses import (
    JobStatus,
    TaskStatus,
    WorkerStatus,
    parse_job_status,
    parse_task_status,
    parse_worker_status,
)

__all__ = [
    "MAX_NESTING",
    "DecodeError",
    "converter",
    "decode",
    "dumps",
    "encode",
    "format_time",
    "loads",
    "parse_json",
    "parse_time",
]

D = TypeVar("D")

_GO_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class _FieldError(ValueError):
    """A value of the wrong type or shape; converted into a :class:`DecodeError` entry."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _expected(what: str, value: Any) -> _FieldError:
    return _FieldError(f"expected {what}, got {_kind(value)}")


# --- times -------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time (any number of fraction digits, ``Z`` or an offset) as UTC."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = (match[7] or "0")[:6].ljust(6, "0")
    try:
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid time: {text!r} ({exc})") from None
    if match[9]:
        offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
        try:
            moment -= offset if match[9] == "+" else -offset
        except OverflowError:
            raise ValueError(f"time out of range: {text!r}") from None
    return moment


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, as Go's ``time.RFC3339Nano`` writes it (trailing fraction zeros trimmed).

    A naive datetime is taken to be in UTC already.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


# --- structuring hooks: strict scalars ---------------------------------------------------------


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    raise _expected("a string", value)


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise _FieldError(f"{value} does not fit in a 64-bit integer")
    raise _expected("an integer", value)


def _structure_float(value: Any, _: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _expected("a number", value)


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise _expected("true or false", value)


def _structure_object_id(value: Any, _: Any) -> ObjectId | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict) and value.keys() == {"$oid"}:
        value = value["$oid"]
    if isinstance(value, str):
        try:
            return ObjectId(value)
        except InvalidObjectId as exc:
            raise _FieldError(str(exc)) from None
    raise _expected("a 24-character hexadecimal object ID", value)


def _structure_time(value: Any, _: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _expected("an RFC 3339 time string", value)
    try:
        moment = parse_time(value)
    except ValueError as exc:
        raise _FieldError(str(exc)) from None
    # Go writes its zero time for an unset non-pointer time; it reads back as "no time".
    return None if moment == _ZERO_TIME else moment


def _structure_time_of_day(value: Any, _: Any) -> TimeOfDay | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _expected('a time of day "HH:MM"', value)
    try:
        return TimeOfDay.parse(value)
    except ValueError as exc:
        raise _FieldError(str(exc)) from None


def _status_hook(parse: Callable[[str], Any]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return parse(value)
        raise _expected("a status string", value)

    return structure


def _structure_settings(value: Any, _: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise _expected("an object", value)


# --- structuring hooks: containers and documents -----------------------------------------------


def _is_var_tuple(cls: Any) -> bool:
    args = typing.get_args(cls)
    return typing.get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis


def _make_tuple_hook(cls: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    item_type = typing.get_args(cls)[0]
    structure_item = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _expected("a list", value)
        items = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), f"@index {index}"]
                errors.append(exc)
        if errors:
            raise IterableValidationError("bad list items", errors, cls)
        return tuple(items)

    return structure


def _is_settings(cls: Any) -> bool:
    return bool(cls == dict[str, Any])


def _identity(value: Any) -> Any:
    return value


def _is_float_map(cls: Any) -> bool:
    return typing.get_origin(cls) is dict and typing.get_args(cls) == (str, float)


def _structure_float_map(value: Any, _: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _expected("an object", value)
    result = {}
    for key, item in value.items():
        try:
            result[key] = _structure_float(item, float)
        except _FieldError as exc:
            raise _FieldError(f"{key!r}: {exc}") from None
    return result


def _make_document_hook(cls: Any) -> Callable[[Any, Any], Any]:
    fields = attrs.fields(attrs.resolve_types(cls))
    keys = {field_key(field) for field in fields}
    by_folded_key = {key.casefold(): key for key in keys}
    overrides = {field.name: override(rename=field_key(field)) for field in fields}
    build = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_forbid_extra_keys=False,
        _cattrs_detailed_validation=True,
        **overrides,  # type: ignore[arg-type]
    )

    strict = has_strict_keys(cls)

    def structure(value: Any, _: Any) -> Any:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise _expected("an object", value)
        normalised = {}
        unknown = set()
        for key, item in value.items():
            if key in keys:
                normalised[key] = item
            elif (canonical := by_folded_key.get(key.casefold())) is not None:
                normalised[canonical] = item
            elif strict:
                unknown.add(key)
        if unknown:
            raise ForbiddenExtraKeysError(None, cls, unknown)
        return build(normalised, cls)

    return structure


# --- unstructuring hooks -----------------------------------------------------------------------


def _unstructure_time(value: datetime | None) -> str:
    return _GO_ZERO_TIME if value is None else format_time(value)


def _unstructure_object_id(value: ObjectId | None) -> str:
    return "" if value is None else str(value)


def _make_document_unstructure_hook(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Generate the encoder of one document class, keys in field order.

    Go's ``omitempty`` leaves out ``""``, ``0``, ``false``, nil and empty lists: exactly the
    values Python finds false, so a plain truth test decides.
    """
    attrs.resolve_types(cls)
    lines = ["def unstructure(document):", "    result = {}"]
    namespace: dict[str, Any] = {}
    for index, field in enumerate(attrs.fields(cls)):
        value = f"document.{field.name}"
        hook = converter.get_unstructure_hook(field.type) if field.type not in _PLAIN else None
        if hook is not None and hook is not _identity:
            namespace[f"hook{index}"] = hook
            encoded = f"hook{index}({value})"
        else:
            encoded = value
        if is_omitempty(field):
            lines.append(f"    if {value}:")
            lines.append(f"        result[{field_key(field)!r}] = {encoded}")
        else:
            lines.append(f"    result[{field_key(field)!r}] = {encoded}")
    lines.append("    return result")
    exec(compile("\n".join(lines), f"<unstructure {cls.__name__}>", "exec"), namespace)
    function: Callable[[Any], dict[str, Any]] = namespace["unstructure"]
    return function


# Values json.dumps writes as they are: strings (status enums are strings too), numbers, booleans.
_PLAIN: Final = frozenset(
    {str, int, float, bool, TaskStatus | str, WorkerStatus | str, JobStatus | str}
)


def _build_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(ObjectId | None, _structure_object_id)
    conv.register_structure_hook(ObjectId, _structure_object_id)
    conv.register_structure_hook(datetime | None, _structure_time)
    conv.register_structure_hook(TimeOfDay | None, _structure_time_of_day)
    conv.register_structure_hook(TaskStatus | str, _status_hook(parse_task_status))
    conv.register_structure_hook(WorkerStatus | str, _status_hook(parse_worker_status))
    conv.register_structure_hook(JobStatus | str, _status_hook(parse_job_status))
    conv.register_structure_hook_func(_is_settings, _structure_settings)
    conv.register_structure_hook_func(_is_float_map, _structure_float_map)
    conv.register_structure_hook_factory(_is_var_tuple, _make_tuple_hook)
    conv.register_structure_hook_factory(is_document, _make_document_hook)

    conv.register_unstructure_hook(datetime | None, _unstructure_time)
    conv.register_unstructure_hook(datetime, format_time)
    conv.register_unstructure_hook(ObjectId | None, _unstructure_object_id)
    conv.register_unstructure_hook(ObjectId, str)
    conv.register_unstructure_hook(
        TimeOfDay | None, lambda value: None if value is None else str(value)
    )
    conv.register_unstructure_hook(TimeOfDay, str)
    conv.register_unstructure_hook_func(_is_settings, _identity)
    conv.register_unstructure_hook_func(_is_float_map, _identity)
    conv.register_unstructure_hook_factory(is_document, _make_document_unstructure_hook)
    return conv


converter: Final = _build_converter()
"""The cattrs converter that knows every protocol document; use it for your own documents too."""


# --- errors ------------------------------------------------------------------------------------


def _paths(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs exception group into ``"<path>: <message>"`` lines."""
    if isinstance(exc, ClassValidationError):
        return _group_paths(exc, path, exc.cl)
    if isinstance(exc, IterableValidationError):
        return _group_paths(exc, path, None)
    if isinstance(exc, ForbiddenExtraKeysError):
        known = sorted(field_key(field) for field in attrs.fields(exc.cl))
        return [f"{path}: unknown keys {sorted(exc.extra_fields)} (known: {', '.join(known)})"]
    if isinstance(exc, _FieldError):
        return [f"{path}: {exc}"]
    if isinstance(exc, KeyError):
        return [f"{path}: missing"]
    return [f"{path}: {exc}"]


def _group_paths(group: BaseExceptionGroup[BaseException], path: str, cls: Any) -> list[str]:
    messages = []
    for inner in group.exceptions:
        step = ""
        for note in getattr(inner, "__notes__", []):
            note = str(note)
            if note.startswith("@index "):
                step = f"[{note.removeprefix('@index ')}]"
            elif " @ attribute " in note:
                name = note.rsplit(" @ attribute ", 1)[1]
                step = "." + (_json_name(cls, name) if cls is not None else name)
            elif note.startswith("Structuring typed tuple @ index "):
                step = f"[{note.rsplit(' ', 1)[1]}]"
        messages.extend(_paths(inner, path + step))
    return messages


def _json_name(cls: Any, attribute: str) -> str:
    for field in attrs.fields(cls):
        if field.name == attribute:
            return field_key(field)
    return attribute


# --- public functions --------------------------------------------------------------------------


def decode(document: type[D], data: Any) -> D:
    """Build ``document`` from already-parsed JSON (a dict); raise :class:`DecodeError`."""
    try:
        return converter.structure(data, document)
    except (
        ClassValidationError,
        IterableValidationError,
        ForbiddenExtraKeysError,
        _FieldError,
    ) as exc:
        raise DecodeError(document.__name__, _paths(exc, "$")) from None


MAX_NESTING: Final = 100
"""How deep arrays and objects may nest in a document's JSON; the protocol's nest a few levels."""


def parse_json(text: str | bytes | bytearray) -> Any:
    """JSON text as Python values, as :func:`json.loads` gives them, for text a document may be.

    Raises :class:`ValueError` for text that is not JSON, that nests arrays and objects more than
    :data:`MAX_NESTING` levels deep, or whose strings hold a lone UTF-16 surrogate (``"\\ud800"``,
    which no UTF-8 text can hold); :class:`UnicodeDecodeError` for bytes that are not UTF-8,
    UTF-16 or UTF-32.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"arrays and objects nested more than {MAX_NESTING} deep") from None
    pending: list[tuple[Any, int]] = [(value, 0)]  # a stack: no recursion on deep values
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("a string holds a lone UTF-16 surrogate: UTF-8 cannot encode it")
        elif isinstance(item, (dict, list)):
            if depth == MAX_NESTING:
                raise ValueError(f"arrays and objects nested more than {MAX_NESTING} deep")
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                item = item.values()
            pending.extend((child, depth + 1) for child in item)
    return value


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def loads(
    document: type[D],
    text: str | bytes | bytearray,
    *,
    parse: Callable[[str | bytes | bytearray], Any] = parse_json,
) -> D:
    """Parse JSON text and build ``document`` from it; raise :class:`DecodeError`.

    ``parse`` turns the text into Python values, raising :class:`ValueError` (or
    :class:`UnicodeDecodeError`) for text that is not JSON: a faster parser may stand in for
    :func:`parse_json` if it accepts, refuses and gives the same.
    """
    try:
        data = parse(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(document.__name__, [f"not valid JSON ({exc})"]) from None
    return decode(document, data)


def encode(document: Any) -> dict[str, Any]:
    """The JSON-ready dict of a document, keys and values as the Go manager writes them."""
    result: dict[str, Any] = converter.unstructure(document)
    return result


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON of a document, as the Go manager writes it (without the final newline)."""
    return json.dumps(encode(document), ensure_ascii=False, separators=(",", ":")).encode()
