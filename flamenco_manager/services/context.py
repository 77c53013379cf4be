"""What every service needs: the database, the settings, the clock, the task logs.

And the farm's story in the manager's log (:func:`log_change`): workers coming and going, tasks
handed out, finished and failed, jobs changing status, one line each, written once the change is
committed, so that the log never tells of a change that was rolled back. Logger
``flamenco_manager.farm``; lines at ``info``, failures and time-outs at ``warning``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.config import Settings
from flamenco_manager.storage.database import AFTER_COMMIT, ON_ROLLBACK, Database

from .events import Event, EventBus, stage
from .task_logs import TaskLogStore

Clock = Callable[[], datetime]

farm_log = logging.getLogger("flamenco_manager.farm")
"""Where :func:`log_change` writes."""


def log_change(
    connection: Connection, message: str, level: int = logging.INFO, **fields: object
) -> None:
    """Log ``message`` with ``fields`` once the transaction of ``connection`` commits.

    Outside a :meth:`~flamenco_manager.storage.database.Database.transaction` block the line is
    written at once; a rollback drops it. Field names must not be those of a log record's own
    attributes (``name``, ``message``, ``args``…).
    """
    if not farm_log.isEnabledFor(level):
        return
    line = functools.partial(farm_log.log, level, message, extra=fields)
    callbacks: list[Callable[[], None]] | None = connection.info.get(AFTER_COMMIT)
    if callbacks is None:
        line()
    else:
        callbacks.append(line)


def _on_rollback(connection: Connection, undo: Callable[[], None]) -> None:
    pending: list[Callable[[], None]] | None = connection.info.get(ON_ROLLBACK)
    if pending is not None:
        pending.append(undo)


def utc_now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def log_timestamp(moment: datetime) -> str:
    """A time as task log lines show it (the Go manager's ``2006-01-02T15:04:05-0700``)."""
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")


@attrs.define
class ServiceContext:
    """The shared state of the services."""

    settings: Settings
    database: Database
    logs: TaskLogStore
    clock: Clock = utc_now
    events: EventBus = attrs.field(factory=EventBus)
    """Where services announce changes to jobs, tasks and workers."""

    def append_log(self, connection: Connection, job_id: str, task_id: str, text: str) -> None:
        """Append ``text`` to a task's log (:meth:`TaskLogStore.append`), taken back if the
        transaction of ``connection`` rolls back (its block fails, or its commit)."""
        self.logs.append(job_id, task_id, text)
        _on_rollback(connection, functools.partial(self.logs.take_back, job_id, task_id, text))

    def start_log_run(self, connection: Connection, job_id: str, task_id: str, text: str) -> None:
        """Start a new run of a task's log (:meth:`TaskLogStore.start_run`), taken back if the
        transaction of ``connection`` rolls back."""
        self.logs.start_run(job_id, task_id, text)
        _on_rollback(connection, functools.partial(self.logs.take_back_run, job_id, task_id, text))

    def announce(self, connection: Connection, kind: str, id: object, **data: object) -> None:
        """Publish an event about ``kind`` ``id`` once the transaction of ``connection`` commits."""
        stage(connection, self.events, Event(kind, str(id), data))

    @property
    def zone(self) -> tzinfo:
        """The time zone of sleep schedules: the configured one, or the machine's."""
        if self.settings.timezone:
            return ZoneInfo(self.settings.timezone)
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
