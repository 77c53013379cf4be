"""Browser fixtures: Debian's chromium driven by Playwright for Python, a fresh profile per test.

Playwright's own browser download (``playwright install``) is not used: the tests launch the
system's ``chromium`` through its executable path, and skip, saying why, when either is missing.
Every page collects its console errors and uncaught exceptions; a test that leaves any fails.
Screenshots go to ``test-artifacts/dashboard/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.manager.harness import (  # noqa: F401  (database_url: each backend, a schema per test)
    database_server,
    database_url,
    fresh_database,
)

from .farm import ServedManager, served_manager

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}


def chromium_path() -> str | None:
    """The system chromium: ``$CHROMIUM`` or ``/usr/bin/chromium`` or ``chromium`` on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable; skips the browser tests without it or without Playwright."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium): no browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright): no browser tests")
    return path


@pytest.fixture(scope="module")
def playwright_session(chromium: str) -> Iterator[Any]:
    """One Playwright driver per module (browsers are per test); it is gone before other
    modules' asyncio tests run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServedManager]:
    """The manager under uvicorn on 127.0.0.1, with user auth on.

    On SQLite; a test that parametrizes ``served`` indirectly with backend names (``BACKENDS``)
    runs on each. The pages see the database only through the user API and the event stream,
    which the API tests run on both, so most browser tests keep to one.
    """
    backend = getattr(request, "param", "sqlite")
    with (
        fresh_database(database_server(backend)) as database,
        served_manager(tmp_path / "manager", database) as manager,
    ):
        yield manager


class Browser:
    """One chromium with a fresh profile; its pages record console errors."""

    def __init__(self, playwright: Any, executable: str, profile: Path) -> None:
        self.context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
            accept_downloads=True,
        )
        self.context.set_default_timeout(10_000)
        self.problems: list[str] = []
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.watch(self.page)

    def watch(self, page: Any) -> None:
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console.{message.type}: {message.text} {message.location}")
                if message.type in ("error", "assert")
                else None
            ),
        )
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser(
    playwright_session: Any, chromium: str, tmp_path: Path, served: ServedManager
) -> Iterator[Browser]:
    """A headless chromium with a fresh user data directory; no console errors allowed.

    It closes before the manager stops (it depends on ``served``), so the page never sees the
    server go away.
    """
    browser = Browser(playwright_session, chromium, tmp_path / "profile")
    try:
        yield browser
        # Let what the last action started settle before judging the console.
        browser.page.wait_for_timeout(300)
        assert browser.problems == [], "the page logged errors:\n" + "\n".join(browser.problems)
    finally:
        browser.close()
