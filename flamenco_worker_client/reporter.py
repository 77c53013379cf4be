"""Turns what a task does into task updates, batched the way the real worker batches them.

Commands log lines, set the activity and report progress many times a second; the manager
wants a handful of updates per task. The reporter keeps the latest activity and progress and
the log lines not sent yet, and pushes one update (a snapshot of all of it) onto the update
queue when:

* the task status changes: at once;
* the activity changed and the last push is older than ``activity_interval``: at once,
  otherwise once that interval is over;
* more than ``log_max_entries`` lines wait, or the last push with log lines is older than
  ``log_interval``: at once, otherwise once that interval is over.

A task shorter than both intervals thus produces two updates: ``active`` and its final status
with the whole log.

The manager refuses bodies over 32 MiB (413), so one update carries at most
:data:`MAX_UPDATE_LOG_BYTES` of log lines (more waiting lines are pushed first), and a line or
activity longer than :data:`MAX_LINE_BYTES` is cut, ending in a marker that says how many bytes
were cut. Surrogates (undecodable bytes of file names) are written out as ``\\xNN``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from flamenco_protocol import TaskMetrics, TaskStatus, TaskUpdate

from .calls import encode_task_update
from .update_queue import UpdateQueue, replace_surrogates

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_UPDATE_LOG_BYTES",
    "ReportIntervals",
    "TaskReporter",
    "cut_marker",
    "format_log_line",
]

MAX_LINE_BYTES = 1 << 20
"""Longest log line or activity (UTF-8 bytes); longer ones are cut."""
MAX_UPDATE_LOG_BYTES = 4 << 20
"""Most log bytes in one update. JSON escapes grow text at most sixfold (``\\u0001``), so an
update stays below the manager's 32 MiB limit."""


