"""The manager's settings: defaults, then a TOML file, then environment variables, then flags.

Settings are named as in the Go manager's ``flamenco-manager.yaml`` where one exists
(``listen``, ``task_logs_path``, ``active_task_timeout_interval``, ...). Durations are written the
Go way (``10m``, ``1h30m``, ``336h``, ``500ms``) or as seconds.

* TOML: ``flamenco-manager.toml`` in the data directory, or the file given by ``--config``.
  Nested sections (``[shaman]``) hold the settings whose names start with that section.
* Environment: ``FLAMENCO_<NAME>`` in capitals, ``shaman.enabled`` as ``FLAMENCO_SHAMAN_ENABLED``.
* Flags: ``--<name-with-dashes>``, ``--shaman-enabled``; see ``flamenco-manager serve --help``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from flamenco_protocol.statuses import WorkerStatus

__all__ = ["ConfigError", "Settings", "format_duration", "load_settings", "parse_duration"]

CONFIG_FILE_NAME: Final = "flamenco-manager.toml"
ENV_PREFIX: Final = "FLAMENCO_"


class ConfigError(ValueError):
    """A setting has a value the manager cannot use; the message names it."""


_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def format_duration(duration: timedelta) -> str:
    """``duration`` as :func:`parse_duration` reads it, Go style: ``10m``, ``1h30m``, ``744h``
    (31 days), ``500ms``, ``0s``."""
    micros = round(duration / timedelta(microseconds=1))
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    seconds, fraction = divmod(micros, 1_000_000)
    if not seconds:
        return f"{sign}{fraction / 1000:g}ms" if fraction else "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if minutes else ""
    if seconds or fraction:
        text += f"{seconds}.{fraction:06d}".rstrip("0").rstrip(".") + "s"
    return sign + text


def parse_duration(value: str | float | timedelta) -> timedelta:
    """Read a Go duration (``1h30m``, ``-1s``, ``500ms``), a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ConfigError(f"not a duration: {value!r}")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text in ("0", ""):
        if text == "":
            raise ConfigError(f"not a duration: {value!r}")
        return timedelta(0)
    try:
        return timedelta(seconds=sign * float(text))
    except OverflowError:
        raise ConfigError(f"not a duration this program can hold: {value!r}") from None
    except ValueError:
        pass
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    if position != len(text):
        raise ConfigError(f"not a duration (like 10m, 1h30m, 500ms): {value!r}")
    return timedelta(seconds=sign * seconds)


def _setting(default: Any, help: str, *, converter: Any = None, factory: Any = None) -> Any:
    metadata = {"help": help}
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, converter=converter)
    return attrs.field(default=default, metadata=metadata, converter=converter)


def _duration(value: Any) -> timedelta:
    try:
        duration = parse_duration(value)
    except OverflowError:  # a number of seconds beyond what a timedelta holds
        raise ConfigError(f"not a duration this program can hold: {value!r}") from None
    if duration < timedelta(0):
        raise ConfigError(f"a duration may not be negative: {value!r}")
    return duration


def _period(value: Any) -> timedelta:
    period = parse_duration(value)
    if period <= timedelta(0):
        raise ConfigError(f"a period must be longer than 0: {value!r}")
    return period


def _path(value: Any) -> Path:
    return Path(value).expanduser()


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value).expanduser()


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part for part in re.split(r"[,\s]+", value) if part)
    return tuple(str(item) for item in value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"not an integer: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"not an integer: {value!r}") from None


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ConfigError(f"expected 1 or more, got {number}")
    return number


def _ratio(value: Any) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"not a number: {value!r}") from None
    if not 0 <= ratio <= 1:  # NaN too
        raise ConfigError(f"expected a share from 0 to 1, got {value!r}")
    return ratio


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected text, got {value!r}")
    return value


def _zone(value: Any) -> str:
    name = _text(value).strip()
    if name:
        try:
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            raise ConfigError(f"not a time zone known here: {name!r}") from None
    return name


def _log_level(value: Any) -> str:
    level = _text(value).strip().lower()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return level


_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def _worker_statuses(value: Any) -> tuple[str, ...]:
    statuses = _strings(value)
    known = {str(status) for status in WorkerStatus if status}
    unknown = [status for status in statuses if status not in known]
    if unknown:
        raise ConfigError(
            f"not worker statuses: {', '.join(unknown)} (expected among {', '.join(sorted(known))})"
        )
    return statuses


