"""The worker protocol's routes: HTTP in, service call, HTTP out. No rule lives here.

Routes are built from the endpoint catalogue (:data:`flamenco_protocol.endpoints.ENDPOINTS`):
each catalogue entry of the worker group has one handler below, and a test checks that every
entry is served with the methods and status codes the catalogue lists.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flamenco_manager.manager import Manager
from flamenco_manager.services.auth import RegistrationRefused, check_registration_token
from flamenco_manager.services.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    StorageFailure,
    UnknownWorker,
)
from flamenco_manager.services.scheduler import Assigned, NoTask, NoTaskTypes, StatusChange
from flamenco_manager.services.workers import Peer
from flamenco_protocol.documents import (
    FileProduced,
    MayKeepRunningResponse,
    TaskUpdate,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatusRequest,
)
from flamenco_protocol.endpoints import ENDPOINTS, Auth, Endpoint
from flamenco_protocol.errors import DecodeError
from flamenco_protocol.ids import ObjectId

from .hot_routes import HotRoute
from .responses import (
    JSON,
    BodyTooLarge,
    document,
    encode_document,
    encoded_document,
    header,
    load_document,
    no_content,
    read_body,
    text,
)

Handler = Callable[[Request], Awaitable[Response]]
WorkerHandler = Callable[[Request, str], Awaitable[Response]]

SMALL_BODY: Final = 64 * 1024
UPDATE_BODY: Final = 32 * 1024 * 1024
_REALM: Final = {"WWW-Authenticate": 'Basic realm="Flamenco Manager"'}
_MOST_FREQUENT: Final = ("update_task", "may_i_run", "fetch_task")
# The answer to almost every /may-i-run, the most frequent request of a busy farm: encoded once.
_KEEP_RUNNING: Final = MayKeepRunningResponse(may_keep_running=True)
_KEEP_RUNNING_BODY: Final = encode_document(_KEEP_RUNNING)
_SERVICE_STATUS: Final[dict[type[ServiceError], int]] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Invalid: 400,
    StorageFailure: 507,
}


def peer(request: Request) -> Peer:
    """Who sent the request: the TCP peer's host (no proxy headers) and its ``User-Agent``."""
    client = request.scope.get("client")
    return Peer(client[0] if client else "", header(request, b"user-agent") or "")


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme != "Basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


async def _decode(request: Request, doc: type, limit: int = SMALL_BODY) -> object:
    body = await read_body(request, limit)
    return load_document(doc, body)


def _task_id(request: Request, name: str = "task_id") -> ObjectId | None:
    value = request.path_params[name]
    return ObjectId(value) if ObjectId.is_valid(value) else None


def _bad_id(name: str, request: Request) -> Response:
    return text(
        404, f"Invalid ObjectID used for {name.replace('_', '-')}: {request.path_params[name]}"
    )


def _refused_as_text(message: str) -> Response:
    return text(401, message, headers=_REALM)


def _refused_may_i_run(message: str) -> Response:
    """The real worker reads every ``/may-i-run`` answer as the three-key document, whatever the
    status; anything else stops its poller for good (and later its sign-off)."""
    refusal = document(MayKeepRunningResponse(may_keep_running=False, reason=message), 401)
    refusal.headers.update(_REALM)
    return refusal


def _refused_as_json(message: str) -> Response:
    """The real worker reads a failed ``/tasks/{id}/return`` answer as JSON, in its poller."""
    return Response(
        json.dumps({"message": message}) + "\n", status_code=401, media_type=JSON, headers=_REALM
    )


