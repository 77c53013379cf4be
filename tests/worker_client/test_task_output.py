"""What commands write reaches the manager: undecodable text, huge lines, refused updates."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from flamenco_worker_client import TaskContext
from flamenco_worker_client.reporter import MAX_LINE_BYTES
from flamenco_worker_client.worker import Worker

from .fake_manager import FakeManager, task
from .helpers import make_worker

TASK_A = "5f1e0c0a2b3c4d5e6f70a101"
TASK_B = "5f1e0c0a2b3c4d5e6f70a102"
TASK_C = "5f1e0c0a2b3c4d5e6f70a103"


def _stop_after(manager: FakeManager, worker: Worker, last_task: str) -> None:
    """Shut ``worker`` down once the manager has the final status of ``last_task``."""

    def hook(request: object) -> None:
        for r in manager.calls("update_task"):
            final = r.body.get("task_status") in ("completed", "failed")
            if r.status == 204 and last_task in r.path and final:
                worker.request_shutdown()

    manager.on_request = hook  # type: ignore[assignment]


def _task_log(manager: FakeManager, task_id: str) -> str:
    return "\n".join(
        r.body.get("log", "")
        for r in manager.calls("update_task")
        if r.status == 204 and task_id in r.path
    )


@pytest.mark.anyio
async def test_undecodable_file_names_and_error_messages_reach_the_log_readable(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "renders"
    folder.mkdir()
    name = os.fsdecode(b"frame-\xff.png")  # "frame-\udcff.png": not valid UTF-8
    if sys.platform == "darwin":
        pytest.skip("macOS refuses file names that are not UTF-8")
    (folder / name).touch()
    manager = FakeManager()
    manager.tasks.extend(
        [
            task(TASK_A, ("list", {})),
            task(TASK_B, ("boom", {})),
            task(TASK_C, ("echo", {"message": "still alive"})),
        ]
    )
    worker = make_worker(manager, tmp_path / "data", ("sleep",))

    @worker.command("list")
    async def list_files(ctx: TaskContext) -> None:
        for path in folder.iterdir():
            ctx.log(f"found {path.name}")

    @worker.command("boom")
    async def boom(ctx: TaskContext) -> None:
        raise ValueError("kaboom \udcff")

    _stop_after(manager, worker, TASK_C)
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    assert "found frame-\\xff.png" in _task_log(manager, TASK_A)
    finals = {
        r.path.split("/")[2]: (r.body["task_status"], r.body["activity"])
        for r in manager.calls("update_task")
        if r.body.get("task_status") in ("completed", "failed")
    }
    assert finals[TASK_A][0] == "completed"
    assert finals[TASK_B] == (
        "failed",
        f"boom.(task_id={TASK_B}, command_idx=0): Error executing: ValueError: kaboom \\xff",
    )
    assert "ValueError: kaboom \\xff" in _task_log(manager, TASK_B)
    assert finals[TASK_C][0] == "completed"
    assert manager.requests[-1].endpoint == "sign_off"


@pytest.mark.anyio
async def test_an_update_the_manager_finds_too_large_is_dropped_not_retried(
    tmp_path: Path,
) -> None:
    manager = FakeManager()
    manager.max_body = 4000  # task A's update with its log is larger: refused every time
    manager.tasks.extend(
        [task(TASK_A, ("echo", {"message": "a" * 5000})), task(TASK_B, ("echo", {"message": "b"}))]
    )
    worker = make_worker(manager, tmp_path)
    _stop_after(manager, worker, TASK_B)
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    statuses = [r.status for r in manager.calls("update_task")]
    assert statuses.count(413) == 1  # sent once, then dropped
    assert worker.tasks_run == 2


@pytest.mark.anyio
async def test_huge_output_is_cut_and_split_below_the_managers_limit(tmp_path: Path) -> None:
    manager = FakeManager()  # answers 413 above 32 MiB, as the real manager does
    manager.tasks.extend(
        [task(TASK_A, ("flood", {})), task(TASK_B, ("echo", {"message": "after"}))]
    )
    worker = make_worker(manager, tmp_path, ("sleep",))
    long_line = 34_000_000

    @worker.command("flood")
    async def flood(ctx: TaskContext) -> None:
        for _ in range(40):
            ctx.log("y" * 1_000_000)  # 40 MB in lines below the per-line cap
        ctx.log("x" * long_line)

    _stop_after(manager, worker, TASK_B)
    assert await asyncio.wait_for(worker.run_async(), 30) == 0
    updates = manager.calls("update_task")
    assert [r.status for r in updates] == [204] * len(updates)
    log = _task_log(manager, TASK_A)
    assert log.count("y" * 1_000_000) == 40
    assert "x" * MAX_LINE_BYTES + f" [... {long_line - MAX_LINE_BYTES} more bytes cut]" in log
    assert "after" in _task_log(manager, TASK_B)


@pytest.mark.anyio
async def test_a_subprocess_line_over_the_managers_limit_is_cut(tmp_path: Path) -> None:
    manager = FakeManager()
    size = 34_000_000
    script = f"import sys; sys.stdout.write('z' * {size} + '\\\\ndone\\\\n')"
    manager.tasks.extend(
        [
            task(TASK_A, ("exec", {"cmd": f'{sys.executable} -c "{script}"'})),
            task(TASK_B, ("echo", {"message": "after"})),
        ]
    )
    worker = make_worker(manager, tmp_path)
    _stop_after(manager, worker, TASK_B)
    # About 1 s; splitting the whole pending buffer at each read (quadratic) took over 60 s.
    assert await asyncio.wait_for(worker.run_async(), 30) == 0
    log = _task_log(manager, TASK_A)
    (line,) = [line for line in log.splitlines() if "zzz" in line]
    kept = line.count("z")
    assert line.endswith(f"z [... {size - kept} more bytes cut]")
    assert len(line.encode()) <= MAX_LINE_BYTES
    assert "> done" in log
    assert "after" in _task_log(manager, TASK_B)
