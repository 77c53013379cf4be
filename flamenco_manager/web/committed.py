"""Answers leave only once what their request wrote is committed.

With SQLite, the transactions of requests that arrive together share one commit (see
:mod:`flamenco_manager.storage.database`). This middleware lets each request's transactions join
those groups and holds the start of its answer until its groups have committed. If a shared commit
fails, the request's changes are gone, and its answer is the one for an unavailable database
(``503``, "try again") instead of what the handler meant to send. It also counts each answer
for ``/metrics`` (:class:`~.metrics.RequestCounts`), by the template of the route that gave it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flamenco_manager.storage.database import Database

from .metrics import RequestCounts
from .unavailable import DATABASE_ERRORS, database_unavailable

__all__ = ["CommittedAnswers"]


class CommittedAnswers:
    """ASGI middleware: group each HTTP request's commits and answer once they are done."""

    def __init__(
        self,
        app: ASGIApp,
        database: Database,
        requests: RequestCounts | None = None,
        templates: Mapping[object, str] | None = None,
    ) -> None:
        """``templates``: the path template of each route, by the ``endpoint`` its match
        leaves in the scope."""
        self.app = app
        self.database = database
        self.requests = requests or RequestCounts()
        self.templates = templates or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside a grouping; hold its answer until the commits are done."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = started = False

        async def send_when_committed(message: Message) -> None:
            nonlocal replaced, started
            if replaced:
                return  # the handler's answer, after the commit failed: dropped
            if message["type"] == "http.response.start":
                started = True
                try:
                    await wait.committed()
                except DATABASE_ERRORS as error:
                    replaced = True
                    answer = await database_unavailable(Request(scope), error)
                    self._count(scope, answer.status_code)
                    await answer(scope, receive, send)
                    return
                self._count(scope, message["status"])
            await send(message)

        with self.database.grouping() as wait:
            try:
                await self.app(scope, receive, send_when_committed)
            except Exception:
                if not started:
                    self._count(scope, 500)  # the server's error middleware answers it
                raise

    def _count(self, scope: Scope, status: int) -> None:
        route = self.templates.get(scope.get("endpoint"), RequestCounts.UNMATCHED)
        self.requests.add(scope["method"], route, status)
