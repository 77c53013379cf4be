"""The user API for workers, the farm, the latest image, login and the event stream."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.types import ASGIApp, Message

import flamenco_manager
from flamenco_manager.services.events import Event
from flamenco_manager.web import user_api
from flamenco_manager.web.app import create_app
from tests.manager.harness import Farm

from .conftest import User

pytestmark = pytest.mark.anyio


async def test_workers_are_listed_and_shown_with_their_blocklist(farm: Farm, user: User) -> None:
    worker = await farm.register("render-01", task_types=("sleep", "blender"))
    job = await user.submit(frames="1")
    with farm.manager.database.transaction() as connection:
        from flamenco_manager.storage import workers as worker_store

        worker_store.block(connection, worker.id, job["_id"], "sleep", farm.clock())
    listed = (await user.get("/api/workers")).json()["workers"]
    assert [(item["_id"], item["nickname"]) for item in listed] == [(worker.id, "render-01")]
    shown = (await user.get(f"/api/workers/{worker.id}")).json()
    assert shown["supported_task_types"] == ["sleep", "blender"]
    assert [entry["job_id"] for entry in shown["blacklist"]] == [job["_id"]]
    blocklist = (await user.get(f"/api/workers/{worker.id}/blocklist")).json()["entries"]
    assert [(entry["job_id"], entry["task_type"]) for entry in blocklist] == [(job["_id"], "sleep")]
    one = await user.request(
        "DELETE",
        f"/api/workers/{worker.id}/blocklist",
        params={"job_id": job["_id"], "task_type": "sleep"},
    )
    assert one.json() == {"removed": 1}
    again = await user.request(
        "DELETE",
        f"/api/workers/{worker.id}/blocklist",
        params={"job_id": job["_id"], "task_type": "sleep"},
    )
    assert again.status_code == 404
    half = await user.request(
        "DELETE", f"/api/workers/{worker.id}/blocklist", params={"job_id": job["_id"]}
    )
    assert half.status_code == 400
    everything = await user.request("DELETE", f"/api/workers/{worker.id}/blocklist")
    assert everything.json() == {"removed": 0}


async def test_workers_can_be_asked_for_by_id(farm: Farm, user: User) -> None:
    ids = [(await farm.register(name)).id for name in ("render-03", "render-01", "render-02")]
    every = (await user.get("/api/workers")).json()["workers"]
    assert [item["nickname"] for item in every] == ["render-01", "render-02", "render-03"]

    # Repeated or comma-separated, any case; by nickname; what is no worker left out.
    asked = [("id", ids[0]), ("id", f"{ids[2].upper()},{'0' * 24}")]
    some = await user.get("/api/workers", params=asked)
    assert some.status_code == 200
    assert some.json()["workers"] == [every[1], every[2]]
    assert (await user.get("/api/workers?id=")).json()["workers"] == []

    malformed = await user.get("/api/workers", params={"id": f"{ids[0]},render-01"})
    assert malformed.status_code == 400
    assert "id: not 24-character hexadecimal IDs: ['render-01']" in malformed.text
    too_many = ",".join(f"{number:024x}" for number in range(201))
    refused = await user.get("/api/workers", params={"id": too_many})
    assert refused.status_code == 400
    assert "id: at most 200 worker IDs, not 201" in refused.text


async def test_workers_name_their_current_task_and_its_job(farm: Farm, user: User) -> None:
    busy = await farm.register("render-01")
    idle = await farm.register("render-02")
    job = await user.submit(frames="1-2", name="shot 030")
    task = (await farm.fetch(busy)).json()

    listed = {item["nickname"]: item for item in (await user.get("/api/workers")).json()["workers"]}
    assert listed["render-01"]["current_task"] == task["_id"]
    assert listed["render-01"]["current_task_name"] == task["name"]
    assert listed["render-01"]["current_job"] == job["_id"]
    assert "current_task_name" not in listed["render-02"]
    shown = (await user.get(f"/api/workers/{busy.id}")).json()
    assert (shown["current_task_name"], shown["current_job"]) == (task["name"], job["_id"])

    # The task gone with its job: the worker still names the ID it last had, nothing more.
    done = await farm.call(
        busy, "POST", f"/tasks/{task['_id']}/update", json={"task_status": "completed"}
    )
    assert done.status_code == 204
    await user.post(f"/api/jobs/{job['_id']}/status", json={"status": "cancel-requested"})
    assert (await user.request("DELETE", f"/api/jobs/{job['_id']}")).status_code == 204
    shown = (await user.get(f"/api/workers/{busy.id}")).json()
    assert shown["current_task"] == task["_id"]
    assert "current_task_name" not in shown
    assert "current_job" not in shown
    assert idle.id in {item["_id"] for item in (await user.get("/api/workers")).json()["workers"]}


async def test_worker_status_requests(farm: Farm, user: User) -> None:
    worker = await farm.register()
    response = await user.post(f"/api/workers/{worker.id}/status", json={"status": "asleep"})
    assert response.status_code == 200
    assert (response.json()["status_requested"], response.json()["lazy_status_request"]) == (
        "asleep",
        False,
    )
    assert (await farm.fetch(worker)).status_code == 423
    lazy = await user.post(
        f"/api/workers/{worker.id}/status", json={"status": "shutdown", "lazy": True}
    )
    assert lazy.json()["lazy_status_request"] is True
    for body in ({"status": "offline"}, {"status": "asleep", "lazy": "yes"}, {}):
        bad = await user.post(f"/api/workers/{worker.id}/status", json=body)
        assert bad.status_code == 400, body
        assert "status" in bad.text or "lazy" in bad.text


async def test_sleep_schedule_get_and_set(farm: Farm, user: User) -> None:
    worker = await farm.register()
    path = f"/api/workers/{worker.id}/sleep-schedule"
    assert (await user.get(path)).json() == {"schedule_active": False}
    stored = await user.request(
        "PUT",
        path,
        json={
            "schedule_active": True,
            "days_of_week": "mo tu",
            "time_start": "09:00",
            "time_end": "18:00",
        },
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["days_of_week"] == "mo tu"
    assert stored.json()["next_check"]
    bad = await user.request("PUT", path, json={"days_of_week": "someday"})
    assert bad.status_code == 400
    assert (await user.request("PUT", path, json={"time_start": "25:00"})).status_code == 400


async def test_forgetting_a_worker_requeues_its_task(farm: Farm, user: User) -> None:
    worker = await farm.register()
    job = await user.submit(frames="1")
    task_id = (await farm.fetch(worker)).json()["_id"]
    assert (await user.request("DELETE", f"/api/workers/{worker.id}")).status_code == 204
    assert (await user.get(f"/api/workers/{worker.id}")).status_code == 404
    task = (await user.get(f"/api/tasks/{task_id}")).json()
    assert task["status"] == "claimed-by-manager"
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["status"] == "queued"


async def test_health_needs_no_token_and_names_the_database(farm: Farm, database_url: str) -> None:
    response = await farm.client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": flamenco_manager.__version__,
        "database": "postgresql" if database_url else "sqlite",
    }


async def test_health_is_503_while_the_database_cannot_be_reached(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (The PostgreSQL restart of tests/faults/test_database_outage.py shows it for real.)
    def unreachable(self: object) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, OSError("connection refused"))

    monkeypatch.setattr(type(farm.manager.database), "check", unreachable)
    response = await farm.client.get("/api/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "database is unavailable" in response.text


def _metrics(text: str) -> dict[str, float]:
    """Prometheus's text format: every sample by its name and labels."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


