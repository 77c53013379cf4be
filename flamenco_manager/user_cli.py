"""``flamenco-manager job …``, ``worker …``, ``task …`` and ``farm``: the user API from a shell.

Every command talks to a running manager over HTTP with a user token: ``--url`` and ``--token``,
or ``FLAMENCO_URL`` and ``FLAMENCO_TOKEN`` in the environment. Answers are printed as readable
tables, or as the API's JSON with ``--json``. A refused request prints the manager's message
(and each bad field) on standard error and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Container, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from flamenco_protocol import codec
from flamenco_protocol.ids import ObjectId

from .config import ConfigError, parse_duration

__all__ = ["COMMANDS", "ApiFailure", "add_commands", "parse_setting", "run"]

COMMANDS: Final = ("job", "worker", "task", "farm")
DEFAULT_URL: Final = "http://localhost:8080"


class ApiFailure(Exception):
    """The manager refused a request, or could not be reached; the message says why."""


def _object_id(value: str) -> str:
    """An ID argument: 24 hexadecimal digits, nothing that could make another path of the API."""
    if not ObjectId.is_valid(value):
        raise argparse.ArgumentTypeError(f"not a 24-character hexadecimal ID: {value!r}")
    return value.lower()


def parse_setting(text: str, strings: Container[str] = ()) -> tuple[str, Any]:
    """``key=value`` from ``--set``: the value as JSON when it is JSON, else as a string;
    always the string as given for a key in ``strings`` (the job type's text settings).

    ``chunk_size=3`` gives 3, ``render=true`` True, ``frames=1-10`` the string ``"1-10"``, and
    ``frames=5`` the string ``"5"`` when ``frames`` is one of ``strings``.
    """
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key = key.strip()
    if key in strings:
        return key, raw
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _setting_text(text: str) -> str:
    """A ``--set`` argument, checked for its form now and read once the job type is known."""
    parse_setting(text)
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help=f"the manager's URL (default: $FLAMENCO_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--token", default=None, help="a user token (default: $FLAMENCO_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def add_commands(commands: Any) -> None:
    """Add ``job``, ``worker``, ``task`` and ``farm`` to the ``flamenco-manager`` parser."""
    job = commands.add_parser("job", help="submit, list and control jobs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    submit = job.add_parser(
        "submit",
        help="submit a job from a JSON file or from flags",
        description="Submit FILE.json (the body of POST /api/jobs), or build the job from "
        "--type, --name and --set KEY=VALUE (flags override the file).",
    )
    submit.add_argument("file", nargs="?", type=Path, help="the job as JSON")
    submit.add_argument("--type", help="the job type (see `flamenco-manager job types`)")
    submit.add_argument("--name", help="the job's name")
    submit.add_argument("--priority", type=int, help="1 to 100 (default 50)")
    submit.add_argument("--paused", action="store_true", help="hold the tasks until resumed")
    submit.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=_setting_text,
        default=[],
        metavar="KEY=VALUE",
        help="a setting (repeat for more); the value is taken as text for the job type's text "
        "settings, and read as JSON when it is JSON for the others",
    )
    _common(submit)
    listing = job.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", help="only these statuses (comma-separated)")
    listing.add_argument("--type", help="only these job types (comma-separated)")
    listing.add_argument("--search", help="only names containing this")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _common(listing)
    types = job.add_parser("types", help="the job types and their settings")
    _common(types)
    show = job.add_parser("show", help="a job and its tasks")
    show.add_argument("id", type=_object_id)
    _common(show)
    for action, text in (
        ("cancel", "cancel a job"),
        ("pause", "pause a job (running tasks finish)"),
        ("resume", "resume a paused job"),
        ("requeue", "run a job again (every task not completed)"),
    ):
        parser = job.add_parser(action, help=text)
        parser.add_argument("id", type=_object_id)
        parser.add_argument("--reason", default="", help="why, kept as the status reason")
        _common(parser)
    priority = job.add_parser("priority", help="change a job's priority")
    priority.add_argument("id", type=_object_id)
    priority.add_argument("priority", type=int)
    _common(priority)
    delete = job.add_parser("delete", help="delete a job, its tasks and logs")
    delete.add_argument("id", type=_object_id)
    _common(delete)
    finished = job.add_parser(
        "delete-finished",
        help="delete every job finished (completed, canceled, failed) and unchanged since a time",
    )
    since = finished.add_mutually_exclusive_group(required=True)
    since.add_argument("--before", help="an RFC 3339 time (2026-11-01T00:00:00Z)")
    since.add_argument("--older-than", help="a duration (720h, 90m) before now")
    _common(finished)

    task = commands.add_parser("task", help="show and control single tasks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for action, text in (
        ("show", "a task with the end of its log"),
        ("requeue", "run one task again"),
        ("cancel", "cancel one task"),
    ):
        parser = task.add_parser(action, help=text)
        parser.add_argument("id", type=_object_id)
        _common(parser)

    worker = commands.add_parser("worker", help="list and control workers").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    _common(worker.add_parser("list", help="every worker"))
    for action, text in (("show", "a worker and its blocklist"), ("forget", "forget a worker")):
        parser = worker.add_parser(action, help=text)
        parser.add_argument("id", type=_object_id)
        _common(parser)
    for action, text in (
        ("sleep", "send a worker to sleep"),
        ("wake", "wake a worker up"),
        ("shutdown", "shut a worker down"),
    ):
        parser = worker.add_parser(action, help=text)
        parser.add_argument("id", type=_object_id)
        parser.add_argument("--lazy", action="store_true", help="after its current task")
        _common(parser)

    _common(commands.add_parser("farm", help="the farm's state and counts"))


# --- the client ------------------------------------------------------------------------------


_TOKEN: Final = re.compile(r"[A-Za-z0-9_.\-=]+")
"""What a user token is made of (a JWT: base64url parts joined by dots)."""


class Client:
    """A thin synchronous client of the user API."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        token = token.strip()
        if token and not _TOKEN.fullmatch(token):
            # Said without the token: httpx's own message quoted the whole header.
            raise ApiFailure(
                "the token is not one line of letters, digits and '-_.' (token create prints "
                "a line before it: take only its last line)"
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=30.0, transport=transport
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (``None`` for 204); :class:`ApiFailure` on any refusal."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiFailure(f"cannot reach the manager at {self.http.base_url}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text.strip()}
        if response.is_error:
            message = body.get("message", "") if isinstance(body, dict) else str(body)
            errors = body.get("errors", []) if isinstance(body, dict) else []
            lines = [f"{response.status_code}: {message or response.reason_phrase}"]
            lines.extend(f"  {error}" for error in errors)
            raise ApiFailure("\n".join(lines))
        return body


# --- output ----------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    """Columns padded to their widest cell."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {status or 'new'}" for status, count in sorted(counts.items()))


def _print_job(job: dict[str, Any], out: TextIO) -> None:
    for label, key in (
        ("ID", "_id"),
        ("Name", "name"),
        ("Type", "job_type"),
        ("Status", "status"),
        ("Reason", "status_reason"),
        ("Priority", "priority"),
        ("Submitter", "submitter"),
        ("Created", "_created"),
    ):
        if job.get(key) not in (None, ""):
            print(f"{label + ':':11}{job[key]}", file=out)
    print(f"{'Tasks:':11}{_counts(job.get('task_counts', {})) or 'none'}", file=out)


def _print_worker(worker: dict[str, Any], out: TextIO) -> None:
    for label, key in (
        ("ID", "_id"),
        ("Nickname", "nickname"),
        ("Status", "status"),
        ("Requested", "status_requested"),
        ("Address", "address"),
        ("Platform", "platform"),
        ("Task", "current_task"),
        ("Seen", "last_activity"),
    ):
        if worker.get(key) not in (None, ""):
            print(f"{label + ':':11}{worker[key]}", file=out)
    print(f"{'Types:':11}{', '.join(worker.get('supported_task_types', []))}", file=out)
    for entry in worker.get("blacklist", []):
        print(f"{'Blocked:':11}job {entry['job_id']}, task type {entry['task_type']}", file=out)


# --- the commands ----------------------------------------------------------------------------

_JOB_STATUS: Final = {
    "cancel": "cancel-requested",
    "pause": "paused",
    "resume": "queued",
    "requeue": "requeued",
}
_WORKER_STATUS: Final = {"sleep": "asleep", "wake": "awake", "shutdown": "shutdown"}


def _text_settings(client: Client, job_type: object) -> frozenset[str]:
    """The settings of ``job_type`` whose values are text, from the manager's job types (none
    when it has no such type: the submission's answer then says what is wrong)."""
    for item in client.call("GET", "/api/job-types")["job_types"]:
        if item["name"] == job_type:
            properties = item["settings_schema"].get("properties", {})
            return frozenset(
                name for name, schema in properties.items() if schema.get("type") == "string"
            )
    return frozenset()


def _submission(args: argparse.Namespace, strings: Container[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.file is not None:
        try:
            body = json.loads(args.file.read_text())
        except (OSError, ValueError) as exc:
            raise ApiFailure(f"cannot read the job from {args.file}: {exc}") from None
        if not isinstance(body, dict):
            raise ApiFailure(f"{args.file}: the job must be a JSON object")
    if args.type:
        body["type"] = args.type
        body.pop("job_type", None)
    if args.name:
        body["name"] = args.name
    if args.priority is not None:
        body["priority"] = args.priority
    if args.paused:
        body["start_paused"] = True
    if args.settings:
        settings = dict(body.get("settings") or {})
        settings.update(parse_setting(text, strings) for text in args.settings)
        body["settings"] = settings
    if not body.get("name") and (body.get("type") or body.get("job_type")):
        body["name"] = f"{body.get('type') or body.get('job_type')} job"
    return body


def _job_command(client: Client, args: argparse.Namespace, out: TextIO) -> Any:
    action = args.action
    if action == "submit":
        body = _submission(args)
        if args.settings:
            # `--set frames=5` means the frame "5", not the number 5, which the type refuses.
            job_type = body.get("type") or body.get("job_type")
            body = _submission(args, _text_settings(client, job_type))
        job = client.call("POST", "/api/jobs", json=body)
        if job["status"] == "construction-failed":
            raise ApiFailure(f"job {job['_id']} could not be built: {job.get('activity', '')}")
        if not args.json:
            print(f"Submitted job {job['_id']} ({job['status']}): {job['name']}", file=out)
        return job
    if action == "types":
        answer = client.call("GET", "/api/job-types")
        if not args.json:
            for item in answer["job_types"]:
                properties = item["settings_schema"].get("properties", {})
                required = set(item["settings_schema"].get("required", []))
                settings = ", ".join(
                    name + ("*" if name in required else "") for name in properties
                )
                print(f"{item['name']}: {settings}", file=out)
        return answer
    if action == "list":
        params = {
            key: value
            for key, value in (
                ("status", args.status),
                ("type", args.type),
                ("search", args.search),
                ("limit", args.limit),
            )
            if value
        }
        answer = client.call("GET", "/api/jobs", params=params)
        if not args.json:
            rows = [
                (
                    job["_id"],
                    job["status"],
                    job["priority"],
                    job["job_type"],
                    _counts(job["task_counts"]),
                    job["name"],
                )
                for job in answer["jobs"]
            ]
            table(rows, ("ID", "STATUS", "PRIO", "TYPE", "TASKS", "NAME"), out)
        return answer
    if action == "show":
        job = client.call("GET", f"/api/jobs/{args.id}")
        tasks = client.call("GET", f"/api/jobs/{args.id}/tasks")
        if args.json:
            return {**job, "tasks": tasks["tasks"]}
        _print_job(job, out)
        print(file=out)
        task_rows = [
            (task["_id"], task["status"], task["worker"] or "-", task["name"], task["activity"])
            for task in tasks["tasks"]
        ]
        table(task_rows, ("TASK", "STATUS", "WORKER", "NAME", "ACTIVITY"), out)
        return None
    if action in _JOB_STATUS:
        job = client.call(
            "POST",
            f"/api/jobs/{args.id}/status",
            json={"status": _JOB_STATUS[action], "reason": args.reason},
        )
        if not args.json:
            print(f"Job {job['_id']} is {job['status']}.", file=out)
        return job
    if action == "priority":
        job = client.call("POST", f"/api/jobs/{args.id}/priority", json={"priority": args.priority})
        if not args.json:
            print(f"Job {job['_id']} has priority {job['priority']}.", file=out)
        return job
    if action == "delete":
        client.call("DELETE", f"/api/jobs/{args.id}")
        if not args.json:
            print(f"Deleted job {args.id}.", file=out)
        return {"deleted": args.id}
    if action == "delete-finished":
        before = args.before or _time_before_now(args.older_than)
        answer = client.call("DELETE", "/api/jobs", params={"finished_before": before})
        if not args.json:
            print(f"Deleted {len(answer['deleted'])} job(s) finished before {before}.", file=out)
        return answer
    raise AssertionError(action)


def _time_before_now(age: str) -> str:
    """RFC 3339 time ``age`` (a duration, ``720h``) ago."""
    try:
        duration = parse_duration(age)
        moment = datetime.now(UTC) - duration
    except (ConfigError, OverflowError) as exc:
        raise ApiFailure(f"--older-than: {exc}") from None
    if duration.total_seconds() < 0:
        raise ApiFailure(f"--older-than: a time before now, not after it: {age!r}")
    return codec.format_time(moment)


def _task_command(client: Client, args: argparse.Namespace, out: TextIO) -> Any:
    if args.action == "show":
        task = client.call("GET", f"/api/tasks/{args.id}")
    else:
        task = client.call("POST", f"/api/tasks/{args.id}/{args.action}", json={})
    if not args.json:
        print(f"Task {task['_id']} ({task['name']}) is {task['status']}.", file=out)
        if task.get("activity"):
            print(f"Activity: {task['activity']}", file=out)
        if args.action == "show" and task.get("log"):
            print(file=out)
            print(task["log"], end="", file=out)
    return task


def _worker_command(client: Client, args: argparse.Namespace, out: TextIO) -> Any:
    action = args.action
    if action == "list":
        answer = client.call("GET", "/api/workers")
        if not args.json:
            rows = [
                (
                    worker["_id"],
                    worker["status"] or "new",
                    worker["status_requested"] or "-",
                    worker["nickname"],
                    worker["address"],
                    ",".join(worker["supported_task_types"]),
                )
                for worker in answer["workers"]
            ]
            table(rows, ("ID", "STATUS", "REQUESTED", "NICKNAME", "ADDRESS", "TYPES"), out)
        return answer
    if action == "show":
        worker = client.call("GET", f"/api/workers/{args.id}")
        if not args.json:
            _print_worker(worker, out)
        return worker
    if action == "forget":
        client.call("DELETE", f"/api/workers/{args.id}")
        if not args.json:
            print(f"Forgot worker {args.id}.", file=out)
        return {"forgotten": args.id}
    worker = client.call(
        "POST",
        f"/api/workers/{args.id}/status",
        json={"status": _WORKER_STATUS[action], "lazy": args.lazy},
    )
    if not args.json:
        when = " after its current task" if args.lazy else ""
        print(
            f"Asked worker {worker['nickname'] or worker['_id']} to become "
            f"{worker['status_requested']}{when}.",
            file=out,
        )
    return worker


def _farm_command(client: Client, args: argparse.Namespace, out: TextIO) -> Any:
    farm = client.call("GET", "/api/farm")
    if not args.json:
        print(f"Farm:     {farm['state']}", file=out)
        print(f"Workers:  {_counts(farm['workers']) or 'none'}", file=out)
        print(f"Jobs:     {_counts(farm['jobs']) or 'none'}", file=out)
        print(f"Tasks:    {_counts(farm['tasks']) or 'none'}", file=out)
    return farm


_HANDLERS: Final[dict[str, Callable[[Client, argparse.Namespace, TextIO], Any]]] = {
    "job": _job_command,
    "task": _task_command,
    "worker": _worker_command,
    "farm": _farm_command,
}


def run(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one user command; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    url = args.url or os.environ.get("FLAMENCO_URL") or DEFAULT_URL
    token = args.token or os.environ.get("FLAMENCO_TOKEN", "")
    try:
        client = Client(url, token, transport)
    except ApiFailure as exc:
        print(f"flamenco-manager: {exc}", file=err)
        return 1
    try:
        result = _HANDLERS[args.command](client, args, out)
        if args.json and result is not None:
            print(json.dumps(result, indent=2), file=out)
        out.flush()
    except ApiFailure as exc:
        print(f"flamenco-manager: {exc}", file=err)
        return 1
    except BrokenPipeError:
        # The reader went away (`flamenco-manager job show ID | head`): stop quietly, as
        # commands killed by SIGPIPE do, instead of a traceback.
        _silence(out)
        return BROKEN_PIPE_STATUS
    finally:
        client.http.close()
    return 0


BROKEN_PIPE_STATUS: Final = 128 + 13
"""The exit status when standard output is a closed pipe: a shell's status for SIGPIPE."""


def _silence(out: TextIO) -> None:
    """Point ``out``'s file descriptor at /dev/null, so the flush at exit cannot fail again."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
