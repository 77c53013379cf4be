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

**Open files.** A server keeps a socket open per client connection: the manager one per worker
(workers keep their connection between requests) and per dashboard, plus its database, logs and
uploads. Where a process may open fewer files than that, uvloop closes each new connection as
soon as it accepts it and says nothing: workers past the limit see "connection reset" and nothing
in the manager's log tells why. :func:`raise_open_files_limit` lifts the limit as far as the
system lets a process lift it by itself, as Go programs do at start, and :class:`OpenFilesWatch`
warns in the log while the process nears its limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "BodyPassingProtocol",
    "OpenFilesWatch",
    "announce_open_files_limit",
    "open_files_in_use",
    "open_files_limit",
    "raise_open_files_limit",
    "uvicorn_options",
]

OPEN_FILES_ADVISED: Final = 4096
"""Below this limit of open files, the servers warn at start: a farm of a few thousand workers
needs more."""

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


def open_files_limit() -> int | None:
    """How many files this process may open (its soft limit); ``None`` where there is no such
    limit to read (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise this process's soft limit of open files to its hard limit; ``(before, after)``.

    The soft limit is often 1,024 (a login shell, a systemd service) while the hard one is far
    higher: only the administrator can raise the hard limit (``ulimit -Hn``, systemd's
    ``LimitNOFILE=``), every process may raise its soft limit up to it. Children (the processes
    of ``--processes``) inherit the raised limit. ``None`` where there is no limit (Windows, or
    unlimited).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft == hard:
        return soft, soft
    wanted = hard
    if hard == resource.RLIM_INFINITY:  # pragma: no cover - no system here has it
        # Open files are bounded all the same: Linux's nr_open (2**20 by default), macOS's
        # OPEN_MAX per process.
        wanted = max(soft, 10_240 if sys.platform == "darwin" else 2**20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # pragma: no cover - a system that refuses its own hard limit
        return soft, soft
    return soft, wanted


def announce_open_files_limit(limits: tuple[int, int] | None, logger: logging.Logger) -> None:
    """Log the limit :func:`raise_open_files_limit` set; warn when it is low for a farm."""
    if limits is None:
        return
    before, after = limits
    if after >= OPEN_FILES_ADVISED:
        logger.info("open files limit", extra={"limit": after, "was": before})
        return
    logger.warning(
        f"this process may open only {after} files: every connected worker, dashboard and "
        f"upload holds one, so a farm of more than about {max(after - 100, 0)} workers will "
        "lose connections; raise the hard limit (ulimit -Hn, or LimitNOFILE= in a systemd unit)",
        extra={"limit": after},
    )


def open_files_in_use() -> int | None:
    """How many files this process has open (sockets included); ``None`` where it cannot tell."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            # Listing opens the directory itself: one entry is the listing's own.
            return len(os.listdir(listing)) - 1
        except OSError:
            continue
    return None  # pragma: no cover - neither Linux nor macOS


class OpenFilesWatch:
    """Warns while the process holds most of the files it may open.

    Past the limit, new connections are closed as soon as they are accepted, without a word in
    the log (see the module's documentation). :meth:`check` warns when the files in use reach
    ``high`` of the limit, again every ``repeat`` checks while they stay there, and says so once
    they are back under ``low``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        limit: Callable[[], int | None] = open_files_limit,
        in_use: Callable[[], int | None] = open_files_in_use,
        high: float = 0.8,
        low: float = 0.7,
        repeat: int = 20,
    ) -> None:
        self.logger = logger
        self._limit = limit
        self._in_use = in_use
        self.high = high
        self.low = low
        self.repeat = repeat
        self._warned_checks_ago: int | None = None
        """Checks since the last warning while high; ``None`` while not high."""

    def check(self) -> None:
        """Look at the files in use once, and log what changed."""
        limit, in_use = self._limit(), self._in_use()
        if limit is None or in_use is None or limit <= 0:
            return
        if self._warned_checks_ago is not None and in_use < self.low * limit:
            self._warned_checks_ago = None
            self.logger.info(
                "open files back under the limit", extra={"open_files": in_use, "limit": limit}
            )
            return
        if in_use < self.high * limit:
            return
        if self._warned_checks_ago is None or self._warned_checks_ago >= self.repeat:
            self._warned_checks_ago = 0
            self.logger.warning(
                f"{in_use} of the {limit} files this process may open are open: past the "
                "limit, new connections are dropped without an answer; raise the limit "
                "(ulimit -Hn, or LimitNOFILE= in a systemd unit)",
                extra={"open_files": in_use, "limit": limit},
            )
        else:
            self._warned_checks_ago += 1

    async def run(self, period: float) -> None:
        """:meth:`check` every ``period`` seconds until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(period)
