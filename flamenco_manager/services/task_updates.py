"""What workers report about tasks: updates, returns, and ``/may-i-run``.

The decisions come from :mod:`flamenco_protocol.task_states` (what an update does, soft or hard
failure, blocklisting) and :mod:`flamenco_protocol.worker_states` (may the task keep running);
this module loads, asks, and stores.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Final

from sqlalchemy.engine import Connection

from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.storage.tasks import TaskRecord
from flamenco_manager.storage.workers import WorkerRecord
from flamenco_protocol.documents import MayKeepRunningResponse, TaskUpdate
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TaskStatus
from flamenco_protocol.task_states import (
    TaskEvent,
    TaskUpdateOutcome,
    UpdateVerdict,
    decide_failure,
    decide_task_update,
    next_task_status,
    should_blocklist,
)
from flamenco_protocol.worker_states import (
    WorkerEvent,
    decide_may_keep_running,
    next_worker_status,
)

from .context import ServiceContext, log_change
from .errors import Conflict, Invalid, NotFound, StorageFailure, UnknownWorker
from .jobs import refresh_job_status
from .task_logs import TaskLogError
from .workers import SEEN_RESOLUTION, Peer, mark_seen, return_task, seen_is_due

__all__ = ["TaskUpdates"]


def _reported(worker: WorkerRecord, update: TaskUpdate, now: datetime) -> dict[str, object]:
    """What an update tells about its worker: the status of its task, and since when.

    The time moves in steps (:func:`.workers.seen_is_due`) unless the status changes, as
    ``last_activity`` does: a busy worker's updates then write the worker's row once a second.
    """
    reported: dict[str, object] = {}
    if update.task_status and update.task_status != worker.current_task_status:
        reported["current_task_status"] = str(update.task_status)
        reported["current_task_updated"] = now
    elif seen_is_due(worker.current_task_updated, now):
        reported["current_task_updated"] = now
    return reported


def _stored_values(
    outcome: TaskUpdateOutcome, update: TaskUpdate, now: datetime, *, ping: bool = True
) -> dict[str, object]:
    """The task's columns an update sets, besides its status.

    ``ping``: whether ``last_worker_ping`` moves to ``now``. It is indexed (the task timeout
    looks for old pings), so progress updates move it in the steps of the worker's
    ``current_task_updated``, as :func:`_reported` does.
    """
    values: dict[str, object] = {"last_updated": now}
    if ping:
        values["last_worker_ping"] = now
    if outcome.keep_activity:
        if update.activity:
            values["activity"] = update.activity
        values["task_progress_percentage"] = update.task_progress_percentage
        values["current_command_idx"] = update.current_command_idx
        values["command_progress_percentage"] = update.command_progress_percentage
    if update.metrics is not None and update.metrics.timing:
        values["metrics"] = {"timing": update.metrics.timing}
    return values


_ANY_WORKER: Final = ObjectId("000000000000000000000000")


@functools.lru_cache(maxsize=64)
def _progress_outcome(reported_status: TaskStatus | str) -> TaskUpdateOutcome | None:
    """What the rules make of an update reporting ``reported_status`` for an ``active`` task of
    the sender's, when the task stays ``active`` (progress); ``None`` for anything else."""
    outcome = decide_task_update(
        task_status=TaskStatus.ACTIVE,
        task_worker=_ANY_WORKER,
        sender=_ANY_WORKER,
        reported_status=reported_status,
    )
    if (
        outcome.verdict is not UpdateVerdict.APPLY
        or outcome.failed_from is not None
        or outcome.new_status not in (None, TaskStatus.ACTIVE)
    ):
        return None
    return outcome


class _Seen:
    """What a worker's row said once an update had marked it seen (see :meth:`TaskUpdates.update`).

    Until ``until``, no "seen" time of the row is due again; an update from the same address and
    program, reporting no other status, would write nothing to the row. Each process keeps its
    own: with several processes (PostgreSQL), what another one wrote to the row within that
    second waits for the next step, as the steps already allow.
    """

    __slots__ = ("host", "task_status", "until", "user_agent")

    def __init__(self, until: datetime, host: str, user_agent: str, task_status: str) -> None:
        self.until = until
        self.host = host
        self.user_agent = user_agent
        self.task_status = task_status

    def covers(self, update: TaskUpdate, peer: Peer, now: datetime) -> bool:
        """Whether marking the worker seen for ``update`` would write nothing."""
        return (
            now < self.until
            and peer.host == self.host
            and peer.user_agent == self.user_agent
            and (not update.task_status or update.task_status == self.task_status)
        )


_SEEN_LIMIT: Final = 100_000
_FAILED: Final = frozenset({TaskStatus.FAILED, TaskStatus.SOFT_FAILED})


