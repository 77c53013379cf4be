"""The manager: every service wired to one database, one log store and one clock.

:class:`Manager` is what the web layer and the CLI talk to. Tests build one with their own
settings and clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Final

from shaman_core.config import AllowEveryone, Authenticator, Shaman, ShamanConfig
from shaman_core.gc import GCReport
from shaman_core.jwt import (
    JWTAuthenticator,
    KeyStore,
)
from shaman_core.serving import OpenFilesWatch, open_files_limit

from .config import Settings
from .job_types import JobTypeRegistry
from .services.context import Clock, ServiceContext, utc_now
from .services.event_relay import join_processes, relay_events
from .services.farm import FarmService
from .services.housekeeping import Housekeeping
from .services.jobs import JobService
from .services.latest_image import LatestImage
from .services.scheduler import Scheduler
from .services.submission import JobSubmission
from .services.task_logs import TaskLogStore
from .services.task_updates import TaskUpdates
from .services.tokens import RevocationCheckingAuthenticator, TokenRevocations
from .services.users import ensure_key_pair, issue_token
from .services.variables import Direction, Variables, local_platform
from .services.workers import WorkerService
from .storage.database import Database, Leadership

OPEN_FILES_CHECK_SECONDS: Final = 30.0
"""How often each manager process looks at how many files it has open (see
:class:`~shaman_core.serving.OpenFilesWatch`)."""

KEPT_OPEN_LOGS: Final = 1024
"""At most how many task logs a manager on SQLite keeps open between appends: an eighth of its
open-files limit when that is lower (see :class:`~.services.task_logs.TaskLogStore`)."""

__all__ = ["Manager"]


class Manager:
    """The services of one manager process."""

    def __init__(
        self, settings: Settings, *, clock: Clock = utc_now, database: Database | None = None
    ) -> None:
        self.settings = settings
        self.log = logging.getLogger("flamenco_manager")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = database or Database.open(settings.database_url)
        kept = settings.task_log_runs_kept
        self.logs = TaskLogStore(
            settings.logs_dir,
            keep_rotated=None if kept < 0 else kept,
            # Only one process writes the logs of a manager on SQLite: no other one renames a
            # log under an open descriptor (with PostgreSQL, several may).
            keep_open=_logs_kept_open() if self.database.is_sqlite else 0,
        )
        left = self.logs.remove_deleted()  # what a stopped manager had still to remove
        if left:
            self.log.info(
                "removing the task logs a stopped manager left of deleted jobs",
                extra={"count": left},
            )
        self.context = ServiceContext(settings, self.database, self.logs, clock)
        self.variables = (
            Variables.from_config(settings.variables)
            if settings.variables
            else Variables.defaults()
        )
        self.keys: KeyStore | None = None
        self.revocations = TokenRevocations(self.database, clock)
        self.workers = WorkerService(self.context)
        self.scheduler = Scheduler(self.context, self.variables)
        self.task_updates = TaskUpdates(self.context)
        self.jobs = JobService(self.context)
        self.events = self.context.events
        self.job_types = JobTypeRegistry.load()
        self.submission = JobSubmission(self.context, self.jobs, self.job_types, self.variables)
        self.farm = FarmService(self.context)
        self.housekeeping = Housekeeping(self.context, self.workers, self.jobs)
        self.notifier = join_processes(self.context.events, self.database)
        self.user_auth = self._user_authenticator()
        self.shaman = self._shaman() if settings.shaman_enabled else None
        self.latest_image = LatestImage(
            output_path=settings.data_dir / "latest-image" / "latest-image.jpg",
            allowed_roots=self._latest_image_roots(),
        )

    def _user_authenticator(self) -> Authenticator:
        """Users prove who they are with tokens signed by this manager's key pair."""
        if self.settings.no_auth:
            return AllowEveryone()
        self.keys = ensure_key_pair(self.settings.jwt_key_dir)
        return RevocationCheckingAuthenticator(JWTAuthenticator(self.keys), self.revocations)

    def _shaman(self) -> Shaman:
        settings = self.settings
        shaman = Shaman(
            ShamanConfig(
                store_dir=settings.shaman_store_dir,
                checkout_dir=settings.shaman_checkouts_dir,
                jwt_key_dir=None if settings.no_auth else settings.jwt_key_dir,
                auth_disabled=settings.no_auth,
                gc_period=settings.shaman_garbage_collect_period.total_seconds(),
                gc_max_age=settings.shaman_garbage_collect_max_age.total_seconds(),
            )
        )
        # One authenticator for the whole manager, so users and Shaman clients use one token.
        shaman.authenticator = self.user_auth
        return shaman

    def mint_user_token(self, name: str, lifetime: timedelta) -> str:
        """A token for a user (or a pipeline) called ``name``."""
        if self.keys is None:
            raise RuntimeError("user authentication is off (no_auth): there is nothing to sign")
        return issue_token(self.keys, name, lifetime)

    def _latest_image_roots(self) -> list[Path]:
        if self.settings.latest_image_roots:
            return [Path(root) for root in self.settings.latest_image_roots]
        platform = local_platform()
        return [
            Path(value.value)
            for variable in self.variables.variables.values()
            if variable.direction is Direction.TWOWAY
            for value in variable.values
            if value.platform == platform
        ]

    async def run_loops(self) -> None:
        """Run the periodic chores until cancelled."""
        settings = self.settings
        leadership = self.database.leadership
        housekeeping = self.housekeeping
        # Run by the leader only: name, chore, first run after, then every.
        minute = timedelta(minutes=1)
        chores: list[tuple[str, Callable[[], object], timedelta, timedelta]] = [
            (
                "timeouts",
                housekeeping.check_timeouts,
                settings.timeout_check_initial_delay,
                settings.timeout_check_interval,
            ),
            ("worker remover", housekeeping.remove_workers, 5 * minute, minute / 2),
            ("sleep scheduler", housekeeping.apply_sleep_schedules, minute / 6, minute),
            ("job cleanup", housekeeping.delete_finished_jobs, 6 * minute, 10 * minute),
            ("abandoned job builds", housekeeping.remove_abandoned_builds, 2 * minute, 10 * minute),
            ("blocklist expiry", housekeeping.expire_blocklist, minute, 60 * minute),
        ]
        if self.database.is_sqlite:
            # The only process: a job under construction now was left by a stopped one, and
            # would be listed with part of its tasks until the chore's first run found it old.
            housekeeping.remove_abandoned_builds(only_process=True)
        if self.shaman is not None and settings.shaman_garbage_collect_period.total_seconds() > 0:
            chores.append(
                (
                    "shaman garbage collection",
                    self.collect_shaman_garbage,
                    10 * minute,
                    settings.shaman_garbage_collect_period,
                )
            )
        loops = [
            *(_every(leadership, *chore) for chore in chores),
            self.latest_image.run(),
            # Every process: each has its own sockets and limit.
            OpenFilesWatch(logging.getLogger("flamenco_manager")).run(OPEN_FILES_CHECK_SECONDS),
        ]
        if self.notifier is not None:  # Every process listens; no leadership needed.
            loops.append(relay_events(self.context.events, self.notifier))
        await asyncio.gather(*loops)

    async def collect_shaman_garbage(self) -> GCReport | None:
        """One Shaman garbage-collection sweep (``None`` without a Shaman), on a worker thread.

        A sweep walks the whole store and every checkout: about 6 s for 100,000 stored files,
        minutes for a studio's millions, during which the event loop would answer no worker.
        The Shaman's own requests go on meanwhile, as they do beside a standalone ``shaman
        serve``'s sweeps: a blob touched during the sweep is kept.
        """
        if self.shaman is None:
            return None
        return await asyncio.to_thread(self.shaman.collect_garbage)

    def close(self) -> None:
        """Release the database and the task logs (once the deleted jobs' logs are removed)."""
        if self.notifier is not None:
            self.notifier.close()
        self.database.close()
        self.logs.close()


def _logs_kept_open() -> int:
    limit = open_files_limit()
    return KEPT_OPEN_LOGS if limit is None else min(KEPT_OPEN_LOGS, limit // 8)


async def _every(
    leadership: Leadership,
    name: str,
    chore: Callable[[], object],
    delay: timedelta,
    period: timedelta,
) -> None:
    """Run ``chore`` after ``delay``, then every ``period``, while this process leads.

    A failure is logged, not fatal: the next period tries again.
    """
    log = logging.getLogger("flamenco_manager.loops")
    await asyncio.sleep(delay.total_seconds())
    while True:
        try:
            if leadership.is_leader():
                result = chore()
                if isinstance(result, Awaitable):
                    await result
        except Exception:
            log.exception("periodic chore failed", extra={"chore": name})
        await asyncio.sleep(period.total_seconds())
