"""The answer while the database cannot be reached: 503 and "try again", never a traceback.

A PostgreSQL restart or a network cut makes every statement fail for a while. The pool
(``pool_pre_ping``) replaces its dead connections by itself once the server is back, so the only
thing the web layer has to do is to answer the requests of the outage clearly: ``503`` with
``Retry-After``, which every worker treats as "keep the update, try later".

``/may-i-run`` is the exception to the text answer: the real worker reads its body as the
three-key document whatever the status (anything else stops its poller for good). The manager
cannot know whether the task may go on, and stopping a render because the database blinked
would waste it, so the answer says "keep running".
"""

from __future__ import annotations

import logging
import time
from typing import Final

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from flamenco_protocol.documents import MayKeepRunningResponse

from .responses import document, text

__all__ = ["DATABASE_ERRORS", "database_unavailable"]

DATABASE_ERRORS: Final = (sa.exc.OperationalError, sa.exc.InterfaceError)
"""What the driver raises when the server is gone, restarting or unreachable."""

RETRY_AFTER_SECONDS: Final = 5
_LOG_EVERY_SECONDS: Final = 10.0
_log = logging.getLogger("flamenco_manager.database")
_last_logged = 0.0


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """``503`` for a request that failed because the database could not be reached."""
    global _last_logged
    now = time.monotonic()
    if now - _last_logged >= _LOG_EVERY_SECONDS:  # One line per outage period, not per request.
        _last_logged = now
        _log.warning(
            "database unavailable; answering 503 until it is back",
            extra={"path": request.url.path, "error": str(exc).splitlines()[0][:200]},
        )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    message = "the manager's database is unavailable; try again later"
    if request.url.path.startswith("/may-i-run/"):
        answer = document(
            MayKeepRunningResponse(may_keep_running=True, reason=f"{message}; keep running"),
            503,
        )
        answer.headers.update(headers)
        return answer
    return text(503, message, headers=headers)