def _cut(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """``text`` made encodable and cut to ``limit`` UTF-8 bytes, with a marker when cut."""
    clean = replace_surrogates(text)
    data = clean.encode()
    if len(data) <= limit:
        return clean
    kept = data[:limit].decode("utf-8", errors="ignore")
    return kept + cut_marker(len(data) - len(kept.encode()))


def cut_marker(count: int) -> str:
    """What ends a line of which ``count`` bytes were cut (nothing when none were)."""
    return f" [... {count} more bytes cut]" if count else ""


def format_log_line(text: str, moment: datetime | None = None) -> str:
    """A task-log line as the manager stores it: ``<ISO 8601 UTC>: <text>``."""
    when = moment or datetime.now(UTC)
    return f"{when.isoformat()}: {text}"


@attrs.frozen
class ReportIntervals:
    """How often updates are pushed (seconds); the real worker's defaults."""

    activity_interval: float = 15.0
    """Longest a changed activity waits before it is pushed."""
    log_interval: float = 30.0
    """Longest a log line waits before it is pushed."""
    log_max_entries: int = 1000
    """More waiting lines than this are pushed at once."""


class TaskReporter:
    """The reporting state of the task a worker runs now, and its pushes to the queue."""

    def __init__(
        self,
        queue: UpdateQueue,
        intervals: ReportIntervals,
        on_push: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._intervals = intervals
        self._on_push = on_push
        self._clock = clock
        self.task_id: str | None = None
        self.task_status: TaskStatus | None = None
        self.activity = ""
        self.command_index = 0
        self.command_count = 1
        self.command_progress = 0
        self.timing: dict[str, float] = {}
        self._lines: list[str] = []
        self._log_bytes = 0
        self._last_push = clock()
        self._last_log_push = clock()
        self._deferred: asyncio.TimerHandle | None = None
        self._deferred_at = 0.0
        self.listener: Callable[[TaskReporter], None] | None = None
        """Called after every change, for live displays."""

    @property
    def task_progress(self) -> int:
        """Progress of the whole task: finished commands plus the running one's share."""
        done = self.command_index + self.command_progress / 100
        return max(0, min(100, int(100 * done / max(1, self.command_count))))

    def start_task(self, task_id: str, command_count: int) -> None:
        """A new task begins: its ``active`` status is pushed at once."""
        self.flush_log()
        self.task_id = task_id
        self.command_count = max(1, command_count)
        self.command_index = 0
        self.command_progress = 0
        self.activity = ""
        self.timing = {}
        self.set_status(TaskStatus.ACTIVE)

    def set_status(self, status: TaskStatus, activity: str | None = None) -> None:
        """A new task status; pushed at once together with everything waiting."""
        self.task_status = status
        if activity is not None:
            self.activity = _cut(activity)
        self.push()

    def set_activity(
        self,
        activity: str,
        *,
        command_index: int | None = None,
        command_progress: int | None = None,
    ) -> None:
        """What the task does now; pushed within ``activity_interval``."""
        if command_index is not None:
            self.command_index = command_index
        if command_progress is not None:
            self.command_progress = max(0, min(100, command_progress))
        self.activity = _cut(activity)
        self._changed()
        if self._clock() - self._last_push > self._intervals.activity_interval:
            self.push()
        else:
            self._defer(self._last_push + self._intervals.activity_interval)

    def set_progress(self, command_progress: int) -> None:
        """Progress of the running command (0-100); travels with the next push."""
        self.command_progress = max(0, min(100, int(command_progress)))
        self._changed()

    def log(self, text: str) -> None:
        """Add a line to the task log; pushed within ``log_interval``."""
        line = format_log_line(_cut(text))
        size = len(line.encode()) + 1
        if self._lines and self._log_bytes + size > MAX_UPDATE_LOG_BYTES:
            self.push()  # this line would make the update too large: send what waits first
        self._lines.append(line)
        self._log_bytes += size
        self._changed()
        if (
            len(self._lines) > self._intervals.log_max_entries
            or self._clock() - self._last_log_push > self._intervals.log_interval
        ):
            self.push()
        else:
            self._defer(self._last_log_push + self._intervals.log_interval)

    def push(self) -> None:
        """Queue one update with the current snapshot and every waiting log line."""
        if self.task_id is None:
            return
        update = TaskUpdate(
            task_status=self.task_status or "",
            activity=self.activity,
            current_command_idx=self.command_index,
            task_progress_percentage=self.task_progress,
            command_progress_percentage=self.command_progress,
            metrics=TaskMetrics(timing=dict(self.timing)),
            log="\n".join(self._lines),
        )
        body: dict[str, Any] = encode_task_update(update)
        # The real worker always sends these keys, empty or not.
        body.setdefault("activity", "")
        body["metrics"] = {"timing": dict(self.timing)}
        self._enqueue(body, with_log=bool(self._lines))

    def flush_log(self) -> None:
        """Push the waiting log lines alone (``{"log": ...}``), as after an aborted task."""
        if self.task_id is not None and self._lines:
            self._enqueue({"log": "\n".join(self._lines)}, with_log=True)

    def finish_task(self) -> None:
        """The task is over: stop deferred pushes; later reports need a new task."""
        self.flush_log()
        self._cancel_deferred()
        self.task_id = None
        self.task_status = None
        self._changed()

    def _enqueue(self, body: dict[str, Any], *, with_log: bool) -> None:
        assert self.task_id is not None
        self._queue.push(self.task_id, body)
        now = self._clock()
        self._last_push = now
        if with_log:
            self._last_log_push = now
        self._lines = []
        self._log_bytes = 0
        self._cancel_deferred()
        self._on_push()

    def _defer(self, when: float) -> None:
        """Push at ``when`` at the latest (an earlier deferred push stays)."""
        if self._deferred is not None:
            if self._deferred_at <= when:
                return
            self._deferred.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - self._clock())
        self._deferred = loop.call_later(delay, self._deferred_push)
        self._deferred_at = when

    def _deferred_push(self) -> None:
        self._deferred = None
        self.push()

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    def _changed(self) -> None:
        if self.listener is not None:
            self.listener(self)
