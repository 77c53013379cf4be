"""An online copy of the manager's SQLite database, taken while the manager runs.

Copying the database file with ``cp`` while the manager writes can give a torn copy: pages from
before and after a commit, and the write-ahead log left behind. :func:`copy_sqlite` reads every
page inside one read transaction instead (SQLite's backup API in a single step), so the copy is
the database as of one commit. In WAL mode that transaction waits for no writer and no writer
waits for it: the farm goes on while the copy is made.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

__all__ = ["BackupError", "copy_sqlite"]


class BackupError(Exception):
    """The copy could not be made; nothing was left at the target."""


def copy_sqlite(source: Path, target: Path) -> int:
    """Copy the SQLite database at ``source`` to the new file ``target``; the copy's size.

    The copy is checked (``PRAGMA quick_check``) before it takes its name, so ``target`` is
    either a whole, checked database or absent. Raises :class:`BackupError` when ``source`` is
    missing or not a database, when ``target`` exists, or when the disk refuses.
    """
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    if target.exists():
        raise BackupError(f"{target} exists already: choose a new place for the backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        # mode=rw: a path that is not a database must not become an empty one.
        uri = f"{source.resolve().as_uri()}?mode=rw"
        with (
            contextlib.closing(sqlite3.connect(uri, uri=True)) as database,
            contextlib.closing(sqlite3.connect(temporary)) as copy,
        ):
            database.backup(copy)  # every page at once: one read transaction, one moment
            problems = [row[0] for row in copy.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise BackupError(f"the copy of {source} fails its check: {'; '.join(problems[:5])}")
        os.replace(temporary, target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target.stat().st_size
