"""What every service needs: the database, the settings, the clock, the task logs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.config import Settings
from flamenco_manager.storage.database import Database

from .events import Event, EventBus, stage
from .task_logs import TaskLogStore

Clock = Callable[[], datetime]


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
