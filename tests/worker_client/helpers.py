"""Building workers for tests: fast timings, the fake manager in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from flamenco_worker_client import RetryPolicy
from flamenco_worker_client.commands import ProcessLimits
from flamenco_worker_client.reporter import ReportIntervals
from flamenco_worker_client.worker import Worker, WorkerTimings

from .fake_manager import FakeManager

FAST_RETRY = RetryPolicy(retries=1, initial_delay=0.01, max_delay=0.01)


def fast_timings(**overrides: Any) -> WorkerTimings:
    """The real worker's timings divided by about 100."""
    values: dict[str, Any] = {
        "fetch_after_no_task": 0.05,
        "fetch_after_task": 0.03,
        "fetch_after_error": 0.1,
        "fetch_after_wake": 0.03,
        "start_retry": 0.3,
        "may_i_run_interval": 0.05,
        "status_poll_interval": 0.3,
        "update_retry": 0.05,
        "error_state_duration": 0.3,
        "output_produced_interval": 0.3,
        "report": ReportIntervals(activity_interval=0.15, log_interval=0.3),
        "process": ProcessLimits(terminate_grace=0.5, line_timeout=5.0, input_file_wait=0.05),
    }
    values.update(overrides)
    return WorkerTimings(**values)


def make_worker(
    manager: FakeManager,
    data_dir: Path,
    task_types: tuple[str, ...] = ("sleep", "file-management", "debug"),
    **options: Any,
) -> Worker:
    """A worker talking to ``manager`` in-process."""
    options.setdefault("timings", fast_timings())
    return Worker(
        "http://manager.test:8080/",
        task_types,
        nickname="vm",
        data_dir=data_dir,
        transport=httpx.ASGITransport(app=manager.app),
        retry=FAST_RETRY,
        **options,
    )