async def test_metrics_count_workers_jobs_and_tasks_in_every_status(farm: Farm, user: User) -> None:
    assert (await farm.client.get("/metrics")).status_code == 401
    worker = await farm.register()
    await farm.call(worker, "POST", "/sign-on", json={})
    await user.submit(frames="1-3")
    task_id = (await farm.fetch(worker)).json()["_id"]
    await farm.update(worker, task_id, task_status="completed")
    await farm.fetch(worker)

    response = await user.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _metrics(response.text)
    assert samples['flamenco_farm_state{state="active"}'] == 1
    assert samples['flamenco_farm_state{state="idle"}'] == 0
    assert samples['flamenco_workers{status="awake"}'] == 1
    assert samples['flamenco_workers{status="timeout"}'] == 0  # zeros stay, for alerts
    assert samples['flamenco_jobs{status="active"}'] == 1
    assert samples['flamenco_tasks{status="completed"}'] == 1
    assert samples['flamenco_tasks{status="active"}'] == 1
    assert samples['flamenco_tasks{status="queued"}'] == 1
    assert sum(v for k, v in samples.items() if k.startswith("flamenco_tasks{")) == 3
    assert samples["flamenco_event_streams"] == 0
    info = [key for key in samples if key.startswith("flamenco_manager_info{")]
    assert info == [
        f'flamenco_manager_info{{version="{flamenco_manager.__version__}",'
        f'database="{farm.manager.database.backend}"}}'
    ]
    # Every line is a comment or a sample: nothing Prometheus would refuse.
    for line in response.text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \d+', line
        ), line


