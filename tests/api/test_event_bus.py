"""The event bus: staged events wait for the commit, slow subscribers are cut off."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from flamenco_manager.services.events import Event, EventBus, stage
from flamenco_manager.storage.database import Database
from flamenco_manager.web.user_api import _EncodedEvents, _event_stream
from tests.manager.harness import Farm, make_settings

pytestmark = pytest.mark.anyio


async def test_a_subscriber_gets_the_kinds_it_asked_for_in_order() -> None:
    bus = EventBus()
    jobs = bus.subscribe(["job"])
    everything = bus.subscribe()
    bus.publish([Event("job", "a"), Event("worker", "w"), Event("job", "b")])
    first, second = await jobs.get(), await jobs.get()
    assert first is not None
    assert second is not None
    assert [(first.id, first.number), (second.id, second.number)] == [("a", 1), ("b", 3)]
    assert [(await everything.get()).kind for _ in range(3)] == ["job", "worker", "job"]  # type: ignore[union-attr]


async def test_events_nobody_hears_still_take_their_numbers() -> None:
    """Numbers count every event published, heard or not; a relay hears them all."""
    bus = EventBus()
    bus.publish([Event("job", "unheard"), Event("job", "unheard too")])
    relayed: list[Event] = []
    bus.relay = relayed.extend
    bus.publish([Event("task", "relayed")])
    listener = bus.subscribe()
    bus.publish([Event("job", "heard")])
    bus.publish([Event("job", "from elsewhere")], relayed=True)
    heard = [await listener.get() for _ in range(2)]
    assert [(event.id, event.number) for event in heard if event] == [
        ("heard", 4),
        ("from elsewhere", 5),
    ]
    assert [(event.id, event.number) for event in relayed] == [("relayed", 3), ("heard", 4)]
    assert bus.published == 5


async def test_events_published_from_another_thread_arrive() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    thread = threading.Thread(target=bus.publish, args=([Event("task", "t")],))
    thread.start()
    thread.join()
    event = await asyncio.wait_for(subscription.get(), 1)
    assert event is not None
    assert event.id == "t"


async def test_a_subscriber_that_falls_behind_is_closed() -> None:
    bus = EventBus(backlog=3)
    slow = bus.subscribe()
    bus.publish([Event("job", str(index)) for index in range(10)])
    await asyncio.sleep(0)
    received = []
    while (event := await slow.get()) is not None:
        received.append(event.id)
    assert received == ["0", "1", "2"]
    assert slow.overflowed
    assert bus.subscriber_count == 0


async def test_closing_ends_the_stream() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    subscription.close()
    assert await subscription.get() is None
    assert bus.subscriber_count == 0


async def test_staged_events_are_published_only_after_the_commit(
    tmp_path: Path, database_url: str
) -> None:
    database = Database.open(make_settings(tmp_path, database=database_url).database_url)
    bus = EventBus()
    subscription = bus.subscribe()
    with database.transaction() as connection:
        stage(connection, bus, Event("job", "kept"))
        stage(connection, bus, Event("job", "kept too"))
        assert bus.published == 0
    assert bus.published == 2

    def roll_back() -> None:
        with database.transaction() as connection:
            stage(connection, bus, Event("job", "rolled back"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        roll_back()
    assert bus.published == 2
    ids = [(await subscription.get()).id for _ in range(2)]  # type: ignore[union-attr]
    assert ids == ["kept", "kept too"]
    database.close()


async def test_the_event_stream_keeps_up_with_bursts_of_events(farm: Farm) -> None:
    # A busy farm publishes hundreds of events per turn of the event loop (one per task update);
    # a stream taking one event per turn fell a thousand behind within a second and was cut off.
    stream = _event_stream(
        farm.manager, ["task"], heartbeat=60, encoded=_EncodedEvents(), still_allowed=lambda: True
    )
    assert (await anext(stream)).startswith(b": flamenco events")
    received: list[bytes] = []

    async def read() -> None:
        async for chunk in stream:
            received.append(chunk)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    for turn in range(20):
        farm.manager.events.publish([Event("task", f"{turn}-{n}") for n in range(200)])
        await asyncio.sleep(0)
    for _ in range(200):
        if b"".join(received).count(b"event: task\n") == 4000:
            break
        await asyncio.sleep(0.01)
    reader.cancel()

    text = b"".join(received)
    assert b"overflow" not in text
    assert text.count(b"event: task\n") == 4000
    assert text.endswith(b'id: 4000\nevent: task\ndata: {"id":"19-199"}\n\n')
