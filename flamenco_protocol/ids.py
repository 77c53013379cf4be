"""Object IDs: 24 hexadecimal characters, ordered by creation time.

Every entity of the protocol (worker, job, task, task update) is named by a 12-byte ID written as
24 lower-case hex characters, the shape of a BSON ObjectId. The Go manager breaks scheduling ties
by ascending ID, so IDs must sort in the order they were made.

The 12 bytes are laid out so that an ID is still a valid ObjectId (its first four bytes are the
creation time in whole seconds, big-endian) while ordering holds finer than one second:

=========  =====  ==========================================================
bytes      size   content
=========  =====  ==========================================================
0..3       4      seconds since the Unix epoch
4..6       3      fraction of that second, in units of 2**-24 s (about 60 ns)
7..8       2      random per process, chosen again after ``fork``
9..11      3      counter, so that one process never makes the same ID twice
=========  =====  ==========================================================

Within one process every new ID is greater than the one before, even when the clock stands still
or steps back. Across processes on one machine (or on machines whose clocks agree) IDs made more
than one tick apart sort in creation order.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any, Final

from .errors import InvalidObjectId

__all__ = ["InvalidObjectId", "ObjectId"]

_HEX24: Final = re.compile(r"[0-9a-fA-F]{24}")
_TICKS_PER_SECOND: Final = 1 << 24
_COUNTER_LIMIT: Final = 1 << 24


class ObjectId(str):
    """A 24-character lower-case hexadecimal ID; a ``str``, so it compares and hashes as one.

    Make a new one with :meth:`ObjectId.new`; read one with :meth:`ObjectId.parse` (or by calling
    ``ObjectId(text)``), which accepts either case and refuses anything that is not 24 hex
    characters.
    """

    __slots__ = ()

    def __new__(cls, value: str | ObjectId) -> ObjectId:
        if type(value) is cls:
            return value
        if not isinstance(value, str) or _HEX24.fullmatch(value) is None:
            raise InvalidObjectId(f"not a 24-character hexadecimal object ID: {value!r}")
        return super().__new__(cls, value.lower())

    @classmethod
    def parse(cls, value: Any) -> ObjectId:
        """Read an ID from text, in either case; raise :class:`InvalidObjectId` otherwise."""
        return cls(value)

    @classmethod
    def is_valid(cls, value: Any) -> bool:
        """Tell whether ``value`` is a string :meth:`parse` would accept."""
        return isinstance(value, str) and _HEX24.fullmatch(value) is not None

    @classmethod
    def new(cls) -> ObjectId:
        """Make a new ID, greater than every ID this process made before."""
        return _generator.next_id()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ObjectId:
        """Build an ID from its 12 raw bytes."""
        if len(raw) != 12:
            raise InvalidObjectId(f"an object ID has 12 bytes, not {len(raw)}")
        return str.__new__(cls, raw.hex())

    @property
    def binary(self) -> bytes:
        """The 12 raw bytes."""
        return bytes.fromhex(self)

    @property
    def generation_time(self) -> datetime:
        """When the ID was made, to the second (as a BSON ObjectId tells it), in UTC."""
        return datetime.fromtimestamp(int(self[:8], 16), tz=UTC)

    def __repr__(self) -> str:
        return f"ObjectId({str(self)!r})"


class _Generator:
    """Makes strictly increasing IDs for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A child must not share its parent's random part or it could repeat the parent's IDs.
        self._random = secrets.randbits(16)
        self._last_tick = 0
        self._counter = 0

    def next_id(self) -> ObjectId:
        with self._lock:
            tick = time.time_ns() * _TICKS_PER_SECOND // 1_000_000_000
            if tick > self._last_tick:
                self._last_tick = tick
                self._counter = 0
            else:
                self._counter += 1
                if self._counter == _COUNTER_LIMIT:
                    self._last_tick += 1
                    self._counter = 0
            value = (self._last_tick << 40) | (self._random << 24) | self._counter
        return ObjectId.from_bytes(value.to_bytes(12, "big"))


_generator = _Generator()
