"""Settings from defaults, TOML, environment and flags; the flamenco-manager command."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_manager.cli import shown_database, url_host
from flamenco_manager.config import (
    ConfigError,
    Settings,
    format_duration,
    load_settings,
    parse_duration,
)
from flamenco_manager.log_format import StructuredFormatter


def test_zero_configuration_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path("flamenco-data")
    assert settings.listen_host_port == ("0.0.0.0", 8080)
    assert settings.database_url == "sqlite:///flamenco-data/flamenco-manager.sqlite"
    assert settings.active_task_timeout_interval == timedelta(minutes=10)
    assert settings.active_worker_timeout_interval == timedelta(minutes=1)
    assert (settings.blacklist_threshold, settings.task_fail_after_softfail_count) == (3, 3)
    assert settings.logs_dir == Path("flamenco-data/task-logs")
    assert not settings.no_auth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("336h", timedelta(days=14)),
        ("500ms", timedelta(milliseconds=500)),
        ("-1s", timedelta(seconds=-1)),
        ("90", timedelta(seconds=90)),
        ("0", timedelta(0)),
        (2.5, timedelta(seconds=2.5)),
    ],
)
def test_go_durations(text: str | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "ten minutes", "10x", "m", "1h 30m", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_toml_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "manager.toml"
    config.write_text(
        'listen = "127.0.0.1:9000"\n'
        'active_task_timeout_interval = "20m"\n'
        "blacklist_threshold = 5\n"
        "[shaman]\nenabled = false\n"
        '[shaman.garbage_collect]\nperiod = "1h"\n'
        '[variables.blender]\ndirection = "oneway"\n'
        'values = [{platform = "linux", value = "/opt/blender"}]\n'
    )
    settings = load_settings(
        config_file=config,
        environ={"FLAMENCO_BLACKLIST_THRESHOLD": "7", "FLAMENCO_LISTEN": ":9100", "HOME": "/x"},
        overrides={"listen": "127.0.0.1:9200"},
    )
    assert settings.listen == "127.0.0.1:9200"
    assert settings.blacklist_threshold == 7
    assert settings.active_task_timeout_interval == timedelta(minutes=20)
    assert settings.shaman_enabled is False
    assert settings.shaman_garbage_collect_period == timedelta(hours=1)
    assert settings.variables["blender"]["direction"] == "oneway"


def test_the_toml_in_the_data_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "flamenco-manager.toml").write_text('manager_name = "Render Farm"\n')
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    assert settings.manager_name == "Render Farm"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 1\n", "unknown settings colour"),
        ('blacklist_threshold = "many"\n', "not an integer"),
        ('active_task_timeout_interval = "soon"\n', "not a duration"),
        ('timeout_check_interval = "0s"\n', "longer than 0"),
        ("task_log_runs_kept = -2\n", "expected -1"),
        ("listen = \n", "cannot read"),
        # Each of these used to be taken (or to fail later, with a traceback).
        ('timezone = "Mars/Olympus"\n', "timezone: not a time zone"),
        ('shaman_garbage_collect_max_age = "-1h"\n', "max_age: a duration may not be negative"),
        ('active_task_timeout_interval = "-5m"\n', "may not be negative"),
        ("job_cleanup_max_age = inf\n", "job_cleanup_max_age: not a duration this program"),
        ("failed_task_ratio = -3\n", "failed_task_ratio: expected a share from 0 to 1"),
        ("failed_task_ratio = nan\n", "expected a share"),
        ('failed_task_ratio = "x"\n', "failed_task_ratio: not a number"),
        ("blacklist_threshold = -2\n", "blacklist_threshold: expected 1 or more"),
        ("processes = 0\n", "processes: expected 1 or more"),
        ('worker_cleanup_status = "bogus"\n', "not worker statuses: bogus"),
        ("listen = 8080\n", "listen: expected text"),
        ("log_level = 5\n", "log_level: expected text"),
        ('log_level = "loud"\n', "log_level: expected one of debug"),
    ],
)
def test_bad_settings_name_what_is_wrong(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=config, environ={})


def test_listen_must_be_host_and_port() -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        _ = Settings(listen="localhost").listen_host_port


def test_ipv6_addresses_are_read_and_linked_in_brackets() -> None:
    assert Settings(listen="[::1]:8080").listen_host_port == ("::1", 8080)
    assert url_host("::1") == "[::1]"  # the printed link was http://::1:8080/
    assert url_host("0.0.0.0") == url_host("::") == "localhost"
    with pytest.raises(ConfigError, match="in brackets"):
        _ = Settings(listen="::1").listen_host_port  # read as host ":" and port 1


def test_the_database_is_logged_without_its_secrets() -> None:
    # Only a password before the "@" was hidden; libpq takes one in the query string too.
    shown = shown_database("postgresql://u:pw@db.farm/flamenco?password=QSECRET&sslmode=require")
    assert shown == "postgresql://u:***@db.farm/flamenco"
    assert shown_database("sqlite:////srv/flamenco/flamenco-manager.sqlite").endswith(".sqlite")


def test_secrets_never_reach_the_log() -> None:
    import logging

    record = logging.makeLogRecord(
        {"msg": "registered", "worker_secret": "hunter2", "authorization": "Basic abc", "n": 1}
    )
    line = StructuredFormatter().format(record)
    assert "hunter2" not in line
    assert "Basic abc" not in line
    assert 'worker_secret="***"' in line
    assert "n=1" in line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamenco_manager.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_serve_help_documents_every_setting(tmp_path: Path) -> None:
    result = _cli("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in (
        "--data-dir",
        "--listen",
        "--database",
        "--active-task-timeout-interval",
        "--worker-registration-secret",
        "--no-auth",
        "FLAMENCO_LISTEN",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize("arguments", [["--expires=-1h"], ["--expires=0s"], ["--name", " "]])
def test_a_token_that_cannot_be_made_is_refused_before_keys_are(
    tmp_path: Path, arguments: list[str]
) -> None:
    # A mistyped lifetime made a new key pair in the data directory, then was refused.
    result = _cli(
        "token",
        "create",
        "--data-dir",
        str(tmp_path / "data"),
        "--name",
        "alice",
        *arguments,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "token" in result.stderr
    assert not (tmp_path / "data" / "jwt-keys").exists()


def test_help_shows_default_durations_as_they_are_written(tmp_path: Path) -> None:
    # Python's "31 days, 0:00:00" is not a duration the settings take.
    help_text = " ".join(_cli("serve", "--help", cwd=tmp_path).stdout.split())
    assert re.search(r"\d:\d\d:\d\d", help_text) is None
    assert "(default: 10m; env FLAMENCO_ACTIVE_TASK_TIMEOUT_INTERVAL)" in help_text


@given(st.timedeltas(min_value=-timedelta(days=1000), max_value=timedelta(days=1000)))
def test_a_formatted_duration_reads_back_as_itself(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


def test_token_create_prints_a_token_as_the_last_line(tmp_path: Path) -> None:
    result = _cli(
        "token",
        "create",
        "--data-dir",
        str(tmp_path / "data"),
        "--name",
        "alice",
        "--expires",
        "2h",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    public = (tmp_path / "data" / "jwt-keys" / "es256-public.pem").read_bytes()
    claims = jwt.decode(token, public, algorithms=["ES256"])
    assert claims["sub"] == "alice"
    assert 7000 < claims["exp"] - claims["iat"] <= 7200
    # New keys were made: it says so, for a mistyped data directory; with keys, nothing.
    assert "has no key pair: made a new one" in result.stderr
    again = _cli(
        "token", "create", "--data-dir", str(tmp_path / "data"), "--name", "bob", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""


def test_bad_flags_exit_with_a_message(tmp_path: Path) -> None:
    result = _cli("token", "create", "--name", "x", "--expires", "forever", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a duration" in result.stderr


def test_serve_takes_its_start_up_objects_out_of_the_collectors_sight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full garbage collections walked every object of start-up, tens of milliseconds each,
    several times a second under load; ``serve`` freezes them once the app has started."""
    import gc

    import uvicorn
    from starlette.testclient import TestClient

    from flamenco_manager import cli

    frozen: list[int] = []

    def start(app: object, **_: object) -> None:
        gc.unfreeze()
        with TestClient(app):  # type: ignore[arg-type]
            frozen.append(gc.get_freeze_count())

    monkeypatch.setattr(uvicorn, "run", start)
    monkeypatch.setattr(cli, "login_url", lambda *_: "http://localhost/login")
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)  # the process's, not a test's
    try:
        cli.serve(Settings(data_dir=tmp_path / "data", listen="127.0.0.1:8999"))
    finally:
        gc.unfreeze()
    (count,) = frozen
    assert count > 0


