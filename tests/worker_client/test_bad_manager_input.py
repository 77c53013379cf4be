"""Garbage from the manager is logged and survived, never a crash of the runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .fake_manager import FakeManager, task
from .helpers import make_worker

TASK_A = "5f1e0c0a2b3c4d5e6f70a101"


@pytest.mark.anyio
async def test_garbage_answers_are_survived_and_an_unreadable_task_is_failed(
    tmp_path: Path,
) -> None:
    manager = FakeManager()
    manager.script(
        "fetch_task",
        (200, {"_id": TASK_A, "commands": "not a list"}),
        (200, "not json at all"),
        (423, {"status_requested": 5}),
        (200, task(TASK_A, ("echo", {"message": 5}))),
        (200, task(TASK_A, ("no_such_command", {}))),
        (423, {"status_requested": "shutdown"}),
    )
    manager.script("may_i_run", *[(200, "garbage")] * 50)
    worker = make_worker(manager, tmp_path)
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    updates = [r.body for r in manager.calls("update_task")]
    failures = [u["activity"] for u in updates if u.get("task_status") == "failed"]
    assert len(failures) == 3
    assert failures[0].startswith("Worker cannot read this task: ")
    assert "$.commands" in failures[0]
    assert "Invalid settings: 'message' must be a string, not the number 5" in failures[1]
    assert "unknown command name 'no_such_command'" in failures[2]
    assert manager.requests[-1].endpoint == "sign_off"
