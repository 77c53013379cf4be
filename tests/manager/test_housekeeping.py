"""Timeouts, the worker remover, blocklist expiry and job cleanup (spec §11.1, §11.3, §17.3,
§17.6)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio
import httpx
import pytest

from flamenco_manager.manager import Manager
from flamenco_manager.storage import jobs as job_store
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.web.app import create_app
from flamenco_protocol.statuses import JobStatus
from tests.support import loop_turns

from .harness import FakeClock, Farm, make_settings, spec

pytestmark = pytest.mark.anyio


async def test_a_silent_awake_worker_times_out_and_its_task_is_requeued(farm: Farm) -> None:
    job = farm.job(spec())
    worker = await farm.register()
    task_id = (await farm.fetch(worker)).json()["_id"]
    farm.clock.advance(seconds=59)
    assert farm.manager.housekeeping.check_timeouts() == (0, 0)
    farm.clock.advance(seconds=2)
    assert farm.manager.housekeeping.check_timeouts() == (0, 1)
    record = farm.worker(worker)
    assert (record.status, record.status_requested) == ("timeout", "awake")
    task = farm.task(task_id)
    assert task.status == "claimed-by-manager"
    assert "timed out" in task.activity
    assert farm.job_status(job) == "queued"
    # When it comes back it wakes up, is asked to ack awake, and gets the task again.
    response = await farm.fetch(worker)
    assert (response.status_code, response.json()) == (423, {"status_requested": "awake"})
    await farm.call(worker, "POST", "/ack-status-change/awake")
    assert (await farm.fetch(worker)).json()["_id"] == task_id


async def test_a_timeout_keeps_a_pending_request(farm: Farm) -> None:
    worker = await farm.register()
    await farm.fetch(worker)
    farm.manager.workers.request_status(worker.id, "asleep", lazy=True)
    farm.clock.advance(minutes=2)
    farm.manager.housekeeping.check_timeouts()
    record = farm.worker(worker)
    assert (record.status, record.status_requested, record.lazy_status_request) == (
        "timeout",
        "asleep",
        True,
    )


@pytest.mark.parametrize("status", ["asleep", "starting", "offline", "testing", "error", ""])
async def test_only_awake_workers_time_out(farm: Farm, status: str) -> None:
    worker = await farm.register()
    with farm.manager.database.transaction() as connection:
        worker_store.update(connection, worker.id, status=status)
    farm.clock.advance(hours=5)
    farm.manager.housekeeping.check_timeouts()
    assert farm.worker(worker).status == status


async def test_an_unpinged_task_is_requeued_not_failed(farm: Farm) -> None:
    job = farm.job(spec("slow"))
    worker = await farm.register("busy")
    task_id = (await farm.fetch(worker)).json()["_id"]
    # The worker keeps polling /task-free endpoints, so it stays awake, but never pings the task.
    for _ in range(11):
        farm.clock.advance(minutes=1)
        await farm.call(worker, "GET", "/status-change")
        farm.manager.housekeeping.check_timeouts()
    task = farm.task(task_id)
    assert task.status == "claimed-by-manager"
    log = farm.manager.logs.read_whole(str(job.id), task_id).decode()
    assert f"Task slow ({task_id}) timed out" in log
    assert "Was handled by worker 10.0.0.5 (busy)" in log


async def test_pings_keep_a_task_alive(farm: Farm) -> None:
    worker = await farm.register()
    farm.job(spec())
    task_id = (await farm.fetch(worker)).json()["_id"]
    for _ in range(30):
        farm.clock.advance(seconds=30)
        await farm.may_i_run(worker, task_id)
        farm.manager.housekeeping.check_timeouts()
    assert farm.task(task_id).status == "active"
    assert farm.worker(worker).status == "awake"


async def test_the_worker_remover(tmp_path: Path, database_url: str) -> None:
    clock = FakeClock()
    manager = Manager(
        make_settings(
            tmp_path,
            worker_cleanup_max_age="1h",
            worker_cleanup_status="offline",
            database=database_url,
        ),
        clock=clock,
    )
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        farm = Farm(manager, client, clock)
        manager.jobs.create_job(name="j", job_type="t", tasks=[spec()])
        leaving = await farm.register("leaving")
        staying = await farm.register("staying")
        task_id = (await farm.fetch(leaving)).json()["_id"]
        await farm.fetch(staying)
        clock.advance(hours=2)
        # Awake workers are kept, however old.
        assert manager.housekeeping.remove_workers() == 0
        with manager.database.transaction() as connection:
            worker_store.update(connection, leaving.id, status="offline")
        assert manager.housekeeping.remove_workers() == 1
        assert [worker.nickname for worker in manager.workers.list()] == ["staying"]
        task = farm.task(task_id)
        assert task.status == "claimed-by-manager"
        assert str(task.worker_id) == leaving.id
        assert "worker is being auto-removed" in task.activity
        # Its credentials no longer work.
        assert (await farm.fetch(leaving)).status_code == 401
    manager.close()


async def test_the_remover_is_off_by_default(farm: Farm) -> None:
    worker = await farm.register()
    with farm.manager.database.transaction() as connection:
        worker_store.update(connection, worker.id, status="offline", last_activity=farm.clock())
    farm.clock.advance(days=300)
    assert farm.manager.housekeeping.remove_workers() == 0


async def test_blocklist_entries_expire(farm: Farm) -> None:
    job = farm.job(spec())
    worker = await farm.register()
    with farm.manager.database.transaction() as connection:
        worker_store.block(connection, worker.id, str(job.id), "sleep", farm.clock())
    farm.clock.advance(days=6)
    assert farm.manager.housekeeping.expire_blocklist() == 0
    farm.clock.advance(days=2)
    assert farm.manager.housekeeping.expire_blocklist() == 1


async def test_the_timeout_checker_runs_every_timeout_check_interval(
    tmp_path: Path, database_url: str
) -> None:
    # On PostgreSQL the loop runs only in the process that holds the leadership.
    manager = Manager(
        make_settings(
            tmp_path,
            timeout_check_initial_delay="0s",
            timeout_check_interval="50ms",
            database=database_url,
        )
    )
    checks: list[object] = []
    manager.housekeeping.check_timeouts = lambda: checks.append(None)  # type: ignore[method-assign]
    with anyio.move_on_after(0.4):
        await manager.run_loops()
    manager.close()
    assert len(checks) >= 4  # the default period (1 min) would give one


async def test_shaman_garbage_collection_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    # A sweep walks the whole store: on the event loop, no worker would be answered meanwhile.
    blobs = 6000
    manager = Manager(make_settings(tmp_path))
    assert manager.shaman is not None
    stored = manager.settings.shaman_store_dir / "stored"
    old = time.time() - manager.settings.shaman_garbage_collect_max_age.total_seconds() - 3600
    original = tmp_path / "blob"
    original.write_bytes(b"abc")
    os.utime(original, (old, old))
    for number in range(blobs):
        # Hard links of one old file (quicker to make than files), under a hundred names per
        # directory (fewer directories to create): as many stored files to sweep.
        checksum = hashlib.sha256(str(number // 100).encode()).hexdigest()
        blob = stored / checksum[:2] / checksum[2:] / f"{number % 100 + 1}.blob"
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.link(original, blob)
    async with loop_turns(0.005) as seen:
        report = await manager.collect_shaman_garbage()
    manager.close()

    assert report is not None
    assert len(report.deleted) == blobs
    assert not any(stored.rglob("*.blob"))
    # The loop went on turning while the sweep ran (on the loop, it would not turn at all).
    # How often depends on what else the process does (in a whole test session one pause took
    # 0.3 s of a 0.6 s sweep): a few turns are the proof.
    assert len(seen.turns) >= 3, (len(seen.turns), seen.seconds)


async def test_without_a_shaman_there_is_no_garbage_to_collect(tmp_path: Path) -> None:
    manager = Manager(make_settings(tmp_path, shaman_enabled=False))
    assert await manager.collect_shaman_garbage() is None
    manager.close()


async def test_finished_jobs_unchanged_for_job_cleanup_max_age_are_deleted(
    tmp_path: Path, database_url: str
) -> None:
    clock = FakeClock()
    manager = Manager(
        make_settings(tmp_path, job_cleanup_max_age="336h", database=database_url), clock=clock
    )
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        farm = Farm(manager, client, clock)
        worker = await farm.register()
        completed = farm.job(spec(), name="completed")
        task_id = (await farm.fetch(worker)).json()["_id"]
        await farm.update(worker, task_id, task_status="completed", log="rendered")
        canceled = farm.job(spec(), name="canceled")
        manager.jobs.request_status(str(canceled.id), "cancel-requested")
        farm.job(spec(), name="queued")
        farm.job(spec(), name="paused", start_paused=True)
        clock.advance(days=7)
        recent = farm.job(spec(), name="canceled recently")
        manager.jobs.request_status(str(recent.id), "cancel-requested")
        clock.advance(days=7)
        assert await manager.housekeeping.delete_finished_jobs() == 0  # 14 days to the second
        clock.advance(seconds=1)

        assert await manager.housekeeping.delete_finished_jobs() == 2
        left = {summary.job.name for summary in manager.jobs.page(limit=10).jobs}
        assert left == {"queued", "paused", "canceled recently"}
        assert not manager.logs.job_dir(str(completed.id)).exists()
        assert farm.task(task_id) is None
    manager.close()


async def test_job_cleanup_is_off_by_default(farm: Farm) -> None:
    job = farm.job(spec())
    farm.manager.jobs.request_status(str(job.id), "cancel-requested")
    farm.clock.advance(days=3000)
    assert await farm.manager.housekeeping.delete_finished_jobs() == 0
    assert farm.job_status(job) == "canceled"


async def test_job_cleanup_leaves_a_job_requeued_or_still_stopping_a_task(farm: Farm) -> None:
    requeued, stopping = farm.job(spec(), name="requeued"), farm.job(spec(), name="stopping")
    worker = await farm.register()
    farm.manager.jobs.request_status(str(requeued.id), "cancel-requested")
    assert (await farm.fetch(worker)).json()["job"] == str(stopping.id)
    with farm.manager.database.transaction() as connection:
        # Failed by its other tasks while this one still runs.
        job_store.set_status(connection, str(stopping.id), JobStatus.FAILED, "", farm.clock())
    farm.clock.advance(days=30)
    before = farm.clock()
    assert farm.manager.jobs.finished_before(before) == [str(requeued.id), str(stopping.id)]
    farm.manager.jobs.request_status(str(requeued.id), "requeued")  # after the list was made

    assert not farm.manager.jobs.delete_if_finished(str(requeued.id), before)
    assert not farm.manager.jobs.delete_if_finished(str(stopping.id), before)
    assert (farm.job_status(requeued), farm.job_status(stopping)) == ("queued", "failed")
