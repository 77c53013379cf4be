"""``flamenco-manager serve --processes N``: several processes on PostgreSQL, refused on SQLite."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flamenco_manager.config import Settings, settings_to_json
from flamenco_manager.manager import Manager
from flamenco_manager.storage import tasks as task_store
from flamenco_manager.web.app import SETTINGS_VARIABLE
from tests.support import free_port, serve_command, wait_until_serving

from .harness import POSTGRES_URL_VARIABLE, spec


def test_sqlite_refuses_more_than_one_process(tmp_path: Path) -> None:
    # About SQLite itself (the data directory's file); PostgreSQL's processes are tested below.
    result = subprocess.run(
        serve_command(tmp_path, free_port(), "--processes", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SQLite serves one process" in result.stderr


@pytest.mark.slow
def test_two_processes_and_200_workers_never_share_or_lose_a_task(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url:
        pytest.skip("several processes need PostgreSQL")
    assert os.environ.get(POSTGRES_URL_VARIABLE)
    seeding = Manager(Settings(data_dir=tmp_path, database=database_url, no_auth=True))
    job = seeding.jobs.create_job(
        name="fan-out", job_type="test", tasks=[spec(f"t{i}") for i in range(150)]
    )
    seeding.close()
    port = free_port()
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        server = subprocess.Popen(
            serve_command(tmp_path, port, "--processes", "2", "--database", database_url),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)
        handed_out = asyncio.run(_run_workers(base, count=200))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert len(handed_out) == len(set(handed_out)) == 150
    checking = Manager(Settings(data_dir=tmp_path, database=database_url, no_auth=True))
    with checking.database.transaction() as connection:
        stored = task_store.list_of_job(connection, str(job.id))
    checking.close()
    assert {str(task.id) for task in stored} == set(handed_out)
    assert {task.status for task in stored} == {"completed"}
    # The serving processes log as serve does: every registration is told, once, as a structured
    # line of its own.
    registered = [line for line in output.read_text().splitlines() if '"worker registered"' in line]
    assert len(registered) == 200
    assert all(re.match(r"\S+Z info flamenco_manager\.\S+ ", line) for line in registered)


def test_a_process_of_several_logs_as_serve_does(tmp_path: Path) -> None:
    # What `serve --processes N` has uvicorn run in each process it starts: no handler was set up
    # there, and the processes' info lines were lost.
    settings = Settings(data_dir=tmp_path, log_level="info")
    script = (
        "import logging\n"
        "from flamenco_manager.web.app import app_from_environment\n"
        "app_from_environment()\n"
        "logging.getLogger('flamenco_manager.farm').info('told', extra={'worker': 'w1'})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, SETTINGS_VARIABLE: settings_to_json(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r'^\S+Z info flamenco_manager\.farm "told" worker="w1"$', result.stderr, re.M)


async def _run_workers(base: str, count: int) -> list[str]:
    """``count`` workers fetch tasks at the same time and complete each at once."""
    handed_out: list[str] = []
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def work(index: int) -> None:
            secret = f"secret-{index}"
            registration = await client.post(
                "/register-worker",
                json={
                    "secret": secret,
                    "platform": "linux",
                    "supported_task_types": ["sleep"],
                    "nickname": f"w{index}",
                },
            )
            auth = (registration.json()["_id"], secret)
            while True:
                response = await client.post("/task", auth=auth)
                if response.status_code == 204:
                    return
                assert response.status_code == 200, response.text
                task_id = response.json()["_id"]
                handed_out.append(task_id)
                update = await client.post(
                    f"/tasks/{task_id}/update", auth=auth, json={"task_status": "completed"}
                )
                assert update.status_code == 204, update.text

        await asyncio.gather(*(work(index) for index in range(count)))
    return handed_out
