"""The manager's ASGI application, built from a :class:`~flamenco_manager.manager.Manager`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from flamenco_manager.log_format import configure_logging
from flamenco_manager.manager import Manager
from flamenco_manager.services.events import EventBus
from shaman_core.asgi import shaman_routes

from .committed import CommittedAnswers
from .dashboard import dashboard_routes
from .hot_routes import HotRoutes
from .login import login_routes
from .logs import log_routes
from .metrics import RequestCounts
from .openapi import openapi_document
from .responses import text
from .unavailable import DATABASE_ERRORS, database_unavailable
from .user_api import HEARTBEAT_SECONDS, user_api_routes, user_routes
from .worker_api import WorkerAPI

__all__ = ["SETTINGS_VARIABLE", "app_from_environment", "create_app"]

SETTINGS_VARIABLE = "FLAMENCO_MANAGER_SETTINGS"
"""The environment variable through which ``serve --processes N`` hands its settings on."""


def app_from_environment() -> Starlette:
    """The app of one of several manager processes, from the settings its parent handed on.

    The process logs as its parent does: a process that uvicorn starts has no log handler.
    """
    from flamenco_manager.config import settings_from_json

    settings = settings_from_json(os.environ[SETTINGS_VARIABLE])
    configure_logging(settings.log_level)
    return create_app(Manager(settings), serving=True)


def end_streams_on_stop(bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
    """Have ``SIGINT`` and ``SIGTERM`` end the event streams, then do what they did.

    uvicorn stops on either by waiting for every open response to end, up to its graceful
    timeout, before it shuts the app down: an event stream (every open dashboard) never ends by
    itself, so each stop took that long and logged the streams it then cancelled. Chained to the
    handlers uvicorn installed, from the main thread only (where signals are handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        installed = signal.getsignal(number)
        if not callable(installed):
            continue  # the default or ignored: nobody stops gracefully on it

        def chained(signum: int, frame: FrameType | None, installed: _Handler = installed) -> None:
            loop.call_soon_threadsafe(bus.end_subscriptions)
            installed(signum, frame)

        signal.signal(number, chained)


_Handler = Callable[[int, FrameType | None], Any]


def create_app(
    manager: Manager,
    *,
    run_loops: bool = True,
    event_heartbeat: float = HEARTBEAT_SECONDS,
    serving: bool = False,
) -> Starlette:
    """The manager's routes, and its periodic chores running while the app is served.

    ``event_heartbeat`` is how often the event stream sends a keep-alive comment (seconds).
    ``serving``: the app is the one this process serves (not one of the many apps of tests).
    Once started, the objects of start-up (modules, schema, compiled statements, routes) leave
    the garbage collector's sight: they live as long as the process, yet every full collection
    walked them all, about 60 ms, which a busy manager paid several times a second. When the
    server shuts the app down, the app closes the manager: code after ``uvicorn.run`` is no
    place for that, since once the app is down uvicorn raises the stopping signal again, and
    ``SIGTERM`` ends the process.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if serving:
            gc.collect()
            gc.freeze()
            end_streams_on_stop(manager.events, asyncio.get_running_loop())
        loops = asyncio.create_task(manager.run_loops()) if run_loops else None
        try:
            yield
        finally:
            if loops is not None:
                loops.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loops
            if serving:
                manager.close()

    worker_api = WorkerAPI(manager)
    routes: list[BaseRoute] = [*worker_api.routes(), *log_routes(manager)]
    if manager.shaman is not None:
        # BAT calls /files/… and /checkout/… relative to the Shaman URL: the manager's root.
        routes.extend(shaman_routes(manager.shaman))
    requests = RequestCounts()
    routes.extend(user_routes(manager, heartbeat=event_heartbeat, requests=requests))
    routes.extend(login_routes(manager))
    routes.extend(dashboard_routes(manager))
    openapi = openapi_document(user_api_routes(manager), shaman=manager.shaman is not None)

    async def serve_openapi(request: Request) -> Response:
        return JSONResponse(openapi)

    routes.append(Route("/api/openapi.json", serve_openapi, methods=["GET"], name="openapi"))
    app = ManagerApp(
        HotRoutes(manager.database, worker_api.hot_routes(), requests),
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                CommittedAnswers,
                database=manager.database,
                requests=requests,
                templates=_templates(routes),
            )
        ],
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
            **dict.fromkeys(DATABASE_ERRORS, database_unavailable),
        },
    )
    app.state.manager = manager
    return app


class ManagerApp(Starlette):
    """The manager's app: Starlette, with the hot worker routes (:mod:`.hot_routes`) served
    before its middleware."""

    def __init__(self, hot: HotRoutes, **options: Any) -> None:
        super().__init__(**options)
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a hot route directly, anything else through Starlette."""
        route = self.hot.match(scope)
        if route is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.hot.serve(route, scope, receive, send)


def _templates(routes: list[BaseRoute]) -> dict[object, str]:
    """The path template of each route, by the ``endpoint`` a match leaves in the scope."""
    templates: dict[object, str] = {}
    for route in routes:
        if isinstance(route, Route):
            templates[route.endpoint] = route.path
        elif isinstance(route, Mount):
            templates[route.app] = f"{route.path}/{{path}}"
    return templates


async def _not_found(request: Request, exc: Exception) -> Response:
    return text(404, "404 page not found")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return Response(status_code=405)
