"""A manager in a test: the ASGI app on httpx, a controllable clock, and helpers for workers."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import attrs
import httpx
import pytest
import sqlalchemy as sa

from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.storage.database import create_engine
from flamenco_manager.storage.jobs import JobRecord
from flamenco_manager.web.app import create_app


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@attrs.frozen
class WorkerHandle:
    """A registered worker's credentials."""

    id: str
    secret: str
    nickname: str

    @property
    def auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()
        return {"Authorization": f"Basic {token}", "User-Agent": "Flamenco-Worker/2.5"}


class Farm:
    """A manager with helpers to act as workers and users."""

    def __init__(self, manager: Manager, client: httpx.AsyncClient, clock: FakeClock) -> None:
        self.manager = manager
        self.client = client
        self.clock = clock

    async def register(
        self, nickname: str = "w", task_types: Sequence[str] = ("sleep",), platform: str = "linux"
    ) -> WorkerHandle:
        secret = secrets.token_urlsafe(32)
        response = await self.client.post(
            "/register-worker",
            json={
                "secret": secret,
                "platform": platform,
                "supported_task_types": list(task_types),
                "nickname": nickname,
            },
        )
        assert response.status_code == 200, response.text
        return WorkerHandle(response.json()["_id"], secret, nickname)

    async def call(
        self, worker: WorkerHandle, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, path, headers=worker.auth, **kwargs)

    async def fetch(self, worker: WorkerHandle) -> httpx.Response:
        return await self.call(worker, "POST", "/task")

    async def update(self, worker: WorkerHandle, task_id: str, **body: Any) -> httpx.Response:
        return await self.call(worker, "POST", f"/tasks/{task_id}/update", json=body)

    async def may_i_run(self, worker: WorkerHandle, task_id: str) -> dict[str, Any]:
        response = await self.call(worker, "GET", f"/may-i-run/{task_id}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        result: dict[str, Any] = response.json()
        return result

    def job(
        self,
        *tasks: TaskSpec,
        priority: int = 50,
        name: str = "job",
        start_paused: bool = False,
    ) -> JobRecord:
        return self.manager.jobs.create_job(
            name=name,
            job_type="test",
            tasks=list(tasks),
            priority=priority,
            start_paused=start_paused,
        )

    def task_ids(self, job: JobRecord) -> list[str]:
        return [str(task.id) for task in self.tasks(job)]

    def tasks(self, job: JobRecord) -> list[Any]:
        from flamenco_manager.storage import tasks as task_store

        with self.manager.database.transaction() as connection:
            return task_store.list_of_job(connection, str(job.id))

    def task(self, task_id: str) -> Any:
        from flamenco_manager.storage import tasks as task_store

        with self.manager.database.transaction() as connection:
            return task_store.get(connection, task_id)

    def worker(self, worker: WorkerHandle) -> Any:
        return self.manager.workers.get(worker.id)

    def job_status(self, job: JobRecord) -> str:
        return str(self.manager.jobs.get(str(job.id)).status)


def spec(
    name: str = "t",
    task_type: str = "sleep",
    priority: int = 50,
    parents: tuple[int, ...] = (),
    commands: list[dict[str, Any]] | None = None,
) -> TaskSpec:
    """A task of a test job."""
    return TaskSpec(
        name=name,
        task_type=task_type,
        priority=priority,
        parents=parents,
        commands=commands or [{"name": "sleep", "settings": {"time_in_seconds": 1}}],
    )


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a manager in ``tmp_path``."""
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "timeout_check_initial_delay": "1h"}
    values.update(overrides)
    return Settings(**values)


POSTGRES_URL_VARIABLE = "FLAMENCO_TEST_POSTGRES_URL"
#: The database backends every test that opens a database runs on.
BACKENDS = ("sqlite", "postgresql")


def database_server(backend: str) -> str:
    """The server of ``backend``: "" for SQLite, else the URL in ``FLAMENCO_TEST_POSTGRES_URL``.

    Without that variable the calling test is skipped with the reason.
    """
    if backend == "sqlite":
        return ""
    base = os.environ.get(POSTGRES_URL_VARIABLE)
    if not base:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: the PostgreSQL backend is not tested")
    return base


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A database of its own on ``server`` (from :func:`database_server`): a ``database`` setting.

    On SQLite that is "" (the file in the data directory, fresh with each data directory); on
    PostgreSQL a new schema, made the search path of the URL given, dropped on exit.
    """
    if not server:
        yield ""
        return
    schema = f"test_{secrets.token_hex(6)}"
    engine = create_engine(server)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"
        finally:
            with engine.begin() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each database backend in turn: "" (SQLite in the data directory) or a PostgreSQL URL.

    Every PostgreSQL test gets a schema of its own in the server named by
    ``FLAMENCO_TEST_POSTGRES_URL``, dropped afterwards; without that variable the PostgreSQL
    runs are skipped. Tests that need a fresh database more often than once (a hypothesis
    machine's examples, a module's server) use :func:`database_server` and
    :func:`fresh_database` themselves.
    """
    with fresh_database(database_server(request.param)) as url:
        yield url


@pytest.fixture
async def farm(tmp_path: Path, database_url: str) -> AsyncIterator[Farm]:
    """A manager in a temporary directory on each database backend, served in-process."""
    clock = FakeClock()
    manager = Manager(make_settings(tmp_path, database=database_url), clock=clock)
    app = create_app(manager, run_loops=False)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.5", 53211))
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
        yield Farm(manager, client, clock)
    manager.close()


def database_lost(*_: object, **__: object) -> NoReturn:
    """Stands in for a storage call in the middle of a request: the database is gone."""
    raise sa.exc.OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))


def fail_next_commit(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next commit on ``engine`` made by this thread (the requests', not a background
    thread's) fail in the driver, as when the server goes away (or SQLite's disk) between a
    request's statements and their commit."""
    dialect = engine.dialect
    real = type(dialect).do_commit
    requests_thread = threading.get_ident()

    def fail_once(self: Any, dbapi_connection: Any) -> None:
        if threading.get_ident() != requests_thread:
            return real(self, dbapi_connection)
        monkeypatch.setattr(type(dialect), "do_commit", real)
        raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(type(dialect), "do_commit", fail_once)


def count_commits(engine: sa.Engine) -> list[object]:
    """A list that grows by one at each commit on ``engine`` from now on."""
    commits: list[object] = []
    sa.event.listen(engine, "commit", lambda *_: commits.append(None))
    return commits


def interrupt_next_commit(engine: sa.Engine) -> None:
    """Make the next commit on ``engine`` (SQLite) fail for real, with "interrupted".

    SQLite stops the statement running when the progress handler says so: the COMMIT.
    """
    interrupted: list[object] = []

    def interrupt_once(connection: sa.Connection) -> None:
        if not interrupted:
            interrupted.append(None)
            raw = connection.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.set_progress_handler(lambda: 1, 1)

    sa.event.listen(engine, "commit", interrupt_once)