class TaskUpdates:
    """Takes task updates, returns and may-I-run questions from workers."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self._seen: dict[str, _Seen] = {}

    def update(self, worker_id: str, task_id: str, update: TaskUpdate, peer: Peer) -> None:
        """``/tasks/{task_id}/update``: store what the worker reports.

        Raises :class:`NotFound` (unknown task), :class:`Conflict` (another worker's task),
        :class:`Invalid` (a status a worker may not report), :class:`StorageFailure` (the log
        could not be written; nothing was changed).
        """
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            # Most updates come from a worker marked seen less than a second ago, for which
            # reading its row would find nothing to write: progress alone is stored. A deleted
            # worker's tasks were returned first, so that its update takes the long way.
            seen = self._seen.get(worker_id)
            if (
                seen is not None
                and seen.covers(update, peer, now)
                and self._store_progress(connection, worker_id, task_id, update, now, ping=False)
            ):
                return
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                raise UnknownWorker(f"Unable to find worker address: {worker_id}", worker_id)
            # The worker's row before the task's, as every request does: two requests of one
            # worker (an update and a may-i-run) never wait for each other in opposite orders.
            reported = _reported(worker, update, now)
            worker = mark_seen(connection, worker, peer, now, **reported)
            self._remember_seen(worker)
            ping = "current_task_updated" in reported
            if self._store_progress(connection, worker_id, task_id, update, now, ping=ping):
                return
            task = task_store.get(connection, task_id, for_update=True)
            if task is None:
                raise NotFound(f"Task {task_id} is unknown.")
            outcome = decide_task_update(
                task_status=task.status,
                task_worker=task.worker_id,
                sender=worker.id,
                reported_status=update.task_status,
            )
            if outcome.verdict is UpdateVerdict.CONFLICT:
                raise Conflict(f"Task {task_id} is assigned to another worker.")
            if outcome.verdict is UpdateVerdict.UNKNOWN_STATUS:
                raise Invalid(
                    f"task_status {str(update.task_status)!r} cannot be reported by a worker; "
                    "expected active, completed, failed or canceled"
                )

            if outcome.failed_from is not None:
                outcome = self._apply_failure_policy(connection, task, worker, outcome, now)

            values = _stored_values(outcome, update, now)
            values["worker_id"] = worker_id
            self.context.announce(
                connection,
                "task",
                task_id,
                job=str(task.job_id),
                status=str(outcome.new_status or task.status),
                activity=str(values.get("activity", task.activity)),
                worker=worker_id,
            )
            if outcome.new_status is None or outcome.new_status == task.status:
                # Progress of a running task: its status, and so its job's, stays.
                task_store.update(connection, task_id, **values)
            else:
                task_store.set_status(connection, task, outcome.new_status, **values)
                requeued = outcome.new_status == TaskStatus.CLAIMED_BY_MANAGER
                log_change(
                    connection,
                    "task re-queued" if requeued else f"task {outcome.new_status}",
                    logging.WARNING if outcome.new_status in _FAILED else logging.INFO,
                    task=task_id,
                    job=str(task.job_id),
                    worker=worker_id,
                    nickname=worker.nickname,
                    previous=str(task.status),
                )
                refresh_job_status(
                    connection,
                    str(task.job_id),
                    now,
                    failed_ratio=self.context.settings.failed_task_ratio,
                    events=self.context.events,
                )
            # Last, so that a write failing (the database lost) has no lines to take back; a
            # commit failing takes them back (ServiceContext.append_log), and the worker sends
            # the update again.
            self._append_log(connection, str(task.job_id), task_id, update.log)

    def _remember_seen(self, worker: WorkerRecord) -> None:
        """Keep what the row of a worker just marked seen says (see :class:`_Seen`)."""
        if worker.last_activity is None or worker.current_task_updated is None:
            return
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen[str(worker.id)] = _Seen(
            min(worker.last_activity, worker.current_task_updated) + SEEN_RESOLUTION,
            worker.address,
            worker.software,
            worker.current_task_status,
        )

    def _store_progress(
        self,
        connection: Connection,
        worker_id: str,
        task_id: str,
        update: TaskUpdate,
        now: datetime,
        *,
        ping: bool,
    ) -> bool:
        """Most updates: progress of a task the worker runs, stored with one conditional write.

        What the rules make of the update if the task is ``active`` and the sender's decides
        whether it is such an update; the write itself checks that the task is. ``False`` when
        it is not (nothing was written): the caller then loads the task and decides afresh.
        """
        assumed = _progress_outcome(update.task_status)
        if assumed is None:
            return False
        stored = task_store.update_running(
            connection, task_id, worker_id, **_stored_values(assumed, update, now, ping=ping)
        )
        if stored is None:
            return False
        job_id, activity = stored
        self._append_log(connection, job_id, task_id, update.log)
        self.context.announce(
            connection,
            "task",
            task_id,
            job=job_id,
            status=TaskStatus.ACTIVE.value,
            activity=activity,
            worker=worker_id,
        )
        return True

    def _append_log(self, connection: Connection, job_id: str, task_id: str, text: str) -> None:
        try:
            self.context.append_log(connection, job_id, task_id, text)
        except TaskLogError as exc:
            raise StorageFailure(f"Unable to store update: {exc}") from exc

    def _apply_failure_policy(
        self,
        connection: Connection,
        task: TaskRecord,
        worker: WorkerRecord,
        outcome: TaskUpdateOutcome,
        now: datetime,
    ) -> TaskUpdateOutcome:
        """Soft or hard failure, blocklisting the worker when it failed too many of the job's."""
        settings = self.context.settings
        job_id, task_type = str(task.job_id), task.task_type
        blocked = worker_store.blocked_workers(connection, job_id, task_type)
        capable = frozenset(worker_store.capable_of(connection, task_type)) - blocked
        failures = task_store.failures_in_job_and_type(
            connection, str(worker.id), job_id, task_type
        )
        if should_blocklist(failures + 1, settings.blacklist_threshold):
            worker_store.block(connection, str(worker.id), job_id, task_type, now)
            log_change(
                connection,
                "worker blocklisted",
                logging.WARNING,
                worker=str(worker.id),
                nickname=worker.nickname,
                job=job_id,
                task_type=task_type,
                failures=failures + 1,
            )
            if not capable - {worker.id}:
                self._cascade(connection, worker, job_id, task_type, now)
        task_store.add_failure(connection, str(task.id), str(worker.id), worker.identifier, now)
        failed_by = frozenset(
            worker_id for worker_id, _ in task_store.failed_by(connection, str(task.id))
        )
        hard = decide_failure(
            failed_by=failed_by,
            capable_workers=capable,
            softfail_limit=settings.task_fail_after_softfail_count,
        )
        return outcome.with_failure(hard)

    def _cascade(
        self,
        connection: Connection,
        worker: WorkerRecord,
        job_id: str,
        task_type: str,
        now: datetime,
    ) -> None:
        """The blocklisted worker was the last capable one: its soft failures become hard."""
        for soft in task_store.soft_failed_by(connection, str(worker.id), job_id, task_type):
            task_store.set_status(
                connection,
                soft,
                next_task_status(soft.status, TaskEvent.BLOCKLIST_CASCADE),
                activity=f"Manager hard-failed task after blocking worker {soft.worker_nickname}",
                last_updated=now,
            )

    def return_task(self, worker_id: str, task_id: str, peer: Peer) -> None:
        """``/tasks/{task_id}/return``: the worker gives the task back (after may-i-run said no).

        Returning a task that is not the worker's, not running, or unknown (its job was deleted,
        which is why may-i-run said no) does nothing: there is nothing to give back. The real
        worker reads any answer but a success as JSON, and a failure there stops its may-i-run
        poller for the rest of its life.
        """
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                raise UnknownWorker(f"Unable to find worker: {worker_id}", worker_id)
            worker = mark_seen(connection, worker, peer, now)
            return_task(self.context, connection, task_id, worker, "returned by worker")

    def may_i_run(self, worker_id: str, task_id: ObjectId, peer: Peer) -> MayKeepRunningResponse:
        """``/may-i-run/{task_id}``: always an answer, even for unknown tasks or workers."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                return MayKeepRunningResponse(
                    may_keep_running=False, reason=f"unknown worker {worker_id}"
                )
            status = next_worker_status(worker.status, WorkerEvent.ASKED_FOR_WORK)
            worker = mark_seen(connection, worker, peer, now, status=status.value)
            task = task_store.run_state(connection, str(task_id))
            answer = decide_may_keep_running(
                task_id=task_id,
                task_status=None if task is None else task.status,
                task_worker=None if task is None else task.worker_id,
                worker=worker.id,
                request=worker.request,
            )
            if answer.may_keep_running and task is not None:
                # Pings move in steps (seen_is_due), like "last seen": each write locks the
                # task and worker rows, which the worker's own updates need at the same moment.
                if task.worker_id != worker.id or seen_is_due(task.last_worker_ping, now):
                    task_store.update(
                        connection, str(task_id), last_worker_ping=now, worker_id=worker_id
                    )
                if seen_is_due(worker.current_task_updated, now):
                    worker_store.update(connection, worker_id, current_task_updated=now)
            return answer
