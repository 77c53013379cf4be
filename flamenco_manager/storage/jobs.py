"""SQL for jobs."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import JobStatus, parse_job_status

from .hot import HotStatement
from .schema import jobs, row_dict, tasks


@attrs.frozen(kw_only=True)
class JobRecord:
    """A job as stored."""

    id: ObjectId
    name: str
    job_type: str
    description: str
    status: JobStatus | str
    status_reason: str
    priority: int
    settings: dict[str, Any]
    start_paused: bool
    submitter: str
    created: datetime
    updated: datetime


def _record(row: sa.Row[Any]) -> JobRecord:
    values = row_dict(row)
    values["id"] = ObjectId(values["id"])
    values["status"] = parse_job_status(values["status"])
    return JobRecord(**values)


def insert(connection: Connection, record: JobRecord) -> None:
    """Store a new job."""
    values = attrs.asdict(record, recurse=False)
    values["status"] = str(record.status)
    connection.execute(jobs.insert().values(**values))


# Statements every task change runs, built once.
_GET = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_key"))
_GET_FOR_UPDATE = _GET.with_for_update()
_STATUS_OF = HotStatement(
    sa.select(jobs.c.status, jobs.c.status_reason).where(jobs.c.id == sa.bindparam("job_key"))
)


def get(connection: Connection, job_id: str, *, for_update: bool = False) -> JobRecord | None:
    """The job with this ID, or ``None``."""
    query = _GET_FOR_UPDATE if for_update else _GET
    row = connection.execute(query, {"job_key": job_id}).first()
    return None if row is None else _record(row)


def status_of(connection: Connection, job_id: str) -> tuple[JobStatus | str, str] | None:
    """The job's status and its reason, or ``None`` when there is no such job."""
    row = _STATUS_OF.first(connection, {"job_key": job_id})
    return None if row is None else (parse_job_status(row[0]), row[1])


def set_status(
    connection: Connection, job_id: str, status: JobStatus, reason: str, now: datetime
) -> None:
    """Change a job's status and its reason."""
    connection.execute(
        jobs.update()
        .where(jobs.c.id == job_id)
        .values(status=status.value, status_reason=reason, updated=now)
    )


def set_priority(connection: Connection, job_id: str, priority: int, now: datetime) -> None:
    """Change a job's priority and copy it to its tasks."""
    connection.execute(
        jobs.update().where(jobs.c.id == job_id).values(priority=priority, updated=now)
    )
    connection.execute(tasks.update().where(tasks.c.job_id == job_id).values(job_priority=priority))


def delete(connection: Connection, job_id: str) -> bool:
    """Delete a job and (by cascade) its tasks; ``False`` when it did not exist."""
    connection.execute(tasks.delete().where(tasks.c.job_id == job_id))
    return connection.execute(jobs.delete().where(jobs.c.id == job_id)).rowcount > 0


def existing(connection: Connection, job_ids: Collection[str]) -> set[str]:
    """Those of ``job_ids`` that are jobs, asked 500 at a time."""
    wanted = list(job_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        query = sa.select(jobs.c.id).where(jobs.c.id.in_(wanted[start : start + 500]))
        found.update(str(job_id) for job_id in connection.execute(query).scalars())
    return found


def changed_before(
    connection: Connection, statuses: Collection[str], before: datetime | None
) -> list[str]:
    """IDs of the jobs in one of ``statuses`` whose last change came before ``before`` (any
    time, when ``None``), the longest unchanged first."""
    query = sa.select(jobs.c.id).where(jobs.c.status.in_(list(statuses)))
    if before is not None:
        query = query.where(jobs.c.updated < before)
    query = query.order_by(jobs.c.updated, jobs.c.id)
    return [str(job_id) for job_id in connection.execute(query).scalars()]


def list_jobs(
    connection: Connection,
    *,
    statuses: list[str] | None = None,
    job_types: list[str] | None = None,
    name_contains: str = "",
    limit: int = 100,
    before: str | None = None,
) -> list[JobRecord]:
    """Jobs, newest first, optionally filtered; ``before`` pages by ID (the ID index).

    ``name_contains`` matches case-insensitively, ``%`` and ``_`` literally.
    """
    query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if statuses:
        query = query.where(jobs.c.status.in_(statuses))
    if job_types:
        query = query.where(jobs.c.job_type.in_(job_types))
    if name_contains:
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(jobs.c.name.ilike(f"%{escaped}%", escape="\\"))
    if before:
        query = query.where(jobs.c.id < before)
    return [_record(row) for row in connection.execute(query)]


def status_counts(connection: Connection) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = connection.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))
    return {str(status): int(count) for status, count in rows.all()}
