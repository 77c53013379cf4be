"""The endpoint catalogue: every worker and Shaman endpoint, as one table.

For each endpoint: its methods, path template, who may call it, what its request body is, and
every status code it answers with the body that goes with it. The manager's routes and the worker
client's methods are built from this table or tested against it, so the protocol is written down
once.

Paths use ``{name}`` for path variables, as Starlette and OpenAPI do. Object-ID variables
(``task_id``, ``job_id``) hold 24 hex characters; a malformed one is answered with 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Final

import attrs

from .documents import (
    ErrorMessage,
    FileProduced,
    MayKeepRunningResponse,
    Task,
    TaskUpdate,
    Worker,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatusRequest,
)

__all__ = ["ENDPOINTS", "Auth", "Body", "Endpoint", "Reply", "endpoint", "worker_endpoints"]


class Auth(Enum):
    """Who may call an endpoint."""

    NONE = "none"
    """Anyone."""
    REGISTRATION = "registration"
    """Anyone, unless a registration secret is set: then a Bearer JWT signed with it (HMAC)."""
    WORKER = "worker"
    """A registered worker: HTTP Basic with its ID and secret."""
    USER = "user"
    """A user: an ES256 JWT as ``Authorization: Bearer`` or the ``jwtToken`` cookie."""


class Body(Enum):
    """The kind of a request or response body."""

    NONE = "none"
    """No body (anything sent is ignored)."""
    JSON = "json"
    """A JSON document (the ``document`` of the request or reply)."""
    TEXT = "text"
    """Plain UTF-8 text: an error message, a task log, a checkout definition."""
    BINARY = "binary"
    """Raw bytes: file contents."""


@attrs.frozen
class Reply:
    """One status code an endpoint answers with, and its body."""

    status: int
    """HTTP status code."""
    body: Body
    """Kind of body."""
    meaning: str
    """When it is sent."""
    document: type | None = None
    """The document of a JSON body."""


@attrs.frozen
class Endpoint:
    """One endpoint of the protocol."""

    name: str
    """Python name, used for the client method and the manager route."""
    methods: tuple[str, ...]
    """HTTP methods; the first is the one clients use."""
    path: str
    """Path template, ``{name}`` for variables."""
    auth: Auth
    """Who may call it."""
    request: Body
    """Kind of request body."""
    replies: tuple[Reply, ...]
    """Every status code it answers with, except 405 for a method not listed."""
    summary: str
    """What it does."""
    request_document: type | None = None
    """The document of a JSON request body."""
    group: str = "worker"
    """``worker`` or ``shaman``."""

    def reply(self, status: int) -> Reply:
        """The reply with this status code; ``KeyError`` if the endpoint never sends it."""
        for reply in self.replies:
            if reply.status == status:
                return reply
        raise KeyError(f"{self.name} never answers {status}")

    @property
    def statuses(self) -> frozenset[int]:
        """Every status code the endpoint answers with."""
        return frozenset(reply.status for reply in self.replies)

    def format_path(self, **variables: str) -> str:
        """The path with its variables filled in."""
        return self.path.format(**variables)


def _text(status: int, meaning: str) -> Reply:
    return Reply(status, Body.TEXT, meaning)


_UNAUTHORISED: Final = _text(401, "bad or missing worker credentials (WWW-Authenticate: Basic)")
_BAD_JSON: Final = _text(400, "the body is not a valid document; the message names each field")
_BAD_TASK_ID: Final = _text(404, "the task ID is not 24 hexadecimal characters")
_NO_CONTENT: Final = Reply(204, Body.NONE, "done")
_USER_UNAUTHORISED: Final = _text(401, "missing or invalid user token")
_USER_TOKEN_EXPIRED: Final = _text(498, "the user token has expired")

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint(
        name="register_worker",
        methods=("POST",),
        path="/register-worker",
        auth=Auth.REGISTRATION,
        request=Body.JSON,
        request_document=WorkerRegistration,
        replies=(
            Reply(200, Body.JSON, "registered; `_id` is the worker's user name", Worker),
            _BAD_JSON,
            _text(403, "a registration secret is set and the Bearer token is missing or wrong"),
        ),
        summary="Register a new worker with the secret it will authenticate with.",
    ),
    Endpoint(
        name="sign_on",
        methods=("POST",),
        path="/sign-on",
        auth=Auth.WORKER,
        request=Body.JSON,
        request_document=WorkerSignonDoc,
        replies=(_NO_CONTENT, _BAD_JSON, _UNAUTHORISED),
        summary="A worker starts: status `starting`, new nickname and task types if given.",
    ),
    Endpoint(
        name="sign_off",
        methods=("POST",),
        path="/sign-off",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(_NO_CONTENT, _UNAUTHORISED),
        summary="A worker stops: status `offline`, its running tasks are queued again.",
    ),
    Endpoint(
        name="fetch_task",
        methods=("POST", "GET"),
        path="/task",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(
            Reply(200, Body.JSON, "run this task (variables replaced for the worker)", Task),
            Reply(204, Body.NONE, "no task to run now"),
            _text(406, "the worker supports no task types"),
            Reply(
                423,
                Body.JSON,
                "change status first (a status change is pending)",
                WorkerStatusRequest,
            ),
            _UNAUTHORISED,
        ),
        summary="Hand the worker its next task, or the task it already runs.",
    ),
    Endpoint(
        name="update_task",
        methods=("POST",),
        path="/tasks/{task_id}/update",
        auth=Auth.WORKER,
        request=Body.JSON,
        request_document=TaskUpdate,
        replies=(
            Reply(204, Body.NONE, "accepted (status and activity dropped if the task stopped)"),
            _BAD_JSON,
            _UNAUTHORISED,
            _text(404, "no such task, or the task ID is malformed"),
            _text(409, "the task is assigned to another worker"),
        ),
        summary="Report a task's status, activity, progress, log lines and metrics.",
    ),
    Endpoint(
        name="return_task",
        methods=("POST",),
        path="/tasks/{task_id}/return",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(
            Reply(
                204,
                Body.NONE,
                "returned, or nothing to do (not the worker's, not running, unknown)",
            ),
            Reply(
                401,
                Body.JSON,
                'bad or missing worker credentials, as `{"message": …}` (the real worker '
                "reads this answer as JSON)",
                ErrorMessage,
            ),
            _text(404, "the task ID is malformed"),
        ),
        summary="Give a task back to the queue, after `/may-i-run` said no.",
    ),
    Endpoint(
        name="may_i_run",
        methods=("GET",),
        path="/may-i-run/{task_id}",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(
            Reply(200, Body.JSON, "whether to keep running", MayKeepRunningResponse),
            Reply(
                401,
                Body.JSON,
                "bad or missing worker credentials; still the three-key document",
                MayKeepRunningResponse,
            ),
            Reply(
                404,
                Body.JSON,
                "the task ID is malformed; still the three-key document",
                MayKeepRunningResponse,
            ),
        ),
        summary="May the worker keep running this task? Also tells a pending status change.",
    ),
    Endpoint(
        name="status_change",
        methods=("GET",),
        path="/status-change",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(
            Reply(200, Body.JSON, "take this status", WorkerStatusRequest),
            Reply(204, Body.NONE, "no status change pending"),
            _UNAUTHORISED,
        ),
        summary="Is a status change pending? Polled by sleeping workers.",
    ),
    Endpoint(
        name="ack_status_change",
        methods=("POST",),
        path="/ack-status-change/{status}",
        auth=Auth.WORKER,
        request=Body.NONE,
        replies=(
            Reply(204, Body.NONE, "noted (always, even for a status never asked)"),
            _UNAUTHORISED,
        ),
        summary="The worker took this status; clears the pending request.",
    ),
    Endpoint(
        name="output_produced",
        methods=("POST",),
        path="/output-produced",
        auth=Auth.WORKER,
        request=Body.JSON,
        request_document=FileProduced,
        replies=(
            Reply(204, Body.NONE, "noted (a full latest-image queue drops paths silently)"),
            _BAD_JSON,
            _UNAUTHORISED,
            _text(422, "the list of paths is empty"),
        ),
        summary="A command wrote these files; candidates for the latest image.",
    ),
    Endpoint(
        name="task_log",
        methods=("GET",),
        path="/logfile/{job_id}/{task_id}",
        auth=Auth.USER,
        request=Body.NONE,
        replies=(
            Reply(
                200, Body.TEXT, "the log; head and tail only when large (curl/wget get it whole)"
            ),
            _USER_UNAUTHORISED,
            _text(404, "no log for this task, or an ID is malformed"),
            _USER_TOKEN_EXPIRED,
        ),
        summary="The current log file of a task.",
    ),
    Endpoint(
        name="upload_file",
        methods=("POST",),
        path="/files/{checksum}/{filesize}",
        auth=Auth.USER,
        request=Body.BINARY,
        replies=(
            Reply(204, Body.NONE, "stored"),
            Reply(208, Body.NONE, "already stored, or being uploaded by someone else (deferred)"),
            _text(400, "malformed checksum or size, or an unreadable body"),
            _USER_UNAUTHORISED,
            _text(417, "the body's size or checksum differs from the URL's"),
            _USER_TOKEN_EXPIRED,
        ),
        summary="Upload a file into the store under its SHA-256 and size.",
        group="shaman",
    ),
    Endpoint(
        name="file_status",
        methods=("OPTIONS",),
        path="/files/{checksum}/{filesize}",
        auth=Auth.USER,
        request=Body.NONE,
        replies=(
            Reply(200, Body.NONE, "stored"),
            _text(400, "malformed checksum or size"),
            _USER_UNAUTHORISED,
            Reply(404, Body.NONE, "unknown"),
            Reply(420, Body.NONE, "being uploaded right now"),
            _USER_TOKEN_EXPIRED,
        ),
        summary="Whether a file is stored, unknown, or being uploaded.",
        group="shaman",
    ),
    Endpoint(
        name="download_file",
        methods=("GET",),
        path="/files/{checksum}/{filesize}",
        auth=Auth.USER,
        request=Body.NONE,
        replies=(
            Reply(200, Body.BINARY, "the file's bytes"),
            _text(400, "malformed checksum or size"),
            _USER_UNAUTHORISED,
            _text(404, "unknown"),
            _USER_TOKEN_EXPIRED,
        ),
        summary="Download a stored file.",
        group="shaman",
    ),
    Endpoint(
        name="checkout_requirements",
        methods=("POST",),
        path="/checkout/requirements",
        auth=Auth.USER,
        request=Body.TEXT,
        replies=(
            Reply(200, Body.TEXT, "the definition's lines that need uploading, with their status"),
            _text(400, "the checkout definition is malformed; the message names the line"),
            _USER_UNAUTHORISED,
            _USER_TOKEN_EXPIRED,
        ),
        summary="Which files of a checkout definition the store lacks.",
        group="shaman",
    ),
    Endpoint(
        name="create_checkout",
        methods=("POST",),
        path="/checkout/create/{checkout_id}",
        auth=Auth.USER,
        request=Body.TEXT,
        replies=(
            Reply(200, Body.TEXT, "created; the body is the checkout's path below the root"),
            _text(400, "malformed definition or ID, or files the store lacks (listed)"),
            _USER_UNAUTHORISED,
            _text(409, "a checkout with this ID exists"),
            _USER_TOKEN_EXPIRED,
        ),
        summary="Build a checkout: a directory of symlinks to stored files.",
        group="shaman",
    ),
)
"""Every endpoint of the worker protocol and of Shaman."""

_BY_NAME: Final = {item.name: item for item in ENDPOINTS}


def endpoint(name: str) -> Endpoint:
    """The endpoint called ``name``; ``KeyError`` if there is none."""
    return _BY_NAME[name]


def worker_endpoints() -> Iterator[Endpoint]:
    """The endpoints of the worker protocol, in catalogue order."""
    return (item for item in ENDPOINTS if item.group == "worker")
