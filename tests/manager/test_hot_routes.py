"""The hot worker routes (``/task``, task updates, ``/may-i-run``) served beside Starlette: the
same answers as through Starlette's router, and everything else left to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from flamenco_manager.web.hot_routes import HotRoute
from tests.support import http_scope

from .harness import Farm, WorkerHandle, interrupt_next_commit, spec

pytestmark = pytest.mark.anyio

ROOT = "/below"


async def _running(farm: Farm) -> tuple[WorkerHandle, str]:
    """A worker and the task it was given."""
    worker = await farm.register()
    farm.job(spec())
    return worker, (await farm.fetch(worker)).json()["_id"]


async def _never(request: Any) -> Any:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/task", "/task", {}),
        ("/task", "/task/", None),
        ("/task", "/tasks", None),
        ("/tasks/{task_id}/update", "/tasks/abc/update", {"task_id": "abc"}),
        ("/tasks/{task_id}/update", "/tasks//update", None),
        ("/tasks/{task_id}/update", "/tasks/update", None),
        ("/tasks/{task_id}/update", "/tasks/a/b/update", None),
        ("/tasks/{task_id}/update", "/tasks/abc/update/", None),
        ("/tasks/{task_id}/update", "/tasks/abc/return", None),
        ("/may-i-run/{task_id}", "/may-i-run/abc", {"task_id": "abc"}),
        ("/may-i-run/{task_id}", "/may-i-run/", None),
        ("/may-i-run/{task_id}", "/may-i-run/abc/", None),
    ],
)
def test_paths_match_as_starlettes_parameters_do(
    template: str, path: str, expected: dict[str, str] | None
) -> None:
    assert HotRoute(template, ["GET"], _never).match(path) == expected


@pytest.mark.parametrize("template", ["/a/{x}/{y}", "/a/{}", "/a/{x"])
def test_templates_beyond_one_parameter_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="at most one named parameter"):
        HotRoute(template, ["GET"], _never)


@pytest.fixture
async def through_starlette(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests take Starlette's router: below a ``root_path``, which the hot
    routes leave to it."""
    app = farm.client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=("10.0.0.5", 53211), root_path=ROOT)
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
        yield client


Request = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def _as(worker: WorkerHandle, method: str, path: str, **kwargs: Any) -> Request:
    async def send(client: httpx.AsyncClient, root: str) -> httpx.Response:
        return await client.request(method, root + path, headers=worker.auth, **kwargs)

    return send


def _answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    return response.status_code, response.content, sorted(response.headers.multi_items())


