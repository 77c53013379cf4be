"""PostgreSQL stopped and started again under load: the manager recovers by itself.

During the outage every request fails with ``503`` (``Retry-After``), or ``/may-i-run`` says
"keep running"; never a ``500``. Once the server is back, the manager's pool replaces its dead
connections (``pool_pre_ping``) and every request succeeds again: the manager process is the same
one, never restarted. Workers that retry their updates lose nothing and run nothing twice.

This restarts the PostgreSQL cluster of the machine (``pg_ctlcluster``), for a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import attrs
import httpx
import pytest

from flamenco_manager.services.jobs import TaskSpec
from flamenco_protocol.statuses import TaskStatus
from tests.e2e.farm import Farm

pytestmark = pytest.mark.slow

LOG_CHUNK = "frame 0001: rendering tile 12 of 64, 1.2 GiB used\n" * 40  # ~2 KiB
OUTAGE_SECONDS = 3.0


def _cluster() -> list[str]:
    """The ``pg_ctlcluster`` arguments naming the local cluster, or skip."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs root and pg_ctlcluster to restart the local PostgreSQL")
    versions = sorted(os.listdir("/etc/postgresql"))
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _ctl(cluster: list[str], action: str) -> None:
    extra = ["-m", "fast"] if action == "stop" else []
    subprocess.run([*cluster, action, *extra], check=True, timeout=60, capture_output=True)


@attrs.define
class Tally:
    """Every answer the simulated workers got, with the time it came."""

    answers: list[tuple[float, str, int]] = attrs.Factory(list)
    """(monotonic time, endpoint, status); status 0 is a connection error."""
    handed_out: list[str] = attrs.Factory(list)
    completed: set[str] = attrs.Factory(set)


async def _worker(client: httpx.AsyncClient, index: int, tally: Tally, stop_at: float) -> None:
    secret = f"secret-{index}"
    while True:
        try:
            registration = await client.post(
                "/register-worker",
                json={
                    "secret": secret,
                    "platform": "linux",
                    "supported_task_types": ["sleep"],
                    "nickname": f"w{index}",
                },
            )
            registration.raise_for_status()
            break
        except httpx.HTTPError:
            await asyncio.sleep(0.2)
    token = base64.b64encode(f"{registration.json()['_id']}:{secret}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}

    async def call(endpoint: str, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One request; retried after a pause until it succeeds, as the real worker does."""
        while True:
            try:
                response = await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            except httpx.TransportError:
                tally.answers.append((time.monotonic(), endpoint, 0))
            else:
                tally.answers.append((time.monotonic(), endpoint, response.status_code))
                if response.status_code < 500:
                    return response
            await asyncio.sleep(0.3)

    while time.monotonic() < stop_at:
        response = await call("task", "POST", "/task")
        if response.status_code == 204:
            await asyncio.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        task_id = response.json()["_id"]
        tally.handed_out.append(task_id)
        for step in range(3):
            update = await call(
                "update",
                "POST",
                f"/tasks/{task_id}/update",
                json={"task_status": "active", "activity": f"step {step}", "log": LOG_CHUNK},
            )
            assert update.status_code == 204, update.text
            answer = await call("may-i-run", "GET", f"/may-i-run/{task_id}")
            assert answer.json()["may_keep_running"] is True, answer.text
            await asyncio.sleep(0.1)
        done = await call(
            "update",
            "POST",
            f"/tasks/{task_id}/update",
            json={"task_status": "completed", "log": "Task completed"},
        )
        assert done.status_code == 204, done.text
        tally.completed.add(task_id)


async def _load(url: str, workers: int, seconds: float, outage: asyncio.Event) -> Tally:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=workers)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        runs = [_worker(client, index, tally, stop_at) for index in range(workers)]
        await asyncio.wait_for(asyncio.gather(*runs, outage.wait()), timeout=seconds + 60)
    return tally


def test_postgresql_restarted_under_load(database_url: str, tmp_path: Path) -> None:
    if not database_url:
        pytest.skip("SQLite has no server to restart")
    cluster = _cluster()
    farm = Farm(tmp_path)
    farm.database = database_url
    try:
        farm.start_manager("--no-auth", "true")
        pid = farm.manager_process.pid if farm.manager_process else 0
        job = farm.manager.jobs.create_job(
            name="under load",
            job_type="test",
            tasks=[
                TaskSpec(name=f"t{i}", task_type="sleep", commands=[{"name": "echo"}])
                for i in range(400)
            ],
        )
        farm.manager.close()  # This process's own pool must not get in the way of the restart.
        farm._manager = None
        window: dict[str, float] = {}
        health: list[int] = []  # /api/health in the outage, then after it

        async def outage(done: asyncio.Event) -> None:
            await asyncio.sleep(3.0)
            window["stop"] = time.monotonic()
            await asyncio.to_thread(_ctl, cluster, "stop")
            async with httpx.AsyncClient(base_url=farm.url, timeout=10) as client:
                await asyncio.sleep(OUTAGE_SECONDS / 2)
                health.append((await client.get("/api/health")).status_code)
                await asyncio.sleep(OUTAGE_SECONDS / 2)
                await asyncio.to_thread(_ctl, cluster, "start")
                window["start"] = time.monotonic()
                done.set()
                await asyncio.sleep(2.5)
                health.append((await client.get("/api/health")).status_code)

        async def scenario() -> Tally:
            done = asyncio.Event()
            restart = asyncio.create_task(outage(done))
            try:
                return await _load(farm.url.rstrip("/"), workers=20, seconds=16.0, outage=done)
            finally:
                await restart

        try:
            tally = asyncio.run(scenario())
        finally:
            # Whatever happened, the machine's PostgreSQL must be running again.
            subprocess.run([*cluster, "start"], check=False, timeout=60, capture_output=True)

        assert farm.manager_process is not None
        assert farm.manager_process.running(), farm.outputs()
        assert farm.manager_process.pid == pid
        statuses = {status for _, _, status in tally.answers}
        assert 500 not in statuses, farm.outputs()
        failures = [(at, what, status) for at, what, status in tally.answers if status >= 500]
        assert failures, "no request fell in the outage: the test proves nothing"
        assert {status for _, _, status in failures} <= {503}
        # Every failure is in the outage (and the second the pool needs to notice the restart).
        assert all(window["stop"] - 0.5 <= at <= window["start"] + 2.0 for at, _, _ in failures)
        after = [status for at, _, status in tally.answers if at > window["start"] + 2.0]
        assert len(after) > 50
        assert set(after) <= {200, 204}, sorted(set(after))
        assert health == [503, 200]  # what a load balancer asks sees the outage too

        tasks = farm.tasks(str(job.id))
        completed = {str(task.id) for task in tasks if task.status == TaskStatus.COMPLETED}
        assert completed == tally.completed
        assert len(tally.handed_out) == len(set(tally.handed_out)), "a task was handed out twice"
        for task_id in tally.completed:
            log = farm.log_runs(str(job.id), task_id)[-1]
            assert log.count("Task completed") == 1, log
        failed_during = sum(1 for _, _, status in failures if status == 503)
        print(f"{len(tally.answers)} requests, {failed_during} answered 503 in the outage")
    finally:
        farm.kill_all()
