"""The SQLite update queue: order, persistence, what each answer does, outages and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import respx

from flamenco_protocol import ObjectId
from flamenco_worker_client import NO_RETRIES, AsyncClient, Credentials, UpdateQueue
from flamenco_worker_client.update_queue import deliver_queued_updates

from .fake_manager import FakeManager, task
from .helpers import make_worker

MANAGER = "http://manager.test:8080"
TASK_A = "5f1e0c0a2b3c4d5e6f70a101"
TASK_B = "5f1e0c0a2b3c4d5e6f70a102"


def test_rows_come_out_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    queue = UpdateQueue(tmp_path / "q.sqlite")
    for number in range(5):
        queue.push(TASK_A, {"n": number})
    first = queue.peek(2)
    queue.delete(first[0].row_id)
    queue.close()
    reopened = UpdateQueue(tmp_path / "q.sqlite")
    assert [row.body for row in reopened] == [b'{"n":%d}' % n for n in range(1, 5)]
    assert len(reopened) == 4
    reopened.close()


@pytest.mark.anyio
async def test_delivery_deletes_drops_or_stops_as_the_manager_answers(tmp_path: Path) -> None:
    queue = UpdateQueue(tmp_path / "q.sqlite")
    for number in range(5):
        queue.push(TASK_A, {"activity": str(number)})
    answers = [
        httpx.Response(204),
        httpx.Response(409, text="Task is assigned to another worker."),
        httpx.Response(404, text="Task is unknown."),
        httpx.Response(500),
    ]
    credentials = Credentials(ObjectId("5f1e0c0a2b3c4d5e6f708192"), "x")
    with respx.mock(base_url=MANAGER) as router:
        route = router.post(f"/tasks/{TASK_A}/update").mock(side_effect=answers)
        async with AsyncClient(MANAGER, credentials=credentials, retry=NO_RETRIES) as client:
            assert await deliver_queued_updates(queue, client) is False
            assert [row.body for row in queue] == [b'{"activity":"3"}', b'{"activity":"4"}']
            route.side_effect = None
            route.return_value = httpx.Response(204)
            assert await deliver_queued_updates(queue, client) is True
    assert len(queue) == 0
    sent = [call.request.content for call in route.calls]
    assert sent == [b'{"activity":"%d"}' % n for n in (0, 1, 2, 3, 3, 4)]


@pytest.mark.anyio
async def test_a_manager_outage_loses_no_update_and_keeps_their_order(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.tasks.extend(
        [task(TASK_A, ("echo", {"message": "a"})), task(TASK_B, ("echo", {"message": "b"}))]
    )
    manager.script("update_task", *[(503, "down")] * 8)
    worker = make_worker(manager, tmp_path)

    def hook(request: object) -> None:
        delivered = [r for r in manager.calls("update_task") if r.status == 204]
        if any(TASK_B in r.path and r.body.get("task_status") == "completed" for r in delivered):
            worker.request_shutdown()

    manager.on_request = hook  # type: ignore[assignment]
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    delivered = [r for r in manager.calls("update_task") if r.status == 204]
    reported = [(r.path.split("/")[2], r.body["task_status"]) for r in delivered]
    # Repeated "active" updates may carry log lines in between; order is what matters.
    assert [step for i, step in enumerate(reported) if step not in reported[:i]] == [
        (TASK_A, "active"),
        (TASK_A, "completed"),
        (TASK_B, "active"),
        (TASK_B, "completed"),
    ]
    # Back-pressure: task B was not fetched while task A's updates could not be delivered.
    fetch_b = next(
        r.at
        for r in manager.calls("fetch_task")
        if r.status == 200 and r is not manager.calls("fetch_task")[0]
    )
    assert fetch_b > delivered[1].at


@pytest.mark.anyio
async def test_updates_left_at_shutdown_are_sent_first_at_the_next_start(tmp_path: Path) -> None:
    down = FakeManager()
    down.tasks.append(task(TASK_A, ("echo", {"message": "a"})))
    down.script("update_task", *[(503, "down")] * 1000)
    worker = make_worker(down, tmp_path)
    down.on_request = lambda r: (
        worker.request_shutdown() if len(down.calls("update_task")) > 3 else None
    )  # type: ignore[assignment]
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    queue = UpdateQueue(tmp_path / "task-updates.sqlite")
    left = [row.body for row in queue]
    queue.close()
    assert len(left) == 2

    up = FakeManager()
    restarted = make_worker(up, tmp_path)
    up.on_request = lambda r: (
        restarted.request_shutdown() if len(up.calls("update_task")) == 2 else None
    )  # type: ignore[assignment]
    assert await asyncio.wait_for(restarted.run_async(), 20) == 0
    assert [r.endpoint for r in up.requests[:1]] == ["sign_on"]
    bodies = [r.body for r in up.calls("update_task")]
    assert [b["task_status"] for b in bodies] == ["active", "completed"]


@pytest.mark.anyio
async def test_no_task_is_fetched_while_a_finished_tasks_updates_wait(tmp_path: Path) -> None:
    """The manager hands a worker the task it still holds (its final update has not arrived):
    a worker that fetched before delivering its queue would run a finished task again."""
    manager = FakeManager()
    first = task(TASK_A, ("echo", {"message": "a"}))
    completed: list[bool] = []

    def fetch() -> tuple[int, object]:
        # Until TASK_A's `completed` arrives, TASK_A is active on this worker: /task gives it.
        return (204, None) if completed else (200, first)

    manager.script("fetch_task", *[fetch] * 1000)
    manager.script("update_task", (204, None), *[(503, "down")] * 5)
    worker = make_worker(manager, tmp_path)

    def hook(request: object) -> None:
        for r in manager.calls("update_task"):
            if r.status == 204 and r.body.get("task_status") == "completed":
                completed.append(True)
        if completed and len(manager.calls("fetch_task")) >= 2:
            worker.request_shutdown()

    manager.on_request = hook  # type: ignore[assignment]
    assert await asyncio.wait_for(worker.run_async(), 20) == 0
    assert worker.tasks_run == 1
    fetches = manager.calls("fetch_task")
    assert [r.status for r in fetches[1:]] == [204] * (len(fetches) - 1)
    delivered = next(
        r.at
        for r in manager.calls("update_task")
        if r.status == 204 and r.body.get("task_status") == "completed"
    )
    assert fetches[1].at > delivered
