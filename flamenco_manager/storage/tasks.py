"""SQL for tasks: insertion with dependencies, selection, claiming, status changes, failures.

Status changes go through :func:`set_status` (one task) or :func:`apply_event_to_job` (every task
of a job), which keep the children's ``unfinished_parents`` counts right whenever a status moves
into or out of ``completed``; the ``runnable`` column follows by itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import SCHEDULABLE_TASK_STATUSES, TaskStatus, parse_task_status
from flamenco_protocol.task_states import TASK_TRANSITIONS, TaskEvent

from .hot import HotStatement
from .schema import (
    job_task_counts,
    row_dict,
    task_failures,
    task_parents,
    tasks,
    worker_blocklist,
)

COMPLETED = TaskStatus.COMPLETED.value


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A task as stored."""

    id: ObjectId
    job_id: ObjectId
    name: str
    status: TaskStatus | str
    priority: int
    job_priority: int
    job_type: str
    task_type: str
    commands: list[dict[str, Any]]
    activity: str
    worker_nickname: str
    worker_id: ObjectId | None
    last_worker_ping: datetime | None
    last_updated: datetime
    metrics: dict[str, Any] | None
    task_progress_percentage: int
    current_command_idx: int
    command_progress_percentage: int
    unfinished_parents: int
    runnable: bool


@attrs.frozen
class RunState:
    """Whether a task runs, and for whom: what ``/may-i-run`` reads, without the rest."""

    status: TaskStatus | str
    worker_id: ObjectId | None
    last_worker_ping: datetime | None


@attrs.frozen(kw_only=True)
class NewTask:
    """A task to insert; ``parents`` name tasks inserted earlier or in the same batch."""

    id: ObjectId
    name: str
    task_type: str
    commands: list[dict[str, Any]]
    priority: int = 50
    parents: tuple[ObjectId, ...] = ()


def _record(values: dict[str, Any]) -> TaskRecord:
    values["id"] = ObjectId(values["id"])
    values["job_id"] = ObjectId(values["job_id"])
    values["status"] = parse_task_status(values["status"])
    values["worker_id"] = ObjectId(values["worker_id"]) if values["worker_id"] else None
    values["runnable"] = bool(values["runnable"])
    return TaskRecord(**values)


def insert_many(
    connection: Connection,
    *,
    job_id: str,
    job_type: str,
    job_priority: int,
    status: TaskStatus,
    new_tasks: Sequence[NewTask],
    now: datetime,
) -> None:
    """Insert a job's tasks with their dependencies, all in ``status``."""
    if not new_tasks:
        return
    known_status = dict(
        connection.execute(
            sa.select(tasks.c.id, tasks.c.status).where(
                tasks.c.id.in_([p for task in new_tasks for p in task.parents])
            )
        ).all()
    )
    statuses = {**known_status, **{str(task.id): status.value for task in new_tasks}}
    _insert_rows(
        connection,
        tasks,
        [
            {
                "id": str(task.id),
                "job_id": job_id,
                "name": task.name,
                "status": status.value,
                "priority": task.priority,
                "job_priority": job_priority,
                "job_type": job_type,
                "task_type": task.task_type,
                "commands": task.commands,
                "last_updated": now,
                "unfinished_parents": sum(
                    1 for parent in task.parents if statuses.get(str(parent)) != COMPLETED
                ),
            }
            for task in new_tasks
        ],
    )
    links = [
        {"task_id": str(task.id), "parent_id": str(parent), "position": position}
        for task in new_tasks
        for position, parent in enumerate(task.parents)
    ]
    if links:
        _insert_rows(connection, task_parents, links)


_ROWS_PER_INSERT: Final = 1000
"""Rows one PostgreSQL ``INSERT`` of :func:`_insert_rows` carries (a dozen parameters each,
well under the protocol's 65,535)."""


