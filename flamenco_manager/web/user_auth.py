"""User authentication on the wire: a token as ``Authorization: Bearer`` or the ``jwtToken``
cookie, checked by the manager's authenticator (or none with ``--no-auth``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from flamenco_manager.manager import Manager
from flamenco_manager.web.responses import text
from shaman_core.errors import TokenError

UserHandler = Callable[[Request, str], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Response]]


def as_user(manager: Manager, handler: UserHandler) -> Handler:
    """Run ``handler`` with the user's name; 401 (or 498 when expired) without a valid token."""

    async def authenticated(request: Request) -> Response:
        try:
            user = manager.user_auth.authenticate(request.headers, request.cookies)
        except TokenError as exc:
            return text(exc.status, str(exc))
        return await handler(request, user)

    return authenticated
