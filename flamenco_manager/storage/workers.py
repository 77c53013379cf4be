"""SQL for workers: records, status requests, "seen" bookkeeping, the blocklist."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import WorkerStatus, parse_worker_status
from flamenco_protocol.worker_states import StatusRequest

from .hot import BuiltRows, HotStatement
from .schema import row_dict, worker_blocklist, workers


@attrs.frozen(kw_only=True)
class WorkerRecord:
    """A worker as stored."""

    id: ObjectId
    secret_hash: str
    nickname: str
    address: str
    status: WorkerStatus | str
    platform: str
    supported_task_types: tuple[str, ...]
    software: str
    current_task: ObjectId | None
    current_task_status: str
    current_task_updated: datetime | None
    last_activity: datetime | None
    status_requested: str
    lazy_status_request: bool
    sleep_schedule: dict[str, Any] | None
    sleep_next_check: datetime | None
    registered: datetime

    @property
    def identifier(self) -> str:
        """``"<address> (<nickname>)"``, or the address alone, as in task logs and failures."""
        return f"{self.address} ({self.nickname})" if self.nickname else self.address

    @property
    def request(self) -> StatusRequest | None:
        """The pending status request, if any."""
        if not self.status_requested:
            return None
        status = parse_worker_status(self.status_requested)
        if not isinstance(status, WorkerStatus):
            return None
        return StatusRequest(status, self.lazy_status_request)


def _record(values: dict[str, Any]) -> WorkerRecord:
    values["id"] = ObjectId(values["id"])
    values["status"] = parse_worker_status(values["status"])
    values["supported_task_types"] = tuple(values["supported_task_types"] or ())
    if values["current_task"]:
        values["current_task"] = ObjectId(values["current_task"])
    return WorkerRecord(**values)


def insert(connection: Connection, record: WorkerRecord) -> None:
    """Store a new worker."""
    values = attrs.asdict(record, recurse=False)
    values["supported_task_types"] = list(record.supported_task_types)
    connection.execute(workers.insert().values(**values))


# What every worker request runs: compiled once, run on the driver's cursor (see .hot). A worker
# row changes about once a second however often its worker calls: the record built from it is
# reused until then.
_GET = BuiltRows(
    HotStatement(sa.select(workers).where(workers.c.id == sa.bindparam("worker_key"))), _record
)
_UPDATE = HotStatement(workers.update().where(workers.c.id == sa.bindparam("worker_key")))


def get(connection: Connection, worker_id: str) -> WorkerRecord | None:
    """The worker with this ID, or ``None``."""
    return _GET.first(connection, {"worker_key": worker_id}, worker_id)


def secret_hash(connection: Connection, worker_id: str) -> str | None:
    """The stored secret hash of a worker, or ``None`` if there is no such worker."""
    value: str | None = connection.execute(
        sa.select(workers.c.secret_hash).where(workers.c.id == worker_id)
    ).scalar_one_or_none()
    return value


def update(connection: Connection, worker_id: str, **values: Any) -> bool:
    """Set columns of a worker; ``False`` when the worker does not exist."""
    if "supported_task_types" in values:
        values["supported_task_types"] = list(values["supported_task_types"])
    if not values:
        return get(connection, worker_id) is not None
    return _UPDATE.rowcount(connection, {"worker_key": worker_id, **values}) > 0


def delete(connection: Connection, worker_id: str) -> bool:
    """Forget a worker; ``False`` when it did not exist."""
    connection.execute(worker_blocklist.delete().where(worker_blocklist.c.worker_id == worker_id))
    return connection.execute(workers.delete().where(workers.c.id == worker_id)).rowcount > 0


def list_all(connection: Connection, ids: Collection[str] | None = None) -> list[WorkerRecord]:
    """Every worker (only those of ``ids``, when given), by nickname then status."""
    query = sa.select(workers).order_by(workers.c.nickname, workers.c.status)
    if ids is not None:
        query = query.where(workers.c.id.in_(list(ids)))
    return [_record(row_dict(row)) for row in connection.execute(query)]


def unseen_since(
    connection: Connection, statuses: Iterable[str], since: datetime
) -> list[ObjectId]:
    """Workers in one of ``statuses`` not seen since ``since`` (or never)."""
    rows = connection.execute(
        sa.select(workers.c.id).where(
            workers.c.status.in_(list(statuses)),
            sa.or_(workers.c.last_activity.is_(None), workers.c.last_activity <= since),
        )
    )
    return [ObjectId(row.id) for row in rows]


def seen_before(
    connection: Connection, statuses: Iterable[str], before: datetime
) -> list[ObjectId]:
    """Workers in one of ``statuses`` last seen before ``before`` (never-seen ones excluded)."""
    rows = connection.execute(
        sa.select(workers.c.id).where(
            workers.c.status.in_(list(statuses)), workers.c.last_activity < before
        )
    )
    return [ObjectId(row.id) for row in rows]


def capable_of(connection: Connection, task_type: str) -> list[ObjectId]:
    """Every worker that supports ``task_type``, whatever its status."""
    rows = connection.execute(sa.select(workers.c.id, workers.c.supported_task_types))
    return [ObjectId(row.id) for row in rows if task_type in (row.supported_task_types or ())]


def sleep_checks_due(connection: Connection, now: datetime) -> list[WorkerRecord]:
    """Workers whose sleep schedule is due for a look."""
    rows = connection.execute(
        sa.select(workers).where(
            workers.c.sleep_next_check.is_not(None), workers.c.sleep_next_check <= now
        )
    )
    return [_record(row_dict(row)) for row in rows]


# --- blocklist ---------------------------------------------------------------------------------


def block(
    connection: Connection, worker_id: str, job_id: str, task_type: str, now: datetime
) -> None:
    """Block a worker from a job's task type; blocking twice is the same as once."""
    exists = connection.execute(
        sa.select(sa.literal(1)).where(
            worker_blocklist.c.worker_id == worker_id,
            worker_blocklist.c.job_id == job_id,
            worker_blocklist.c.task_type == task_type,
        )
    ).first()
    if exists is None:
        connection.execute(
            worker_blocklist.insert().values(
                worker_id=worker_id, job_id=job_id, task_type=task_type, created=now
            )
        )


