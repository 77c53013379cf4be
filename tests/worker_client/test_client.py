"""Every client method against every status code the catalogue lists, with respx.

The expected outcome of each (endpoint, status) pair is written out below rather than derived
from the catalogue, so that a change in either shows up here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa

from flamenco_protocol import (
    MayKeepRunningResponse,
    ObjectId,
    Task,
    TaskMetrics,
    TaskStatus,
    TaskUpdate,
    Worker,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatus,
)
from flamenco_protocol.endpoints import worker_endpoints
from flamenco_worker_client import (
    NO_RETRIES,
    AsyncClient,
    BadRequest,
    Client,
    ConnectError,
    Credentials,
    EmptyOutputList,
    FlamencoClientError,
    InvalidResponse,
    ManagerError,
    NoStatusChange,
    NoTask,
    NoTaskTypes,
    RegistrationRefused,
    RequestTimeout,
    RetryPolicy,
    ServerError,
    StatusChangeRequested,
    TaskConflict,
    TaskNotFound,
    TokenExpired,
    TransportError,
    Unauthorized,
    UnexpectedStatus,
)
from flamenco_worker_client import client as client_module

MANAGER = "http://manager.test:8080"
WORKER_ID = ObjectId("5f1e0c0a2b3c4d5e6f708192")
TASK_ID = "5f1e0c0a2b3c4d5e6f70a101"
JOB_ID = "5f1e0c0a2b3c4d5e6f70b002"
CREDENTIALS = Credentials(WORKER_ID, "s3cret" * 10)
FAST_RETRY = RetryPolicy(retries=2, initial_delay=0.001, max_delay=0.002)

TASK_JSON = {
    "_id": TASK_ID,
    "job": JOB_ID,
    "name": "t",
    "status": "active",
    "task_type": "sleep",
    "commands": [{"name": "echo", "settings": {"message": "hi"}}],
}
WORKER_JSON = {"_id": str(WORKER_ID), "nickname": "vm", "status": "", "platform": "linux"}

# Arguments of each method, and the path respx should see.
CALLS: dict[str, tuple[tuple[Any, ...], str]] = {
    "register_worker": (
        (WorkerRegistration(secret="x", platform="linux", supported_task_types=("sleep",)),),
        "/register-worker",
    ),
    "sign_on": ((WorkerSignonDoc(supported_task_types=("sleep",), nickname="vm"),), "/sign-on"),
    "sign_off": ((), "/sign-off"),
    "fetch_task": ((), "/task"),
    "update_task": (
        (TASK_ID, TaskUpdate(task_status=TaskStatus.ACTIVE, activity="a")),
        f"/tasks/{TASK_ID}/update",
    ),
    "return_task": ((TASK_ID,), f"/tasks/{TASK_ID}/return"),
    "may_i_run": ((TASK_ID,), f"/may-i-run/{TASK_ID}"),
    "status_change": ((), "/status-change"),
    "ack_status_change": (("asleep",), "/ack-status-change/asleep"),
    "output_produced": ((["/render/0001.png"],), "/output-produced"),
    "task_log": ((JOB_ID, TASK_ID, "user-token"), f"/logfile/{JOB_ID}/{TASK_ID}"),
}

Check = Callable[[Any], bool]


def _is(kind: type) -> Check:
    return lambda result: isinstance(result, kind)


# (endpoint, status) -> (response body, expected result check or exception class)
EXPECTED: dict[tuple[str, int], tuple[Any, Check | type[Exception]]] = {
    ("register_worker", 200): (WORKER_JSON, lambda w: isinstance(w, Worker) and w.id == WORKER_ID),
    ("register_worker", 400): ("Unable to decode JSON", BadRequest),
    ("register_worker", 403): ("Invalid Bearer token for registration", RegistrationRefused),
    ("sign_on", 204): (None, lambda r: r is None),
    ("sign_on", 400): ("Unable to decode JSON", BadRequest),
    ("sign_on", 401): ("401 Unauthorized", Unauthorized),
    ("sign_off", 204): (None, lambda r: r is None),
    ("sign_off", 401): ("401 Unauthorized", Unauthorized),
    ("fetch_task", 200): (TASK_JSON, lambda t: isinstance(t, Task) and t.id == TASK_ID),
    ("fetch_task", 204): (None, _is(NoTask)),
    ("fetch_task", 406): ("You do not support any task types.", NoTaskTypes),
    ("fetch_task", 423): (
        {"status_requested": "asleep"},
        lambda r: r == StatusChangeRequested(WorkerStatus.ASLEEP),
    ),
    ("fetch_task", 401): ("401 Unauthorized", Unauthorized),
    ("update_task", 204): (None, lambda r: r is None),
    ("update_task", 400): ("Unable to decode JSON", BadRequest),
    ("update_task", 401): ("401 Unauthorized", Unauthorized),
    ("update_task", 404): ("Task x is unknown.", TaskNotFound),
    ("update_task", 409): ("Task x is assigned to another worker.", TaskConflict),
    ("return_task", 204): (None, lambda r: r is None),
    ("return_task", 401): ("401 Unauthorized", Unauthorized),
    ("return_task", 404): ("", TaskNotFound),
    ("may_i_run", 200): (
        {"may_keep_running": False, "reason": "no", "status_requested": "asleep"},
        lambda r: (
            r
            == MayKeepRunningResponse(
                may_keep_running=False, reason="no", status_requested=WorkerStatus.ASLEEP
            )
        ),
    ),
    ("may_i_run", 401): ("401 Unauthorized", Unauthorized),
    ("may_i_run", 404): ("Invalid ObjectID", TaskNotFound),
    ("status_change", 200): (
        {"status_requested": "awake"},
        lambda r: r == StatusChangeRequested(WorkerStatus.AWAKE),
    ),
    ("status_change", 204): (None, _is(NoStatusChange)),
    ("status_change", 401): ("401 Unauthorized", Unauthorized),
    ("ack_status_change", 204): (None, lambda r: r is None),
    ("ack_status_change", 401): ("401 Unauthorized", Unauthorized),
    ("output_produced", 204): (None, lambda r: r is None),
    ("output_produced", 400): ("Unable to decode JSON", BadRequest),
    ("output_produced", 401): ("401 Unauthorized", Unauthorized),
    ("output_produced", 422): ("List of paths may not be empty.", EmptyOutputList),
    ("task_log", 200): ("line one\nline two\n", lambda r: r == "line one\nline two\n"),
    ("task_log", 401): ("JWT token authorization required", Unauthorized),
    ("task_log", 404): ("no log", TaskNotFound),
    ("task_log", 498): ("JWT token expired", TokenExpired),
}


def _client() -> Client:
    return Client(MANAGER, credentials=CREDENTIALS, retry=FAST_RETRY)


def _response(status: int, body: Any) -> httpx.Response:
    if body is None:
        return httpx.Response(status)
    if isinstance(body, str):
        return httpx.Response(status, text=body)
    return httpx.Response(status, json=body)


def test_the_table_covers_every_status_of_every_worker_endpoint() -> None:
    listed = {(ep.name, status) for ep in worker_endpoints() for status in ep.statuses}
    assert listed == set(EXPECTED)
    assert {ep.name for ep in worker_endpoints()} == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_both_clients_have_one_method_per_endpoint_with_the_same_signature(name: str) -> None:
    sync_method = getattr(Client, name)
    async_method = getattr(AsyncClient, name)
    assert inspect.iscoroutinefunction(async_method)
    assert not inspect.iscoroutinefunction(sync_method)
    assert inspect.signature(sync_method) == inspect.signature(async_method)
    assert sync_method.__doc__


def _check(outcome: Check | type[Exception], call: Callable[[], Any]) -> None:
    if isinstance(outcome, type) and issubclass(outcome, Exception):
        with pytest.raises(outcome) as caught:
            call()
        assert isinstance(caught.value, ManagerError)
    else:
        assert outcome(call())


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED))
def test_sync_client_maps_each_status(name: str, status: int) -> None:
    body, outcome = EXPECTED[(name, status)]
    args, path = CALLS[name]
    with respx.mock(base_url=MANAGER, assert_all_called=True) as router:
        method = "GET" if name in {"may_i_run", "status_change", "task_log"} else "POST"
        router.route(method=method, path=path).mock(return_value=_response(status, body))
        with Client(MANAGER, credentials=CREDENTIALS, retry=NO_RETRIES) as client:
            _check(outcome, lambda: getattr(client, name)(*args))


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED))
async def test_async_client_maps_each_status(name: str, status: int) -> None:
    body, outcome = EXPECTED[(name, status)]
    args, path = CALLS[name]
    with respx.mock(base_url=MANAGER, assert_all_called=True) as router:
        router.route(path=path).mock(return_value=_response(status, body))
        async with AsyncClient(MANAGER, credentials=CREDENTIALS, retry=NO_RETRIES) as client:
            if isinstance(outcome, type):
                with pytest.raises(outcome):
                    await getattr(client, name)(*args)
            else:
                assert outcome(await getattr(client, name)(*args))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"_id": 5, "commands": "echo"}).encode(),
        json.dumps({"commands": []}).encode(),  # no _id: the worker could not report on it
    ],
)
def test_a_garbage_task_body_is_an_invalid_response(body: bytes) -> None:
    with respx.mock(base_url=MANAGER) as router:
        router.post("/task").mock(return_value=httpx.Response(200, content=body))
        with _client() as client, pytest.raises(InvalidResponse):
            client.fetch_task()


def test_invalid_response_names_the_bad_fields() -> None:
    with respx.mock(base_url=MANAGER) as router:
        router.get(f"/may-i-run/{TASK_ID}").mock(
            return_value=httpx.Response(200, json={"may_keep_running": "yes"})
        )
        with _client() as client, pytest.raises(InvalidResponse) as caught:
            client.may_i_run(TASK_ID)
    assert "may_keep_running" in str(caught.value)
    assert caught.value.status_code == 200


def test_a_registration_without_id_is_an_invalid_response() -> None:
    with respx.mock(base_url=MANAGER) as router:
        router.post("/register-worker").mock(return_value=httpx.Response(200, json={"x": 1}))
        with Client(MANAGER) as client, pytest.raises(InvalidResponse):
            client.register_worker(WorkerRegistration(secret="x"))


@pytest.mark.parametrize("status", [418, 403, 302])
def test_an_unlisted_status_is_unexpected(status: int) -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post("/task").mock(return_value=httpx.Response(status, text="teapot"))
        with _client() as client, pytest.raises(UnexpectedStatus) as caught:
            client.fetch_task()
    assert not isinstance(caught.value, ServerError)
    assert caught.value.status_code == status
    assert route.call_count == 1


def test_server_errors_are_retried_then_raised() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post("/task").mock(return_value=httpx.Response(500))
        with _client() as client, pytest.raises(ServerError) as caught:
            client.fetch_task()
    assert route.call_count == 3
    assert caught.value.transient


def test_a_server_error_followed_by_success_returns_the_success() -> None:
    with respx.mock(base_url=MANAGER) as router:
        router.post("/task").mock(
            side_effect=[httpx.Response(503), httpx.Response(200, json=TASK_JSON)]
        )
        with Client(MANAGER, credentials=CREDENTIALS, retry=FAST_RETRY) as client:
            assert isinstance(client.fetch_task(), Task)


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [
        ("2", 2.0),  # seconds, longer than the policy's own wait
        (None, 0.001),  # no header: the policy's wait
        ("0", 0.001),  # shorter than the policy's: the policy's
        ("3600", 30.0),  # more than max_retry_after: cut to it
        ("soon", 0.001),  # not a value the header takes: ignored
    ],
)
def test_a_server_error_waits_as_long_as_the_manager_asks(
    monkeypatch: pytest.MonkeyPatch, retry_after: str | None, waited: float
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    policy = RetryPolicy(retries=2, initial_delay=0.001, max_delay=0.002, jitter=0.0)
    with respx.mock(base_url=MANAGER) as router:
        router.post("/task").mock(
            side_effect=[httpx.Response(503, headers=headers), httpx.Response(204)]
        )
        with Client(MANAGER, credentials=CREDENTIALS, retry=policy) as client:
            assert isinstance(client.fetch_task(), NoTask)
    assert slept == [waited]


def test_retry_after_may_be_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=20)
    with respx.mock(base_url=MANAGER) as router:
        router.get("/status-change").mock(
            return_value=httpx.Response(503, headers={"Retry-After": format_datetime(later, True)})
        )
        client = Client(MANAGER, credentials=CREDENTIALS, retry=NO_RETRIES)
        with client, pytest.raises(ServerError) as caught:
            client.status_change()
    assert caught.value.retry_after is not None
    assert 15 < caught.value.retry_after <= 20


@pytest.mark.anyio
async def test_the_managers_own_503_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The manager answers 503 with Retry-After while its database is away.
    from flamenco_manager.config import Settings
    from flamenco_manager.manager import Manager
    from flamenco_manager.web.app import create_app

    manager = Manager(Settings(data_dir=tmp_path))
    away = [True]
    fetch = manager.scheduler.fetch_task

    def flaky(*args: Any) -> Any:
        if away and away.pop():
            raise sa.exc.OperationalError("SELECT 1", {}, OSError("the database is away"))
        return fetch(*args)

    monkeypatch.setattr(manager.scheduler, "fetch_task", flaky)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    try:
        async with AsyncClient("http://manager", transport=transport) as client:
            registered = await client.register_worker(
                WorkerRegistration(secret="s" * 32, platform="linux", supported_task_types=("x",))
            )
            client.credentials = Credentials(registered.id, "s" * 32)
            monkeypatch.setattr(client_module.asyncio, "sleep", sleep)
            assert isinstance(await client.fetch_task(), NoTask)
    finally:
        manager.close()
    assert slept == [5.0]


def test_a_refused_connection_is_retried_even_for_updates() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(f"/tasks/{TASK_ID}/update").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(204)]
        )
        with Client(MANAGER, credentials=CREDENTIALS, retry=FAST_RETRY) as client:
            client.update_task(TASK_ID, TaskUpdate(activity="x"))
    assert route.call_count == 2


def test_an_update_that_may_have_arrived_is_not_sent_twice() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(f"/tasks/{TASK_ID}/update").mock(side_effect=httpx.ReadTimeout("slow"))
        with _client() as client, pytest.raises(RequestTimeout):
            client.update_task(TASK_ID, TaskUpdate(activity="x"))
    assert route.call_count == 1


def test_a_server_error_on_an_update_is_not_retried_within_the_call() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(f"/tasks/{TASK_ID}/update").mock(return_value=httpx.Response(500))
        with _client() as client, pytest.raises(ServerError):
            client.update_task(TASK_ID, TaskUpdate(activity="x"))
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), ConnectError),
        (httpx.ConnectTimeout("slow"), ConnectError),
        (httpx.ReadTimeout("slow"), RequestTimeout),
        (httpx.RemoteProtocolError("bye"), TransportError),
    ],
)
def test_transport_errors_are_apart_from_manager_errors(
    error: Exception, kind: type[TransportError]
) -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.get("/status-change").mock(side_effect=error)
        with _client() as client, pytest.raises(kind) as caught:
            client.status_change()
    assert not isinstance(caught.value, ManagerError)
    assert isinstance(caught.value, FlamencoClientError)
    assert route.call_count == 3  # GETs are repeatable: every transient error is retried


@pytest.mark.anyio
async def test_async_client_retries_like_the_sync_one() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post("/task").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(502), httpx.Response(204)]
        )
        async with AsyncClient(MANAGER, credentials=CREDENTIALS, retry=FAST_RETRY) as client:
            assert isinstance(await client.fetch_task(), NoTask)
    assert route.call_count == 3


def test_worker_requests_carry_basic_auth_and_registration_does_not() -> None:
    with respx.mock(base_url=MANAGER) as router:
        register = router.post("/register-worker").mock(
            return_value=httpx.Response(200, json=WORKER_JSON)
        )
        fetch = router.post("/task").mock(return_value=httpx.Response(204))
        with Client(MANAGER, credentials=CREDENTIALS) as client:
            client.register_worker(WorkerRegistration(secret="x"))
            client.fetch_task()
    assert "Authorization" not in register.calls.last.request.headers
    auth = fetch.calls.last.request.headers["Authorization"]
    expected = base64.b64encode(f"{WORKER_ID}:{CREDENTIALS.secret}".encode()).decode()
    assert auth == f"Basic {expected}"


def test_registration_with_a_secret_sends_a_valid_hs256_bearer_token() -> None:
    with respx.mock(base_url=MANAGER) as router:
        register = router.post("/register-worker").mock(
            return_value=httpx.Response(200, json=WORKER_JSON)
        )
        with Client(MANAGER, registration_secret=" psk ") as client:
            client.register_worker(WorkerRegistration(secret="x"))
    scheme, token = register.calls.last.request.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    header, claims, signature = token.split(".")
    expected = hmac.new(b"psk", f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "==") == expected
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert isinstance(decoded["exp"], float)
    assert decoded["exp"] - decoded["iat"] == pytest.approx(900)


def test_update_body_has_exactly_the_real_workers_keys() -> None:
    update = TaskUpdate(
        task_status=TaskStatus.COMPLETED,
        activity="Task completed",
        current_command_idx=2,
        command_progress_percentage=100,
        metrics=TaskMetrics(timing={"total": 7.0}),
        log="2024-01-01T00:00:00+00:00: hello",
    )
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(f"/tasks/{TASK_ID}/update").mock(return_value=httpx.Response(204))
        with Client(MANAGER, credentials=CREDENTIALS) as client:
            client.update_task(TASK_ID, update)
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/json"
    assert set(json.loads(request.content)) == {
        "activity",
        "current_command_idx",
        "task_progress_percentage",
        "command_progress_percentage",
        "metrics",
        "task_status",
        "log",
    }


def test_empty_posts_have_no_body_and_no_content_type() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post("/sign-off").mock(return_value=httpx.Response(204))
        with Client(MANAGER, credentials=CREDENTIALS) as client:
            client.sign_off()
    request = route.calls.last.request
    assert request.content == b""
    assert "Content-Type" not in request.headers


def test_endpoints_are_joined_to_the_root_of_the_manager_url() -> None:
    with respx.mock() as router:
        route = router.post("http://h:8083/task").mock(return_value=httpx.Response(204))
        with Client("http://h:8083/flamenco/", credentials=CREDENTIALS) as client:
            client.fetch_task()
    assert route.called


@pytest.mark.parametrize(
    "url", ["h:8083", "ftp://h/", "", "http://", "http://h:99999/", "http://h:abc/"]
)
def test_a_bad_manager_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="manager URL"):
        Client(url)


def test_path_variables_are_escaped() -> None:
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(path__regex=r"/ack-status-change/.*").mock(
            return_value=httpx.Response(204)
        )
        with Client(MANAGER, credentials=CREDENTIALS) as client:
            client.ack_status_change("a/b")
    assert route.calls.last.request.url.raw_path == b"/ack-status-change/a%2Fb"


def test_retry_delays_grow_and_stay_below_the_maximum() -> None:
    policy = RetryPolicy(retries=6, initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.0)
    assert list(policy.delays()) == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert list(NO_RETRIES.delays()) == []