def _runs_kept(value: Any) -> int:
    number = _int(value)
    if number < -1:
        raise ConfigError(f"runs kept: expected -1 (all), 0 or more, got {number}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not true or false: {value!r}")


@attrs.frozen(kw_only=True)
class Settings:
    """Every setting of the manager, with its default."""

    data_dir: Path = _setting(
        Path("flamenco-data"),
        "directory for the database, task logs, keys and the latest image",
        converter=_path,
    )
    listen: str = _setting("0.0.0.0:8080", "HOST:PORT to listen on", converter=_text)
    processes: int = _setting(
        1,
        "manager processes serving requests (more than 1 needs PostgreSQL)",
        converter=_positive_int,
    )
    database: str = _setting(
        "",
        "database URL: sqlite:///PATH or postgresql://USER@HOST/DB; "
        "empty means SQLite in the data directory",
        converter=_text,
    )
    manager_name: str = _setting("Flamenco Manager", "name shown on the dashboard", converter=_text)
    task_logs_path: Path | None = _setting(
        None,
        "task log directory; empty means task-logs in the data directory",
        converter=_optional_path,
    )
    task_log_runs_kept: int = _setting(
        20,
        "older runs of a task's log kept when the task runs again, newest first; -1 keeps all",
        converter=_runs_kept,
    )
    timezone: str = _setting(
        "",
        "time zone of sleep schedules (e.g. Europe/Amsterdam); empty means the machine's",
        converter=_zone,
    )
    worker_registration_secret: str = _setting(
        "",
        "pre-shared secret workers must sign their registration with; empty means open",
        converter=_text,
    )
    active_task_timeout_interval: timedelta = _setting(
        timedelta(minutes=10),
        "a running task not pinged for this long is re-queued",
        converter=_duration,
    )
    active_worker_timeout_interval: timedelta = _setting(
        timedelta(minutes=1),
        "an awake worker not seen for this long times out; its tasks are re-queued",
        converter=_duration,
    )
    timeout_check_initial_delay: timedelta = _setting(
        timedelta(minutes=5),
        "wait this long after start before timing anything out (workers reconnect)",
        converter=_duration,
    )
    timeout_check_interval: timedelta = _setting(
        timedelta(minutes=1),
        "how often the timeout checker looks for silent tasks and workers",
        converter=_period,
    )
    worker_cleanup_max_age: timedelta = _setting(
        timedelta(0),
        "forget workers in worker_cleanup_status unseen for this long; 0 disables",
        converter=_duration,
    )
    worker_cleanup_status: tuple[str, ...] = _setting(
        ("offline",),
        "statuses of workers the worker remover may forget",
        converter=_worker_statuses,
    )
    job_cleanup_max_age: timedelta = _setting(
        timedelta(0),
        "delete finished jobs (completed, canceled, failed) unchanged for this long, with their "
        "tasks and logs; 0 keeps them",
        converter=_duration,
    )
    blacklist_threshold: int = _setting(
        3,
        "failures of one job's task type before a worker is blocked from it",
        converter=_positive_int,
    )
    task_fail_after_softfail_count: int = _setting(
        3, "workers that may fail a task before it fails for good", converter=_positive_int
    )
    failed_task_ratio: float = _setting(
        0.1, "share of a job's tasks that may fail before the job fails", converter=_ratio
    )
    blocklist_max_age: timedelta = _setting(
        timedelta(days=7), "blocklist entries expire after this long", converter=_duration
    )
    latest_image_roots: tuple[str, ...] = _setting(
        (),
        "directories the latest-image feature may read from; empty means the paths of the "
        "two-way variables for this machine",
        converter=_strings,
    )
    variables: Mapping[str, Any] = _setting(
        None, "path variables (TOML only), as the Go manager's `variables`", factory=dict
    )
    no_auth: bool = _setting(
        False,
        "serve the user API, logs, dashboard and Shaman without user authentication "
        "(trusted networks only)",
        converter=_bool,
    )
    shaman_enabled: bool = _setting(True, "serve the Shaman file store", converter=_bool)
    shaman_file_store_path: Path | None = _setting(
        None,
        "Shaman file store; empty means file-store in the data directory",
        converter=_optional_path,
    )
    shaman_checkout_path: Path | None = _setting(
        None, "Shaman checkouts; empty means jobs in the data directory", converter=_optional_path
    )
    shaman_garbage_collect_period: timedelta = _setting(
        timedelta(hours=24), "how often Shaman garbage collection runs", converter=_duration
    )
    shaman_garbage_collect_max_age: timedelta = _setting(
        timedelta(hours=744),
        "unreferenced stored files older than this are deleted",
        converter=_duration,
    )
    log_level: str = _setting("info", "debug, info, warning or error", converter=_log_level)

    @property
    def database_url(self) -> str:
        """The database URL, SQLite in the data directory unless one was given."""
        if self.database:
            return self.database
        return f"sqlite:///{self.data_dir / 'flamenco-manager.sqlite'}"

    @property
    def jwt_key_dir(self) -> Path:
        """Where the key pair that signs and checks user tokens lives."""
        return self.data_dir / "jwt-keys"

    @property
    def shaman_store_dir(self) -> Path:
        """The Shaman file store."""
        return self.shaman_file_store_path or self.data_dir / "file-store"

    @property
    def shaman_checkouts_dir(self) -> Path:
        """Where Shaman checkouts are made."""
        return self.shaman_checkout_path or self.data_dir / "jobs"

    @property
    def logs_dir(self) -> Path:
        """Where task logs go."""
        return self.task_logs_path or self.data_dir / "task-logs"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        host, _, port = self.listen.rpartition(":")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ConfigError(
                f"listen: write an IPv6 address in brackets, as [::1]:8080; got {self.listen!r}"
            )
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"listen: expected HOST:PORT, got {self.listen!r}")
        return host.strip("[]") or "0.0.0.0", int(port)