def blocked_workers(connection: Connection, job_id: str, task_type: str) -> set[ObjectId]:
    """The workers blocked from a job's task type."""
    rows = connection.execute(
        sa.select(worker_blocklist.c.worker_id).where(
            worker_blocklist.c.job_id == job_id, worker_blocklist.c.task_type == task_type
        )
    )
    return {ObjectId(row.worker_id) for row in rows}


def blocklist_of(connection: Connection, worker_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The blocklist entries of these workers."""
    rows = connection.execute(
        sa.select(worker_blocklist)
        .where(worker_blocklist.c.worker_id.in_(list(worker_ids)))
        .order_by(worker_blocklist.c.created)
    )
    return [row_dict(row) for row in rows]


def unblock(connection: Connection, worker_id: str, job_id: str, task_type: str) -> bool:
    """Remove one blocklist entry; ``False`` when there was none."""
    result = connection.execute(
        worker_blocklist.delete().where(
            worker_blocklist.c.worker_id == worker_id,
            worker_blocklist.c.job_id == job_id,
            worker_blocklist.c.task_type == task_type,
        )
    )
    return result.rowcount > 0


def expire_blocklist(connection: Connection, before: datetime) -> int:
    """Remove entries made before ``before``; how many went."""
    result = connection.execute(
        worker_blocklist.delete().where(worker_blocklist.c.created < before)
    )
    return result.rowcount


def clear_blocklist(connection: Connection, worker_id: str) -> int:
    """Remove every blocklist entry of a worker; how many went."""
    result = connection.execute(
        worker_blocklist.delete().where(worker_blocklist.c.worker_id == worker_id)
    )
    return result.rowcount


def status_counts(connection: Connection) -> dict[str, int]:
    """How many workers are in each status."""
    rows = connection.execute(
        sa.select(workers.c.status, sa.func.count()).group_by(workers.c.status)
    )
    return {str(status): int(count) for status, count in rows.all()}
