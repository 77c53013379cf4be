"""The event bus of each manager process, joined to the others' on PostgreSQL.

With several processes (``serve --processes N``, or several machines) a change is published on
the bus of the process that made it; :func:`join_processes` also sends it, after the commit, to
the other processes through :class:`~flamenco_manager.storage.notify.Notifier`, and
:func:`relay_events` (one task per process, in its loops) publishes theirs on the local bus. An
event from another process is numbered by the local bus like any other. SQLite serves one
process: there is nothing to join.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flamenco_manager.storage.database import Database
from flamenco_manager.storage.notify import Message, Notifier

from .events import Event, EventBus

__all__ = ["join_processes", "relay_events"]


def join_processes(bus: EventBus, database: Database) -> Notifier | None:
    """Relay ``bus``'s events to the other processes on ``database``; ``None`` on SQLite."""
    if database.is_sqlite:
        return None
    notifier = Notifier(database.engine)
    bus.relay = lambda events: notifier.publish([_message(event) for event in events])
    return notifier


async def relay_events(
    bus: EventBus, notifier: Notifier, ready: asyncio.Event | None = None
) -> None:
    """Publish on ``bus`` what the other processes publish, until cancelled.

    ``ready`` is set once it listens (and again after each reconnection).
    """

    def receive(messages: list[Message]) -> None:
        bus.publish([_event(message) for message in messages], relayed=True)

    await notifier.listen(receive, ready)


def _message(event: Event) -> dict[str, Any]:
    return {"kind": event.kind, "id": event.id, "data": dict(event.data)}


def _event(message: Message) -> Event:
    return Event(str(message["kind"]), str(message["id"]), dict(message.get("data") or {}))
