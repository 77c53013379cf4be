"""The request-building core shared by :class:`Client` and :class:`AsyncClient`.

A :class:`Call` is one request to one endpoint, described without any I/O: method, path, body,
headers, and how to turn each status code of the answer into a result or an error. The sync and
async clients differ only in how they send it (see ``client.py``), as in httpx.

Everything here is read from the endpoint catalogue (:data:`flamenco_protocol.ENDPOINTS`): the
method, the path, which statuses exist and which document each body holds. A status the
catalogue does not list for an endpoint becomes :class:`UnexpectedStatus` (or
:class:`ServerError` for 5xx); a listed 4xx becomes the :class:`RequestRejected` subclass that
names it.
"""

from __future__ import annotations

import base64
import email.utils
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote

import attrs
import httpx

from flamenco_protocol import (
    DecodeError,
    FileProduced,
    MayKeepRunningResponse,
    Task,
    TaskUpdate,
    Worker,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatusRequest,
    codec,
)
from flamenco_protocol.endpoints import Body, Endpoint, endpoint

from . import exceptions as exc
from .credentials import Credentials, registration_token
from .results import (
    FetchResult,
    NoStatusChange,
    NoTask,
    StatusChangeRequested,
    StatusResult,
)

__all__ = ["Call", "RequestCore", "encode_task_update"]

T = TypeVar("T")

_REJECTIONS: Final[Mapping[int, type[exc.RequestRejected]]] = {
    400: exc.BadRequest,
    401: exc.Unauthorized,
    403: exc.RegistrationRefused,
    404: exc.TaskNotFound,
    406: exc.NoTaskTypes,
    409: exc.TaskConflict,
    422: exc.EmptyOutputList,
    498: exc.TokenExpired,
}

# Keys of a TaskUpdate that the manager overwrites on receipt; a worker leaves them out, as the
# real worker does, so that our bodies carry exactly the real worker's keys.
_MANAGER_OWNED_UPDATE_KEYS: Final = ("_id", "task_id", "received_on_manager", "log_tail", "worker")

# Endpoints whose request does no harm when the manager receives it twice. A registration
# would make a second worker, a task update would log its lines twice; those are retried only
# when the connection was never made.
_REPEATABLE: Final = frozenset(
    {
        "sign_on",
        "sign_off",
        "fetch_task",
        "return_task",
        "may_i_run",
        "status_change",
        "ack_status_change",
        "output_produced",
        "task_log",
    }
)


def encode_task_update(update: TaskUpdate) -> dict[str, Any]:
    """The JSON object a worker sends for ``update``: the document without the manager's keys."""
    body = codec.encode(update)
    for key in _MANAGER_OWNED_UPDATE_KEYS:
        body.pop(key, None)
    return body


Handler = Callable[[Any], T]


