"""``flamenco-worker``: run a worker with the built-in commands from a config file and flags.

Settings come from, in increasing order of precedence: the defaults, the config file (INI,
section ``[flamenco-worker]``, the keys of Flamenco Worker 2.x where they exist), then flags.
Without ``--config``, ``./flamenco-worker.cfg`` is read when it exists.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from . import __version__
from .commands import ProcessLimits
from .events import StateChanged, TaskFinished, TaskProgress, TaskStarted, WorkerEvent
from .reporter import ReportIntervals
from .worker import (
    EXIT_DATA_DIR_IN_USE,
    DataDirError,
    DataDirInUse,
    Worker,
    WorkerTimings,
    default_data_dir,
)

__all__ = ["ConsoleDisplay", "WorkerConfig", "load_config", "main"]

EXIT_CONFIG_ERROR = 2
"""Exit status for a config file, flag or data directory that cannot be used."""
SECTION = "flamenco-worker"
DEFAULT_CONFIG = Path("flamenco-worker.cfg")
DEFAULT_TASK_TYPES = ("sleep", "blender-render", "file-management", "exr-merge", "video-encoding")
TEST_TASK_TYPES = ("test-blender-render",)


class ConfigError(ValueError):
    """The config file or a flag holds a value that cannot be used."""


@attrs.frozen
class WorkerConfig:
    """Everything the CLI needs to build a :class:`Worker`."""

    manager_url: str = ""
    task_types: tuple[str, ...] = DEFAULT_TASK_TYPES
    nickname: str = ""
    data_dir: Path = attrs.field(factory=default_data_dir)
    registration_secret: str = attrs.field(default="", repr=False)
    may_i_run_interval: float = 5.0
    push_log_max_interval: float = 30.0
    push_log_max_entries: int = 1000
    push_act_max_interval: float = 15.0
    fetch_after_no_task: float = 5.0
    fetch_after_task: float = 3.0
    fetch_after_error: float = 10.0
    fetch_after_wake: float = 3.0
    start_retry: float = 30.0
    update_retry: float = 5.0
    status_poll_interval: float = 30.0

    def timings(self) -> WorkerTimings:
        """The runtime timings these settings give."""
        return WorkerTimings(
            fetch_after_no_task=self.fetch_after_no_task,
            fetch_after_task=self.fetch_after_task,
            fetch_after_error=self.fetch_after_error,
            fetch_after_wake=self.fetch_after_wake,
            start_retry=self.start_retry,
            update_retry=self.update_retry,
            status_poll_interval=self.status_poll_interval,
            may_i_run_interval=self.may_i_run_interval,
            report=ReportIntervals(
                activity_interval=self.push_act_max_interval,
                log_interval=self.push_log_max_interval,
                log_max_entries=self.push_log_max_entries,
            ),
            process=ProcessLimits(),
        )


def _seconds(text: str) -> float:
    """A wait in seconds: a finite number, not negative."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return value


# Config-file keys -> (WorkerConfig field, parser). Real worker keys are accepted as they are.
_KEYS: dict[str, tuple[str, Any]] = {
    "manager_url": ("manager_url", str),
    "task_types": ("task_types", lambda text: tuple(text.split())),
    "nickname": ("nickname", str),
    "data_dir": ("data_dir", Path),
    "registration_secret": ("registration_secret", str),
    "worker_registration_secret": ("registration_secret", str),
    "may_i_run_interval_seconds": ("may_i_run_interval", _seconds),
    "push_log_max_interval_seconds": ("push_log_max_interval", _seconds),
    "push_log_max_entries": ("push_log_max_entries", int),
    "push_act_max_interval_seconds": ("push_act_max_interval", _seconds),
    # Ours: the waits the real worker hard-codes (WorkerTimings), e.g. for fast test farms.
    "fetch_after_no_task_seconds": ("fetch_after_no_task", _seconds),
    "fetch_after_task_seconds": ("fetch_after_task", _seconds),
    "fetch_after_error_seconds": ("fetch_after_error", _seconds),
    "fetch_after_wake_seconds": ("fetch_after_wake", _seconds),
    "start_retry_seconds": ("start_retry", _seconds),
    "update_retry_seconds": ("update_retry", _seconds),
    "status_poll_interval_seconds": ("status_poll_interval", _seconds),
}