async def test_metrics_count_the_answers_by_route_and_status(
    farm: Farm, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(farm.manager, run_loops=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://manager") as client:
        registered = await client.post(
            "/register-worker",
            json={"secret": "s" * 32, "platform": "linux", "supported_task_types": ["sleep"]},
        )
        token = base64.b64encode(f"{registered.json()['_id']}:{'s' * 32}".encode()).decode()
        worker = {"Authorization": f"Basic {token}"}
        for _ in range(2):
            assert (await client.post("/task", headers=worker)).status_code == 204
        unknown = await client.post(f"/tasks/{'0' * 24}/update", headers=worker, json={})
        assert unknown.status_code == 404
        assert (await client.get("/api/farm", headers=user.headers)).status_code == 200
        assert (await client.get("/no/such/path")).status_code == 404
        monkeypatch.setattr(farm.manager.farm, "status", lambda **_: 1 / 0)
        assert (await client.get("/api/farm", headers=user.headers)).status_code == 500
        monkeypatch.undo()
        samples = _metrics((await client.get("/metrics", headers=user.headers)).text)

    def answers(method: str, route: str, status: int) -> float:
        labels = f'method="{method}",route="{route}",status="{status}"'
        return samples.get(f"flamenco_http_requests_total{{{labels}}}", 0)

    assert answers("POST", "/register-worker", 200) == 1
    assert answers("POST", "/task", 204) == 2  # a hot route, served before Starlette
    assert answers("POST", "/tasks/{task_id}/update", 404) == 1
    assert answers("GET", "/api/farm", 200) == 1
    assert answers("GET", "/api/farm", 500) == 1  # an error nobody expected
    assert answers("GET", "unmatched", 404) == 1
    counted = [key for key in samples if key.startswith("flamenco_http_requests_total")]
    assert len(counted) == 6


async def test_farm_status(farm: Farm, user: User) -> None:
    assert (await user.get("/api/farm")).json()["state"] == "inoperative"
    worker = await farm.register()
    await farm.call(worker, "POST", "/sign-on", json={})
    assert (await user.get("/api/farm")).json()["state"] == "idle"
    await user.submit(frames="1-2")
    await farm.fetch(worker)
    status = (await user.get("/api/farm")).json()
    assert status["state"] == "active"
    assert status["workers"] == {"awake": 1}
    assert status["jobs"] == {"active": 1}
    assert status["tasks"] == {"active": 1, "queued": 1}

    # The task counts are summed from the counts per job: they follow completions, other
    # jobs, and deleted jobs as the tasks themselves do.
    second = await user.submit(frames="1-3", name="second")
    task = (await farm.fetch(worker)).json()
    done = await farm.call(
        worker, "POST", f"/tasks/{task['_id']}/update", json={"task_status": "completed"}
    )
    assert done.status_code == 204
    assert (await user.get("/api/farm")).json()["tasks"] == {"queued": 4}
    await user.post(f"/api/jobs/{second['_id']}/status", json={"status": "cancel-requested"})
    assert (await user.request("DELETE", f"/api/jobs/{second['_id']}")).status_code == 204
    assert (await user.get("/api/farm")).json()["tasks"] == {"queued": 1}


async def test_latest_image(farm: Farm, user: User) -> None:
    assert (await user.get("/api/latest-image")).status_code == 404
    path = farm.manager.latest_image.output_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    response = await user.get("/api/latest-image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content.startswith(b"\xff\xd8")


async def test_login_sets_the_cookie_and_logout_removes_it(farm: Farm, user: User) -> None:
    response = await farm.client.get(
        "/login", params={"token": user.token, "next": "/jobs"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs"
    cookie = response.headers["set-cookie"]
    assert "jwtToken=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert (await farm.client.get("/api/farm")).status_code == 200
    out = await farm.client.get("/logout", follow_redirects=False)
    assert out.status_code == 303
    farm.client.cookies.clear()
    bad = await farm.client.get("/login", params={"token": "nope"}, follow_redirects=False)
    assert bad.status_code == 401
    offsite = await farm.client.get(
        "/login", params={"token": user.token, "next": "//evil.example"}, follow_redirects=False
    )
    assert offsite.headers["location"] == "/"
    farm.client.cookies.clear()
    expired = farm.manager.mint_user_token("old", timedelta(seconds=1))
    assert expired


# --- the event stream ----------------------------------------------------------------------------


class Stream:
    """A streaming GET driven straight through ASGI: httpx's ASGI transport waits for the end."""

    def __init__(self, app: ASGIApp, path: str, headers: dict[str, str]) -> None:
        self.app = app
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.disconnected = asyncio.Event()
        self.buffer = b""
        path, _, query = path.partition("?")
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
            "client": ("127.0.0.1", 5000),
            "server": ("manager", 80),
        }
        self.sent_request = False

    async def receive(self) -> Message:
        if not self.sent_request:
            self.sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {key.decode(): value.decode() for key, value in message["headers"]}
        elif message["type"] == "http.response.body":
            await self.chunks.put(message.get("body", b""))

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)

    async def next_message(self) -> str:
        """The next SSE message (comment or event), without its blank line."""
        while b"\n\n" not in self.buffer:
            self.buffer += await asyncio.wait_for(self.chunks.get(), 5)
        message, _, self.buffer = self.buffer.partition(b"\n\n")
        return message.decode()

    async def next_event(self, kind: str) -> dict[str, Any]:
        while True:
            message = await self.next_message()
            fields = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line)
            if fields.get("event") == kind:
                data: dict[str, Any] = json.loads(fields["data"])
                return data


async def _streaming(
    farm: Farm, user: User, path: str, body: Callable[[Stream], Awaitable[None]], **app_options: Any
) -> Stream:
    app = create_app(farm.manager, run_loops=False, **app_options)
    stream = Stream(app, path, user.headers)
    task = asyncio.create_task(stream.run())
    try:
        await body(stream)
    finally:
        stream.disconnected.set()
        await asyncio.wait_for(task, 5)
    return stream


async def test_the_event_stream_tells_job_task_and_worker_changes(farm: Farm, user: User) -> None:
    async def body(stream: Stream) -> None:
        assert (await stream.next_message()).startswith(": flamenco events")
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        job = await user.submit(frames="1")
        created = await stream.next_event("job")
        assert (created["id"], created["status"]) == (job["_id"], "queued")
        worker = await farm.register("w1")
        registered = await stream.next_event("worker")
        assert registered["id"] == worker.id
        task_id = (await farm.fetch(worker)).json()["_id"]
        assigned = await stream.next_event("task")
        assert (assigned["id"], assigned["status"], assigned["job"]) == (
            task_id,
            "active",
            job["_id"],
        )
        await farm.update(worker, task_id, task_status="completed")
        while (event := await stream.next_event("job"))["status"] != "completed":
            assert event["id"] == job["_id"]

    await _streaming(farm, user, "/api/events", body)
    assert farm.manager.events.subscriber_count == 0


async def test_open_streams_share_the_encoding_of_each_event(
    farm: Farm, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With ten dashboards open, each stream encoding every event itself cost the farm a third
    # of its task updates a second.
    encoded: list[int] = []
    real = user_api._server_sent

    def counted(event: Event) -> bytes:
        encoded.append(event.number)
        return real(event)

    monkeypatch.setattr(user_api, "_server_sent", counted)
    app = create_app(farm.manager, run_loops=False)
    streams = [Stream(app, "/api/events", user.headers) for _ in range(3)]
    runs = [asyncio.create_task(stream.run()) for stream in streams]
    try:
        for stream in streams:
            assert (await stream.next_message()).startswith(": flamenco events")
        await user.submit(frames="1-4", chunk_size=1)
        await farm.register("w1")
        received = []
        for stream in streams:
            messages = [await stream.next_message()]
            while "event: worker" not in messages[-1]:
                messages.append(await stream.next_message())
            received.append(messages)
    finally:
        for stream in streams:
            stream.disconnected.set()
        await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert received[0] == received[1] == received[2]
    assert len(received[0]) >= 2
    assert sorted(encoded) == sorted(set(encoded))  # each event encoded once
    assert len(encoded) == len(received[0])


async def test_the_stream_filters_by_type_and_sends_heartbeats(farm: Farm, user: User) -> None:
    async def body(stream: Stream) -> None:
        await stream.next_message()
        await farm.register("ignored")
        await user.submit(frames="1")
        assert (await stream.next_event("job"))["status"] == "queued"
        assert await stream.next_message() == ": keep-alive"

    await _streaming(farm, user, "/api/events?types=job", body, event_heartbeat=0.05)


async def test_a_stream_ends_once_its_token_is_revoked_even_on_a_busy_farm(
    farm: Farm, user: User
) -> None:
    # The stream went on for ever after its token was revoked or had expired: whoever held the
    # connection kept hearing of every job, task and worker.
    app = create_app(farm.manager, run_loops=False, event_heartbeat=0.2)
    stream = Stream(app, "/api/events?types=job", user.headers)
    run = asyncio.create_task(stream.run())

    async def busy() -> None:  # events all along: the check must not wait for a quiet spell
        for index in range(400):
            farm.manager.events.publish([Event("job", f"busy-{index}")])
            await asyncio.sleep(0.01)

    await stream.next_message()
    farm.manager.revocations.revoke(user.token)
    publishing = asyncio.create_task(busy())
    try:
        while "event: unauthorized" not in (message := await stream.next_message()):
            assert "event: job" in message
        await asyncio.wait_for(run, 2)  # the stream ended by itself
    finally:
        publishing.cancel()
        stream.disconnected.set()
        await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 5)
    assert farm.manager.events.subscriber_count == 0


async def test_the_stream_needs_a_token_and_known_types(farm: Farm, user: User) -> None:
    assert (await farm.client.get("/api/events")).status_code == 401
    response = await user.get("/api/events", params={"types": "job,nonsense"})
    assert response.status_code == 400
    assert "nonsense" in response.json()["message"]
