"""Submitting a job: its job type validates the settings and compiles them into tasks.

The manager plays the Flamenco 2 Server here (spec/jobs.md §1.1, §6.1): bad settings are refused
before anything is stored, listing every bad setting; settings that pass are compiled at once and
the job is stored with its tasks in one transaction. A job type that breaks on settings it
accepted stores the job as ``construction-failed`` with the reason, as the Server did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flamenco_manager.job_types import CompileContext, JobCompileError, JobTypeRegistry
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.storage.jobs import JobRecord

from .context import ServiceContext
from .errors import Invalid
from .jobs import JobService
from .variables import Variables, local_platform

__all__ = ["JobSubmission"]

MAX_NAME_LENGTH = 1000


class JobSubmission:
    """Turns what a user submits into a stored job with its tasks."""

    def __init__(
        self,
        context: ServiceContext,
        jobs: JobService,
        job_types: JobTypeRegistry,
        variables: Variables,
    ) -> None:
        self.context = context
        self.jobs = jobs
        self.job_types = job_types
        self.variables = variables

    async def submit(
        self,
        *,
        name: str,
        job_type: str,
        settings: dict[str, Any],
        priority: int = 50,
        description: str = "",
        start_paused: bool = False,
        submitter: str = "",
        platform: str = "",
    ) -> JobRecord:
        """Validate, compile and store a job; the stored job.

        Raises :class:`Invalid` for a bad name or priority, and its subclasses
        :class:`~flamenco_manager.job_types.UnknownJobType` and
        :class:`~flamenco_manager.job_types.JobSettingsError` (listing every bad setting).
        ``platform`` is the submitter's, for turning paths into variables (default: the
        manager's own).
        """
        problems = []
        if not name.strip():
            problems.append("name: must not be empty")
        elif len(name) > MAX_NAME_LENGTH:
            problems.append(f"name: longer than {MAX_NAME_LENGTH} characters")
        if not 1 <= priority <= 100:
            problems.append(f"priority: must be between 1 and 100, not {priority}")
        if problems:
            raise Invalid("; ".join(problems))
        compiler = self.job_types.get(job_type)
        validated = compiler.validate(settings)
        context = CompileContext(
            job_name=name,
            priority=priority,
            created=self.context.clock(),
            worker_task_types=self._worker_task_types(),
            to_variables=lambda path: self.variables.to_variables(
                path, platform or local_platform()
            ),
        )
        try:
            # Pure computation, 0.1 s for 10,000 frames: on a thread, so that the event loop
            # goes on answering workers meanwhile.
            tasks = await asyncio.to_thread(self.job_types.compile, job_type, validated, context)
        except JobCompileError as exc:
            return self.jobs.record_failed_job(
                name=name,
                job_type=job_type,
                settings=validated,
                reason=f"compilation failed: {exc}",
                priority=priority,
                submitter=submitter,
                description=description,
            )
        return await self.jobs.build_job(
            name=name,
            job_type=job_type,
            tasks=tasks,
            priority=priority,
            settings=validated,
            start_paused=start_paused,
            submitter=submitter,
            description=description,
        )

    def _worker_task_types(self) -> frozenset[str]:
        """Every task type some registered worker supports (spec/jobs.md §1.3)."""
        with self.context.database.transaction() as connection:
            return frozenset(
                task_type
                for worker in worker_store.list_all(connection)
                for task_type in worker.supported_task_types
            )
