"""The manager's periodic chores: timeouts, the worker remover, blocklist expiry, job cleanup.

Each chore is one plain method doing one pass; :mod:`flamenco_manager.loops` runs them on a timer.

Timeouts (spec §11.1), with one deliberate difference: a task whose worker stopped pinging it is
**re-queued**, not failed. The worker, not the task, is at fault; the task fails only through
the failure policy when workers really fail it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage import workers as worker_store
from flamenco_protocol.statuses import TIMEOUT_PRONE_WORKER_STATUSES, TaskStatus
from flamenco_protocol.task_states import TaskEvent, next_task_status

from .context import ServiceContext, log_timestamp
from .jobs import JobService, refresh_job_status
from .workers import WorkerService, sleep_schedule_of

ABANDONED_BUILD: Final = timedelta(minutes=10)
"""A job still under construction with no build step for this long was left by a stopped
process (:meth:`.JobService.build_job` takes a step every few milliseconds)."""

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    """One pass of each periodic chore."""

    def __init__(self, context: ServiceContext, workers: WorkerService, jobs: JobService) -> None:
        self.context = context
        self.workers = workers
        self.jobs = jobs

    def check_timeouts(self) -> tuple[int, int]:
        """Time out silent tasks and workers; how many of each."""
        settings = self.context.settings
        now = self.context.clock()
        running = (TaskStatus.ACTIVE, TaskStatus.CANCEL_REQUESTED)
        timed_out_tasks = 0
        with self.context.database.transaction() as connection:
            for stale in task_store.unpinged_since(
                connection, now - settings.active_task_timeout_interval
            ):
                task = task_store.get(connection, str(stale.id), for_update=True)
                if task is None or task.status not in running:
                    continue  # Its worker timed out earlier in this pass.
                timed_out_tasks += 1
                worker = (
                    worker_store.get(connection, str(task.worker_id)) if task.worker_id else None
                )
                ident = worker.identifier if worker else task.worker_nickname or "-no worker-"
                since = task.last_worker_ping.isoformat() if task.last_worker_ping else "never"
                self.context.append_log(
                    connection,
                    str(task.job_id),
                    str(task.id),
                    f"{log_timestamp(now)}: Task {task.name} ({task.id}) timed out, was active but "
                    f"untouched since {since}. Was handled by worker {ident}",
                )
                if worker is not None:
                    self.workers.time_out(connection, worker, f"task {task.id} timed out")
                    continue
                new_status = next_task_status(task.status, TaskEvent.PING_TIMEOUT)
                self.context.announce(
                    connection, "task", task.id, job=str(task.job_id), status=str(new_status)
                )
                task_store.set_status(
                    connection,
                    task,
                    new_status,
                    activity=f"Task timed out on worker {ident}",
                    last_updated=now,
                )
                refresh_job_status(
                    connection,
                    str(task.job_id),
                    now,
                    failed_ratio=settings.failed_task_ratio,
                    events=self.context.events,
                )
            silent = worker_store.unseen_since(
                connection,
                [status.value for status in TIMEOUT_PRONE_WORKER_STATUSES],
                now - settings.active_worker_timeout_interval,
            )
            for worker_id in silent:
                worker = worker_store.get(connection, str(worker_id))
                if worker is not None:
                    self.workers.time_out(connection, worker, "not seen for too long")
        if timed_out_tasks or silent:
            log.info("timeouts", extra={"tasks": timed_out_tasks, "workers": len(silent)})
        return timed_out_tasks, len(silent)

    def remove_workers(self) -> int:
        """Forget workers left in a cleanup status for too long; how many."""
        settings = self.context.settings
        if settings.worker_cleanup_max_age.total_seconds() <= 0 or not (
            settings.worker_cleanup_status
        ):
            return 0
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            stale = worker_store.seen_before(
                connection, settings.worker_cleanup_status, now - settings.worker_cleanup_max_age
            )
            for worker_id in stale:
                worker = worker_store.get(connection, str(worker_id))
                if worker is not None:
                    self.workers.remove(connection, worker)
        if stale:
            log.info("removed workers", extra={"count": len(stale)})
        return len(stale)

    def apply_sleep_schedules(self) -> int:
        """Apply every sleep schedule whose check is due; how many were looked at."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            due = worker_store.sleep_checks_due(connection, now)
            for worker in due:
                schedule = sleep_schedule_of(worker)
                if schedule.schedule_active:
                    self.workers.apply_sleep_schedule(connection, worker, schedule)
        return len(due)

    async def delete_finished_jobs(self) -> int:
        """Delete the jobs finished and unchanged for ``job_cleanup_max_age``, with their tasks
        and logs (:meth:`.JobService.delete_finished`); how many."""
        max_age = self.context.settings.job_cleanup_max_age
        if max_age.total_seconds() <= 0:
            return 0
        before = self.context.clock() - max_age
        deleted = len(await self.jobs.delete_finished(before))
        if deleted:
            log.info(
                "deleted finished jobs", extra={"count": deleted, "before": before.isoformat()}
            )
        return deleted

    def remove_abandoned_builds(self, *, only_process: bool = False) -> int:
        """Delete the jobs a stopped process left under construction (no build step for
        :data:`ABANDONED_BUILD`), and the logs it left of deleted jobs
        (:meth:`.JobService.remove_orphan_logs`); how many jobs.

        ``only_process``: called as the only process that builds jobs starts (SQLite), when
        every job under construction was left by a stopped one, whatever its age.
        """
        before = None if only_process else self.context.clock() - ABANDONED_BUILD
        removed = self.jobs.remove_abandoned_builds(before)
        if removed:
            log.warning("removed jobs left half built", extra={"count": removed})
        orphans = self.jobs.remove_orphan_logs()
        if orphans:
            log.warning("removed the task logs of deleted jobs", extra={"count": orphans})
        return removed

    def expire_blocklist(self) -> int:
        """Drop blocklist entries older than their maximum age; how many."""
        before = self.context.clock() - self.context.settings.blocklist_max_age
        with self.context.database.transaction() as connection:
            return worker_store.expire_blocklist(connection, before)
