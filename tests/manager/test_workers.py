"""Worker endpoints: registration, sign-on/off, status requests, acks (spec §4, §6, §17.3-§17.5)."""

from __future__ import annotations

import time

import jwt
import pytest

from flamenco_manager.manager import Manager
from flamenco_manager.web.app import create_app

from .harness import Farm, WorkerHandle, make_settings, spec

pytestmark = pytest.mark.anyio


async def test_registration_answers_the_go_worker_document(farm: Farm) -> None:
    response = await farm.client.post(
        "/register-worker",
        json={
            "secret": "s" * 64,
            "platform": "linux",
            "supported_task_types": ["sleep"],
            "nickname": "vm",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "_id",
        "nickname",
        "address",
        "status",
        "platform",
        "time_cost",
        "supported_task_types",
        "software",
        "status_requested",
        "lazy_status_request",
        "sleep_schedule",
    }
    assert body["address"] == "10.0.0.5:53211"
    assert body["status"] == ""
    assert "secret" not in response.text
    stored = farm.manager.workers.get(body["_id"])
    assert stored.secret_hash.startswith("scrypt$")
    assert "s" * 64 not in stored.secret_hash


async def test_registration_garbage_is_400(farm: Farm) -> None:
    response = await farm.client.post("/register-worker", content=b'{"secret": 5}')
    assert response.status_code == 400
    assert "$.secret" in response.text
    assert farm.manager.workers.list() == []
    body = b'{"secret": "s", "platform": "linux", "nickname": "render\\ud800"}'
    response = await farm.client.post("/register-worker", content=body)
    assert response.status_code == 400
    assert "surrogate" in response.text
    # PostgreSQL refused a platform over the column's 40 characters: a 500 (found by
    # schemathesis); SQLite took it.
    body = b'{"secret": "s", "platform": "' + b"0" * 41 + b'", "nickname": "n"}'
    response = await farm.client.post("/register-worker", content=body)
    assert response.status_code == 400
    assert "platform: at most 40 characters, not 41" in response.text
    assert farm.manager.workers.list() == []


async def _psk_farm(tmp_path: object, database_url: str, secret: str) -> tuple[Manager, object]:
    from pathlib import Path

    import httpx

    settings = make_settings(
        Path(str(tmp_path)), worker_registration_secret=secret, database=database_url
    )
    manager = Manager(settings)
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    return manager, httpx.AsyncClient(transport=transport, base_url="http://manager")


async def test_registration_with_a_preshared_secret(tmp_path: object, database_url: str) -> None:
    manager, client = await _psk_farm(tmp_path, database_url, " sesame ")
    body = {"secret": "x", "platform": "linux", "supported_task_types": [], "nickname": "n"}
    async with client as http:  # type: ignore[attr-defined]
        missing = await http.post("/register-worker", json=body)
        assert (missing.status_code, missing.text) == (
            403,
            "Missing Bearer token for registration\n",
        )
        now = time.time()
        # The real worker signs float timestamps with HS256.
        good = jwt.encode({"exp": now + 900.5, "iat": now - 0.5}, "sesame", algorithm="HS256")
        wrong_key = jwt.encode({"exp": now + 900}, "open sesame", algorithm="HS256")
        expired = jwt.encode({"exp": now - 1}, "sesame", algorithm="HS256")
        for token in (wrong_key, expired, "garbage"):
            response = await http.post(
                "/register-worker", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert (response.status_code, response.text) == (
                403,
                "Invalid Bearer token for registration\n",
            )
        response = await http.post(
            "/register-worker", json=body, headers={"Authorization": f"bearer {good}"}
        )
        assert response.status_code == 200
    assert len(manager.workers.list()) == 1
    manager.close()


async def test_sign_on_changes_only_what_is_given(farm: Farm) -> None:
    worker = await farm.register("old", ["sleep"])
    assert (await farm.call(worker, "POST", "/sign-on", json={})).status_code == 204
    record = farm.worker(worker)
    assert (record.nickname, record.supported_task_types, record.status) == (
        "old",
        ("sleep",),
        "starting",
    )
    await farm.call(worker, "POST", "/sign-on", json={"nickname": "new"})
    assert farm.worker(worker).nickname == "new"
    await farm.call(
        worker, "POST", "/sign-on", json={"supported_task_types": ["blender-render", "sleep"]}
    )
    assert farm.worker(worker).supported_task_types == ("blender-render", "sleep")


async def test_sign_on_needs_a_body_and_clears_the_current_task(farm: Farm) -> None:
    farm.job(spec())
    worker = await farm.register()
    await farm.fetch(worker)
    assert farm.worker(worker).current_task is not None
    assert (await farm.call(worker, "POST", "/sign-on")).status_code == 400
    await farm.call(worker, "POST", "/sign-on", json={})
    assert farm.worker(worker).current_task is None


async def test_sign_on_with_unknown_credentials_is_401_so_the_worker_registers_again(
    farm: Farm,
) -> None:
    stranger = WorkerHandle("5f1e0c0a2b3c4d5e6f708192", "secret", "ghost")
    assert (await farm.call(stranger, "POST", "/sign-on", json={})).status_code == 401


@pytest.mark.parametrize(
    ("status", "request_before", "request_after"),
    [
        ("awake", "", ""),
        ("asleep", "", "asleep"),
        ("timeout", "", ""),
        ("awake", "shutdown", ""),
        ("asleep", "shutdown", "asleep"),
        ("asleep", "awake", ""),
        ("timeout", "shutdown", ""),
    ],
)
async def test_sign_off(farm: Farm, status: str, request_before: str, request_after: str) -> None:
    worker = await farm.register()
    from flamenco_manager.storage import workers as worker_store

    with farm.manager.database.transaction() as connection:
        worker_store.update(connection, worker.id, status=status, status_requested=request_before)
    assert (await farm.call(worker, "POST", "/sign-off")).status_code == 204
    record = farm.worker(worker)
    assert (record.status, record.status_requested) == ("offline", request_after)
    if request_after:
        assert record.lazy_status_request is False


async def test_sign_off_requeues_the_running_task(farm: Farm) -> None:
    job = farm.job(spec())
    first = await farm.register("first")
    second = await farm.register("second")
    task_id = (await farm.fetch(first)).json()["_id"]
    await farm.call(first, "POST", "/sign-off")
    assert farm.task(task_id).status == "claimed-by-manager"
    assert (await farm.fetch(second)).json()["_id"] == task_id == farm.task_ids(job)[0]
    assert farm.task(task_id).status == "active"


async def test_status_requests_and_acks(farm: Farm) -> None:
    worker = await farm.register()
    assert (await farm.call(worker, "GET", "/status-change")).status_code == 204
    farm.manager.workers.request_status(worker.id, "asleep", lazy=False)
    assert farm.worker(worker).status == ""  # a request does not change the status
    response = await farm.call(worker, "GET", "/status-change")
    assert (response.status_code, response.json()) == (200, {"status_requested": "asleep"})
    response = await farm.call(worker, "POST", "/ack-status-change/asleep")
    assert response.status_code == 204
    record = farm.worker(worker)
    assert (record.status, record.status_requested) == ("asleep", "")


@pytest.mark.parametrize("acked", ["starting", "error", "testing", "awake"])
async def test_acks_of_unrequested_statuses_are_taken(farm: Farm, acked: str) -> None:
    worker = await farm.register()
    assert (await farm.call(worker, "POST", f"/ack-status-change/{acked}")).status_code == 204
    expected = "" if acked == "starting" else acked
    assert farm.worker(worker).status == expected


async def test_an_ack_of_shutdown_changes_nothing(farm: Farm) -> None:
    worker = await farm.register()
    farm.manager.workers.request_status(worker.id, "shutdown", lazy=True)
    assert (await farm.call(worker, "POST", "/ack-status-change/shutdown")).status_code == 204
    record = farm.worker(worker)
    assert (record.status, record.status_requested) == ("", "shutdown")


@pytest.mark.parametrize("status", ["offline", "timeout", "starting", "banana"])
async def test_only_asleep_awake_and_shutdown_can_be_requested(farm: Farm, status: str) -> None:
    from flamenco_protocol.errors import InvalidTransition

    worker = await farm.register()
    with pytest.raises(InvalidTransition):
        farm.manager.workers.request_status(worker.id, status, lazy=False)
    assert farm.worker(worker).status_requested == ""


async def test_output_produced(farm: Farm) -> None:
    worker = await farm.register()
    ok = await farm.call(worker, "POST", "/output-produced", json={"paths": ["/render/a.png"]})
    assert ok.status_code == 204
    empty = await farm.call(worker, "POST", "/output-produced", json={"paths": []})
    assert (empty.status_code, empty.text) == (422, "List of paths may not be empty.\n")
    assert (await farm.call(worker, "POST", "/output-produced")).status_code == 400
    assert (await farm.call(worker, "POST", "/output-produced", content=b"[")).status_code == 400


async def test_unknown_routes_and_methods(farm: Farm) -> None:
    worker = await farm.register()
    response = await farm.call(worker, "GET", "/nope")
    assert (response.status_code, response.text) == (404, "404 page not found\n")
    assert (await farm.call(worker, "PUT", "/task")).status_code == 405
    assert (await farm.call(worker, "GET", "/sign-on")).status_code == 405
