"""The runnable examples in ``examples/``, run as a user would, against a real manager."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, serve_command, wait_until_serving

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A manager under uvicorn on loopback, its URL, a user token and its data directory.

    On SQLite, as a reader of the examples starts: they use the HTTP APIs only, which the API
    tests run on both backends.
    """
    data = tmp_path_factory.mktemp("manager")
    token = (
        _run(
            "-m", "flamenco_manager.cli", "token", "create", "--data-dir", str(data), "--name", "ex"
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    server = subprocess.Popen(
        serve_command(data, port, "--log-level", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(url + "api/farm", server)
    yield url, token, data
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def test_submit_a_job_and_run_it_with_the_custom_worker(
    manager: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, token, data = manager
    submitter = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "submit_job.py"), url, token],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers = []
    try:
        # One task at a time per worker (--single), as many runs as the job has tasks.
        for run in range(3):
            worker = _run(
                str(EXAMPLES / "custom_worker.py"),
                url,
                str(tmp_path / f"worker-{run}"),
                "--single",
            )
            workers.append(worker)
            assert worker.returncode == 0, worker.stdout + worker.stderr
        output, _ = submitter.communicate(timeout=120)
    finally:
        if submitter.poll() is None:
            submitter.kill()
    assert submitter.returncode == 0, output
    assert "greet-alice: completed" in output
    assert "summary: completed" in output
    logs = "".join(path.read_text() for path in (data / "task-logs").rglob("task-*.txt"))
    assert logs.count("Hello, Alice!") == 2
    assert "Hello, Bob!" in logs
    assert "everyone was greeted" in logs


def test_upload_a_directory_to_shaman(manager: tuple[str, str, Path], tmp_path: Path) -> None:
    url, token, data = manager
    shot = tmp_path / "shot_010"
    (shot / "textures").mkdir(parents=True)
    (shot / "shot_010.blend").write_bytes(b"BLENDER-v300" + bytes(range(256)) * 40)
    (shot / "textures" / "wood.png").write_bytes(b"\x89PNG" + b"grain" * 1000)
    first = _run(str(EXAMPLES / "shaman_upload.py"), str(shot), url, token, "shot_010")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 files" in first.stdout
    assert "2 uploaded" in first.stdout
    checkout = data / "jobs" / "10" / "shot_010"
    assert (checkout / "textures" / "wood.png").read_bytes() == (
        shot / "textures" / "wood.png"
    ).read_bytes()
    # A second checkout of the same files uploads nothing.
    second = _run(str(EXAMPLES / "shaman_upload.py"), str(shot), url, token, "shot_010_v2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 uploaded" in second.stdout
