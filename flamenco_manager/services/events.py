"""The in-process event bus: what changed on the farm, for the user API's event stream.

Services *stage* an event inside their database transaction (:func:`stage`); it is published
when the transaction commits and dropped when it rolls back, so a subscriber never hears of a
change that did not happen. Publishing never blocks a service:

* every subscriber has a bounded queue; one that falls too far behind is closed (its stream
  ends, and the client reconnects and reloads), instead of slowing the farm down or growing
  without bound;
* publishing is thread-safe: services run on the event loop, in worker threads, or in tests
  without any loop; events published on a subscriber's own thread are queued at once, from
  other threads through the subscriber's loop, one hand-over per transaction;
* a reader takes every event waiting at once (:meth:`Subscription.get_waiting`): a busy farm
  publishes hundreds in one turn of the event loop.

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
        self._thread = threading.get_ident()  # the loop's: subscribe() runs on it
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

    async def get_waiting(self) -> list[Event]:
        """Every event waiting, once there is one; ``[]`` once the subscription is closed.

        A busy farm publishes more events in one turn of the event loop than a reader taking
        one per turn can keep up with.
        """
        waiting: list[Event] = []
        event = await self.get()
        while event is not None:
            waiting.append(event)
            if self._queue.empty():
                break
            event = self._queue.get_nowait()
        return waiting

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._bus._remove(self)
        self._deliver([None])

    def _deliver(self, events: list[Event | None]) -> None:
        """Hand events over, from any thread: on the subscriber's own thread at once, from
        another one through its event loop."""
        if threading.get_ident() == self._thread:
            self._put(events)
            return
        try:
            self._loop.call_soon_threadsafe(self._put, events)
        except RuntimeError:  # Its loop is closed: nobody is listening any more.
            self._bus._remove(self)
            self.closed = True

    def _put(self, events: list[Event | None]) -> None:
        for event in events:
            if self.closed:
                return
            if event is None:
                self.closed = True
                self._queue.put_nowait(None)
            elif self._queue.qsize() >= self._backlog:
                # Too slow: end its stream rather than lose events silently or block the farm.
                self.overflowed = True
                self.closed = True
                self._bus._remove(self)
                self._queue.put_nowait(None)
            else:
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
        self._ended = False

    def subscribe(self, kinds: Iterable[str] = KINDS) -> Subscription:
        """A new subscription on the running event loop, for events of ``kinds``; closed from
        the start once :meth:`end_subscriptions` ran."""
        subscription = Subscription(
            self, asyncio.get_running_loop(), frozenset(kinds) or KINDS, self.backlog
        )
        with self._lock:
            ended = self._ended
            if not ended:
                self._subscribers.add(subscription)
        if ended:
            subscription.close()
        return subscription

    def end_subscriptions(self) -> None:
        """Close every subscription, and each one made from now on: the process is stopping,
        and a stream open for ever would hold the server's shutdown until its time runs out."""
        with self._lock:
            self._ended = True
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.close()

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
        for subscription in subscribers:
            heard: list[Event | None] = [
                event for event in numbered if event.kind in subscription.kinds
            ]
            if heard:
                subscription._deliver(heard)

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
