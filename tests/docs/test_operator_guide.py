"""The operator guide's commands, run as the guide gives them, from a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, wait_until_serving

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operators" / "install.md"
pytestmark = pytest.mark.slow


def _section_commands(title: str) -> str:
    """The first shell block under the heading ``title`` in the install guide."""
    text = GUIDE.read_text()
    section = text.split(f"## {title}\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no shell block under {title!r}"
    return match[1]


def test_the_first_job_section_runs_a_job_to_completion(tmp_path: Path) -> None:
    # SQLite only: the guide's section is "On one machine, with SQLite", run word for word.
    assert "flamenco-manager serve" in _section_commands("On one machine, with SQLite")
    commands = _section_commands("Your first job")
    # The guide uses the default port; a test takes a free one, changing nothing else.
    port = free_port()
    commands = commands.replace("localhost:8080", f"127.0.0.1:{port}")
    environment = {**os.environ, "HOME": str(tmp_path)}
    bin_dir = Path(sys.executable).parent
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    server = subprocess.Popen(
        ["flamenco-manager", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", server)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    listing = result.stdout.strip().splitlines()
    assert any("first" in line and "completed" in line for line in listing), result.stdout
    assert (tmp_path / "flamenco-data" / "flamenco-manager.sqlite").exists()
