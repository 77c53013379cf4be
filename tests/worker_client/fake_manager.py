"""A small scripted manager that answers as the stubs of spec/worker.md §10 did.

Every request is recorded (method, path, auth, body). Each endpoint answers from its script
(a queue of answers, consumed in order) and falls back to a default: 204 for most, a task from
``tasks`` for ``/task``, ``{"may_keep_running": true}`` for ``/may-i-run``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flamenco_protocol.endpoints import worker_endpoints

WORKER_ID = "5f1e0c0a2b3c4d5e6f708192"
ANSWER = tuple[int, Any]
Script = ANSWER | Callable[[], ANSWER]

_PATTERNS = [
    (ep.name, re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", ep.path) + "$"), ep.path)
    for ep in worker_endpoints()
]


@attrs.frozen
class Recorded:
    """One request as the fake manager saw it."""

    endpoint: str
    method: str
    path: str
    template: str
    auth: str
    body: Any
    at: float
    status: int

    @property
    def keys(self) -> tuple[str, ...] | None:
        """The body's top-level keys, sorted; ``None`` without a JSON object body."""
        return tuple(sorted(self.body)) if isinstance(self.body, dict) else None


def task(task_id: str, *commands: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A Task document as the Go manager sends it."""
    return {
        "_id": task_id,
        "job": "5f1e0c0a2b3c4d5e6f70b002",
        "manager": "5f1e0c0a2b3c4d5e6f70c001",
        "project": "5f1e0c0a2b3c4d5e6f70d001",
        "user": "5f1e0c0a2b3c4d5e6f70e001",
        "name": f"task {task_id[-4:]}",
        "status": "active",
        "priority": 50,
        "job_priority": 50,
        "job_type": "interop-test",
        "task_type": "sleep",
        "commands": [{"name": name, "settings": settings} for name, settings in commands],
    }


class FakeManager:
    """The scripted manager; ``app`` is its ASGI application."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.tasks: deque[dict[str, Any]] = deque()
        self.scripts: dict[str, deque[Script]] = {}
        self.started = time.monotonic()
        self.on_request: Callable[[Recorded], None] | None = None
        self.max_body = 32 << 20
        """Bodies larger than this get a 413, as from the real manager."""
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT"])]
        )

    def script(self, endpoint: str, *answers: Script) -> None:
        """Answer the next calls of ``endpoint`` with ``answers``, in order."""
        self.scripts.setdefault(endpoint, deque()).extend(answers)

    def calls(self, endpoint: str) -> list[Recorded]:
        """The recorded requests to ``endpoint``."""
        return [request for request in self.requests if request.endpoint == endpoint]

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        name, template = "unknown", path
        for candidate, pattern, path_template in _PATTERNS:
            if pattern.match(path):
                name, template = candidate, path_template
                break
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status, answer = (413, "body too large") if len(raw) > self.max_body else self._answer(name)
        recorded = Recorded(
            endpoint=name,
            method=request.method,
            path=path,
            template=template,
            auth=_auth_kind(request.headers.get("authorization", "")),
            body=body,
            at=time.monotonic() - self.started,
            status=status,
        )
        self.requests.append(recorded)
        if self.on_request is not None:
            self.on_request(recorded)
        if status == 204 or answer is None:
            return Response(status_code=status)
        if isinstance(answer, str):
            return PlainTextResponse(answer, status_code=status)
        return JSONResponse(answer, status_code=status)

    def _answer(self, name: str) -> ANSWER:
        queued = self.scripts.get(name)
        if queued:
            answer = queued.popleft()
            return answer() if callable(answer) else answer
        if name == "register_worker":
            return 200, {"_id": WORKER_ID, "nickname": "vm", "status": "", "platform": "linux"}
        if name == "fetch_task":
            return (200, self.tasks.popleft()) if self.tasks else (204, None)
        if name == "may_i_run":
            return 200, {"may_keep_running": True}
        return 204, None


def _auth_kind(header: str) -> str:
    scheme, _, value = header.partition(" ")
    if scheme == "Basic":
        user = base64.b64decode(value).decode().partition(":")[0]
        return f"basic:{user}"
    return scheme.lower() or "none"


class ServedManager:
    """The fake manager under uvicorn on 127.0.0.1, in a thread (for subprocess workers)."""

    def __init__(self, manager: FakeManager) -> None:
        import uvicorn

        self.manager = manager
        config = uvicorn.Config(manager.app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        (sock,) = [s for server in self.server.servers for s in server.sockets]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> ServedManager:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake manager did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