class WorkerAPI:
    """The handlers of the worker endpoints, bound to a manager."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def routes(self) -> list[Route]:
        """One route per worker endpoint of the catalogue, with its methods."""
        handlers = self._handlers()
        return [
            Route(item.path, handlers[item.name], methods=list(item.methods), name=item.name)
            for item in worker_catalogue()
        ]

    def hot_routes(self) -> list[HotRoute]:
        """The requests a busy farm sends most, for :class:`~.hot_routes.HotRoutes`: the same
        handlers as their :meth:`routes`."""
        handlers = self._handlers()
        by_name = {item.name: item for item in worker_catalogue()}
        return [
            HotRoute(by_name[name].path, by_name[name].methods, handlers[name])
            for name in _MOST_FREQUENT
        ]

    def _handlers(self) -> dict[str, Handler]:
        return {
            "register_worker": self._guarded(self.register_worker),
            "sign_on": self._as_worker(self.sign_on),
            "sign_off": self._as_worker(self.sign_off),
            "fetch_task": self._as_worker(self.fetch_task),
            "update_task": self._as_worker(self.update_task),
            "return_task": self._as_worker(self.return_task, refused=_refused_as_json),
            "may_i_run": self._as_worker(self.may_i_run, refused=_refused_may_i_run),
            "status_change": self._as_worker(self.status_change),
            "ack_status_change": self._as_worker(self.ack_status_change),
            "output_produced": self._as_worker(self.output_produced),
        }

    # --- wrappers: credentials and errors ------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except DecodeError as exc:
                return text(400, f"Unable to decode JSON: {exc}")
            except BodyTooLarge as exc:
                return text(413, str(exc))
            except ServiceError as exc:
                return text(_SERVICE_STATUS.get(type(exc), 500), exc.message)

        return guarded

    def _as_worker(
        self, handler: WorkerHandler, refused: Callable[[str], Response] = _refused_as_text
    ) -> Handler:
        """``handler`` for authenticated workers; ``refused`` spells the 401 of this route."""
        authenticator = self.manager.workers.authenticator

        async def verified(authorization: str) -> str | None:
            """The worker these credentials are of, checked (on a thread unless they were
            verified recently) and their header remembered; ``None`` when they are wrong."""
            credentials = _basic_credentials(authorization)
            if credentials is None:
                return None
            worker_id, secret = credentials[0].lower(), credentials[1]
            if not authenticator.is_remembered(worker_id, secret) and not (
                await run_in_threadpool(authenticator.authenticate, worker_id, secret)
            ):
                return None
            authenticator.remember_header(authorization, worker_id, secret)
            return worker_id

        async def authenticated(request: Request) -> Response:
            authorization = header(request, b"authorization") or ""
            # Most requests come from a worker verified moments ago, in the same header.
            worker_id = authenticator.remembered_header(authorization)
            if worker_id is None:
                worker_id = await verified(authorization)
                if worker_id is None:
                    return refused("401 Unauthorized")
            try:
                return await handler(request, worker_id)
            except UnknownWorker as exc:
                # Remembered credentials of a worker deleted since: a failed login, so that the
                # real worker re-registers (it does so only on a 401 from /sign-on).
                authenticator.forget(exc.worker_id)
                return refused(exc.message)

        return self._guarded(authenticated)

    # --- handlers --------------------------------------------------------------------------------

    async def register_worker(self, request: Request) -> Response:
        """``POST /register-worker``."""
        try:
            check_registration_token(
                request.headers.get("authorization", ""),
                self.manager.settings.worker_registration_secret,
            )
        except RegistrationRefused as exc:
            return text(403, str(exc))
        registration = await _decode(request, WorkerRegistration)
        assert isinstance(registration, WorkerRegistration)
        client = request.client
        address = f"{client.host}:{client.port}" if client else ""
        worker = await run_in_threadpool(self.manager.workers.register, registration, address)
        return document(worker)

    async def sign_on(self, request: Request, worker_id: str) -> Response:
        """``POST /sign-on``."""
        doc = await _decode(request, WorkerSignonDoc)
        assert isinstance(doc, WorkerSignonDoc)
        self.manager.workers.sign_on(worker_id, doc, peer(request))
        return no_content()

    async def sign_off(self, request: Request, worker_id: str) -> Response:
        """``POST /sign-off``."""
        self.manager.workers.sign_off(worker_id)
        return no_content()

    async def fetch_task(self, request: Request, worker_id: str) -> Response:
        """``POST /task`` (``GET`` too)."""
        result = self.manager.scheduler.fetch_task(worker_id, peer(request))
        match result:
            case Assigned(task):
                return document(task)
            case StatusChange(status):
                return document(WorkerStatusRequest(status_requested=status), 423)
            case NoTaskTypes():
                return text(406, "You do not support any task types.")
            case NoTask():
                return no_content()
        raise AssertionError(result)

    async def update_task(self, request: Request, worker_id: str) -> Response:
        """``POST /tasks/{task_id}/update``."""
        task_id = _task_id(request)
        if task_id is None:
            return _bad_id("task_id", request)
        update = await _decode(request, TaskUpdate, UPDATE_BODY)
        assert isinstance(update, TaskUpdate)
        self.manager.task_updates.update(worker_id, task_id, update, peer(request))
        return no_content()

    async def return_task(self, request: Request, worker_id: str) -> Response:
        """``POST /tasks/{task_id}/return``."""
        task_id = _task_id(request)
        if task_id is None:
            return _bad_id("task_id", request)
        self.manager.task_updates.return_task(worker_id, task_id, peer(request))
        return no_content()

    async def may_i_run(self, request: Request, worker_id: str) -> Response:
        """``GET /may-i-run/{task_id}``: always the three-key document, errors included."""
        task_id = _task_id(request)
        if task_id is None:
            reason = f"Invalid ObjectID used for task-id: {request.path_params['task_id']}"
            return document(MayKeepRunningResponse(may_keep_running=False, reason=reason), 404)
        answer = self.manager.task_updates.may_i_run(worker_id, task_id, peer(request))
        if answer == _KEEP_RUNNING:
            return encoded_document(_KEEP_RUNNING_BODY)
        return document(answer)

    async def status_change(self, request: Request, worker_id: str) -> Response:
        """``GET /status-change``."""
        pending = self.manager.workers.status_change(worker_id, peer(request))
        if pending is None:
            return no_content()
        return document(WorkerStatusRequest(status_requested=pending.status))

    async def ack_status_change(self, request: Request, worker_id: str) -> Response:
        """``POST /ack-status-change/{status}``: always 204."""
        acked = request.path_params["status"]
        if not self.manager.workers.acknowledge(worker_id, acked):
            self.manager.log.info(
                "worker acknowledged a status it was not asked for",
                extra={"worker": worker_id, "status": acked},
            )
        return no_content()

    async def output_produced(self, request: Request, worker_id: str) -> Response:
        """``POST /output-produced``: candidates for the latest image."""
        body = await read_body(request, SMALL_BODY)
        if not body:
            return text(400, "No HTTP body received")
        produced = load_document(FileProduced, body)
        if not produced.paths:
            return text(422, "List of paths may not be empty.")
        self.manager.latest_image.offer(list(produced.paths))
        return no_content()


def worker_catalogue() -> list[Endpoint]:
    """The catalogue entries this module serves: the worker endpoints with worker auth."""
    return [
        item
        for item in ENDPOINTS
        if item.group == "worker" and item.auth in (Auth.WORKER, Auth.REGISTRATION)
    ]


__all__ = ["WorkerAPI", "peer", "worker_catalogue"]
