"""The exceptions of the protocol package.

::

    ProtocolError               every error of this package; carries an HTTP status hint
    ├── DecodeError             a JSON document is malformed (400); also a ValueError
    ├── InvalidObjectId         a string is not a 24-hex ID (400); also a ValueError
    └── InvalidTransition       an event is not allowed in the current state (409)

The manager turns a :class:`ProtocolError` into an HTTP answer at one place, using
``status_hint``; a client raises them for what the manager sent back.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DecodeError", "InvalidObjectId", "InvalidTransition", "ProtocolError"]


class ProtocolError(Exception):
    """Base of every error raised by :mod:`flamenco_protocol`."""

    status_hint: int = 400
    """The HTTP status that answers this error when it comes from a request."""


class DecodeError(ProtocolError, ValueError):
    """A JSON document could not be decoded; ``errors`` names each bad field path and why."""

    def __init__(self, document: str, errors: Iterable[str]) -> None:
        self.document = document
        self.errors = tuple(errors)
        super().__init__(f"invalid {document}: " + "; ".join(self.errors))


class InvalidObjectId(ProtocolError, ValueError):
    """A string is not a 24-character hexadecimal object ID."""


class InvalidTransition(ProtocolError):
    """An event happened that the state machine does not allow in the current state."""

    status_hint = 409

    def __init__(self, machine: str, state: str, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine}: {event!r} is not allowed in state {state!r}")
