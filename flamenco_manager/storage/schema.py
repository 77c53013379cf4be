"""The database schema, in SQLAlchemy Core; the Alembic migrations create exactly this.

Times are stored as UTC. IDs are the 24-hex strings of the protocol. A task's readiness is kept as
state so that choosing a task is an index lookup, not a scan:

* ``unfinished_parents`` counts the task's parents that are not ``completed``; it changes when a
  parent's status moves into or out of ``completed``;
* ``runnable`` is a stored generated column, true when the status is one ``/task`` may hand out
  and no parent is unfinished. The scheduler's index starts with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from flamenco_protocol.statuses import SCHEDULABLE_TASK_STATUSES


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value as the database keeps it: UTC, without a zone on SQLite."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite keeps text without a zone; write UTC wall time and read it back as UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's ``DateTime`` writes, made in one step."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                value = self.process_bind_param(value, dialect)
                assert value is not None
            # "YYYY-MM-DD HH:MM:SS.ffffff", as SQLAlchemy's SQLite DateTime stores it.
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """On SQLite, the stored text parsed in one step."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | datetime | None) -> datetime | None:
            if value is None:
                return None
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
            return self.process_result_value(parsed, dialect)

        return process


metadata: Final = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(24)
_SCHEDULABLE_SQL = ", ".join(f"'{status.value}'" for status in sorted(SCHEDULABLE_TASK_STATUSES))


PLATFORM_LENGTH: Final = 40
"""The longest platform name a worker row holds (PostgreSQL refuses longer ones)."""

workers: Final = sa.Table(
    "workers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("nickname", sa.Text, nullable=False, server_default=""),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(40), nullable=False, server_default=""),
    sa.Column("platform", sa.String(PLATFORM_LENGTH), nullable=False, server_default=""),
    sa.Column("supported_task_types", sa.JSON, nullable=False),
    sa.Column("software", sa.Text, nullable=False, server_default=""),
    sa.Column("current_task", ID, nullable=True),
    sa.Column("current_task_status", sa.String(40), nullable=False, server_default=""),
    sa.Column("current_task_updated", UTCDateTime, nullable=True),
    sa.Column("last_activity", UTCDateTime, nullable=True),
    sa.Column("status_requested", sa.String(40), nullable=False, server_default=""),
    sa.Column("lazy_status_request", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sleep_schedule", sa.JSON, nullable=True),
    sa.Column("sleep_next_check", UTCDateTime, nullable=True),
    sa.Column("registered", UTCDateTime, nullable=False),
    sa.Index("ix_workers_status_last_activity", "status", "last_activity"),
    sa.Index("ix_workers_sleep_next_check", "sleep_next_check"),
)

jobs: Final = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("job_type", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("status_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("start_paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("submitter", sa.Text, nullable=False, server_default=""),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Index("ix_jobs_status", "status"),
)

tasks: Final = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("job_id", ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("job_priority", sa.Integer, nullable=False),
    sa.Column("job_type", sa.String(100), nullable=False),
    sa.Column("task_type", sa.String(100), nullable=False),
    sa.Column("commands", sa.JSON, nullable=False),
    sa.Column("activity", sa.Text, nullable=False, server_default=""),
    # The nickname of the worker that last held the task (the Go manager's `worker` field).
    sa.Column("worker_nickname", sa.Text, nullable=False, server_default=""),
    sa.Column("worker_id", ID, nullable=True),
    sa.Column("last_worker_ping", UTCDateTime, nullable=True),
    sa.Column("last_updated", UTCDateTime, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Column("task_progress_percentage", sa.Integer, nullable=False, server_default="0"),
    sa.Column("current_command_idx", sa.Integer, nullable=False, server_default="0"),
    sa.Column("command_progress_percentage", sa.Integer, nullable=False, server_default="0"),
    sa.Column("unfinished_parents", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "runnable",
        sa.Boolean,
        sa.Computed(f"status IN ({_SCHEDULABLE_SQL}) AND unfinished_parents = 0", persisted=True),
    ),
    # The scheduler walks this index: one type, best job priority, best priority, oldest first.
    sa.Index(
        "ix_tasks_schedule",
        "runnable",
        "task_type",
        sa.desc("job_priority"),
        sa.desc("priority"),
        "id",
    ),
    sa.Index("ix_tasks_job_id_status", "job_id", "status"),
    sa.Index("ix_tasks_worker_id_status", "worker_id", "status"),
    sa.Index("ix_tasks_status_last_worker_ping", "status", "last_worker_ping"),
)

task_parents: Final = sa.Table(
    "task_parents",
    metadata,
    sa.Column("task_id", ID, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("parent_id", ID, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("ix_task_parents_parent_id", "parent_id"),
)

task_failures: Final = sa.Table(
    "task_failures",
    metadata,
    sa.Column("task_id", ID, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("identifier", sa.Text, nullable=False),
    sa.Column("failed", UTCDateTime, nullable=False),
)

worker_blocklist: Final = sa.Table(
    "worker_blocklist",
    metadata,
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("job_id", ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("task_type", sa.String(100), primary_key=True),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_worker_blocklist_job_id_task_type", "job_id", "task_type"),
)

# How many tasks of each job are in each status. Triggers on `tasks` (migration 0002) keep it
# right whatever statement changes a status; a job's status is derived from it without a scan.
job_task_counts: Final = sa.Table(
    "job_task_counts",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("status", sa.String(40), primary_key=True),
    sa.Column("task_count", sa.Integer, nullable=False),
)

# User tokens that may not be used any more, by ID (migration 0003).
revoked_tokens: Final = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("revoked", UTCDateTime, nullable=False),
    sa.Column("expires", UTCDateTime, nullable=True),
)

ALL_TABLES: Final[tuple[sa.Table, ...]] = (
    workers,
    jobs,
    tasks,
    task_parents,
    task_failures,
    worker_blocklist,
    job_task_counts,
    revoked_tokens,
)


def row_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """A result row as a plain dict."""
    return dict(row._mapping)