@attrs.frozen
class Call(Generic[T]):
    """One request, ready to send, and how to read its answer."""

    endpoint: Endpoint
    """The catalogue entry."""
    path: str
    """The path with its variables filled in."""
    handlers: Mapping[int, Handler[T]]
    """Success status -> function from the decoded body (or ``None``) to the result."""
    body: bytes | None = None
    """The JSON body, if the endpoint takes one."""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """Headers beyond the client's own (authentication)."""

    @property
    def method(self) -> str:
        """The HTTP method; the catalogue's first."""
        return self.endpoint.methods[0]

    @property
    def repeatable(self) -> bool:
        """Whether sending the request twice does no harm."""
        return self.endpoint.name in _REPEATABLE

    def build_request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The httpx request, built by ``client`` so that its base URL and headers apply."""
        headers = dict(self.headers)
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return client.build_request(self.method, self.path, content=self.body, headers=headers)

    def interpret(self, response: httpx.Response) -> T:
        """The result of a complete answer, or the error it means."""
        status = response.status_code
        name = self.endpoint.name
        if status not in self.endpoint.statuses:
            if status >= 500:
                raise exc.ServerError(
                    name, status, _text(response), retry_after=_retry_after(response)
                )
            raise exc.UnexpectedStatus(name, status, _text(response))
        reply = self.endpoint.reply(status)
        handler = self.handlers.get(status)
        if handler is None:
            raise _REJECTIONS.get(status, exc.RequestRejected)(name, status, _text(response))
        try:
            if reply.body is Body.JSON and reply.document is not None:
                return handler(codec.loads(reply.document, response.content))
            if reply.body is Body.TEXT:
                return handler(_text(response))
            return handler(None)
        except DecodeError as error:
            raise exc.InvalidResponse(name, status, _text(response), str(error)) from None


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks for (seconds, or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # absent, or not a value the header can take
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _text(response: httpx.Response) -> str:
    try:
        return response.content.decode("utf-8", errors="replace")
    except httpx.ResponseNotRead:
        return ""


def _json(document: Any) -> bytes:
    return codec.dumps(document)


def _none(_: Any) -> None:
    return None


def _same(value: T) -> T:
    return value


def _requested(document: WorkerStatusRequest) -> StatusChangeRequested:
    return StatusChangeRequested(document.status_requested)


def _no_task(_: Any) -> NoTask:
    return NoTask()


def _no_status_change(_: Any) -> NoStatusChange:
    return NoStatusChange()


def _task(document: Task) -> Task:
    if document.id is None:
        # A task without an ID cannot be updated or returned; refuse it here, typed.
        raise DecodeError("Task", ["$._id: missing"])
    return document


@attrs.define
class RequestCore:
    """Builds the :class:`Call` of every worker endpoint; holds the authentication."""

    credentials: Credentials | None = None
    """The worker's login, for every endpoint but registration."""
    registration_secret: str = attrs.field(default="", repr=False)
    """Pre-shared secret for ``/register-worker``; empty when registration is open."""

    def _basic(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        login = f"{self.credentials.worker_id}:{self.credentials.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(login).decode("ascii")}

    def _call(
        self,
        name: str,
        handlers: Mapping[int, Handler[T]],
        *,
        body: bytes | None = None,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Call[T]:
        ep = endpoint(name)
        return Call(
            endpoint=ep,
            path=path if path is not None else ep.path,
            handlers=handlers,
            body=body,
            headers=self._basic() if headers is None else headers,
        )

    def register_worker(self, registration: WorkerRegistration) -> Call[Worker]:
        """``POST /register-worker``: 200 gives the new Worker; its ``id`` is never empty."""
        headers = {}
        if self.registration_secret.strip():
            headers["Authorization"] = "Bearer " + registration_token(self.registration_secret)

        def registered(worker: Worker) -> Worker:
            if worker.id is None:
                raise DecodeError("Worker", ["$._id: missing"])
            return worker

        return self._call(
            "register_worker", {200: registered}, body=_json(registration), headers=headers
        )

    def sign_on(self, sign_on: WorkerSignonDoc) -> Call[None]:
        """``POST /sign-on``."""
        return self._call("sign_on", {204: _none}, body=_json(sign_on))

    def sign_off(self) -> Call[None]:
        """``POST /sign-off``."""
        return self._call("sign_off", {204: _none})

    def fetch_task(self) -> Call[FetchResult]:
        """``POST /task``: a Task (200), NoTask (204) or StatusChangeRequested (423)."""
        handlers: dict[int, Handler[FetchResult]] = {200: _task, 204: _no_task, 423: _requested}
        return self._call("fetch_task", handlers)

    def update_task(self, task_id: str, update: TaskUpdate) -> Call[None]:
        """``POST /tasks/{task_id}/update``; 409 raises :class:`TaskConflict`."""
        body = json.dumps(encode_task_update(update), ensure_ascii=False).encode()
        return self._call(
            "update_task", {204: _none}, body=body, path=_task_path(task_id, "update")
        )

    def update_task_raw(self, task_id: str, body: bytes) -> Call[None]:
        """``POST /tasks/{task_id}/update`` with a body encoded earlier (the update queue's)."""
        return self._call(
            "update_task", {204: _none}, body=body, path=_task_path(task_id, "update")
        )

    def return_task(self, task_id: str) -> Call[None]:
        """``POST /tasks/{task_id}/return``."""
        return self._call("return_task", {204: _none}, path=_task_path(task_id, "return"))

    def may_i_run(self, task_id: str) -> Call[MayKeepRunningResponse]:
        """``GET /may-i-run/{task_id}``."""
        path = endpoint("may_i_run").format_path(task_id=_segment(task_id))
        return self._call("may_i_run", {200: _same}, path=path)

    def status_change(self) -> Call[StatusResult]:
        """``GET /status-change``: StatusChangeRequested (200) or NoStatusChange (204)."""
        handlers: dict[int, Handler[StatusResult]] = {200: _requested, 204: _no_status_change}
        return self._call("status_change", handlers)

    def ack_status_change(self, status: str) -> Call[None]:
        """``POST /ack-status-change/{status}``."""
        path = endpoint("ack_status_change").format_path(status=_segment(str(status)))
        return self._call("ack_status_change", {204: _none}, path=path)

    def output_produced(self, paths: Sequence[str]) -> Call[None]:
        """``POST /output-produced``; an empty list raises :class:`EmptyOutputList`."""
        body = _json(FileProduced(paths=tuple(str(path) for path in paths)))
        return self._call("output_produced", {204: _none}, body=body)

    def task_log(self, job_id: str, task_id: str, user_token: str) -> Call[str]:
        """``GET /logfile/{job_id}/{task_id}`` with a user's token (not worker credentials)."""
        path = endpoint("task_log").format_path(job_id=_segment(job_id), task_id=_segment(task_id))
        headers = {"Authorization": f"Bearer {user_token}"}
        return self._call("task_log", {200: _same}, path=path, headers=headers)


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _task_path(task_id: str, action: str) -> str:
    return endpoint(f"{action}_task").format_path(task_id=_segment(task_id))
