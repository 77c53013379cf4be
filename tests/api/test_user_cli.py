"""The user CLI: flags into requests, and a whole session against a manager under uvicorn."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import httpx
import pytest

from flamenco_manager.cli import main
from flamenco_manager.user_cli import BROKEN_PIPE_STATUS, _submission, parse_setting, run
from tests.manager.harness import BACKENDS, database_server, fresh_database
from tests.support import free_port, serve_command


def test_settings_from_flags_are_json_when_they_can_be() -> None:
    assert parse_setting("chunk_size=3") == ("chunk_size", 3)
    assert parse_setting("frames=1-10") == ("frames", "1-10")
    assert parse_setting("render=true") == ("render", True)
    assert parse_setting("cmd=echo a=b") == ("cmd", "echo a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_setting("nothing")


def test_settings_of_text_stay_text() -> None:
    assert parse_setting("frames=5", strings={"frames"}) == ("frames", "5")
    assert parse_setting("frames=[1]", strings={"frames"}) == ("frames", "[1]")
    assert parse_setting("chunk_size=5", strings={"frames"}) == ("chunk_size", 5)


def test_flags_override_the_file(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"name": "a", "job_type": "sleep", "settings": {"frames": "1", "chunk_size": 1}})
    )
    args = argparse.Namespace(
        file=job,
        type="exec-command",
        name=None,
        priority=80,
        paused=True,
        settings=["frames=2-3"],
    )
    assert _submission(args) == {
        "name": "a",
        "type": "exec-command",
        "priority": 80,
        "start_paused": True,
        "settings": {"frames": "2-3", "chunk_size": 1},
    }


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A manager under uvicorn on loopback, on each backend: its URL and a user token made
    with ``token create`` before it started."""
    with fresh_database(database_server(request.param)) as database:
        yield from _serve(tmp_path_factory.mktemp("served") / "data", database)


_MANAGER_CLI = (sys.executable, "-m", "flamenco_manager.cli")


