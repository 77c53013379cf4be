"""The dashboard: the HTML shell at ``/`` and its static files.

The page is a server-rendered shell (header, navigation, empty regions) and one small vanilla
JavaScript module, ``static/dashboard.js``, that fills it from the user API (``/api/…``) and keeps
it current from the event stream (``/api/events``). Nothing is built on the user's machine: the
files under ``static/`` ship inside the package as they are (docs/architecture.md, "Dashboard").

Without a valid token the shell is replaced by a login page. Logging in goes through
``/login?token=…`` (:mod:`~flamenco_manager.web.login` sets the ``jwtToken`` cookie), logging out
through ``/logout``.

Which job and task actions the page offers in each status comes from the protocol's own state
machines, handed to the page as JSON in the shell, so the buttons never drift from the rules.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import flamenco_manager
from flamenco_manager.manager import Manager
from flamenco_protocol.job_states import JOB_TRANSITIONS, USER_ACTIONS
from flamenco_protocol.statuses import JobStatus, TaskStatus
from flamenco_protocol.task_states import TaskEvent, can_happen
from shaman_core.errors import TokenError

__all__ = ["STATIC_DIR", "dashboard_config", "dashboard_routes", "login_page"]

STATIC_DIR: Final = Path(__file__).with_name("static")
"""The dashboard's CSS, JavaScript and icon, shipped as package data."""

COOKIE_NAME: Final = "jwtToken"
"""The cookie the user API and Shaman read a token from."""