def _insert_rows(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``: in statements of :data:`_ROWS_PER_INSERT` rows on PostgreSQL, where the
    driver sends one statement per row otherwise and each fires the task counts' statement
    trigger (60,000 tasks: 60,000 changes of one count, which PostgreSQL makes in time growing
    with their square); one prepared statement run per row on SQLite, its fastest way."""
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), rows)
        return
    # With RETURNING, SQLAlchemy sends many rows per statement ("insertmanyvalues").
    first = next(iter(table.primary_key.columns))
    connection.execute(table.insert().returning(first), rows).close()


# What every worker request runs: compiled once, run on the driver's cursor (see .hot).
_GET_QUERY = sa.select(tasks).where(tasks.c.id == sa.bindparam("task_key"))
_GET = HotStatement(_GET_QUERY)
_GET_FOR_UPDATE = HotStatement(_GET_QUERY.with_for_update())
_RUN_STATE = HotStatement(
    sa.select(tasks.c.status, tasks.c.worker_id, tasks.c.last_worker_ping).where(
        tasks.c.id == sa.bindparam("task_key")
    )
)
_UPDATE = HotStatement(tasks.update().where(tasks.c.id == sa.bindparam("task_key")))
_UPDATE_RUNNING = HotStatement(
    tasks.update()
    .where(
        tasks.c.id == sa.bindparam("task_key"),
        tasks.c.worker_id == sa.bindparam("worker_key"),
        tasks.c.status == TaskStatus.ACTIVE.value,
    )
    .returning(tasks.c.job_id, tasks.c.activity)
)
# The same write when the task's job is known: no RETURNING, which costs SQLite a third of the
# statement. The job is a condition, so a wrong guess writes nothing.
_UPDATE_RUNNING_OF_JOB = HotStatement(
    tasks.update().where(
        tasks.c.id == sa.bindparam("task_key"),
        tasks.c.job_id == sa.bindparam("job_key"),
        tasks.c.worker_id == sa.bindparam("worker_key"),
        tasks.c.status == TaskStatus.ACTIVE.value,
    )
)
_JOB_OF_TASK: dict[str, str] = {}
"""The job of tasks recently updated while running (a task never changes job): a guess that
:func:`update_running` checks in its write."""
_JOB_OF_TASK_LIMIT: Final = 100_000
_HELD_BY = HotStatement(
    sa.select(tasks.c.id, tasks.c.status)
    .where(
        tasks.c.worker_id == sa.bindparam("worker_key"),
        sa.or_(
            tasks.c.status == TaskStatus.ACTIVE.value,
            tasks.c.status == TaskStatus.CANCEL_REQUESTED.value,
        ),
    )
    .order_by(tasks.c.id)
)
_NEXT_OF_TYPE_QUERY = (
    sa.select(tasks)
    .where(
        tasks.c.runnable == sa.true(),
        tasks.c.task_type == sa.bindparam("task_type"),
        ~sa.exists().where(
            worker_blocklist.c.worker_id == sa.bindparam("worker_key"),
            worker_blocklist.c.job_id == tasks.c.job_id,
            worker_blocklist.c.task_type == tasks.c.task_type,
        ),
        ~sa.exists().where(
            task_failures.c.task_id == tasks.c.id,
            task_failures.c.worker_id == sa.bindparam("worker_key"),
        ),
    )
    .order_by(tasks.c.job_priority.desc(), tasks.c.priority.desc(), tasks.c.id)
    .limit(1)
)
_NEXT_OF_TYPE = HotStatement(_NEXT_OF_TYPE_QUERY)
_NEXT_OF_TYPE_SKIP_LOCKED = HotStatement(_NEXT_OF_TYPE_QUERY.with_for_update(skip_locked=True))
_SHIFT_CHILDREN = HotStatement(
    tasks.update()
    .where(
        tasks.c.id.in_(
            sa.select(task_parents.c.task_id).where(
                task_parents.c.parent_id == sa.bindparam("parent_key")
            )
        )
    )
    .values(unfinished_parents=tasks.c.unfinished_parents + sa.bindparam("step"))
)
_STATUS_COUNTS = HotStatement(
    sa.select(job_task_counts.c.status, job_task_counts.c.task_count).where(
        job_task_counts.c.job_id == sa.bindparam("job_key"), job_task_counts.c.task_count > 0
    )
)
_PARENTS_OF = HotStatement(
    sa.select(task_parents.c.parent_id)
    .where(task_parents.c.task_id == sa.bindparam("task_key"))
    .order_by(task_parents.c.position)
)
_FAILED_BY = HotStatement(
    sa.select(task_failures.c.worker_id, task_failures.c.identifier)
    .where(task_failures.c.task_id == sa.bindparam("task_key"))
    .order_by(task_failures.c.failed)
)
_CLAIM = HotStatement(
    tasks.update()
    .where(tasks.c.id == sa.bindparam("task_key"), tasks.c.runnable == sa.true())
    .values(
        status=TaskStatus.ACTIVE.value,
        worker_id=sa.bindparam("worker_key"),
        worker_nickname=sa.bindparam("nickname"),
        last_worker_ping=sa.bindparam("now"),
        last_updated=sa.bindparam("now"),
        activity=sa.bindparam("activity"),
    )
)


def get(connection: Connection, task_id: str, *, for_update: bool = False) -> TaskRecord | None:
    """The task with this ID, or ``None``."""
    query = _GET_FOR_UPDATE if for_update else _GET
    row = query.first_mapping(connection, {"task_key": task_id})
    return None if row is None else _record(row)


def run_state(connection: Connection, task_id: str) -> RunState | None:
    """The status, worker and last ping of a task, or ``None`` when there is no such task."""
    row = _RUN_STATE.first(connection, {"task_key": task_id})
    if row is None:
        return None
    status, worker_id, last_ping = row
    return RunState(
        parse_task_status(status), ObjectId(worker_id) if worker_id else None, last_ping
    )


def parents_of(connection: Connection, task_id: str) -> tuple[ObjectId, ...]:
    """The parents of a task, in the order they were given."""
    rows = _PARENTS_OF.rows(connection, {"task_key": task_id})
    return tuple(ObjectId(parent_id) for (parent_id,) in rows)


def failed_by(connection: Connection, task_id: str) -> list[tuple[ObjectId, str]]:
    """The workers that failed a task, as (ID, identifier), oldest first."""
    rows = _FAILED_BY.rows(connection, {"task_key": task_id})
    return [(ObjectId(worker_id), identifier) for worker_id, identifier in rows]


def add_failure(
    connection: Connection, task_id: str, worker_id: str, identifier: str, now: datetime
) -> None:
    """Record that a worker failed a task (once per worker)."""
    exists = connection.execute(
        sa.select(sa.literal(1)).where(
            task_failures.c.task_id == task_id, task_failures.c.worker_id == worker_id
        )
    ).first()
    if exists is None:
        connection.execute(
            task_failures.insert().values(
                task_id=task_id, worker_id=worker_id, identifier=identifier, failed=now
            )
        )


def clear_failures(connection: Connection, task_ids: Iterable[str]) -> None:
    """Forget who failed these tasks (they are queued afresh)."""
    connection.execute(task_failures.delete().where(task_failures.c.task_id.in_(list(task_ids))))


def running_tasks_of(connection: Connection, worker_id: str) -> list[tuple[ObjectId, str]]:
    """The ``active`` and ``cancel-requested`` tasks a worker holds, with their statuses, oldest
    first."""
    rows = _HELD_BY.rows(connection, {"worker_key": worker_id})
    return [(ObjectId(task_id), str(status)) for task_id, status in rows]


def held_by(connection: Connection, worker_id: str, statuses: Iterable[str]) -> list[ObjectId]:
    """Tasks held by a worker in one of ``statuses``."""
    rows = connection.execute(
        sa.select(tasks.c.id).where(
            tasks.c.worker_id == worker_id, tasks.c.status.in_(list(statuses))
        )
    )
    return [ObjectId(row.id) for row in rows]


def select_next(
    connection: Connection, worker_id: str, task_types: Sequence[str], *, skip_locked: bool
) -> TaskRecord | None:
    """The best task for this worker to run next, or ``None``.

    One indexed probe per task type (runnable, type, job priority, priority, ID), skipping tasks
    of jobs whose type the worker is blocked from and tasks the worker failed before; then the
    best of those. Its cost does not grow with the number of queued tasks. The probes read whole
    rows; only the best one is converted into a record.
    """
    query = _NEXT_OF_TYPE_SKIP_LOCKED if skip_locked else _NEXT_OF_TYPE
    best: tuple[Any, tuple[Any, ...]] | None = None
    for task_type in dict.fromkeys(task_types):
        plan, row = query.first_raw(connection, {"task_type": task_type, "worker_key": worker_id})
        if row is not None and (best is None or _order(row) < _order(best[1])):
            best = plan, row
    return None if best is None else _record(best[0].mapping(best[1]))


_PROBED: Final = [column.key for column in _NEXT_OF_TYPE_QUERY.selected_columns]
_JOB_PRIORITY_AT, _PRIORITY_AT, _ID_AT = (
    _PROBED.index(name) for name in ("job_priority", "priority", "id")
)


def _order(row: Sequence[Any]) -> tuple[int, int, str]:
    """Where a probed row stands: higher job priority, then higher priority, then older first."""
    return -row[_JOB_PRIORITY_AT], -row[_PRIORITY_AT], row[_ID_AT]


def claim(
    connection: Connection,
    task_id: str,
    worker_id: str,
    nickname: str,
    now: datetime,
    activity: str,
) -> bool:
    """Make a runnable task ``active`` for a worker, with this activity; ``False`` if someone
    else was quicker."""
    values = {
        "task_key": task_id,
        "worker_key": worker_id,
        "nickname": nickname,
        "now": now,
        "activity": activity,
    }
    return _CLAIM.rowcount(connection, values) == 1


def update(connection: Connection, task_id: str, **values: Any) -> None:
    """Set columns of a task (not its status: see :func:`set_status`)."""
    if "status" in values:
        raise ValueError("change a task's status with set_status")
    _UPDATE.rowcount(connection, {"task_key": task_id, **values})


def update_running(
    connection: Connection, task_id: str, worker_id: str, **values: Any
) -> tuple[str, str] | None:
    """Set columns of a task that is ``active`` and held by ``worker_id``; its job ID and activity
    afterwards, or ``None`` (nothing written) when the task is not so."""
    if "status" in values:
        raise ValueError("change a task's status with set_status")
    parameters = {"task_key": task_id, "worker_key": worker_id, **values}
    job_id = _JOB_OF_TASK.get(task_id)
    # Job and activity known, the write need not read them back. When it writes nothing, the
    # task does not run, or (a task ID reused) is not of that job: the full statement tells.
    if (
        job_id is not None
        and "activity" in values
        and _UPDATE_RUNNING_OF_JOB.rowcount(connection, {**parameters, "job_key": job_id}) == 1
    ):
        return job_id, values["activity"]
    rows = _UPDATE_RUNNING.rows(connection, parameters)
    if not rows:
        _JOB_OF_TASK.pop(task_id, None)
        return None
    job_id, activity = rows[0]
    if len(_JOB_OF_TASK) >= _JOB_OF_TASK_LIMIT:
        _JOB_OF_TASK.clear()
    _JOB_OF_TASK[task_id] = job_id
    return job_id, activity


def set_status(
    connection: Connection, task: TaskRecord, new_status: TaskStatus, **values: Any
) -> None:
    """Change one task's status (and other columns), keeping its children's readiness right."""
    _UPDATE.rowcount(connection, {"task_key": str(task.id), "status": new_status.value, **values})
    was_completed = task.status == COMPLETED
    if was_completed != (new_status is TaskStatus.COMPLETED):
        step = 1 if was_completed else -1
        _SHIFT_CHILDREN.rowcount(connection, {"parent_key": str(task.id), "step": step})


def apply_event_to_job(
    connection: Connection,
    job_id: str,
    event: TaskEvent,
    now: datetime,
    *,
    include_completed: bool = True,
    activity: str = "",
) -> int:
    """Send ``event`` to every task of a job; tasks with no such transition keep their status.

    One statement, so that each task moves once even where one status moves into another that
    moves on too (a requeue sends ``active`` tasks to ``queued`` and ``cancel-requested`` ones to
    ``active``). Returns how many tasks moved.
    """
    moves = {
        old.value: new.value
        for old, row in TASK_TRANSITIONS.items()
        if (new := row.get(event)) is not None
        and new is not old
        and (include_completed or old is not TaskStatus.COMPLETED)
    }
    if not moves:
        return 0
    values: dict[str, Any] = {"last_updated": now}
    if activity:
        values["activity"] = activity
    moved: int = connection.execute(
        tasks.update()
        .where(tasks.c.job_id == job_id, tasks.c.status.in_(list(moves)))
        .values(status=sa.case(moves, value=tasks.c.status), **values)
    ).rowcount
    if moved and COMPLETED in (*moves, *moves.values()):
        recount_unfinished_parents(connection, job_id)
    return moved


def recount_unfinished_parents(connection: Connection, job_id: str) -> None:
    """Recompute every task's count of unfinished parents in a job."""
    parent = tasks.alias("parent")
    unfinished = (
        sa.select(sa.func.count())
        .select_from(task_parents.join(parent, parent.c.id == task_parents.c.parent_id))
        .where(task_parents.c.task_id == tasks.c.id, parent.c.status != COMPLETED)
        .scalar_subquery()
    )
    connection.execute(
        tasks.update().where(tasks.c.job_id == job_id).values(unfinished_parents=unfinished)
    )


def has_runnable_task(connection: Connection, job_id: str) -> bool:
    """Whether a task of the job waits with every parent completed, so that it may start."""
    found = connection.execute(
        sa.select(tasks.c.id)
        .where(
            tasks.c.job_id == job_id,
            tasks.c.status.in_(sorted(SCHEDULABLE_TASK_STATUSES)),
            tasks.c.unfinished_parents == 0,
        )
        .limit(1)
    ).first()
    return found is not None


def status_counts(connection: Connection, job_id: str) -> dict[str, int]:
    """How many of a job's tasks are in each status (kept by triggers: no scan)."""
    rows = _STATUS_COUNTS.rows(connection, {"job_key": job_id})
    return {str(status): int(count) for status, count in rows}


def failures_in_job_and_type(
    connection: Connection, worker_id: str, job_id: str, task_type: str
) -> int:
    """Tasks of a job's type last held by a worker and now failed or soft-failed."""
    count: int = connection.execute(
        sa.select(sa.func.count()).where(
            tasks.c.worker_id == worker_id,
            tasks.c.job_id == job_id,
            tasks.c.task_type == task_type,
            tasks.c.status.in_([TaskStatus.FAILED.value, TaskStatus.SOFT_FAILED.value]),
        )
    ).scalar_one()
    return count


def soft_failed_by(
    connection: Connection, worker_id: str, job_id: str, task_type: str
) -> list[TaskRecord]:
    """Soft-failed tasks of a job's type last held by a worker."""
    rows = connection.execute(
        sa.select(tasks).where(
            tasks.c.worker_id == worker_id,
            tasks.c.job_id == job_id,
            tasks.c.task_type == task_type,
            tasks.c.status == TaskStatus.SOFT_FAILED.value,
        )
    )
    return [_record(row_dict(row)) for row in rows]


def unpinged_since(connection: Connection, since: datetime) -> list[TaskRecord]:
    """Running tasks (active or canceling) whose worker has not pinged them since ``since``."""
    rows = connection.execute(
        sa.select(tasks).where(
            tasks.c.status.in_([TaskStatus.ACTIVE.value, TaskStatus.CANCEL_REQUESTED.value]),
            sa.or_(tasks.c.last_worker_ping.is_(None), tasks.c.last_worker_ping <= since),
        )
    )
    return [_record(row_dict(row)) for row in rows]


def list_of_job(
    connection: Connection,
    job_id: str,
    task_ids: Collection[str] | None = None,
    *,
    statuses: Collection[str] = (),
    offset: int = 0,
    limit: int | None = None,
) -> list[TaskRecord]:
    """Every task of a job (only those of ``task_ids``, when given; only those in
    ``statuses``, when any), in creation order; ``limit`` of them after the first ``offset``."""
    query = sa.select(tasks).where(tasks.c.job_id == job_id)
    if task_ids is not None:
        query = query.where(tasks.c.id.in_(list(task_ids)))
    if statuses:
        query = query.where(tasks.c.status.in_(list(statuses)))
    query = query.order_by(tasks.c.id).offset(offset or None).limit(limit)
    return [_record(row_dict(row)) for row in connection.execute(query)]


def names_and_jobs(connection: Connection, task_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """The name and job ID of each of ``task_ids`` that is a task, by task ID."""
    rows = connection.execute(
        sa.select(tasks.c.id, tasks.c.name, tasks.c.job_id).where(tasks.c.id.in_(list(task_ids)))
    )
    return {str(task_id): (str(name), str(job_id)) for task_id, name, job_id in rows.all()}


def ids_of_job_in(connection: Connection, job_id: str, statuses: Iterable[str]) -> list[str]:
    """IDs of a job's tasks in one of ``statuses``."""
    rows = connection.execute(
        sa.select(tasks.c.id).where(tasks.c.job_id == job_id, tasks.c.status.in_(list(statuses)))
    )
    return [row.id for row in rows]


def count(connection: Connection, where: Mapping[str, Any] | None = None) -> int:
    """How many tasks there are (matching column values, if given)."""
    query = sa.select(sa.func.count()).select_from(tasks)
    for column, value in (where or {}).items():
        query = query.where(tasks.c[column] == value)
    total: int = connection.execute(query).scalar_one()
    return total


def status_counts_of_jobs(
    connection: Connection, job_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """How many tasks of each of these jobs are in each status, by job ID."""
    counts: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
    if not job_ids:
        return counts
    rows = connection.execute(
        sa.select(tasks.c.job_id, tasks.c.status, sa.func.count())
        .where(tasks.c.job_id.in_(list(job_ids)))
        .group_by(tasks.c.job_id, tasks.c.status)
    )
    for job_id, status, number in rows.all():
        counts[str(job_id)][str(status)] = int(number)
    return counts


def parents_in_job(
    connection: Connection, job_id: str, task_ids: Collection[str] | None = None
) -> dict[str, tuple[ObjectId, ...]]:
    """The parents of every task of a job that has any (of ``task_ids``, when given), in the
    order they were given."""
    query = (
        sa.select(task_parents.c.task_id, task_parents.c.parent_id)
        .join(tasks, tasks.c.id == task_parents.c.task_id)
        .where(tasks.c.job_id == job_id)
    )
    if task_ids is not None:
        query = query.where(task_parents.c.task_id.in_(list(task_ids)))
    rows = connection.execute(query.order_by(task_parents.c.task_id, task_parents.c.position))
    parents: dict[str, list[ObjectId]] = {}
    for task_id, parent_id in rows.all():
        parents.setdefault(str(task_id), []).append(ObjectId(parent_id))
    return {task_id: tuple(ids) for task_id, ids in parents.items()}


def failures_in_job(
    connection: Connection, job_id: str, task_ids: Collection[str] | None = None
) -> dict[str, list[tuple[ObjectId, str]]]:
    """Who failed each task of a job (of ``task_ids``, when given), as (worker ID,
    identifier), oldest first."""
    query = (
        sa.select(task_failures.c.task_id, task_failures.c.worker_id, task_failures.c.identifier)
        .join(tasks, tasks.c.id == task_failures.c.task_id)
        .where(tasks.c.job_id == job_id)
    )
    if task_ids is not None:
        query = query.where(task_failures.c.task_id.in_(list(task_ids)))
    rows = connection.execute(query.order_by(task_failures.c.failed))
    failures: dict[str, list[tuple[ObjectId, str]]] = {}
    for task_id, worker_id, identifier in rows.all():
        failures.setdefault(str(task_id), []).append((ObjectId(worker_id), identifier))
    return failures


def status_counts_all(connection: Connection, statuses: Iterable[str]) -> dict[str, int]:
    """How many tasks of the whole farm are in each of ``statuses`` (none: left out).

    Summed from the per-job counts the triggers keep: a row per job and status, where counting
    the tasks themselves walks every queued one (12 ms for 150,000, on each dashboard's
    refresh of the farm's state).
    """
    total = sa.func.sum(job_task_counts.c.task_count)
    rows = connection.execute(
        sa.select(job_task_counts.c.status, total)
        .where(job_task_counts.c.status.in_(list(statuses)))
        .group_by(job_task_counts.c.status)
        .having(total > 0)
    )
    return {str(status): int(number) for status, number in rows.all()}
