"""The dashboard's server side, in-process (no browser): the shell, the login page, its static
files and headers, and the actions it offers per status, taken from the state machines."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.web.app import create_app
from flamenco_manager.web.dashboard import STATIC_DIR, dashboard_config
from flamenco_protocol.job_states import plan_job_action
from flamenco_protocol.statuses import JobStatus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def manager(tmp_path: Path, database_url: str) -> Iterator[Manager]:
    settings = Settings(
        data_dir=tmp_path / "data", database=database_url, timeout_check_initial_delay="1h"
    )
    manager = Manager(settings)
    yield manager
    manager.close()


@pytest.fixture
async def client(manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
        yield client


@pytest.mark.anyio
async def test_without_a_token_the_root_is_the_login_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert 'action="/login"' in response.text
    assert "flamenco-config" not in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]

    client.cookies.set("jwtToken", "not-a-token")
    response = await client.get("/")
    assert "Your token was not accepted." in response.text


@pytest.mark.anyio
async def test_with_a_token_the_root_is_the_dashboard(
    client: httpx.AsyncClient, manager: Manager
) -> None:
    token = manager.mint_user_token("operator", timedelta(minutes=5))
    client.cookies.set("jwtToken", token)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert '<script type="module" src="/static/dashboard.js">' in response.text
    match = re.search(r'id="flamenco-config">(.*?)</script>', response.text)
    assert match is not None
    assert json.loads(match.group(1)) == dashboard_config(manager)
    assert ">operator<" in response.text


@pytest.mark.anyio
async def test_static_files_are_served_from_the_package(client: httpx.AsyncClient) -> None:
    names = sorted(path.name for path in STATIC_DIR.iterdir())
    assert names == ["api.js", "dashboard.css", "dashboard.js", "favicon.svg", "login.js"]
    for name, media_type in (
        ("dashboard.js", "javascript"),
        ("api.js", "javascript"),
        ("login.js", "javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        response = await client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert media_type in response.headers["content-type"], name
    assert (await client.get("/static/../dashboard.py")).status_code == 404


@pytest.mark.anyio
async def test_latest_image_state_needs_a_token_and_follows_the_file(
    client: httpx.AsyncClient, manager: Manager
) -> None:
    assert (await client.get("/dashboard/latest-image")).status_code == 401
    headers = {"Authorization": f"Bearer {manager.mint_user_token('op', timedelta(minutes=5))}"}
    response = await client.get("/dashboard/latest-image", headers=headers)
    assert response.json() == {"available": False, "modified": None}
    manager.latest_image.output_path.parent.mkdir(parents=True, exist_ok=True)
    manager.latest_image.output_path.write_bytes(b"\xff\xd8\xff")
    response = await client.get("/dashboard/latest-image", headers=headers)
    assert response.json()["available"] is True
    assert isinstance(response.json()["modified"], float)


def test_offered_job_actions_are_the_ones_the_state_machine_allows(manager: Manager) -> None:
    offered = dashboard_config(manager)["job_actions"]
    assert isinstance(offered, dict)
    for status in JobStatus:
        for requested in ("cancel-requested", "paused", "queued", "requeued"):
            try:
                plan_job_action(status, requested)
                allowed = True
            except Exception:
                allowed = False
            assert (requested in offered[status.value]) is allowed, (status, requested)
    assert offered["active"] == ["cancel-requested", "paused"]
    assert offered["paused"] == ["cancel-requested", "queued", "requeued"]


@pytest.mark.anyio
async def test_the_manager_name_is_shown_escaped(tmp_path: Path, database_url: str) -> None:
    name = 'Render <b>farm</b> & "co"'
    settings = Settings(
        data_dir=tmp_path / "named",
        database=database_url,
        timeout_check_initial_delay="1h",
        manager_name=name,
    )
    manager = Manager(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
            login = await client.get("/")
            assert (
                "<title>Log in · Render &lt;b&gt;farm&lt;/b&gt; &amp; &quot;co&quot;</title>"
                in (login.text)
            )
            client.cookies.set("jwtToken", manager.mint_user_token("op", timedelta(minutes=5)))
            shell = (await client.get("/")).text
    finally:
        manager.close()
    escaped = "Render &lt;b&gt;farm&lt;/b&gt; &amp; &quot;co&quot;"
    assert f"<title>{escaped}</title>" in shell
    assert re.search(rf'class="brand".*?{re.escape(escaped)}</a>', shell, re.DOTALL)
    assert "<b>" not in shell
    assert "Flamenco Manager</a>" not in shell
    # The page's own title (set per view) takes the name from the config, which has no "<".
    match = re.search(r'id="flamenco-config">(.*?)</script>', shell)
    assert match is not None
    assert "<" not in match.group(1)
    assert json.loads(match.group(1))["manager_name"] == name


@pytest.mark.anyio
async def test_a_refused_token_at_login_shows_the_login_page_again(
    client: httpx.AsyncClient, manager: Manager
) -> None:
    from shaman_core.jwt import mint_token

    response = await client.get("/login", params={"token": "not-a-token"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert 'action="/login"' in response.text
    assert "Your token was not accepted." in response.text
    assert "jwtToken" not in response.headers.get("set-cookie", "")
    # Where the refused link was going, the form goes on to (it was dropped), local paths only.
    for asked, kept in (("/#/workers", "/#/workers"), ("https://evil.example/", "/")):
        response = await client.get("/login", params={"token": "bad", "next": asked})
        assert f'name="next" value="{kept}"' in response.text

    assert manager.keys is not None
    expired = mint_token(manager.keys, "carol", lifetime=timedelta(seconds=-10))
    response = await client.get("/login", params={"token": expired})
    assert response.status_code == 401
    assert "Your token has expired." in response.text

    good = manager.mint_user_token("op", timedelta(minutes=5))
    response = await client.get("/login", params={"token": good, "next": "/#/workers"})
    assert (response.status_code, response.headers["location"]) == (303, "/#/workers")
    assert "jwtToken=" in response.headers["set-cookie"]