def load_config(path: Path | None) -> WorkerConfig:
    """The settings of a config file; the defaults when ``path`` is ``None``.

    :raises ConfigError: the file is unreadable or a value has the wrong type.
    """
    config = WorkerConfig()
    if path is None:
        return config
    parser = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream)
    except (OSError, configparser.Error) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    if not parser.has_section(SECTION):
        return config
    changes: dict[str, Any] = {}
    try:
        items = parser.items(SECTION)  # interpolation happens here: "$" alone is an error
    except configparser.Error as error:
        raise ConfigError(f"cannot read {path}: {error} (write $$ for a literal $)") from None
    for key, value in items:
        if key not in _KEYS:
            continue
        field, convert = _KEYS[key]
        try:
            changes[field] = convert(value.strip())
        except ValueError as error:
            raise ConfigError(f"{path}: [{SECTION}] {key} = {value!r}: {error}") from None
    return attrs.evolve(config, **changes)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flamenco-worker", description="Run a Flamenco worker with the built-in commands."
    )
    parser.add_argument("-c", "--config", type=Path, help="config file (INI)")
    parser.add_argument("-m", "--manager", help="manager URL, e.g. http://manager:8080/")
    parser.add_argument(
        "--task-types", help="space-separated task types (default: from the config file)"
    )
    parser.add_argument("-n", "--nickname", help="name shown by the manager (default: host name)")
    parser.add_argument("-d", "--data-dir", type=Path, help="where credentials and queue live")
    parser.add_argument("-1", "--single", action="store_true", help="run one task, then stop")
    parser.add_argument(
        "-t", "--test", action="store_true", help="testing mode: test-blender-render tasks only"
    )
    parser.add_argument(
        "-r", "--reregister", action="store_true", help="register anew, ignoring credentials"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class ConsoleDisplay:
    """Readable console output: state changes and tasks as lines, progress live on a terminal.

    On a terminal the progress line is redrawn in place; elsewhere (a log file, systemd) a line
    is written at each tenth of progress, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._shown_tenth = -1
        self._live_line = False

    def __call__(self, event: WorkerEvent) -> None:
        if isinstance(event, TaskProgress):
            self._progress(event)
        elif isinstance(event, TaskStarted):
            self._shown_tenth = -1
            self._line(f"task {event.task.id} started: {event.task.name or '(unnamed)'}")
        elif isinstance(event, TaskFinished):
            outcome = event.status or "stopped"
            self._line(f"task {event.task_id} {outcome}: {event.activity}")
        elif isinstance(event, StateChanged):
            self._line(f"worker is {event.state}")

    def _progress(self, event: TaskProgress) -> None:
        text = (
            f"[{event.percentage:3d}%] command {event.command_index + 1}/{event.command_count}"
            f" {event.activity}"
        )
        if self.live:
            self.stream.write("\r\x1b[2K" + text[:200])
            self.stream.flush()
            self._live_line = True
        elif event.percentage // 10 != self._shown_tenth:
            self._shown_tenth = event.percentage // 10
            self._line(text)

    def _line(self, text: str) -> None:
        if self._live_line:
            self.stream.write("\r\x1b[2K")
            self._live_line = False
        self.stream.write(text + "\n")
        self.stream.flush()


def build_worker(arguments: argparse.Namespace) -> Worker:
    """The worker that ``arguments`` (parsed flags) describe."""
    config_path = arguments.config
    if config_path is None and DEFAULT_CONFIG.exists():
        config_path = DEFAULT_CONFIG
    config = load_config(config_path)
    manager_url = arguments.manager or config.manager_url
    if not manager_url:
        raise ConfigError("no manager URL: pass --manager or set manager_url in the config")
    task_types = tuple(arguments.task_types.split()) if arguments.task_types else config.task_types
    if arguments.test:
        task_types = TEST_TASK_TYPES
    try:
        return Worker(
            manager_url,
            task_types,
            nickname=arguments.nickname or config.nickname or None,
            data_dir=arguments.data_dir or config.data_dir,
            registration_secret=config.registration_secret,
            timings=config.timings(),
            single=arguments.single,
            test_mode=arguments.test,
            reregister=arguments.reregister,
            listener=ConsoleDisplay(),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flamenco-worker``; returns the exit status."""
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        worker = build_worker(arguments)
    except ConfigError as error:
        print(f"flamenco-worker: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        return worker.run()
    except DataDirInUse as error:
        print(f"flamenco-worker: {error}", file=sys.stderr)
        return EXIT_DATA_DIR_IN_USE
    except DataDirError as error:
        print(f"flamenco-worker: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
