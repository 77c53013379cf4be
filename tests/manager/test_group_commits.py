"""Group commits seen from HTTP: requests that arrive together share a commit, and no answer
leaves before its commit (SQLite only: PostgreSQL commits each transaction on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .harness import Farm, count_commits, interrupt_next_commit, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


async def _workers_on_tasks(farm: Farm, count: int) -> list[tuple[Any, str]]:
    farm.job(*(spec(name=f"t{n}") for n in range(count)))
    held = []
    for n in range(count):
        worker = await farm.register(nickname=f"w{n}")
        response = await farm.fetch(worker)
        assert response.status_code == 200
        held.append((worker, response.json()["_id"]))
    return held


async def test_updates_that_arrive_together_share_a_commit(farm: Farm) -> None:
    held = await _workers_on_tasks(farm, 8)
    commits = count_commits(farm.manager.database.engine)
    answers = await asyncio.gather(
        *(
            farm.update(worker, task_id, activity=f"frame {n}")
            for n, (worker, task_id) in enumerate(held)
        )
    )
    assert [answer.status_code for answer in answers] == [204] * 8
    assert len(commits) < 8
    assert [farm.task(task_id).activity for _, task_id in held] == [f"frame {n}" for n in range(8)]


async def test_a_failed_shared_commit_answers_503_to_each_request_and_keeps_nothing(
    farm: Farm,
) -> None:
    held = await _workers_on_tasks(farm, 4)
    before = [farm.task(task_id).activity for _, task_id in held]
    interrupt_next_commit(farm.manager.database.engine)
    answers = await asyncio.gather(
        *(farm.update(worker, task_id, activity="never stored") for worker, task_id in held)
    )
    assert [answer.status_code for answer in answers] == [503] * 4
    assert all(answer.headers["Retry-After"] == "5" for answer in answers)
    assert [farm.task(task_id).activity for _, task_id in held] == before
    # The worker sends the update again, as it does after a 503: now it is stored.
    again = await asyncio.gather(
        *(farm.update(worker, task_id, activity="stored") for worker, task_id in held)
    )
    assert [answer.status_code for answer in again] == [204] * 4
    assert [farm.task(task_id).activity for _, task_id in held] == ["stored"] * 4
