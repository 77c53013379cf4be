"""How to run the Shaman app under uvicorn so that uploads stream fast.

``uvicorn.run(app, **uvicorn_options())`` (what ``shaman serve`` does; the manager can do the
same) picks uvloop and httptools, and the HTTP protocol below, which hands each received body
piece to the app as it is instead of copying it twice.

uvicorn's httptools protocol appends every body piece to a ``bytearray`` and ``receive()``
copies that into a fresh ``bytes``: two copies of every byte on the event loop thread, on top of
the two that uvloop and httptools make. When nothing is waiting in the buffer (the usual case:
one piece arrives per event-loop turn), `BodyPassingProtocol` stores the piece itself, and
``receive()``'s ``bytes(...)`` of a ``bytes`` is the same object. Anything else (a second piece
before the app asked, upgrades, a finished response) takes uvicorn's own path.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["BodyPassingProtocol", "uvicorn_options"]

try:
    from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without httptools (Windows, minimal installs)
    BodyPassingProtocol: type[asyncio.Protocol] | None = None
else:

    class _BodyPassingProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, minus two copies of each request-body piece."""

        def on_body(self, body: bytes) -> None:
            """Keep a received body piece as it is when the app has taken the previous one."""
            cycle = self.cycle
            if (
                cycle.body
                or cycle.response_complete
                or (self.parser.should_upgrade() and self._should_upgrade())
            ):
                super().on_body(body)
                return
            # receive() sends bytes(cycle.body): for a bytes object that is no copy.
            cycle.body = body  # type: ignore[assignment]
            if len(body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()

    BodyPassingProtocol = _BodyPassingProtocol


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: event loop and HTTP protocol."""
    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        pass
    else:
        options["loop"] = "uvloop"
    if BodyPassingProtocol is not None:
        options["http"] = BodyPassingProtocol
    return options
