"""The requests a busy farm sends most, served without Starlette's routing and middleware.

Every running worker sends a task update every few seconds and asks ``/may-i-run`` as often; idle
ones poll ``/task``. Through Starlette, each of these passes the error and exception middleware,
the router (a regular expression per route tried), the route's request wrapper (exception handling
again), and :class:`~.committed.CommittedAnswers`, and each message of the answer goes back out
through a closure of every one of those layers: about a fifth of the manager's time per update.
For these routes, :class:`HotRoutes` does what those layers do, once: it matches the path with
string operations, runs the same handler the Starlette route runs, maps database outages to the
same ``503`` and unexpected errors to the same ``500``, waits for the request's group commit, and
sends the answer.

Anything else, and these paths under another method (``HEAD``, ``PUT``: Starlette's ``405``) or
below a ``root_path``, goes through Starlette as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from flamenco_manager.storage.database import Database

from .metrics import RequestCounts
from .unavailable import DATABASE_ERRORS, database_unavailable

__all__ = ["HotRoute", "HotRoutes"]

Handler = Callable[[Request], Awaitable[Response]]


class HotRoute:
    """One path template with at most one ``{parameter}``, its methods and its handler."""

    __slots__ = ("handler", "methods", "parameter", "prefix", "suffix", "template")

    def __init__(self, template: str, methods: Iterable[str], handler: Handler) -> None:
        self.template = template
        head, opening, rest = template.partition("{")
        self.prefix = head
        self.parameter, closing, self.suffix = rest.partition("}")
        if not opening:
            self.parameter = ""  # no parameter: the template is the whole path
        elif not (self.parameter and closing) or "{" in self.suffix:
            raise ValueError(f"{template!r}: hot routes take at most one named parameter")
        self.methods = frozenset(methods)
        self.handler = handler

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when ``path`` is this route's, as Starlette's ``{name}`` matches
        them (one non-empty segment); ``None`` when it is not."""
        if not self.parameter:
            return {} if path == self.prefix else None
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        value = path[len(self.prefix) : len(path) - len(self.suffix)]  # "" when they overlap
        if not value or "/" in value:
            return None
        return {self.parameter: value}


class HotRoutes:
    """Serves ``routes`` in front of an app's middleware (see :class:`~.app.ManagerApp`)."""

    def __init__(
        self,
        database: Database,
        routes: Iterable[HotRoute],
        requests: RequestCounts | None = None,
    ) -> None:
        self.database = database
        self.routes = tuple(routes)
        self.requests = requests or RequestCounts()
        """The answers sent, counted for ``/metrics``."""

    def match(self, scope: Scope) -> HotRoute | None:
        """The route of a request for one of the routes (its path parameters set in the
        scope, as Starlette's router sets them), or ``None``."""
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        path, method = scope["path"], scope["method"]
        for route in self.routes:
            parameters = route.match(path)
            if parameters is not None and method in route.methods:
                scope["path_params"] = parameters
                return route
        return None

    async def serve(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request :meth:`match` found, once what it wrote is committed."""
        request = Request(scope, receive)
        with self.database.grouping() as wait:
            try:
                response = await route.handler(request)
            except ClientDisconnect:
                return  # gone before its body arrived: nothing was done, nobody to answer
            except DATABASE_ERRORS as error:
                response = await database_unavailable(request, error)
            except Exception:
                # Starlette's answer to an error nobody expected; the server logs the error.
                self.requests.add(scope["method"], route.template, 500)
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                raise
        try:
            await wait.committed()
        except DATABASE_ERRORS as error:
            # The shared commit failed: what the handler meant to say did not happen.
            response = await database_unavailable(request, error)
        self.requests.add(scope["method"], route.template, response.status_code)
        await response(scope, receive, send)
