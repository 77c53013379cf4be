"""Messages between the manager processes sharing one PostgreSQL schema: LISTEN/NOTIFY.

Every process publishes what changed on the farm to its own event bus; several processes behind
one port must hear each other's changes too, or a browser's event stream would only show what
its own process did. :class:`Notifier` carries small JSON messages between them:

* :meth:`Notifier.publish` is called after a transaction committed (never inside one: a
  listener must not hear of a change that may still roll back). It only queues; a thread of its
  own batches the queue into ``pg_notify`` calls, so a request never waits for them;
* :meth:`Notifier.listen` runs in each process on a connection of its own (LISTEN holds a
  session), and hands every batch from *another* process to its callback; it reconnects by
  itself after the server went away.

The channel is named after the schema, so managers in different schemas of one database (tests)
do not hear each other. Delivery is at most once: a message published while the server is away,
or while a listener reconnects, is lost; event-stream clients reload what they show when their
stream restarts, as they do after any gap. PostgreSQL caps a message at 8000 bytes; batches are
cut below that and a single larger message is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

__all__ = ["MAX_PAYLOAD", "Notifier"]

MAX_PAYLOAD: Final = 7900
"""Bytes of one NOTIFY payload (PostgreSQL's limit is 8000)."""
_RECONNECT_DELAYS: Final = (0.5, 1.0, 2.0, 5.0)
_QUEUE_LIMIT: Final = 100_000
_log = logging.getLogger("flamenco_manager.notify")

Message = Mapping[str, Any]


class Notifier:
    """Publishes JSON messages to the other processes on the same schema, and listens to theirs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.origin = secrets.token_hex(8)
        """This process's mark on what it sends, so that it ignores its own messages."""
        self._channel: str | None = None
        self._outbox: queue.Queue[Message | None] = queue.Queue(_QUEUE_LIMIT)
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        """Messages lost because the outbox was full or the database was away."""

    @property
    def channel(self) -> str:
        """The channel of this schema: a digest of its name, as channel names are short."""
        if self._channel is None:
            with self.engine.connect() as connection:
                schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            digest = hashlib.sha256(str(schema).encode()).hexdigest()[:24]
            self._channel = f"flamenco_events_{digest}"
        return self._channel

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` to the other processes (from any thread; never blocks)."""
        with self._lock:
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_forever, name="notify-sender", daemon=True
                )
                self._sender.start()
        for message in messages:
            try:
                self._outbox.put_nowait(message)
            except queue.Full:
                self.dropped += 1

    def close(self) -> None:
        """Send what is queued and stop the sender thread."""
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            self._outbox.put(None)
            sender.join(timeout=5)

    def _send_forever(self) -> None:
        while True:
            first = self._outbox.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < 1000:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._send(batch)
            if stop:
                return

    def _send(self, batch: list[Message]) -> None:
        payloads = list(self._payloads(batch))
        try:
            with self.engine.connect() as connection:
                for payload in payloads:
                    connection.execute(
                        text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": self.channel, "payload": payload},
                    )
                connection.commit()
        except DBAPIError as exc:
            self.dropped += len(batch)
            _log.warning(
                "could not notify the other manager processes",
                extra={"messages": len(batch), "error": str(exc).splitlines()[0][:200]},
            )

    def _payloads(self, batch: list[Message]) -> list[str]:
        """The batch as JSON payloads of at most :data:`MAX_PAYLOAD` bytes each."""
        head = f'{{"origin":"{self.origin}","messages":['
        payloads: list[str] = []
        current: list[str] = []
        size = len(head) + 2
        for message in batch:
            encoded = json.dumps(message, separators=(",", ":"), default=str)
            length = len(encoded.encode()) + 1
            if len(head) + 2 + length > MAX_PAYLOAD:
                self.dropped += 1
                _log.warning("message too large to notify", extra={"bytes": length})
                continue
            if size + length > MAX_PAYLOAD:
                payloads.append(head + ",".join(current) + "]}")
                current, size = [], len(head) + 2
            current.append(encoded)
            size += length
        if current:
            payloads.append(head + ",".join(current) + "]}")
        return payloads

    # --- listening -----------------------------------------------------------------------------

    async def listen(
        self,
        receive: Callable[[list[Message]], None],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Hand the messages of other processes to ``receive`` until cancelled.

        ``ready`` is set each time the listener is (again) listening.
        """
        channel = await asyncio.to_thread(lambda: self.channel)
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        cparams.pop("context", None)
        failures = 0
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    *cargs, autocommit=True, **cparams
                )
            except psycopg.Error as exc:
                await self._pause_after(exc, failures)
                failures += 1
                continue
            try:
                async with connection:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if failures:
                        _log.info("listening to the other manager processes again")
                    failures = 0
                    if ready is not None:
                        ready.set()
                    async for notification in connection.notifies():
                        self._deliver(notification.payload, receive)
            except psycopg.Error as exc:
                await self._pause_after(exc, failures)
                failures += 1

    def _deliver(self, payload: str, receive: Callable[[list[Message]], None]) -> None:
        try:
            decoded = json.loads(payload)
            if decoded.get("origin") == self.origin:
                return
            messages = decoded["messages"]
        except (ValueError, KeyError, AttributeError):
            _log.warning("ignored a notification that is not ours", extra={"bytes": len(payload)})
            return
        try:
            receive(messages)
        except Exception:
            _log.exception("a notification could not be handled")

    @staticmethod
    async def _pause_after(exc: Exception, failures: int) -> None:
        if failures == 0:
            _log.warning(
                "lost the connection listening to the other manager processes; reconnecting",
                extra={"error": str(exc).splitlines()[0][:200] if str(exc) else repr(exc)},
            )
        await asyncio.sleep(_RECONNECT_DELAYS[min(failures, len(_RECONNECT_DELAYS) - 1)])
