"""The task-update queue: every update is written to SQLite before it is sent.

A worker never posts a task update straight to the manager. It appends the update to this queue
(one row: the task ID and the JSON body), and a delivery loop posts the rows in the order they
were added, deleting each once the manager has it. A manager outage, or a worker crash, loses
nothing: the rows wait in the file and go out, still in order, when the manager answers again
(also after a restart of the worker).

What the manager answers decides what happens to a row (as with the real worker):

* 2xx: delivered, deleted;
* 404 or 409: the manager will never take it (unknown task, another worker's task): deleted,
  with a warning;
* 400: the manager cannot read it, and never will: deleted, with an error (the real worker
  retries it for ever, which blocks every later update);
* 413: too large for the manager, now and later: deleted, with a warning (the reporter keeps
  updates far below the manager's limit, so only a foreign row can be this large);
* anything else, or no answer: kept; delivery stops and is tried again later from that row.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .client import AsyncClient
from .exceptions import (
    BadRequest,
    FlamencoClientError,
    TaskConflict,
    TaskNotFound,
    Unauthorized,
    UnexpectedStatus,
)

__all__ = ["QueuedUpdate", "UpdateQueue", "deliver_queued_updates"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    body TEXT NOT NULL
)
"""

# Surrogate code points cannot be encoded as UTF-8 (SQLite, HTTP), and the manager answers 400
# to JSON with lone surrogate escapes; they come from undecodable bytes (surrogateescape).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _surrogate_as_text(match: re.Match[str]) -> str:
    """A surrogate as readable text: U+DC80..U+DCFF (an undecodable byte) as ``\\xNN``,
    any other as ``\\uXXXX``."""
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:
        return f"\\x{point - 0xDC00:02x}"
    return f"\\u{point:04x}"


def replace_surrogates(text: str) -> str:
    """``text`` with every surrogate code point written out as ``\\xNN`` / ``\\uXXXX``, so it
    encodes as UTF-8."""
    return _SURROGATE.sub(_surrogate_as_text, text)


@attrs.frozen
class QueuedUpdate:
    """One row of the queue."""

    row_id: int
    """Position in the queue; rows are sent in ascending order."""
    task_id: str
    """The task the update is about."""
    body: bytes
    """The JSON body, exactly as it will be posted."""


class UpdateQueue:
    """A FIFO of task updates in one SQLite file; safe against crashes (WAL, one transaction
    per change)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def push(self, task_id: str, body: dict[str, Any]) -> int:
        """Append an update; return its row ID."""
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        # Surrogates only occur inside JSON strings; there a backslash is written "\\".
        text = _SURROGATE.sub(lambda m: _surrogate_as_text(m).replace("\\", "\\\\"), text)
        cursor = self._db.execute(
            "INSERT INTO task_updates (task_id, body) VALUES (?, ?)", (str(task_id), text)
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def peek(self, limit: int = 100) -> list[QueuedUpdate]:
        """The oldest ``limit`` rows, oldest first."""
        rows = self._db.execute(
            "SELECT id, task_id, body FROM task_updates ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [QueuedUpdate(row_id, task_id, body.encode()) for row_id, task_id, body in rows]

    def delete(self, row_id: int) -> None:
        """Remove a row (delivered or discarded)."""
        self._db.execute("DELETE FROM task_updates WHERE id = ?", (row_id,))

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM task_updates").fetchone()
        return int(count)

    def __iter__(self) -> Iterator[QueuedUpdate]:
        return iter(self.peek(limit=-1))


async def deliver_queued_updates(queue: UpdateQueue, client: AsyncClient) -> bool:
    """Post queued updates in order until the queue is empty or one cannot be delivered.

    Returns whether the queue is empty now. Raises :class:`Unauthorized` when the manager does
    not know the client's credentials (nothing can be delivered then); no other answer of the
    manager raises.
    """
    while batch := queue.peek():
        for row in batch:
            try:
                await client.send(client.core.update_task_raw(row.task_id, row.body))
            except (TaskNotFound, TaskConflict) as error:
                log.warning("discarding update for task %s, manager says: %s", row.task_id, error)
            except BadRequest as error:
                log.error(
                    "discarding update for task %s, manager cannot read it: %s", row.task_id, error
                )
            except Unauthorized:
                raise
            except UnexpectedStatus as error:
                if error.status_code != 413:
                    log.warning("cannot deliver update for task %s now: %s", row.task_id, error)
                    return False
                log.warning(
                    "discarding update for task %s (%d bytes), too large for the manager: %s",
                    row.task_id,
                    len(row.body),
                    error,
                )
            except FlamencoClientError as error:
                log.warning("cannot deliver update for task %s now: %s", row.task_id, error)
                return False
            queue.delete(row.row_id)
    return True
