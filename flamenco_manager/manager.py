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

from .config import Settings
from .services.context import Clock, ServiceContext, utc_now
from .services.housekeeping import Housekeeping
from .services.jobs import JobService
from .services.latest_image import LatestImage
from .services.scheduler import Scheduler
from .services.task_logs import TaskLogStore
from .services.task_updates import TaskUpdates
from .services.variables import Direction, Variables, local_platform
from .services.workers import WorkerService
from .storage.database import Database

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
        self.logs = TaskLogStore(settings.logs_dir)
        self.context = ServiceContext(settings, self.database, self.logs, clock)
        self.variables = (
            Variables.from_config(settings.variables)
            if settings.variables
            else Variables.defaults()
        )
        self.workers = WorkerService(self.context)
        self.scheduler = Scheduler(self.context, self.variables)
        self.task_updates = TaskUpdates(self.context)
        self.jobs = JobService(self.context)
        self.housekeeping = Housekeeping(self.context, self.workers)
        self.latest_image = LatestImage(
            output_path=settings.data_dir / "latest-image" / "latest-image.jpg",
            allowed_roots=self._latest_image_roots(),
        )

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
        loops = [
            _every(
                "timeouts",
                self.housekeeping.check_timeouts,
                settings.timeout_check_initial_delay,
                timedelta(minutes=1),
            ),
            _every(
                "worker remover",
                self.housekeeping.remove_workers,
                timedelta(minutes=5),
                timedelta(seconds=30),
            ),
            _every(
                "blocklist expiry",
                self.housekeeping.expire_blocklist,
                timedelta(minutes=1),
                timedelta(hours=1),
            ),
            self.latest_image.run(),
        ]
        await asyncio.gather(*loops)

    def close(self) -> None:
        """Release the database."""
        self.database.close()


async def _every(
    name: str, chore: Callable[[], object], delay: timedelta, period: timedelta
) -> None:
    """Run ``chore`` after ``delay``, then every ``period``; a failure is logged, not fatal."""
    log = logging.getLogger("flamenco_manager.loops")
    await asyncio.sleep(delay.total_seconds())
    while True:
        try:
            result = chore()
            if isinstance(result, Awaitable):
                await result
        except Exception:
            log.exception("periodic chore failed", extra={"chore": name})
        await asyncio.sleep(period.total_seconds())
