"""The custom worker of docs/worker-client.md, run as written against the fake manager."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_manager import FakeManager, ServedManager, task

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "worker-client.md"
TASK_ID = "5f1e0c0a2b3c4d5e6f70a101"


def example_source() -> str:
    section = GUIDE.read_text().split("## A custom worker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the guide shows the custom worker in a python block"
    return match.group(1)


def test_the_custom_worker_is_shorter_than_30_lines() -> None:
    assert len(example_source().splitlines()) < 30


@pytest.mark.slow
def test_the_custom_worker_runs_its_command(tmp_path: Path) -> None:
    script = tmp_path / "greeter.py"
    script.write_text(example_source())
    manager = FakeManager()
    manager.script(
        "fetch_task",
        (200, task(TASK_ID, ("greet", {"name": "Ada", "times": 3}))),
        (423, {"status_requested": "shutdown"}),
    )
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLAMENCO_WORKER_DATA_DIR": str(tmp_path / "data"),
    }
    with ServedManager(manager) as served:
        finished = subprocess.run(
            [sys.executable, str(script), served.url],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert finished.returncode == 0, finished.stderr
    updates = [r.body for r in manager.calls("update_task")]
    assert updates[-1]["task_status"] == "completed"
    log = "\n".join(body.get("log", "") for body in updates)
    assert log.count("Hello, Ada!") == 3
    register = manager.calls("register_worker")[0].body
    assert register["nickname"] == "greeter"
    assert register["supported_task_types"] == ["greeting", "sleep"]
    assert manager.requests[-1].endpoint == "sign_off"