def settings_to_json(settings: Settings) -> str:
    """The settings as JSON that :func:`settings_from_json` reads back (for child processes)."""
    values: dict[str, Any] = {}
    for field in attrs.fields(Settings):
        value = getattr(settings, field.name)
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[field.name] = value
    return json.dumps(values)


def settings_from_json(text: str) -> Settings:
    """Settings written by :func:`settings_to_json`."""
    return Settings(**json.loads(text))


def setting_names() -> list[str]:
    """Every setting's name."""
    return [field.name for field in attrs.fields(Settings)]


def setting_help(name: str) -> str:
    """The help text of a setting."""
    return str(attrs.fields_dict(Settings)[name].metadata["help"])


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}".replace("-", "_").replace(".", "_")
        if isinstance(value, Mapping) and name not in ("variables",) and f"{name}_" in _PREFIXES:
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


_PREFIXES: Final = {
    name[: index + 1] for name in setting_names() for index, char in enumerate(name) if char == "_"
}


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from defaults, the TOML file, the environment and ``overrides`` (flags), in order.

    The TOML file is ``config_file`` or, when that is ``None``, ``flamenco-manager.toml`` in the
    data directory if it exists. Unknown names and bad values raise :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    known = set(setting_names())
    values: dict[str, Any] = {}

    from_env = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key.removeprefix(ENV_PREFIX).lower() in known
    }
    flags = dict(overrides or {})
    data_dir = Path(flags.get("data_dir") or from_env.get("data_dir") or "flamenco-data")
    if config_file is None:
        candidate = data_dir / CONFIG_FILE_NAME
        config_file = candidate if candidate.exists() else None
    if config_file is not None:
        try:
            with open(config_file, "rb") as stream:
                table = tomllib.load(stream)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from None
        from_file = _flatten(table)
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise ConfigError(f"{config_file}: unknown settings {', '.join(unknown)}")
        values.update(from_file)
    values.update(from_env)
    values.update({key: value for key, value in flags.items() if value is not None})
    fields = attrs.fields_dict(Settings)
    for name, value in values.items():
        converter = fields[name].converter
        try:
            if callable(converter):
                converter(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    try:
        return Settings(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def add_setting_flags(add_argument: Callable[..., Any], skip: Sequence[str] = ()) -> None:
    """Declare a ``--flag`` for every setting that has a scalar value."""
    for field in attrs.fields(Settings):
        if field.name in skip or field.name == "variables":
            continue
        default = field.default
        shown: object
        if isinstance(default, tuple):
            shown = ", ".join(default)
        elif isinstance(default, timedelta):
            shown = format_duration(default)
        else:
            shown = default
        # A boolean flag alone means true: `--no-auth`; `--no-auth false` also works.
        boolean = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar="VALUE",
            **boolean,
            help=f"{field.metadata['help']} "
            f"(default: {shown}; env {ENV_PREFIX}{field.name.upper()})",
        )