SECURITY_HEADERS: Final = {
    # Everything the page loads comes from the manager itself; no inline script runs.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_TASK_ACTIONS: Final = {"requeue": TaskEvent.REQUEUED, "cancel": TaskEvent.USER_CANCELED}


def dashboard_config(manager: Manager) -> dict[str, object]:
    """What the page needs to know up front: the actions each status allows, and the manager."""
    job_actions = {
        status.value: [
            requested.value
            for requested, event in USER_ACTIONS.items()
            if event in JOB_TRANSITIONS[status]
        ]
        for status in JobStatus
    }
    task_actions = {
        status.value: [name for name, event in _TASK_ACTIONS.items() if can_happen(status, event)]
        for status in TaskStatus
    }
    return {
        "version": flamenco_manager.__version__,
        "manager_name": manager.settings.manager_name,
        "auth": not manager.settings.no_auth,
        "job_actions": job_actions,
        "task_actions": task_actions,
    }


def dashboard_routes(manager: Manager) -> list[BaseRoute]:
    """``/``, ``/static/…`` and ``/dashboard/latest-image`` (whether there is one)."""
    config_json = json.dumps(dashboard_config(manager), separators=(",", ":"))
    # No "<" at all (the manager's name may hold one): nothing can end the <script> early.
    config_json = config_json.replace("<", "\\u003c")
    name = manager.settings.manager_name

    async def index(request: Request) -> Response:
        try:
            user = manager.user_auth.authenticate(request.headers, request.cookies)
        except TokenError as exc:
            expired = exc.status == 498
            return login_page(manager, expired=expired, had_token=COOKIE_NAME in request.cookies)
        return _page(_shell(name, user, config_json, auth=not manager.settings.no_auth))

    async def latest_image_state(request: Request) -> Response:
        # Whether there is an image, so the page never asks for one that is not there (a 404
        # in the browser's console each time the view opens).
        try:
            manager.user_auth.authenticate(request.headers, request.cookies)
        except TokenError as exc:
            return JSONResponse({"message": str(exc)}, status_code=exc.status)
        try:
            modified: float | None = manager.latest_image.output_path.stat().st_mtime
        except OSError:
            modified = None
        return JSONResponse(
            {"available": modified is not None, "modified": modified},
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/", index, methods=["GET"], name="dashboard"),
        Route(
            "/dashboard/latest-image",
            latest_image_state,
            methods=["GET"],
            name="dashboard_latest_image",
        ),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def _page(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def login_page(
    manager: Manager,
    *,
    expired: bool = False,
    had_token: bool = False,
    status_code: int = 200,
    next_page: str = "/",
) -> HTMLResponse:
    """The login page, saying why when a token was refused; logging in there goes on to
    ``next_page`` (a local path, checked by the caller), or to the view the browser shows."""
    page = _login_page(
        manager.settings.manager_name, expired=expired, had_token=had_token, next_page=next_page
    )
    return _page(page, status_code)


def _head(title: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark">
<title>{html.escape(title)}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/dashboard.css">
</head>"""


def _shell(name: str, user: str, config_json: str, *, auth: bool) -> str:
    logout = (
        '<form method="get" action="/logout" class="logout">'
        f'<span class="user" title="Signed in as {html.escape(user)}">{html.escape(user)}</span>'
        '<button type="submit" class="button subtle">Log out</button></form>'
        if auth
        else ""
    )
    return f"""{_head(name)}
<body>
<a class="skip-link" href="#main">Skip to content</a>
<header class="topbar">
  <a class="brand" href="#/jobs"><img src="/static/favicon.svg" alt="" width="22" height="22">
    {html.escape(name)}</a>
  <nav aria-label="Views">
    <ul>
      <li><a href="#/jobs" data-nav="jobs">Jobs</a></li>
      <li><a href="#/workers" data-nav="workers">Workers</a></li>
      <li><a href="#/image" data-nav="image">Latest image</a></li>
    </ul>
  </nav>
  <div class="farm" id="farm-status" role="status" aria-label="Farm status">
    <span class="farm-state" data-state="">Farm …</span>
    <span class="farm-counts"></span>
  </div>
  <span class="live" id="live" data-live="connecting" role="status"
    title="Live updates from the event stream">connecting</span>
  {logout}
</header>
<main id="main" tabindex="-1">
  <noscript><p class="notice">The dashboard needs JavaScript.</p></noscript>
  <section id="view-jobs" class="view jobs-view" hidden aria-label="Jobs"></section>
  <section id="view-workers" class="view workers-view" hidden aria-label="Workers"></section>
  <section id="view-image" class="view image-view" hidden aria-label="Latest image"></section>
</main>
<div id="toasts" class="toasts" role="status" aria-live="polite"></div>
<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-text">
  <form method="dialog">
    <h2 id="confirm-title">Are you sure?</h2>
    <p id="confirm-text"></p>
    <div class="buttons">
      <button value="cancel" class="button" autofocus>Keep it</button>
      <button value="ok" class="button danger" id="confirm-ok">Confirm</button>
    </div>
  </form>
</dialog>
<script type="application/json" id="flamenco-config">{config_json}</script>
<script type="module" src="/static/dashboard.js"></script>
</body>
</html>
"""


def _login_page(name: str, *, expired: bool, had_token: bool, next_page: str) -> str:
    if expired:
        problem = '<p class="notice warn" role="alert">Your token has expired.</p>'
    elif had_token:
        problem = '<p class="notice warn" role="alert">Your token was not accepted.</p>'
    else:
        problem = ""
    return f"""{_head(f"Log in · {name}")}
<body class="login-page">
<main id="main" class="login">
  <h1><img src="/static/favicon.svg" alt="" width="32" height="32"> {html.escape(name)}</h1>
  {problem}
  <p>Open the link that <code>flamenco-manager serve</code> printed on its terminal, or paste a
  token made with <code>flamenco-manager token create --name you</code>.</p>
  <form method="get" action="/login" class="login-form">
    <input type="hidden" id="next" name="next" value="{html.escape(next_page)}">
    <label for="token">Token</label>
    <input id="token" name="token" type="password" autocomplete="off" required
      spellcheck="false">
    <button type="submit" class="button primary">Log in</button>
  </form>
</main>
<script src="/static/login.js"></script>
</body>
</html>
"""
