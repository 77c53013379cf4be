"""What client calls return besides the protocol documents: the "nothing" and "change" answers.

``fetch_task`` returns a :class:`~flamenco_protocol.Task`, :class:`NoTask` or
:class:`StatusChangeRequested`; ``status_change`` returns :class:`StatusChangeRequested` or
:class:`NoStatusChange`. Each status code of those endpoints is one type, so a ``match`` on the
result covers every answer the manager may give.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from flamenco_protocol import Task, WorkerStatus

__all__ = ["FetchResult", "NoStatusChange", "NoTask", "StatusChangeRequested", "StatusResult"]


@attrs.frozen
class NoTask:
    """204 from ``/task``: nothing to run now; ask again later."""


@attrs.frozen
class NoStatusChange:
    """204 from ``/status-change``: stay in the current status."""


@attrs.frozen
class StatusChangeRequested:
    """423 from ``/task`` or 200 from ``/status-change``: take this status first."""

    status: WorkerStatus | str
    """The status asked for; a plain string when it is not a known worker status."""


FetchResult: TypeAlias = Task | NoTask | StatusChangeRequested
"""Every answer of ``fetch_task``."""

StatusResult: TypeAlias = StatusChangeRequested | NoStatusChange
"""Every answer of ``status_change``."""
