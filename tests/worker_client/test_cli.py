"""The flamenco-worker command: config file, flags, --single, signals, console output."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flamenco_protocol import Task
from flamenco_worker_client.cli import (
    ConfigError,
    ConsoleDisplay,
    _parser,
    build_worker,
    load_config,
    main,
)
from flamenco_worker_client.events import (
    StateChanged,
    TaskFinished,
    TaskProgress,
    TaskStarted,
    WorkerState,
)
from flamenco_worker_client.worker import EXIT_DATA_DIR_IN_USE, EXIT_FORCED

from .fake_manager import FakeManager, ServedManager, task

ROOT = Path(__file__).resolve().parents[2]
TASK_ID = "5f1e0c0a2b3c4d5e6f70a101"


def test_config_file_keys_of_the_real_worker_are_read(tmp_path: Path) -> None:
    config = tmp_path / "flamenco-worker.cfg"
    config.write_text(
        "[flamenco-worker]\n"
        "manager_url = http://manager:8083/\n"
        "task_types = sleep  blender-render\n"
        "worker_registration_secret = psk\n"
        "may_i_run_interval_seconds = 2\n"
        "push_log_max_entries = 2000\n"
        "data_dir = ${manager_url}\n"
        "unknown_key = ignored\n"
        "[loggers]\nkeys = root\n"
    )
    loaded = load_config(config)
    assert loaded.manager_url == "http://manager:8083/"
    assert loaded.task_types == ("sleep", "blender-render")
    assert loaded.registration_secret == "psk"
    assert loaded.timings().may_i_run_interval == 2.0
    assert loaded.timings().report.log_max_entries == 2000
    assert str(loaded.data_dir) == "http:/manager:8083"


def test_config_file_sets_the_waits_the_real_worker_hard_codes(tmp_path: Path) -> None:
    config = tmp_path / "fast.cfg"
    config.write_text(
        "[flamenco-worker]\n"
        "fetch_after_no_task_seconds = 0.5\n"
        "fetch_after_task_seconds = 0.2\n"
        "fetch_after_error_seconds = 1\n"
        "fetch_after_wake_seconds = 0.25\n"
        "start_retry_seconds = 2\n"
        "update_retry_seconds = 0.3\n"
        "status_poll_interval_seconds = 4\n"
    )
    timings = load_config(config).timings()
    assert (
        timings.fetch_after_no_task,
        timings.fetch_after_task,
        timings.fetch_after_error,
        timings.fetch_after_wake,
        timings.start_retry,
        timings.update_retry,
        timings.status_poll_interval,
    ) == (0.5, 0.2, 1.0, 0.25, 2.0, 0.3, 4.0)
    defaults = load_config(None).timings()
    assert (defaults.fetch_after_no_task, defaults.fetch_after_task, defaults.start_retry) == (
        5.0,
        3.0,
        30.0,
    )


@pytest.mark.parametrize(
    "content",
    [
        "[flamenco-worker]\nmay_i_run_interval_seconds = often\n",
        "[flamenco-worker]\nfetch_after_task_seconds = -1\n",
        "[flamenco-worker]\nupdate_retry_seconds = nan\n",
        "not an ini file",
        "[flamenco-worker]\nworker_registration_secret = pa$word\n",
    ],
)
def test_a_bad_config_file_is_a_clear_error(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.cfg"
    config.write_text(content)
    with pytest.raises(ConfigError):
        load_config(config)
    assert main(["-c", str(config), "-m", "http://m:1/", "-d", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flamenco-worker: ")
    assert str(config) in err


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://127.0.0.1:abc/"])
def test_a_bad_port_is_a_clear_error(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--manager", url, "--data-dir", str(tmp_path)]) == 2
    assert f"flamenco-worker: bad port in manager URL {url!r}" in capsys.readouterr().err


def test_an_unusable_data_dir_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").touch()
    data_dir = tmp_path / "afile" / "sub"
    assert main(["--manager", "http://127.0.0.1:1/", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert f"flamenco-worker: cannot use data directory {data_dir}: " in err
    assert "Traceback" not in err


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "w.cfg"
    config.write_text("[flamenco-worker]\nmanager_url = http://a:1/\nnickname = from-file\n")
    arguments = _parser().parse_args(
        ["-c", str(config), "--manager", "http://b:2/", "--task-types", "x y", "-d", "dd", "-1"]
    )
    worker = build_worker(arguments)
    assert worker.manager_url == "http://b:2/"
    assert worker.task_types == ("x", "y")
    assert worker.nickname == "from-file"
    assert worker.data_dir == Path("dd")
    assert worker.single
    testing = build_worker(_parser().parse_args(["-c", str(config), "--test"]))
    assert testing.task_types == ("test-blender-render",)
    assert testing.test_mode


def test_without_a_manager_url_main_explains_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--data-dir", str(tmp_path)]) == 2
    assert "no manager URL" in capsys.readouterr().err
    assert main(["--manager", "ftp://x/", "--data-dir", str(tmp_path)]) == 2


def test_console_display_without_a_terminal_writes_a_line_per_tenth() -> None:
    stream = io.StringIO()
    display = ConsoleDisplay(stream)
    display(StateChanged(WorkerState.AWAKE))
    display(TaskStarted(Task(id=TASK_ID, name="frames 1-10")))  # type: ignore[arg-type]
    for percentage in (0, 3, 12, 15, 100):
        display(TaskProgress(TASK_ID, "rendering", 0, 1, percentage))
    display(TaskFinished(TASK_ID, None, "returned"))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "worker is awake"
    assert lines[1] == f"task {TASK_ID} started: frames 1-10"
    assert [line[:6] for line in lines[2:5]] == ["[  0%]", "[ 12%]", "[100%]"]
    assert lines[-1] == f"task {TASK_ID} stopped: returned"


def _cli(url: str, data_dir: Path, *flags: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "flamenco_worker_client.cli", "--manager", url,
         "--data-dir", str(data_dir), "--task-types", "sleep", *flags],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=data_dir.parent,
    )  # fmt: skip


def test_single_runs_one_task_then_signs_off(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.tasks.append(task(TASK_ID, ("sleep", {"time_in_seconds": 0.1})))
    with ServedManager(manager) as served:
        process = _cli(served.url, tmp_path / "data", "--single", "--nickname", "cli")
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    endpoints = [r.endpoint for r in manager.requests]
    assert endpoints[:2] == ["register_worker", "fetch_task"]
    assert endpoints[-1] == "sign_off"
    assert manager.calls("update_task")[-1].body["task_status"] == "completed"
    assert f"task {TASK_ID} completed: Task completed" in err


def _wait_for_a_fetch(manager: FakeManager) -> None:
    deadline = time.monotonic() + 30
    while not manager.calls("fetch_task"):
        assert time.monotonic() < deadline, "the worker never asked for a task"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_worker_cleanly(tmp_path: Path, signum: int) -> None:
    manager = FakeManager()
    with ServedManager(manager) as served:
        process = _cli(served.url, tmp_path / "data")
        _wait_for_a_fetch(manager)
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert manager.requests[-1].endpoint == "sign_off"
    assert "Traceback" not in err


def test_a_second_worker_on_the_same_data_dir_exits_and_the_first_runs_on(
    tmp_path: Path,
) -> None:
    manager = FakeManager()
    with ServedManager(manager) as served:
        first = _cli(served.url, tmp_path / "data")
        _wait_for_a_fetch(manager)
        second = _cli(served.url, tmp_path / "data")
        _, second_err = second.communicate(timeout=30)
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=30)
    assert second.returncode == EXIT_DATA_DIR_IN_USE == 4
    assert f"data directory {tmp_path / 'data'} is in use by another worker (pid {first.pid})" in (
        second_err
    )
    assert "Traceback" not in second_err
    assert first.returncode == 0, first_err
    assert [r.endpoint for r in manager.requests].count("register_worker") == 1
    assert [r.endpoint for r in manager.requests].count("sign_off") == 1


_STUBBORN_WORKER = """
import asyncio, sys
from flamenco_worker_client import TaskContext, Worker

