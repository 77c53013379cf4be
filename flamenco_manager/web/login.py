"""``/login`` and ``/logout``: a user token in the browser, as the ``jwtToken`` cookie.

``flamenco-manager serve`` prints a ``/login?token=…`` link; opening it stores the token as an
HttpOnly, SameSite=Lax cookie and goes to the dashboard. ``/logout`` removes the cookie.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from flamenco_manager.manager import Manager
from shaman_core.errors import TokenError

from .dashboard import login_page

__all__ = ["COOKIE", "login_routes"]

COOKIE: Final = "jwtToken"


def _next_page(request: Request) -> str:
    """Where to go afterwards: a local path only, never another site."""
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_routes(manager: Manager) -> list[Route]:
    """The login and logout routes."""

    async def login(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if manager.settings.no_auth:
            return RedirectResponse(_next_page(request), status_code=303)
        try:
            manager.user_auth.authenticate({"authorization": f"Bearer {token}"}, {})
        except TokenError as exc:
            # Someone at a browser: the login page again, saying why, not the API's JSON.
            return login_page(
                manager,
                expired=exc.status == 498,
                had_token=bool(token),
                status_code=401,
                next_page=_next_page(request),
            )
        response = RedirectResponse(_next_page(request), status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(_next_page(request), status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return [
        Route("/login", login, methods=["GET"], name="login"),
        Route("/logout", logout, methods=["GET"], name="logout"),
    ]
