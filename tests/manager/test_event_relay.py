"""Events across processes: two managers on one PostgreSQL schema hear each other's changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flamenco_manager.manager import Manager
from flamenco_manager.services.event_relay import relay_events
from flamenco_manager.services.events import Event, Subscription
from flamenco_manager.storage.notify import MAX_PAYLOAD, Notifier
from flamenco_protocol.documents import WorkerRegistration

from .harness import make_settings, spec

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def relaying(manager: Manager) -> AsyncIterator[None]:
    """The manager's relay task, listening before the block starts."""
    assert manager.notifier is not None
    ready = asyncio.Event()
    task = asyncio.create_task(relay_events(manager.context.events, manager.notifier, ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _next(subscription: Subscription, timeout: float = 10) -> Event:
    event = await asyncio.wait_for(subscription.get(), timeout)
    assert event is not None
    return event


async def test_two_managers_on_one_schema_share_events(tmp_path: Path, database_url: str) -> None:
    if not database_url:
        pytest.skip("SQLite serves one process: there is nothing to share")
    first = Manager(make_settings(tmp_path / "a", database=database_url))
    second = Manager(make_settings(tmp_path / "b", database=database_url))
    try:
        async with relaying(first), relaying(second):
            heard_by_second = second.context.events.subscribe()
            heard_by_first = first.context.events.subscribe()

            worker = await asyncio.to_thread(
                first.workers.register,
                WorkerRegistration(secret="s", platform="linux", nickname="far-away"),
                "10.0.0.9:1",
            )
            event = await _next(heard_by_second)
            assert (event.kind, event.id) == ("worker", str(worker.id))
            # The first hears its own change once, from its own bus, not again from the second.
            own = await _next(heard_by_first)
            assert (own.kind, own.id) == ("worker", str(worker.id))

            job = await asyncio.to_thread(
                second.jobs.create_job, name="j", job_type="test", tasks=[spec("t")]
            )
            kinds = set()
            while "job" not in kinds:
                event = await _next(heard_by_first)
                kinds.add(event.kind)
                if event.kind == "job":
                    assert event.id == str(job.id)
            await asyncio.sleep(0.5)
            for subscription in (heard_by_first, heard_by_second):
                subscription.close()
            # Nothing came back around: every event the first heard was the second's or its own.
            assert first.context.events.published == second.context.events.published
    finally:
        first.close()
        second.close()


async def test_a_manager_on_sqlite_relays_nothing(tmp_path: Path) -> None:
    # About SQLite itself: one process, so no notifier (PostgreSQL's is tested above).
    manager = Manager(make_settings(tmp_path))
    try:
        assert manager.notifier is None
        assert manager.context.events.relay is None
    finally:
        manager.close()


def test_large_batches_are_cut_below_the_payload_limit(tmp_path: Path, database_url: str) -> None:
    if not database_url:
        pytest.skip("needs PostgreSQL")
    manager = Manager(make_settings(tmp_path, database=database_url))
    try:
        notifier = manager.notifier
        assert isinstance(notifier, Notifier)
        messages = [
            {"kind": "task", "id": f"{i:024x}", "data": {"x": "y" * 99}} for i in range(300)
        ]
        payloads = notifier._payloads(messages)
        assert len(payloads) > 1
        assert all(len(payload.encode()) <= MAX_PAYLOAD for payload in payloads)
        assert notifier._payloads([{"kind": "task", "data": "z" * 9000}]) == []
        assert notifier.dropped == 1
    finally:
        manager.close()