async def test_every_answer_of_the_hot_routes_is_the_one_starlette_gives(
    farm: Farm, through_starlette: httpx.AsyncClient
) -> None:
    worker = await farm.register("runner")
    stranger = WorkerHandle(worker.id, "wrong secret", "stranger")
    idle = await farm.register("idle")
    job = farm.job(spec())
    task_id = (await farm.fetch(worker)).json()["_id"]
    assert task_id == farm.task_ids(job)[0]
    missing = "5f1e0c0a2b3c4d5e6f70a101"

    # Requests that change nothing, so that both ways answer the same state.
    requests = {
        "poll, empty queue": _as(idle, "POST", "/task"),
        "poll by GET": _as(idle, "GET", "/task"),
        "the task already assigned": _as(worker, "POST", "/task"),
        "bad credentials, /task": _as(stranger, "POST", "/task"),
        "bad credentials, update": _as(stranger, "POST", f"/tasks/{task_id}/update", json={}),
        "bad credentials, may-i-run": _as(stranger, "GET", f"/may-i-run/{task_id}"),
        "invalid ID, update": _as(worker, "POST", "/tasks/nonsense/update", json={}),
        "invalid ID, may-i-run": _as(worker, "GET", "/may-i-run/nonsense"),
        "unknown task, update": _as(worker, "POST", f"/tasks/{missing}/update", json={}),
        "unknown task, may-i-run": _as(worker, "GET", f"/may-i-run/{missing}"),
        "someone else's task": _as(idle, "POST", f"/tasks/{task_id}/update", json={}),
        "garbage body": _as(worker, "POST", f"/tasks/{task_id}/update", content=b"{nope"),
        "wrong field type": _as(worker, "POST", f"/tasks/{task_id}/update", json={"activity": 3}),
        "status a worker may not send": _as(
            worker, "POST", f"/tasks/{task_id}/update", json={"task_status": "queued"}
        ),
        "may keep running": _as(worker, "GET", f"/may-i-run/{task_id}"),
        "may not: not the worker's": _as(idle, "GET", f"/may-i-run/{task_id}"),
        "method not allowed": _as(worker, "PUT", "/task"),
        "HEAD of /task": _as(idle, "HEAD", "/task"),
        "a path below the update": _as(worker, "POST", f"/tasks/{task_id}/update/x"),
    }
    for name, request in requests.items():
        hot = _answer(await request(farm.client, ""))
        routed = _answer(await request(through_starlette, ROOT))
        assert hot == routed, name
        assert hot[0] != 500, name
    # And one that writes: the same answer, and the update stored both ways.
    for client, root, activity in ((farm.client, "", "hot"), (through_starlette, ROOT, "routed")):
        body = {"task_status": "active", "activity": activity, "log": activity}
        response = await _as(worker, "POST", f"/tasks/{task_id}/update", json=body)(client, root)
        assert (response.status_code, response.content) == (204, b"")
        assert farm.task(task_id).activity == activity
    log = farm.manager.logs.read_whole(str(job.id), task_id)
    assert log.endswith(b"hot\nrouted\n")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_failed_commit_answers_503_through_starlette_too(
    farm: Farm, through_starlette: httpx.AsyncClient
) -> None:
    """Routes that are not hot (here ``/tasks/{id}/return``) still wait for their commit."""
    worker, task_id = await _running(farm)
    interrupt_next_commit(farm.manager.database.engine)
    response = await farm.call(worker, "POST", f"/tasks/{task_id}/return")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert farm.task(task_id).status == "active"
    # A hot route below a root_path: Starlette's way, the same 503.
    interrupt_next_commit(farm.manager.database.engine)
    body = {"activity": "never stored"}
    response = await _as(worker, "POST", f"/tasks/{task_id}/update", json=body)(
        through_starlette, ROOT
    )
    assert response.status_code == 503
    assert farm.task(task_id).activity != "never stored"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_may_i_run_says_keep_running_when_its_commit_fails(farm: Farm) -> None:
    worker, task_id = await _running(farm)
    farm.clock.advance(seconds=30)  # the ping is due: may-i-run writes
    interrupt_next_commit(farm.manager.database.engine)
    response = await farm.call(worker, "GET", f"/may-i-run/{task_id}")
    assert response.status_code == 503
    assert response.json()["may_keep_running"] is True


async def test_a_client_gone_before_its_body_gets_no_answer_and_changes_nothing(
    farm: Farm,
) -> None:
    worker, task_id = await _running(farm)
    before = farm.task(task_id)
    app = farm.client._transport.app  # type: ignore[attr-defined]
    headers = [(name.lower().encode(), value.encode()) for name, value in worker.auth.items()]
    headers.append((b"content-length", b"100"))
    scope = http_scope("POST", f"/tasks/{task_id}/update", headers, client="10.0.0.5")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent == []
    assert farm.task(task_id) == before


async def test_an_unexpected_error_is_starlettes_500_and_goes_on_to_the_server(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, task_id = await _running(farm)

    def broken(*args: object) -> None:
        raise RuntimeError("nobody expected this")

    monkeypatch.setattr(farm.manager.task_updates, "update", broken)
    app = farm.client._transport.app  # type: ignore[attr-defined]
    answers = []
    for root in ("", ROOT):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
            response = await _as(worker, "POST", f"/tasks/{task_id}/update", json={})(client, root)
        answers.append(_answer(response))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (500, b"Internal Server Error")
    with pytest.raises(RuntimeError, match="nobody expected this"):
        await farm.update(worker, task_id, activity="again")
