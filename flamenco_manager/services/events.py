"""The in-process event bus: what changed on the farm, for the user API's event stream.

Services *stage* an event inside their database transaction (:func:`stage`); it is published
when the transaction commits and dropped when it rolls back, so a subscriber never hears of a
change that did not happen. Publishing never blocks a service:

* every subscriber has a bounded queue; one that falls too far behind is closed (its stream
  ends, and the client reconnects and reloads), instead of slowing the farm down or growing
  without bound;
* publishing is thread-safe: services run on the event loop, in worker threads, or in tests
  without any loop; events reach each subscriber through its own loop.

Events are plain data, :class:`Event`: a kind (``job``, ``task``, ``worker``), the ID of what
changed and a small JSON-ready payload, numbered in publication order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.storage.database import AFTER_COMMIT

__all__ = ["DEFAULT_BACKLOG", "Event", "EventBus", "Subscription", "stage"]

DEFAULT_BACKLOG: Final = 1000
"""Events a subscriber may have waiting before it is closed as too slow."""

KINDS: Final = frozenset({"job", "task", "worker"})
"""The kinds of event the bus carries."""


@attrs.frozen
class Event:
    """Something changed: a job, a task or a worker."""

    kind: str
    """``job``, ``task`` or ``worker``."""
    id: str
    """The ID of the job, task or worker."""
    data: Mapping[str, Any] = attrs.field(factory=dict)
    """What changed, JSON-ready (e.g. ``{"status": "active", "job": "…"}``)."""
    number: int = 0
    """Position in the bus's publication order, from 1; 0 until published."""


class Subscription:
    """One listener's queue of events; iterate it with :meth:`get` from its event loop."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        kinds: frozenset[str],
        backlog: int,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self.kinds = kinds
        """The kinds of event this subscriber gets."""
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=backlog + 1)
        self._backlog = backlog
        self.overflowed = False
        """Whether it was closed because it fell too far behind."""
        self.closed = False
        """Whether it gets no more events."""

    async def get(self) -> Event | None:
        """The next event, or ``None`` once the subscription is closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._bus._remove(self)
        self._deliver(None)

    def _deliver(self, event: Event | None) -> None:
        """Hand an event over, from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # Its loop is closed: nobody is listening any more.
            self._bus._remove(self)
            self.closed = True

    def _put(self, event: Event | None) -> None:
        if self.closed:
            return
        if event is None:
            self.closed = True
            self._queue.put_nowait(None)
            return
        if self._queue.qsize() >= self._backlog:
            # Too slow: end its stream rather than lose events silently or block the farm.
            self.overflowed = True
            self.closed = True
            self._bus._remove(self)
            self._queue.put_nowait(None)
            return
        self._queue.put_nowait(event)


class EventBus:
    """Fans events out to subscribers. Thread-safe; never blocks a publisher."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG) -> None:
        self.backlog = backlog
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self.published = 0
        """How many events were published since start."""
        self.relay: Callable[[list[Event]], None] | None = None
        """Also hands published events to the other manager processes (see event_relay)."""

    def subscribe(self, kinds: Iterable[str] = KINDS) -> Subscription:
        """A new subscription on the running event loop, for events of ``kinds``."""
        subscription = Subscription(
            self, asyncio.get_running_loop(), frozenset(kinds) or KINDS, self.backlog
        )
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are listening."""
        with self._lock:
            return len(self._subscribers)

    def publish(self, events: Sequence[Event], *, relayed: bool = False) -> None:
        """Number the events and hand them to every interested subscriber.

        ``relayed`` events come from another process, and are not relayed back.
        """
        with self._lock:
            first = self.published + 1
            self.published += len(events)
            subscribers = list(self._subscribers)
        relay = None if relayed else self.relay
        if not events or (not subscribers and relay is None):
            return  # nobody to hand them to: their numbers are spent all the same
        numbered = [
            Event(event.kind, event.id, event.data, number)
            for number, event in enumerate(events, first)
        ]
        if relay is not None:
            relay(numbered)
        for event in numbered:
            for subscription in subscribers:
                if event.kind in subscription.kinds:
                    subscription._deliver(event)

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)


class _Flush:
    """The after-commit callback that publishes one transaction's staged events."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.events: list[Event] = []

    def __call__(self) -> None:
        self.bus.publish(self.events)


def stage(connection: Connection, bus: EventBus, event: Event) -> None:
    """Publish ``event`` on ``bus`` when the transaction of ``connection`` commits.

    Outside a :meth:`~flamenco_manager.storage.database.Database.transaction` block the event is
    published at once.
    """
    callbacks: list[Callable[[], None]] | None = connection.info.get(AFTER_COMMIT)
    if callbacks is None:
        bus.publish([event])
        return
    for callback in callbacks:
        if isinstance(callback, _Flush) and callback.bus is bus:
            callback.events.append(event)
            return
    flush = _Flush(bus)
    flush.events.append(event)
    callbacks.append(flush)
