"""A manager served by uvicorn in a thread on 127.0.0.1, a user, and simulated workers.

The simulated workers speak the worker protocol with plain httpx, one request at a time as
the test asks, so a test decides exactly when a task starts, reports progress, logs a line
or finishes, and can then look for it in the browser.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from flamenco_manager.cli import login_url
from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.web.app import create_app
from tests.support import free_port

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 10.0) -> T:
    """Call ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class ServedManager:
    """A manager with auth on, served on a free port until :meth:`stop`."""

    def __init__(self, data_dir: Path, database: str = "") -> None:
        settings = Settings(data_dir=data_dir, database=database, timeout_check_initial_delay="1h")
        self.manager = Manager(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = self.manager.mint_user_token("operator", timedelta(hours=1))
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        config = uvicorn.Config(
            create_app(self.manager, run_loops=False),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_for("uvicorn to start", lambda: self.server.started)

    @property
    def login_url(self) -> str:
        """The link ``serve`` prints (made by the same function): it logs the browser in."""
        return login_url(self.manager.settings, self.manager, "127.0.0.1", self.port)

    def submit_sleep_job(self, name: str, frames: str = "1-4", **extra: Any) -> dict[str, Any]:
        """Submit a ``sleep`` job (one task per frame) through the user API; its document."""
        body = {
            "name": name,
            "type": "sleep",
            "settings": {"frames": frames, "chunk_size": 1, "time_in_seconds": 1},
            **extra,
        }
        response = self.api.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def tasks(self, job_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/jobs/{job_id}/tasks")
        response.raise_for_status()
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def worker(self, worker_id: str) -> dict[str, Any]:
        response = self.api.get(f"/api/workers/{worker_id}")
        response.raise_for_status()
        worker: dict[str, Any] = response.json()
        return worker

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.api.close()
        self.manager.close()


class SimulatedWorker:
    """A worker that does, step by step, what a real one does over HTTP."""

    def __init__(self, manager_url: str, nickname: str, task_types: tuple[str, ...] = ("sleep",)):
        self.nickname = nickname
        self.http = httpx.Client(base_url=manager_url, timeout=10)
        secret = secrets.token_urlsafe(24)
        response = self.http.post(
            "/register-worker",
            json={
                "secret": secret,
                "platform": "linux",
                "supported_task_types": list(task_types),
                "nickname": nickname,
            },
        )
        response.raise_for_status()
        self.id: str = response.json()["_id"]
        credentials = base64.b64encode(f"{self.id}:{secret}".encode()).decode()
        self.http.headers.update(
            {"Authorization": f"Basic {credentials}", "User-Agent": "Flamenco-Worker/2.5"}
        )
        self.http.post(
            "/sign-on", json={"supported_task_types": list(task_types), "nickname": nickname}
        ).raise_for_status()

    def fetch_task(self) -> dict[str, Any]:
        """Ask for a task; the task (fails the test when there is none)."""
        response = self.http.post("/task")
        assert response.status_code == 200, (response.status_code, response.text)
        task: dict[str, Any] = response.json()
        return task

    def update(self, task_id: str, **body: Any) -> None:
        """Send a task update (progress, activity, log, status)."""
        response = self.http.post(f"/tasks/{task_id}/update", json=body)
        assert response.status_code == 204, (response.status_code, response.text)

    def may_i_run(self, task_id: str) -> bool:
        response = self.http.get(f"/may-i-run/{task_id}")
        response.raise_for_status()
        return bool(response.json()["may_keep_running"])

    def follow_status_change(self) -> str:
        """Ask for a requested status change and acknowledge it; the new status ("" if none)."""
        response = self.http.get("/status-change")
        if response.status_code == 204:
            return ""
        response.raise_for_status()
        status: str = response.json()["status_requested"]
        self.http.post(f"/ack-status-change/{status}").raise_for_status()
        return status

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/sign-off")
        self.http.close()


@contextlib.contextmanager
def served_manager(data_dir: Path, database: str = "") -> Iterator[ServedManager]:
    """A :class:`ServedManager` (on ``database``, "" for SQLite), stopped afterwards."""
    served = ServedManager(data_dir, database)
    try:
        yield served
    finally:
        served.stop()
