"""A render farm of real processes on loopback: the manager under uvicorn and worker CLIs.

Every process runs in its own session (process group), so that a kill reaches the commands a
worker runs too. :class:`Farm` remembers every process it starts and kills what is still
running when the test ends, passed or failed. Every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage.tasks import TaskRecord
from tests.support import free_port, serve_command

ROOT = Path(__file__).resolve().parents[2]

FAST_WORKER_CONFIG = """\
[flamenco-worker]
fetch_after_no_task_seconds = 0.5
fetch_after_task_seconds = 0.2
fetch_after_error_seconds = 0.5
fetch_after_wake_seconds = 0.5
start_retry_seconds = 0.5
update_retry_seconds = 0.3
status_poll_interval_seconds = 1
may_i_run_interval_seconds = 0.5
push_act_max_interval_seconds = 1
push_log_max_interval_seconds = 1
"""
"""The real worker's waits (5 s, 3 s, 30 s...) made short, so a farm test takes seconds."""

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Child:
    """One process of the farm, its output in a file."""

    def __init__(self, name: str, args: list[str], output: Path, cwd: Path) -> None:
        self.name = name
        self.output = output
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with output.open("ab") as stream:
            self.process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started, and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` s."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still runs {timeout} s later; output:\n{self.text()}"
            ) from None

    def text(self) -> str:
        return self.output.read_text(errors="replace")


class Farm:
    """A manager data directory, a port, and the processes serving and working for it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data_dir = base / "manager"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.children: list[Child] = []
        self.manager_process: Child | None = None
        self._manager: Manager | None = None
        self._manager_flags: list[str] = []
        self.database = ""
        """The manager's database URL; empty means SQLite in its data directory."""

    # --- processes ---------------------------------------------------------------------------

    def start_manager(self, *flags: str) -> Child:
        """Serve the manager on the farm's port; return once it answers HTTP."""
        if flags:
            self._manager_flags = list(flags)
        args = serve_command(
            self.data_dir,
            self.port,
            "--log-level",
            "warning",
            *(["--database", self.database] if self.database else []),
            *self._manager_flags,
        )
        child = Child("manager", args, self.base / "manager.out", self.base)
        self.children.append(child)
        self.manager_process = child

        def answers() -> bool:
            if not child.running():
                raise AssertionError(f"the manager exited:\n{child.text()}")
            try:
                httpx.get(self.url, timeout=1.0)
            except httpx.TransportError:
                return False
            return True

        wait_for("the manager to answer", answers, timeout=20)
        return child

    def kill_manager(self) -> None:
        """SIGKILL the manager: no shutdown, no goodbye."""
        assert self.manager_process is not None
        self.manager_process.process.kill()
        self.manager_process.process.wait(timeout=10)

    def worker_dir(self, nickname: str) -> Path:
        return self.base / f"worker-{nickname}"

    def start_worker(self, nickname: str, task_types: str) -> Child:
        """A ``flamenco-worker`` with its own data directory and the fast waits."""
        data_dir = self.worker_dir(nickname)
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "flamenco-worker.cfg"
        config.write_text(FAST_WORKER_CONFIG)
        args = [
            sys.executable,
            "-m",
            "flamenco_worker_client.cli",
            "--config",
            str(config),
            "--manager",
            self.url,
            "--data-dir",
            str(data_dir),
            "--task-types",
            task_types,
            "--nickname",
            nickname,
        ]
        child = Child(nickname, args, self.base / f"{nickname}.out", data_dir)
        self.children.append(child)
        return child

    def kill_all(self) -> None:
        """Kill every process still running (the finalizer; also after a failed test)."""
        for child in self.children:
            if child.running():
                child.kill_group()
        self.close_services()

    def close_services(self) -> None:
        """Close this process's services on the manager's data (:attr:`manager` opens them
        again when next used): before the data directory is replaced, say."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def outputs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(f"----- {child.name} -----\n{child.text()}" for child in self.children)

    # --- the manager's state, read from its database and log files ---------------------------

    @property
    def manager(self) -> Manager:
        """The manager's services on its data directory and database, in this process (SQLite
        WAL allows a second process; PostgreSQL any number); used to submit jobs and to look at
        tasks, workers and logs."""
        if self._manager is None:
            self._manager = Manager(Settings(data_dir=self.data_dir, database=self.database))
        return self._manager

    def tasks(self, job_id: str) -> list[TaskRecord]:
        with self.manager.database.transaction() as connection:
            return task_store.list_of_job(connection, job_id)

    def job_status(self, job_id: str) -> str:
        return str(self.manager.jobs.get(job_id).status)

    def log_runs(self, job_id: str, task_id: str) -> list[str]:
        """Every run's log of a task, oldest first (rotated runs, then the current one)."""
        logs = self.manager.logs
        runs: list[str] = []
        for _, path in sorted(logs.rotated(job_id, task_id), reverse=True):
            data = path.read_bytes()
            runs.append((gzip.decompress(data) if path.suffix == ".gz" else data).decode())
        current = logs.path(job_id, task_id)
        runs.append(current.read_text() if current.exists() else "")
        return runs

    def queued_updates(self, nickname: str) -> list[dict[str, Any]]:
        """The rows waiting in a worker's update queue (read-only, while it runs)."""
        path = self.worker_dir(nickname) / "task-updates.sqlite"
        if not path.exists():
            return []
        with _read_only(path) as db:
            rows = db.execute("SELECT task_id, body FROM task_updates ORDER BY id").fetchall()
        return [{"task_id": task_id, **json.loads(body)} for task_id, body in rows]


class _read_only:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def iter_lines(text: str, needle: str) -> Iterator[str]:
    """The lines of ``text`` that contain ``needle``."""
    return (line for line in text.splitlines() if needle in line)