def _serve(data: Path, database: str) -> Iterator[tuple[str, str]]:
    port = free_port()
    created = subprocess.run(
        [*_MANAGER_CLI, "token", "create", "--data-dir", str(data), "--name", "operator"],
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.splitlines()[-1]
    process = subprocess.Popen(
        serve_command(data, port, *(["--database", database] if database else [])),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/api/openapi.json", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url, token
    finally:
        process.terminate()
        process.wait(10)


def _cli(
    served: tuple[str, str], *argv: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    url, token = served
    status = main([*argv, "--url", url, "--token", token])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.slow
def test_a_session_with_the_cli(
    served: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, token = served
    # The login link works in a browser: it sets the cookie.
    login = httpx.get(f"{url}/login", params={"token": token}, follow_redirects=False)
    assert login.status_code == 303
    assert "jwtToken=" in login.headers["set-cookie"]

    status, out, _ = _cli(served, "job", "types", capsys=capsys)
    assert status == 0
    assert "sleep: frames*" in out
    status, out, _ = _cli(
        served,
        "job",
        "submit",
        "--type",
        "sleep",
        "--name",
        "cli job",
        "--set",
        "frames=1-4",
        "--set",
        "chunk_size=2",
        "--set",
        "time_in_seconds=1",
        capsys=capsys,
    )
    assert status == 0, out
    job_id = re.search(r"Submitted job ([0-9a-f]{24}) \(queued\)", out)[1]  # type: ignore[index]
    status, out, _ = _cli(served, "job", "list", capsys=capsys)
    assert job_id in out
    assert "2 queued" in out
    assert "cli job" in out
    status, out, _ = _cli(served, "job", "show", job_id, capsys=capsys)
    assert "sleep-1,2" in out
    assert "sleep-3,4" in out
    status, out, _ = _cli(served, "job", "pause", job_id, "--json", capsys=capsys)
    assert json.loads(out)["status"] == "paused"
    status, _, err = _cli(served, "job", "pause", job_id, capsys=capsys)
    assert status == 1
    assert "409" in err
    assert "not allowed" in err
    status, out, _ = _cli(served, "job", "resume", job_id, capsys=capsys)
    assert f"Job {job_id} is queued." in out
    status, out, _ = _cli(served, "job", "cancel", job_id, capsys=capsys)
    assert "canceled" in out
    status, out, _ = _cli(served, "job", "delete-finished", "--older-than", "1h", capsys=capsys)
    assert (status, job_id in _cli(served, "job", "list", capsys=capsys)[1]) == (0, True)
    assert re.match(r"Deleted 0 job\(s\) finished before 20\d\d-", out), out
    later = "2999-01-01T00:00:00Z"
    status, out, _ = _cli(
        served, "job", "delete-finished", "--before", later, "--json", capsys=capsys
    )
    assert json.loads(out) == {"deleted": [job_id]}
    assert job_id not in _cli(served, "job", "list", capsys=capsys)[1]
    status, _, err = _cli(
        served, "job", "delete-finished", "--older-than", "a while", capsys=capsys
    )
    assert status == 1
    assert "--older-than: not a duration (like 10m, 1h30m, 500ms): 'a while'" in err
    status, _, err = _cli(served, "job", "delete-finished", "--older-than=-1h", capsys=capsys)
    assert status == 1
    assert "--older-than: a time before now, not after it: '-1h'" in err
    status, _, err = _cli(served, "job", "submit", "--type", "sleep", capsys=capsys)
    assert status == 1
    assert "settings.frames" in err

    registration = httpx.post(
        f"{url}/register-worker",
        json={
            "secret": "s",
            "platform": "linux",
            "supported_task_types": ["sleep"],
            "nickname": "cli-w",
        },
    ).json()
    status, out, _ = _cli(served, "worker", "list", capsys=capsys)
    assert "cli-w" in out
    status, out, _ = _cli(served, "worker", "sleep", registration["_id"], "--lazy", capsys=capsys)
    assert "asleep after its current task" in out
    status, out, _ = _cli(served, "worker", "show", registration["_id"], "--json", capsys=capsys)
    assert json.loads(out)["status_requested"] == "asleep"
    status, out, _ = _cli(served, "farm", capsys=capsys)
    assert "Farm:" in out

    assert main(["job", "list", "--url", url, "--token", "bad"]) == 1
    err = capsys.readouterr().err
    assert "401" in err


@pytest.mark.slow
def test_the_event_stream_over_http(served: tuple[str, str]) -> None:
    url, token = served
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/events", params={"types": "job"}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith(": flamenco events")
        response = client.post(
            "/api/jobs",
            json={
                "name": "streamed",
                "type": "sleep",
                "settings": {"frames": "1", "chunk_size": 1, "time_in_seconds": 0},
            },
        )
        job_id = response.json()["_id"]
        for line in lines:
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event["id"] == job_id:
                    assert event["status"] == "queued"
                    break


class _ClosedPipe(StringIO):
    """Standard output whose reader has gone away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("as_json", [False, True])
def test_a_closed_pipe_on_standard_output_ends_quietly(as_json: bool) -> None:
    farm = {"state": "idle", "workers": {"awake": 1}, "jobs": {}, "tasks": {}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=farm))
    args = argparse.Namespace(command="farm", url="http://manager", token="t", json=as_json)
    err = StringIO()
    assert run(args, out=_ClosedPipe(), err=err, transport=transport) == BROKEN_PIPE_STATUS
    assert err.getvalue() == ""


@pytest.mark.slow
def test_piping_a_table_into_a_reader_that_stops_leaves_no_traceback(
    served: tuple[str, str],
) -> None:
    url, token = served
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` that has already exited
    try:
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "flamenco_manager.cli",
                "job",
                "types",
                "--url",
                url,
                "--token",
                token,
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert process.stderr == ""
    assert process.returncode == BROKEN_PIPE_STATUS


def test_an_unreachable_manager_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["farm", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"])
    assert status == 1
    assert "cannot reach the manager" in capsys.readouterr().err


def test_the_environment_gives_url_and_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("FLAMENCO_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("FLAMENCO_TOKEN", "t")
    assert main(["worker", "list"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert os.environ["FLAMENCO_TOKEN"] == "t"


@pytest.mark.parametrize(
    "argv",
    [
        ["job", "delete", "../workers/" + "a" * 24],
        ["job", "show", "a" * 24 + "?x=1"],
        ["task", "requeue", "not-an-id"],
        ["worker", "forget", "a" * 23],
    ],
)
def test_an_id_that_is_not_one_is_refused_before_any_request(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # IDs went into the request's path as given: "job delete ../workers/ID" forgot a worker.
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"])
    assert exit.value.code == 2
    assert "not a 24-character hexadecimal ID" in capsys.readouterr().err


@pytest.mark.parametrize(
    "token", ["Token for 'ci', valid for 1 day:\neyJhbGciOi.eyJzdWIi.c2ln", "tökén"]
)
def test_a_token_that_is_not_one_is_refused_without_being_shown(
    token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The whole of `token create`'s output in FLAMENCO_TOKEN: httpx's error quoted the header,
    # token and all; a non-ASCII one was a traceback.
    assert main(["farm", "--url", f"http://127.0.0.1:{free_port()}", "--token", token]) == 1
    said = capsys.readouterr().err
    assert "take only its last line" in said
    assert "eyJ" not in said
    assert "Traceback" not in said


@pytest.mark.slow
def test_a_single_frame_from_the_command_line_is_a_frame_range(
    served: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # `--set frames=5` was sent as the number 5, and the manager answered "frames: must be a
    # string, not 5": the user had to know to write '"5"'.
    status, out, err = _cli(
        served,
        "job",
        "submit",
        "--type",
        "sleep",
        "--set",
        "frames=5",
        "--set",
        "chunk_size=1",
        "--set",
        "time_in_seconds=1",
        "--json",
        capsys=capsys,
    )
    assert status == 0, err
    job = json.loads(out)
    assert job["settings"]["frames"] == "5"
    assert job["settings"]["chunk_size"] == 1