worker = Worker(sys.argv[1], task_types=["sleep"], data_dir=sys.argv[2], nickname="stubborn")


@worker.command("sleep")
async def sleep(ctx: TaskContext, time_in_seconds: float = 0) -> None:
    ctx.log("not stopping for anybody")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # what the docs ask command authors not to do


sys.exit(worker.run())
"""


def test_a_second_stop_signal_ends_a_stop_a_stubborn_command_holds(tmp_path: Path) -> None:
    # A command swallowing its cancellation kept the worker from stopping: every further
    # SIGTERM or SIGINT was ignored, and only SIGKILL ended it.
    script = tmp_path / "stubborn.py"
    script.write_text(_STUBBORN_WORKER)
    manager = FakeManager()
    manager.tasks.append(task(TASK_ID, ("sleep", {"time_in_seconds": 60})))
    with ServedManager(manager) as served:
        process = subprocess.Popen(
            [sys.executable, str(script), served.url, str(tmp_path / "data")],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not manager.calls("update_task"):
                assert time.monotonic() < deadline, "the worker never started the task"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                process.wait(timeout=2)  # the command holds the stop
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()  # whatever happened above, no worker is left running
            process.wait()
    assert process.returncode == EXIT_FORCED == 5, err
    assert "stop signal while stopping: exiting now, without signing off" in err
    assert "sign_off" not in [request.endpoint for request in manager.requests]
