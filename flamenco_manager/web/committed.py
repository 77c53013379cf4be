"""Answers leave only once what their request wrote is committed.

With SQLite, the transactions of requests that arrive together share one commit (see
:mod:`flamenco_manager.storage.database`). This middleware lets each request's transactions join
those groups and holds the start of its answer until its groups have committed. If a shared commit
fails, the request's changes are gone, and its answer is the one for an unavailable database
(``503``, "try again") instead of what the handler meant to send.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flamenco_manager.storage.database import Database

from .unavailable import DATABASE_ERRORS, database_unavailable

__all__ = ["CommittedAnswers"]


class CommittedAnswers:
    """ASGI middleware: group each HTTP request's commits and answer once they are done."""

    def __init__(self, app: ASGIApp, database: Database) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside a grouping; hold its answer until the commits are done."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_when_committed(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the handler's answer, after the commit failed: dropped
            if message["type"] == "http.response.start":
                try:
                    await wait.committed()
                except DATABASE_ERRORS as error:
                    replaced = True
                    answer = await database_unavailable(Request(scope), error)
                    await answer(scope, receive, send)
                    return
            await send(message)

        with self.database.grouping() as wait:
            await self.app(scope, receive, send_when_committed)
