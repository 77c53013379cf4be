"""The user API for jobs and tasks: submit, list, follow, control, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest

from flamenco_manager.services.errors import NotFound
from flamenco_manager.services.jobs import JobSummary
from tests.manager.harness import Farm, spec
from tests.support import loop_turns

from .conftest import User

pytestmark = pytest.mark.anyio

UNKNOWN = "5f1e0c0a2b3c4d5e6f70b002"


async def test_job_types_are_listed_with_their_settings_schema(user: User) -> None:
    response = await user.get("/api/job-types")
    assert response.status_code == 200
    types = {item["name"]: item for item in response.json()["job_types"]}
    assert {"sleep", "exec-command", "blender-render", "custom"} <= set(types)
    assert "frames" in types["sleep"]["settings_schema"]["properties"]


async def test_submit_compiles_the_job_into_tasks(user: User) -> None:
    job = await user.submit(frames="1-5", chunk_size=2, priority=70)
    assert job["status"] == "queued"
    assert len(job["_id"]) == 24
    assert job["priority"] == 70
    assert job["submitter"] == "alice"
    assert job["task_counts"] == {"queued": 3}
    tasks = (await user.get(f"/api/jobs/{job['_id']}/tasks")).json()["tasks"]
    assert [task["name"] for task in tasks] == ["sleep-1,2", "sleep-3,4", "sleep-5"]
    assert all(task["job_priority"] == 70 and task["task_type"] == "sleep" for task in tasks)
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["name"] == "sleepy"


async def test_job_type_is_accepted_as_a_synonym_and_start_paused_holds_the_tasks(
    user: User,
) -> None:
    response = await user.post(
        "/api/jobs",
        json={
            "name": "held",
            "job_type": "sleep",
            "start_paused": True,
            "settings": {"frames": "1", "chunk_size": 1, "time_in_seconds": 0},
        },
    )
    assert response.status_code == 201
    assert response.json()["status"] == "paused"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"type": "sleep", "settings": {}}, 400, "name: must not be empty"),
        ({"name": "x", "settings": {}}, 400, "type: required"),
        ({"name": "x", "type": "nope", "settings": {}}, 400, "unknown job type 'nope'"),
        ({"name": "x", "type": "sleep", "priority": 0, "settings": {}}, 400, "priority"),
        ({"name": 5, "type": "sleep"}, 400, "$.name: expected a string"),
        ({"name": "x", "type": "sleep", "settings": []}, 400, "$.settings: expected an object"),
    ],
)
async def test_bad_submissions_are_refused_naming_the_field(
    user: User, body: object, status: int, fragment: str
) -> None:
    response = await user.post("/api/jobs", json=body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert fragment in answer["message"] + " ".join(answer.get("errors", []))
    assert (await user.get("/api/jobs")).json()["jobs"] == []


async def test_every_bad_setting_is_listed(user: User) -> None:
    response = await user.post(
        "/api/jobs",
        json={"name": "x", "type": "sleep", "settings": {"frames": "a-b", "chunk_size": 0}},
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any(error.startswith("settings.frames") for error in errors)
    assert any(error.startswith("settings.chunk_size") for error in errors)
    assert any(error.startswith("settings.time_in_seconds") for error in errors)


async def test_garbage_bodies(user: User) -> None:
    for raw in (b"{", b"[]", b"null", b"\xff\xfe", b""):
        response = await user.post("/api/jobs", content=raw)
        assert response.status_code == 400, raw
        assert response.json()["message"]
    huge = b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    assert (await user.post("/api/jobs", content=huge)).status_code == 413


async def test_lone_surrogates_and_deep_nesting_are_400_saying_so(user: User) -> None:
    # Both used to be 500s: the surrogate at the database's insert, the nesting in the parser.
    bodies = {
        b'{"name": "shot\\ud800", "type": "sleep", "settings": {}}': "surrogate",
        b'{"name": "x", "type": "sleep", "settings": {"a": ' + b"[" * 200 + b"]" * 200 + b"}}": (
            "nested"
        ),
        b"[" * 5000 + b"]" * 5000: "nested",
    }
    for raw, wrong in bodies.items():
        response = await user.post("/api/jobs", content=raw)
        assert response.status_code == 400, raw[:40]
        assert any(wrong in error for error in response.json()["errors"])
    assert (await user.get("/api/jobs")).json()["jobs"] == []


async def test_a_misspelt_or_missing_field_is_400_naming_it(user: User) -> None:
    # A misspelt field was dropped without a word ("priorty": 90 gave a job of priority 50),
    # and `{}` as a priority change said "not 0".
    typo = {"name": "shot", "type": "sleep", "priorty": 90, "settings": {}}
    response = await user.post("/api/jobs", json=typo)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert "unknown keys ['priorty']" in error
    assert "priority" in error.partition("known:")[2]
    assert (await user.get("/api/jobs")).json()["jobs"] == []
    job = await user.submit(frames="1")
    for body, wrong in (({}, "priority: missing"), ({"priority": 5, "why": "x"}, "['why']")):
        response = await user.post(f"/api/jobs/{job['_id']}/priority", json=body)
        assert response.status_code == 400
        assert any(wrong in error for error in response.json()["errors"]), response.json()
    status = {"status": "cancel-requested", "reasn": "x"}
    response = await user.post(f"/api/jobs/{job['_id']}/status", json=status)
    assert response.status_code == 400
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["status"] == "queued"


async def test_listing_filters_searches_and_pages(user: User) -> None:
    ids = [(await user.submit(name=f"shot {index:02d}"))["_id"] for index in range(5)]
    await user.post(f"/api/jobs/{ids[0]}/status", json={"status": "cancel-requested"})
    page = (await user.get("/api/jobs", params={"limit": 2})).json()
    assert [job["_id"] for job in page["jobs"]] == ids[:2:-1][:2] or [
        job["_id"] for job in page["jobs"]
    ] == [ids[4], ids[3]]
    seen = [job["_id"] for job in page["jobs"]]
    while page["next_cursor"]:
        page = (
            await user.get("/api/jobs", params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        seen.extend(job["_id"] for job in page["jobs"])
    assert seen == ids[::-1]
    canceled = (await user.get("/api/jobs", params={"status": "canceled"})).json()["jobs"]
    assert [job["_id"] for job in canceled] == [ids[0]]
    found = (await user.get("/api/jobs", params={"search": "SHOT 03"})).json()["jobs"]
    assert [job["name"] for job in found] == ["shot 03"]
    assert (await user.get("/api/jobs", params={"type": "blender-render"})).json()["jobs"] == []
    for params in ({"status": "bogus"}, {"limit": "x"}, {"limit": "0"}, {"cursor": "zz"}):
        response = await user.get("/api/jobs", params=params)
        assert response.status_code == 400, params
        assert next(iter(params)) in response.json()["message"]


async def test_unknown_and_malformed_ids_are_404(user: User) -> None:
    for path in (
        f"/api/jobs/{UNKNOWN}",
        f"/api/jobs/{UNKNOWN}/tasks",
        f"/api/tasks/{UNKNOWN}",
        "/api/jobs/not-an-id",
        "/api/tasks/123",
        f"/api/workers/{UNKNOWN}",
        f"/api/workers/{UNKNOWN}/blocklist",
        f"/api/workers/{UNKNOWN}/sleep-schedule",
    ):
        response = await user.get(path)
        assert response.status_code == 404, path
        assert response.json()["message"]
    for path, body in (
        (f"/api/jobs/{UNKNOWN}/status", {"status": "paused"}),
        (f"/api/jobs/{UNKNOWN}/priority", {"priority": 5}),
        (f"/api/tasks/{UNKNOWN}/requeue", {}),
        (f"/api/tasks/{UNKNOWN}/cancel", {}),
        (f"/api/workers/{UNKNOWN}/status", {"status": "asleep"}),
    ):
        assert (await user.post(path, json=body)).status_code == 404, path
    assert (await user.request("DELETE", f"/api/jobs/{UNKNOWN}")).status_code == 404


async def test_auth_is_required_and_checked(farm: Farm, user: User) -> None:
    for method, path in (("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/workers")):
        response = await farm.client.request(method, path)
        assert response.status_code == 401
        assert "JWT token authorization required" in response.json()["message"]
    bad = await farm.client.get("/api/jobs", headers={"Authorization": "Bearer abc.def.ghi"})
    assert bad.status_code == 401
    farm.client.cookies.set("jwtToken", user.token)
    assert (await farm.client.get("/api/jobs")).status_code == 200
    farm.client.cookies.clear()
    # The OpenAPI document is public.
    assert (await farm.client.get("/api/openapi.json")).status_code == 200


async def test_job_actions_follow_the_state_machine(farm: Farm, user: User) -> None:
    job = await user.submit(frames="1-2")
    path = f"/api/jobs/{job['_id']}/status"
    paused = await user.post(path, json={"status": "paused", "reason": "lunch"})
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["task_counts"] == {"paused": 2}
    again = await user.post(path, json={"status": "paused"})
    assert again.status_code == 409
    assert "not allowed in state 'paused'" in again.json()["message"]
    resumed = await user.post(path, json={"status": "queued"})
    assert resumed.json()["status"] == "queued"
    worker = await farm.register()
    task_id = (await farm.fetch(worker)).json()["_id"]
    canceled = await user.post(path, json={"status": "cancel-requested"})
    assert canceled.json()["status"] == "cancel-requested"
    assert (await farm.may_i_run(worker, task_id))["may_keep_running"] is False
    await farm.update(worker, task_id, task_status="canceled")
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["status"] == "canceled"
    requeued = await user.post(path, json={"status": "requeued"})
    assert requeued.json()["status"] == "queued"
    assert requeued.json()["task_counts"] == {"queued": 2}
    for body in ({"status": "completed"}, {"status": 5}, {}):
        response = await user.post(path, json=body)
        assert response.status_code == 400, body
        assert "status" in response.text


async def test_priority_changes_reach_the_tasks(user: User) -> None:
    job = await user.submit(frames="1")
    response = await user.post(f"/api/jobs/{job['_id']}/priority", json={"priority": 90})
    assert response.json()["priority"] == 90
    tasks = (await user.get(f"/api/jobs/{job['_id']}/tasks")).json()["tasks"]
    assert tasks[0]["job_priority"] == 90
    for bad in (0, 101, "high"):
        response = await user.post(f"/api/jobs/{job['_id']}/priority", json={"priority": bad})
        assert response.status_code == 400
        assert "priority" in response.text


async def test_a_task_shows_its_log_tail(farm: Farm, user: User) -> None:
    job = await user.submit(frames="1")
    worker = await farm.register()
    task_id = (await farm.fetch(worker)).json()["_id"]
    await farm.update(
        worker, task_id, task_status="active", activity="rendering", log="line 1\nline 2"
    )
    task = (await user.get(f"/api/tasks/{task_id}")).json()
    assert task["status"] == "active"
    assert task["activity"] == "rendering"
    assert task["job"] == job["_id"]
    assert task["worker"] == "w"
    assert task["log"].endswith("line 1\nline 2\n")
    short = (await user.get(f"/api/tasks/{task_id}", params={"log_lines": 1})).json()
    assert short["log"] == "line 2\n"


async def test_single_task_cancel_and_requeue(farm: Farm, user: User) -> None:
    job = await user.submit(frames="1-2")
    worker = await farm.register()
    running = (await farm.fetch(worker)).json()["_id"]
    tasks = (await user.get(f"/api/jobs/{job['_id']}/tasks")).json()["tasks"]
    waiting = next(task["_id"] for task in tasks if task["_id"] != running)
    canceled = await user.post(f"/api/tasks/{waiting}/cancel", json={"reason": "not needed"})
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["activity"] == "not needed"
    stopping = await user.post(f"/api/tasks/{running}/cancel")
    assert stopping.json()["status"] == "cancel-requested"
    assert (await farm.may_i_run(worker, running))["may_keep_running"] is False
    await farm.update(worker, running, task_status="canceled")
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["status"] == "canceled"
    assert (await user.post(f"/api/tasks/{waiting}/cancel")).status_code == 409
    requeued = await user.post(f"/api/tasks/{waiting}/requeue")
    assert requeued.json()["status"] == "queued"
    # One task finished, one waits: the job runs again (spec/jobs.md §3.4).
    assert (await user.get(f"/api/jobs/{job['_id']}")).json()["status"] == "active"
    assert (await farm.fetch(worker)).json()["_id"] == waiting


async def test_a_task_of_a_paused_job_is_not_requeued_alone(user: User) -> None:
    job = await user.submit(frames="1", start_paused=True)
    task_id = (await user.get(f"/api/jobs/{job['_id']}/tasks")).json()["tasks"][0]["_id"]
    response = await user.post(f"/api/tasks/{task_id}/requeue")
    assert response.status_code == 409
    assert "resume the job" in response.json()["message"]


async def test_delete_removes_the_job_its_tasks_and_logs(farm: Farm, user: User) -> None:
    job = await user.submit(frames="1")
    worker = await farm.register()
    task_id = (await farm.fetch(worker)).json()["_id"]
    await farm.update(worker, task_id, log="something")
    busy = await user.request("DELETE", f"/api/jobs/{job['_id']}")
    assert busy.status_code == 409
    assert "running" in busy.json()["message"]
    await farm.update(worker, task_id, task_status="completed")
    assert farm.manager.logs.path(job["_id"], task_id).exists()
    assert (await user.request("DELETE", f"/api/jobs/{job['_id']}")).status_code == 204
    assert (await user.get(f"/api/jobs/{job['_id']}")).status_code == 404
    assert (await user.get(f"/api/tasks/{task_id}")).status_code == 404
    assert not farm.manager.logs.path(job["_id"], task_id).exists()


async def test_a_jobs_tasks_can_be_asked_for_by_id(user: User) -> None:
    job = await user.submit(frames="1-5")
    other = await user.submit(frames="1-2", name="other")
    path = f"/api/jobs/{job['_id']}/tasks"
    every = (await user.get(path)).json()["tasks"]
    assert len(every) == 5
    foreign = (await user.get(f"/api/jobs/{other['_id']}/tasks")).json()["tasks"][0]["_id"]
    wanted = [every[3]["_id"], every[1]["_id"].upper(), foreign, "0" * 24]

    # Repeated or comma-separated; in creation order; what is no task of the job left out.
    repeated = await user.get(path, params=[("id", wanted[0]), ("id", ",".join(wanted[1:]))])
    assert repeated.status_code == 200
    assert repeated.json()["tasks"] == [every[1], every[3]]
    assert (await user.get(path + "?id=")).json()["tasks"] == []


async def test_asking_for_tasks_by_malformed_or_too_many_ids_is_400(user: User) -> None:
    job = await user.submit(frames="1-2")
    path = f"/api/jobs/{job['_id']}/tasks"

    malformed = await user.get(path, params={"id": "0123,not-an-id"})
    assert malformed.status_code == 400
    assert "id: not 24-character hexadecimal IDs: ['0123', 'not-an-id']" in malformed.text

    too_many = ",".join(f"{number:024x}" for number in range(201))
    refused = await user.get(path, params={"id": too_many})
    assert refused.status_code == 400
    assert "id: at most 200 task IDs, not 201" in refused.text


async def test_a_jobs_tasks_come_a_page_at_a_time_and_by_status(user: User) -> None:
    # The dashboard shows a job of 100,000 tasks a page at a time: all of them were 49 MB of
    # JSON, 7.6 s of the manager's time and 16 s of the browser's.
    job = await user.submit(frames="1-7")
    path = f"/api/jobs/{job['_id']}/tasks"
    every = (await user.get(path)).json()["tasks"]
    assert len(every) == 7

    first = await user.get(path, params={"limit": 3})
    assert first.status_code == 200
    assert first.json()["tasks"] == every[:3]
    last = await user.get(path, params={"limit": 3, "offset": 6})
    assert last.json()["tasks"] == every[6:]
    assert (await user.get(path, params={"offset": 5})).json()["tasks"] == every[5:]
    beyond = await user.get(path, params={"limit": 3, "offset": 70})
    assert beyond.json()["tasks"] == []

    canceled = [every[2]["_id"], every[5]["_id"]]
    for task_id in canceled:
        answer = await user.post(f"/api/tasks/{task_id}/cancel", json={})
        assert answer.status_code == 200, answer.text
    only = await user.get(path, params={"status": "canceled,failed", "limit": 1, "offset": 1})
    assert [task["_id"] for task in only.json()["tasks"]] == canceled[1:]
    both = await user.get(path, params={"status": "canceled", "id": ",".join(canceled)})
    assert [task["_id"] for task in both.json()["tasks"]] == canceled


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "limit: must be between 1 and 1000, not 0"),
        ({"limit": "1001"}, "limit: must be between 1 and 1000, not 1001"),
        ({"offset": "-1"}, "offset: must be between 0"),
        ({"offset": "x"}, "offset: expected an integer, got 'x'"),
        ({"status": "done"}, "status: unknown task status(es) done"),
    ],
)
async def test_a_bad_page_of_tasks_is_400(user: User, query: dict[str, str], message: str) -> None:
    job = await user.submit(frames="1-2")
    refused = await user.get(f"/api/jobs/{job['_id']}/tasks", params=query)
    assert refused.status_code == 400
    assert message in refused.json()["message"]


async def test_workers_are_answered_while_a_big_jobs_tasks_are_listed(user: User) -> None:
    # A job of 10,000 tasks takes 0.75 s to list; on the event loop no worker would be answered
    # meanwhile.
    job = await user.submit(frames="1-3000")
    async with loop_turns(0.002) as seen:
        listed = await user.get(f"/api/jobs/{job['_id']}/tasks")

    assert listed.status_code == 200
    assert len(listed.json()["tasks"]) == 3000
    assert len(seen.turns) >= 5, (len(seen.turns), seen.seconds)


async def test_jobs_finished_before_a_time_are_deleted_at_once(farm: Farm, user: User) -> None:
    canceled = await user.submit(name="canceled")
    await user.post(f"/api/jobs/{canceled['_id']}/status", json={"status": "cancel-requested"})
    queued = await user.submit(name="queued")
    farm.clock.advance(hours=1)
    now = farm.clock().isoformat()

    answer = await user.request("DELETE", "/api/jobs", params={"finished_before": now})
    assert (answer.status_code, answer.json()) == (200, {"deleted": [canceled["_id"]]})
    assert (await user.get(f"/api/jobs/{canceled['_id']}")).status_code == 404
    assert (await user.get(f"/api/jobs/{queued['_id']}")).status_code == 200
    again = await user.request("DELETE", "/api/jobs", params={"finished_before": now})
    assert again.json() == {"deleted": []}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "finished_before: required (an RFC 3339 time)"),
        ("?finished_before=yesterday", "finished_before: not an RFC 3339 time: 'yesterday'"),
        ("?finished_before=2026-13-01T00:00:00Z", "finished_before: not a valid time"),
    ],
)
async def test_deleting_finished_jobs_needs_a_time(user: User, query: str, message: str) -> None:
    job = await user.submit()
    await user.post(f"/api/jobs/{job['_id']}/status", json={"status": "cancel-requested"})
    answer = await user.request("DELETE", "/api/jobs" + query)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(message)
    assert (await user.get(f"/api/jobs/{job['_id']}")).status_code == 200


async def test_a_big_job_is_stored_in_steps_and_handed_out_only_once_whole(
    farm: Farm, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job stored in one transaction held every worker's request until all its tasks were
    # stored (0.4 s for 10,000); in steps, the farm is answered in between and sees nothing
    # half built.
    from flamenco_manager.services import jobs

    monkeypatch.setattr(jobs, "BUILD_STEP", 250)
    worker = await farm.register()
    during: list[int] = []  # /task answers while the job was under construction

    async def poll() -> None:
        while True:
            answer = (await farm.fetch(worker)).status_code
            if [summary.job.status for summary in farm.manager.jobs.page(limit=1).jobs] == [
                "under-construction"
            ]:
                during.append(answer)
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        group.start_soon(poll)
        async with loop_turns(0.001) as seen:
            job = await user.submit(frames="1-2500", chunk_size=1)
        group.cancel_scope.cancel()

    assert len(seen.turns) >= 3, (len(seen.turns), seen.seconds)
    assert len(during) >= 2
    assert set(during) == {204}  # nothing of the job was handed out while it was built
    assert job["status"] == "queued"
    assert job["task_counts"] == {"queued": 2500}
    fetched = await farm.fetch(worker)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "sleep-1"


async def test_a_job_deleted_while_being_built_is_not_finished(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamenco_manager.services import jobs

    monkeypatch.setattr(jobs, "BUILD_STEP", 10)
    built = farm.manager.jobs.build_job(
        name="doomed", job_type="test", tasks=[spec(f"t{n}") for n in range(50)]
    )

    async def build() -> None:
        with pytest.raises(NotFound, match="deleted while it was being built"):
            await built

    def delete(summary: JobSummary) -> bool:
        assert summary.job.status == "under-construction"
        farm.manager.jobs.delete(str(summary.job.id))
        return True

    await _between_build_steps(farm, build, delete)
    assert farm.manager.jobs.page(limit=5).jobs == []


async def _between_build_steps(
    farm: Farm, build: Callable[[], Awaitable[None]], act: Callable[[JobSummary], bool]
) -> None:
    """Run ``build``, calling ``act`` with the job being built between its steps until ``act``
    says it is done."""
    async with anyio.create_task_group() as group:
        group.start_soon(build)
        for _ in range(100):  # let the first steps in
            await anyio.sleep(0)
            page = farm.manager.jobs.page(limit=5).jobs
            if page and act(page[0]):
                return
    raise AssertionError("the build ended before it was done with")


async def test_a_priority_changed_while_the_job_is_built_reaches_every_task(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamenco_manager.services import jobs

    monkeypatch.setattr(jobs, "BUILD_STEP", 10)
    built = farm.manager.jobs.build_job(
        name="shot", job_type="test", priority=10, tasks=[spec(f"t{n}") for n in range(50)]
    )

    async def build() -> None:
        await built

    def change_priority(summary: JobSummary) -> bool:
        if sum(summary.task_counts.values()) < 20:
            return False
        farm.manager.jobs.set_priority(str(summary.job.id), 99)
        return True

    await _between_build_steps(farm, build, change_priority)
    (job,) = farm.manager.jobs.page(limit=5).jobs
    assert (job.job.status, job.job.priority) == ("queued", 99)
    # The steps after the change used to store the priority of the submission.
    assert {task.job_priority for task in farm.tasks(job.job)} == {99}


async def test_a_build_left_by_a_stopped_process_is_removed(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamenco_manager.services import jobs

    monkeypatch.setattr(jobs, "BUILD_STEP", 10)
    # A process that stops between two steps: its next step never comes.
    steps = 0
    real_sleep = jobs.asyncio.sleep

    async def stop_after_the_first_step(seconds: float) -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            raise SystemExit("the process stops")
        await real_sleep(seconds)

    monkeypatch.setattr(jobs.asyncio, "sleep", stop_after_the_first_step)
    monkeypatch.setattr(jobs.JobService, "_delete_unbuilt", lambda *_: False)  # no clean-up
    with pytest.raises(SystemExit):
        await farm.manager.jobs.build_job(
            name="left", job_type="test", tasks=[spec(f"t{n}") for n in range(50)]
        )
    monkeypatch.undo()
    (left,) = farm.manager.jobs.page(limit=5).jobs
    assert left.job.status == "under-construction"
    assert sum(left.task_counts.values()) == 20

    assert farm.manager.housekeeping.remove_abandoned_builds() == 0  # it may still go on
    if farm.manager.database.is_sqlite:
        # The only process, as it starts: whatever is under construction is left over. It was
        # listed with part of its tasks until the chore's first run, up to 12 minutes later.
        loops = asyncio.ensure_future(farm.manager.run_loops())
        try:
            for _ in range(200):
                if not farm.manager.jobs.page(limit=5).jobs:
                    break
                await asyncio.sleep(0.01)
        finally:
            loops.cancel()
            await asyncio.gather(loops, return_exceptions=True)
    else:
        farm.clock.advance(minutes=11)
        assert farm.manager.housekeeping.remove_abandoned_builds() == 1
    assert farm.manager.jobs.page(limit=5).jobs == []
