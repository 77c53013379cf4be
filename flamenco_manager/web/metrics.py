"""``/metrics``: the farm's counts in Prometheus's text format, for Grafana and alerting.

Every status of every kind has its line, zero included, so that a series never disappears when
its count drops to zero (an alert on ``flamenco_workers{status="timeout"} > 0`` needs the zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final

from flamenco_manager.services.farm import FarmState, FarmStatus
from flamenco_protocol.statuses import JobStatus, TaskStatus, WorkerStatus

__all__ = ["PROMETHEUS_TEXT", "RequestCounts", "prometheus_text"]

PROMETHEUS_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of Prometheus's text exposition format."""


class RequestCounts:
    """The answers of this process since it started, by method, route and status.

    The route is the path template (``/tasks/{task_id}/update``), or :attr:`UNMATCHED`: the
    number of series stays bounded whatever paths clients send. Counted on the event loop's
    thread.
    """

    UNMATCHED: Final = "unmatched"

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}

    def add(self, method: str, route: str, status: int) -> None:
        """Count one answer."""
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1

    def items(self) -> list[tuple[tuple[str, str, int], int]]:
        """Every (method, route, status) counted, with its count, in a stable order."""
        return sorted(self._counts.items())


def prometheus_text(
    status: FarmStatus,
    *,
    version: str,
    database: str,
    event_streams: int,
    requests: RequestCounts | None = None,
) -> str:
    """The metrics of one farm status (with every task status counted), as Prometheus reads."""
    lines: list[str] = []
    _gauge(
        lines,
        "flamenco_farm_state",
        "The farm's state: 1 for the current one.",
        "state",
        {state.value: int(state is status.state) for state in FarmState},
    )
    _gauge(
        lines,
        "flamenco_workers",
        "Workers per status (new: registered, not yet signed on).",
        "status",
        _every(WorkerStatus, status.workers),
    )
    _gauge(lines, "flamenco_jobs", "Jobs per status.", "status", _every(JobStatus, status.jobs))
    _gauge(lines, "flamenco_tasks", "Tasks per status.", "status", _every(TaskStatus, status.tasks))
    lines += [
        "# HELP flamenco_event_streams Open event streams (dashboards) of this manager process.",
        "# TYPE flamenco_event_streams gauge",
        f"flamenco_event_streams {event_streams}",
        "# HELP flamenco_manager_info The manager's version and database.",
        "# TYPE flamenco_manager_info gauge",
        f'flamenco_manager_info{{version="{_label(version)}",database="{_label(database)}"}} 1',
    ]
    if requests is not None:
        lines += [
            "# HELP flamenco_http_requests_total Answers of this manager process since it "
            "started, by method, route and status.",
            "# TYPE flamenco_http_requests_total counter",
        ]
        lines += [
            f'flamenco_http_requests_total{{method="{_label(method)}",route="{_label(route)}",'
            f'status="{code}"}} {count}'
            for (method, route, code), count in requests.items()
        ]
    return "\n".join(lines) + "\n"


def _every(statuses: Iterable[StrEnum], counts: Mapping[str, int]) -> dict[str, int]:
    every = {status.value or "new": 0 for status in statuses}
    for status, count in counts.items():
        every[status or "new"] = every.get(status or "new", 0) + count
    return every


def _gauge(lines: list[str], name: str, doc: str, label: str, values: Mapping[str, int]) -> None:
    lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
    lines += [f'{name}{{{label}="{_label(key)}"}} {value}' for key, value in values.items()]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