@pytest.mark.parametrize(
    ("secret", "warning"),
    [
        ("", "worker registration is open"),
        ("hunter2", "the worker registration secret is short"),
        ("x" * 32, None),
    ],
)
def test_serve_warns_of_open_registration_and_of_a_short_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    secret: str,
    warning: str | None,
) -> None:
    import uvicorn

    from flamenco_manager import cli

    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: None)
    monkeypatch.setattr(cli, "login_url", lambda *_: "http://localhost/login")
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    caplog.set_level(logging.WARNING, logger="flamenco_manager")
    settings = Settings(
        data_dir=tmp_path, listen="127.0.0.1:8999", worker_registration_secret=secret
    )
    cli.serve(settings)
    warned = [line.getMessage() for line in caplog.records if line.levelno >= logging.WARNING]
    registration = [line for line in warned if "registration" in line]
    if warning is None:
        assert registration == []
    else:
        (line,) = registration
        assert line.startswith(warning)
    if secret:
        assert secret not in caplog.text


def test_a_short_registration_secret_leaves_the_log_structured(tmp_path: Path) -> None:
    # PyJWT warns of a short HMAC key at the first registration, as a bare Python warning:
    # an unstructured line in the middle of the log, repeating what serve said at start.
    import re
    import time
    import warnings

    import httpx

    from tests.support import free_port, serve_command, wait_until_serving

    port = free_port()
    secret = "psk-secret"
    server = subprocess.Popen(
        serve_command(tmp_path / "data", port, "--worker-registration-secret", secret),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/api/health", server)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            token = jwt.encode({"iat": int(time.time())}, secret, algorithm="HS256")
        registration = {"secret": "s" * 32, "platform": "linux", "supported_task_types": ["sleep"]}
        answer = httpx.post(
            f"{url}/register-worker",
            json={**registration, "nickname": "w1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    lines = errors.splitlines()
    assert any("the worker registration secret is short" in line for line in lines)
    structured = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ")
    assert [line for line in lines if not structured.match(line)] == []
    assert "InsecureKeyLengthWarning" not in errors


def test_a_stopped_manager_leaves_its_database_whole_in_one_file(tmp_path: Path) -> None:
    # uvicorn raises the stopping signal again once the app has shut down, which ended the
    # process before serve's own clean-up: the database stayed open, its last commits in the
    # write-ahead log only, the task logs' threads were dropped mid-work.
    import signal

    from tests.support import free_port, serve_command, wait_until_serving

    port = free_port()
    data = tmp_path / "data"
    server = subprocess.Popen(
        serve_command(data, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/api/health", server)
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)
    assert server.returncode == -signal.SIGTERM, errors  # as a service manager expects
    assert sorted(path.name for path in data.glob("flamenco-manager.sqlite*")) == [
        "flamenco-manager.sqlite"
    ]


def test_a_data_directory_or_database_that_cannot_be_used_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each was a traceback (123 lines for an unreachable PostgreSQL).
    from flamenco_manager.cli import main
    from tests.support import free_port

    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert main(["serve", "--data-dir", str(a_file)]) == 1
    assert "cannot use" in capsys.readouterr().err
    nowhere = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/farm"
    assert main(["serve", "--data-dir", str(tmp_path / "d"), "--database", nowhere]) == 1
    said = capsys.readouterr().err
    assert "flamenco-manager: cannot use the database postgresql://postgres:***@" in said
    assert "hunter2" not in said
    assert "Traceback" not in said


def test_open_event_streams_end_when_the_manager_stops(tmp_path: Path) -> None:
    # uvicorn waits for every open response before it stops: an event stream (an open
    # dashboard) held each stop for the whole graceful timeout, then was cancelled, logging a
    # traceback per stream.
    import signal
    import threading

    import httpx

    from tests.support import free_port, serve_command, wait_until_serving

    port = free_port()
    data = tmp_path / "data"
    server = subprocess.Popen(
        serve_command(data, port, "--no-auth"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ended: list[bytes] = []
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/api/health", server)
        opened = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=60) as stream:
                received = b""
                for piece in stream.iter_bytes():
                    received += piece
                    opened.set()
                ended.append(received)  # the server ended the stream

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(30)
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)
    listener.join(30)
    (received,) = ended
    assert received.startswith(b": flamenco events")
    assert "graceful shutdown exceeded" not in errors, errors
    assert "Traceback" not in errors, errors
    assert server.returncode == -signal.SIGTERM, errors


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_closing_a_manager_twice_is_harmless(tmp_path: Path, backend: str) -> None:
    # The served app closes its manager when it shuts down, and serve closes it again when
    # uvicorn returns (after Ctrl-C, or when the app never started).
    from flamenco_manager.manager import Manager
    from tests.manager.harness import database_server, fresh_database

    with fresh_database(database_server(backend)) as database:
        manager = Manager(Settings(data_dir=tmp_path, database=database))
        manager.close()
        manager.close()


def _first_line_of_serve(data_dir: Path, terminal: bool) -> str:
    """What ``serve`` prints first, to a pipe or to a terminal (a pseudo-terminal)."""
    import os
    import pty
    import select

    from tests.support import free_port, serve_command

    port = free_port()
    reading, writing = pty.openpty() if terminal else os.pipe()
    server = subprocess.Popen(
        serve_command(data_dir, port), stdout=writing, stderr=subprocess.DEVNULL
    )
    os.close(writing)
    output = b""
    try:
        while b"\n" not in output:
            ready, _, _ = select.select([reading], [], [], 60)
            assert ready, f"serve printed nothing in 60 s: {output!r}"
            output += os.read(reading, 4096)
    finally:
        server.terminate()
        server.wait(30)
        os.close(reading)
    return output.decode().splitlines()[0]


def test_serve_prints_its_login_link_on_a_terminal_only(tmp_path: Path) -> None:
    # A systemd unit sends standard output to the journal, where a day's operator token in a
    # link would be kept and read by anyone allowed to read logs.
    piped = _first_line_of_serve(tmp_path / "data", terminal=False)
    assert piped.startswith("Open the dashboard: http://127.0.0.1:")
    assert "token=" not in piped
    assert "eyJ" not in piped
    assert f"token create --data-dir {tmp_path / 'data'} --name NAME" in piped

    shown = _first_line_of_serve(tmp_path / "data", terminal=True)
    assert "/login?token=eyJ" in shown
