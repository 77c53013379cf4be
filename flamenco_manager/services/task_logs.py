"""Task logs on disk, in the Go manager's layout (spec §9).

Every task has one current log file, ``<root>/job-<job[:4]>/<job>/task-<task>.txt`` (called ``X``
below), that task updates append to. When a task starts a new run its log is rotated:

* numbered older runs shift up by one, gaps preserved (``X.1 X.2 X.5`` become ``X.2 X.3 X.6``);
* ``X`` becomes ``X.1``, kept as plain text because it is the run people look at most;
* every older run is gzipped in place: ``X.<n>`` with ``n >= 2`` becomes ``X.<n>.gz``;
* with ``keep_rotated`` set, only that many older runs (the newest ones) are kept.

``X.gz`` is not a rotated log: it is a gzip copy of ``X`` made by :meth:`TaskLogStore.compress`
(the Go manager made it for the Server's log upload). Rotation deletes it, since it copies the run
that just became ``X.1``; left in place, ``/logfile`` would serve the old run until the new one
writes its first line.

The store is synchronous; call it from a worker thread when the event loop must not wait on the
disk. A store that is the only writer of its logs (one manager process) may keep logs open
(``keep_open``), appending to a log without opening and closing it each time, and closes it
before renaming or removing it. A store that keeps none open, as where several processes write
the logs (PostgreSQL), holds a shared ``flock`` on a log while it appends, and every store an
exclusive one while it takes a line or a run back, so that a line another process appends
meanwhile is neither cut nor lost.

The slow disk work is left to threads of the store's own, one for gzips and one for removals,
so that the caller (a claim or a deletion on the event loop) does not wait for it. Rotation
renames on the caller's thread and gzips a large run on the gzip thread
(:data:`BACKGROUND_GZIP_BYTES`). A second rotation of the same task
waits for its first one's gzip, since it renames the files being compressed. A rotation in
another process does not: there a gzip replaces its run only if the run still has the name it
had, under a ``flock`` on the job's log directory that every rotation holds while it renames
(otherwise the run stays plain). Deleting a job's
logs moves its directory into ``<root>/.deleted`` (one rename, whatever the number of files)
and removes the files there: 10,000 logs take 0.11 s. :meth:`TaskLogStore.flush` and
:meth:`TaskLogStore.close` wait for what is queued; :meth:`TaskLogStore.remove_deleted`
finishes removals a stopped process left.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import attrs

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock: logs are written unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HEAD_BYTES",
    "MISSING_LOG_TEXT",
    "TAIL_BYTES",
    "TAIL_MAX_BYTES",
    "FileRange",
    "LogView",
    "TaskLogError",
    "TaskLogStore",
    "format_skipped",
    "numbered_path_parts",
    "trim_log_tail",
]

HEAD_BYTES: Final = 5 * 1024
"""Bytes of a large log's start that ``/logfile`` shows."""
TAIL_BYTES: Final = 10 * 1024
"""Bytes of a large log's end that ``/logfile`` shows (less the first partial line)."""
LOG_TAIL_LINES: Final = 10
"""Lines of a task update's log kept in its ``log_tail``."""
TAIL_MAX_BYTES: Final = 1024 * 1024
"""At most this much of a log's end makes the tail a task's details show
(:meth:`TaskLogStore.tail`): a worker may log a line of many megabytes (FFmpeg's progress
ends its lines with a lone carriage return)."""
MISSING_LOG_TEXT: Final = "log file does not exist on Flamenco Manager"
"""What :meth:`TaskLogStore.compress` compresses when a task has no log at all."""
GZIP_LEVEL: Final = 9
"""Level of the ``X.gz`` copy :meth:`TaskLogStore.compress` makes (the Go manager's)."""
ROTATED_GZIP_LEVEL: Final = 1
"""Level of the runs rotation gzips: a 2.7 MB render log takes 160 ms at level 9 and 15 ms at
level 1, for a file a quarter larger (23 % of the text against 19 %)."""
BACKGROUND_GZIP_BYTES: Final = 256 * 1024
"""Rotation gzips a run this large or larger on the store's gzip thread, a smaller one at once.

A claim rotates on the event loop: a 10 MB render log takes 80 ms to gzip, during which the
manager would answer nobody; one of 256 KiB 2.4 ms, one of a few lines 0.2 ms. The thread is
for the large ones only: with every rotation handed to it, 10 workers re-running 100 tasks
were answered 182 claims a second instead of 474 (``benchmarks/manager_queue_depth.py``)."""

_GZIP: Final = "task-log-gzip"
_REMOVAL: Final = "task-log-removal"

REOPEN_SECONDS: Final = 10.0
"""How long a log kept open for appending stays open before an append opens it again by name."""
DELETED_DIR: Final = ".deleted"
"""Where, under the root, the logs of deleted jobs wait for the thread that removes them."""

_WHOLE_FILE_AGENTS: Final = ("Wget/", "curl/")
_OBJECT_ID: Final = re.compile(r"[0-9a-fA-F]{24}")
_ROTATED: Final = re.compile(r"\.(\d+)(\.gz)?")
_CHUNK: Final = 64 * 1024
_TAIL_STEP: Final = 8192

_log = logging.getLogger("flamenco_manager.task_logs")


class TaskLogError(Exception):
    """A task log could not be written, rotated, compressed or read; ``reason`` says why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(f"{message}: {reason}" if reason else message)
        self.reason = reason
        """The operating system's explanation, such as ``No space left on device``."""


class InvalidLogIdError(TaskLogError, ValueError):
    """A job or task ID is not a 24-hex-digit object ID, so it cannot name a log file."""


def trim_log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, ending in a newline; ``""`` for empty text.

    This is a task update's ``log_tail`` (spec TU-13): ``"a\\nb"`` and ``"a\\nb\\n"`` both give
    ``"a\\nb\\n"``.
    """
    if not text or lines <= 0:
        return ""
    if not text.endswith("\n"):
        text += "\n"
    cut = len(text) - 1
    for _ in range(lines):
        cut = text.rfind("\n", 0, cut)
        if cut < 0:
            return text
    return text[cut + 1 :]


def numbered_path_parts(path: str) -> tuple[int, str]:
    """Split ``base.<n>`` into ``(n, base)``, the way the Go manager's rotation reads names.

    The suffix is read as a signed decimal (``a.007`` is 7, ``a.-4`` is -4). Anything else,
    including a dot inside a directory name, gives ``(-1, path)`` (spec LR-01).
    """
    base, dot, suffix = path.rpartition(".")
    if not dot:
        return -1, path
    digits = suffix[1:] if suffix[:1] in "+-" else suffix
    if not digits or not digits.isascii() or not digits.isdigit():
        return -1, path
    return int(suffix), base


def format_skipped(size: int) -> str:
    """A byte count as the Go manager prints it in a trimmed log: ``%.1f`` and a binary unit."""
    value = float(size)
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    unit = 0
    while value > 1024.0 and unit < len(units) - 1:
        value /= 1024.0
        unit += 1
    return f"{value:.1f} {units[unit]}"


@attrs.frozen
class FileRange:
    """Bytes ``start`` up to ``end`` (exclusive) of a file."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start


@attrs.frozen(kw_only=True)
class LogView:
    """What ``/logfile`` sends for one task log (spec §9.4), without any HTTP.

    * ``whole``: send the file at ``path`` as it is (a file response, so Range requests work);
    * ``gzip``: the file is ``X.gz``; send it with ``Content-Encoding: gzip`` and
      ``Content-Disposition: attachment; filename="<filename>"`` (``whole`` is then true too);
    * otherwise the body is ``head`` of the file, then ``skipped_text``, then ``tail`` of the file;
      :meth:`iter_bytes` produces it in chunks and :attr:`content_length` is its length.
    """

    path: Path
    """The file to send from."""
    filename: str
    """The file's name (``task-<id>.txt`` or ``task-<id>.txt.gz``)."""
    size: int
    """The file's size when the view was made; ranges never go past it."""
    whole: bool
    """Send the whole file."""
    gzip: bool = False
    """The file is the gzip copy; tell the client it is gzip-encoded, as an attachment."""
    head: FileRange | None = None
    """The start of a trimmed log."""
    skipped_text: bytes = b""
    """The note between the head and the tail of a trimmed log."""
    tail: FileRange | None = None
    """The last ``TAIL_BYTES`` of a trimmed log, less the partial line they start with.

    When no line starts in them, they are sent as they are.
    """
    file: io.BufferedReader | None = attrs.field(default=None, eq=False, repr=False)
    """The log, opened when the view was made (:meth:`TaskLogStore.serve` does): the body is
    read from it even when the log is rotated meanwhile, and a new run's file is never sent
    with the sizes of the previous one's. :meth:`iter_bytes` closes it; without it, the file
    at ``path`` is opened."""

    @property
    def content_length(self) -> int:
        """Length of the body :meth:`iter_bytes` produces."""
        if self.whole:
            return self.size
        head = self.head.length if self.head else 0
        tail = self.tail.length if self.tail else 0
        return head + len(self.skipped_text) + tail

    def iter_bytes(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The body in chunks of at most ``chunk_size`` bytes, read lazily from the file.

        A view holding its log open (:attr:`file`) gives its body once: the file is closed
        when the body ends, or when the iterator is closed or collected.
        """
        ranges = [FileRange(0, self.size)] if self.whole else [self.head, None, self.tail]
        with self.file if self.file is not None else self.path.open("rb") as file:
            for part in ranges:
                if part is None:
                    if self.skipped_text:
                        yield self.skipped_text
                    continue
                file.seek(part.start)
                remaining = part.length
                while remaining > 0:
                    chunk = file.read(min(chunk_size, remaining))
                    if not chunk:
                        break  # The file shrank under us; send what there is.
                    remaining -= len(chunk)
                    yield chunk

    def close(self) -> None:
        """Close the log the view holds open, for a view whose body is not wanted."""
        if self.file is not None:
            self.file.close()


class _OpenLogs:
    """Logs kept open for appending, by path; past ``capacity``, the least recently used closes.

    An append takes the log's descriptor out while it writes: two threads appending to one log
    never share one. A descriptor opened before logs were renamed or removed (:meth:`close`) is
    not kept, and none is kept longer than :data:`REOPEN_SECONDS`: a log removed by hand is
    written again (under its name) within that time.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open: dict[str, tuple[int, float]] = {}  # descriptor, opened at; oldest first
        self._lock = threading.Lock()
        self._closings = 0  # how many times close() ran

    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to the log at ``path`` (see :func:`_write`)."""
        closings = self._closings
        with self._lock:
            kept = self._open.pop(path, None)
        now = time.monotonic()
        if kept is not None and now - kept[1] > REOPEN_SECONDS:
            os.close(kept[0])
            kept = None
        fd, opened = kept or (_opened(path), now)
        _write(fd, path, data)
        self.keep(path, fd, opened, closings)

    def create(self, path: str, data: bytes, rotate: Callable[[], None]) -> None:
        """Start a log at ``path`` with ``data``; ``rotate`` moves an existing one aside."""
        self.close(path)  # the previous run's, about to be rotated (or removed by hand)
        closings, opened = self._closings, time.monotonic()
        fd = _started(path, rotate)
        _write(fd, path, data)
        self.keep(path, fd, opened, closings)  # the run's updates append to it next

    def keep(self, path: str, fd: int, opened: float, closings: int) -> None:
        """Keep ``fd`` open for the next append, unless :meth:`close` ran since ``closings``."""
        with self._lock:
            if closings == self._closings and path not in self._open:
                self._open[path] = (fd, opened)
                if len(self._open) <= self.capacity:
                    return
                fd = self._open.pop(next(iter(self._open)))[0]
        os.close(fd)

    def close(self, path: str = "", *, under: str = "") -> None:
        """Close the log at ``path``, or every log whose path starts with ``under``."""
        with self._lock:
            self._closings += 1
            paths = [key for key in self._open if key.startswith(under)] if under else [path]
            closing = [kept[0] for key in paths if (kept := self._open.pop(key, None))]
        for fd in closing:
            os.close(fd)


class TaskLogStore:
    """The task log files under one root directory.

    ``keep_rotated`` caps how many older runs rotation keeps per task (``None``: all of them);
    ``compress_rotated`` gzips runs older than the previous one. ``keep_open``: how many logs
    may stay open between appends, 0 for none. Only a store that alone writes and renames its
    logs may keep them open: another process rotating a log would leave its open descriptor
    on the previous run's file. Call :meth:`close` when done.
    """

    def __init__(
        self,
        root: Path,
        *,
        keep_rotated: int | None = None,
        compress_rotated: bool = True,
        keep_open: int = 0,
    ) -> None:
        if keep_rotated is not None and keep_rotated < 0:
            raise ValueError(f"keep_rotated must be 0 or more, not {keep_rotated}")
        self.root = Path(root)
        """The directory holding every job's logs (Go's ``task_logs_path``)."""
        self._root = str(self.root)
        self.keep_rotated = keep_rotated
        self.compress_rotated = compress_rotated
        self._open = _OpenLogs(keep_open) if keep_open > 0 else None
        self._deleted = f"{self._root}/{DELETED_DIR}"
        # A thread for gzips and one for removals: a claim that waits for a gzip (see
        # rotate) never waits for the removal of a large job's logs.
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._threads_lock = threading.Lock()
        self._compressing: dict[str, Future[None]] = {}  # by current log: its older runs' gzip

    def close(self) -> None:
        """Close the logs kept open, and wait for the work queued on the store's threads."""
        if self._open is not None:
            self._open.close(under=self._root)
        with self._threads_lock:
            threads, self._threads = self._threads, {}
        for thread in threads.values():
            thread.shutdown(wait=True)

    def flush(self) -> None:
        """Wait for the work queued on the store's threads so far: gzips of rotated runs and
        removals of deleted jobs' logs."""
        with self._threads_lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.submit(lambda: None).result()

    # Paths

    def job_dir(self, job_id: str) -> Path:
        """``<root>/job-<job[:4]>/<job>``: the directory of one job's logs."""
        return Path(self._job_dir(job_id))

    def _job_dir(self, job_id: str) -> str:
        job = _checked_id(job_id, "job")
        return f"{self._root}/job-{job[:4]}/{job}"

    def path(self, job_id: str, task_id: str) -> Path:
        """``<root>/job-<job[:4]>/<job>/task-<task>.txt``: the task's current log."""
        return Path(self._file(job_id, task_id))

    def _file(self, job_id: str, task_id: str) -> str:
        # A string: building a Path costs as much as the append itself.
        return f"{self._job_dir(job_id)}/task-{_checked_id(task_id, 'task')}.txt"

    def gzip_path(self, job_id: str, task_id: str) -> Path:
        """The gzip copy of the current log, ``X.gz``."""
        return _with_suffix(self.path(job_id, task_id), ".gz")

    # Writing

    def append(self, job_id: str, task_id: str, text: str) -> None:
        """Append ``text`` to the task's log, ending it with a newline if it has none.

        Empty text, or an empty job ID (the Go manager's "unknown job"), writes nothing. The text
        goes in with one append, and a failed append is undone, so a full disk never leaves half a
        line behind, unless another process appended a line after it: that line is not cut.
        Raises :class:`TaskLogError` when the disk refuses.
        """
        if not text or not job_id:
            return
        path = self._file(job_id, task_id)
        data = _line(text)
        if self._open is None:
            fd = _locked_for_append(path)
            _write(fd, path, data)
            os.close(fd)
        else:
            self._open.append(path, data)

    def take_back(self, job_id: str, task_id: str, text: str) -> None:
        """Undo an :meth:`append` of ``text`` whose transaction was rolled back: its line is cut
        from the end of the log, if it is still what the log ends with (nothing was appended
        since). The request that appended it is answered with an error and sent again; without
        this its lines would be in the log twice. Never raises: a failure is logged."""
        if not text or not job_id:
            return
        path, data = self._file(job_id, task_id), _line(text)
        try:
            with open(path, "r+b") as file:
                _lock(file.fileno(), exclusive=True)  # no append between the check and the cut
                end = file.seek(0, os.SEEK_END)
                if end >= len(data):
                    file.seek(end - len(data))
                    if file.read(len(data)) == data:
                        file.truncate(end - len(data))
        except OSError as exc:
            _log.warning(
                "cannot take back a task log line", extra={"path": path, "error": str(exc)}
            )

    def take_back_run(self, job_id: str, task_id: str, text: str) -> None:
        """Undo a :meth:`start_run` whose transaction was rolled back: the new run's log is
        removed if ``text`` is still all it holds. The previous run stays rotated, so the claim
        made again starts its run without rotating anything. Never raises: a failure is logged."""
        path, data = self._file(job_id, task_id), _line(text)
        if self._open is not None:
            self._open.close(path)
        try:
            with open(path, "rb") as file:
                # Held until the log is removed: an append waiting for it then finds the
                # file gone, and starts the log again (_locked_for_append).
                _lock(file.fileno(), exclusive=True)
                if file.read(len(data) + 1) == data:
                    os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("cannot take back a task log run", extra={"path": path, "error": str(exc)})

    def start_run(self, job_id: str, task_id: str, text: str) -> None:
        """Begin the log of a new run of the task with ``text`` (a final newline added, as
        :meth:`append` adds it).

        The previous run's log, when there is one, is rotated first (:meth:`rotate`). A first
        run, as most are, costs one system call to create its log: nothing is looked up before.
        """
        path = self._file(job_id, task_id)
        data = _line(text)
        if self._open is None:
            fd = _started(path, lambda: self.rotate(job_id, task_id))
            _write(fd, path, data)
            os.close(fd)
        else:
            self._open.create(path, data, lambda: self.rotate(job_id, task_id))

    # Rotation

    def rotate(self, job_id: str, task_id: str) -> None:
        """Start a fresh log for a new run of the task (spec §9.2, fixed as the module doc says).

        Nothing happens when the task has no log yet.
        """
        file = self._file(job_id, task_id)
        if self._open is not None:
            self._open.close(file)
        if not os.path.exists(file):
            return  # a first run, as most are: one system call, no Path
        with self._threads_lock:
            pending = self._compressing.get(file)
        if pending is not None:
            pending.result()  # its gzip reads and removes files this rotation renames
        current = Path(file)
        try:
            # Another process's gzip of an older run publishes under the same lock (see
            # _gzip_quietly): it never renames or removes a file while this shifts them.
            with _locked_directory(current.parent):
                if self.keep_rotated == 0:
                    current.unlink()  # no older run is kept
                else:
                    if self.keep_rotated is None:
                        self._shift_numbered(current)
                    else:
                        self._shift_kept(file, self.keep_rotated)
                    os.replace(current, _with_suffix(current, ".1"))
                with contextlib.suppress(FileNotFoundError):
                    _with_suffix(current, ".gz").unlink()
            if not self.compress_rotated:
                return
            if self.keep_rotated is None:
                plain = (n for n, _, packed in _numbered_siblings(current) if not packed and n >= 2)
                self._compress(file, current, sorted(plain))
            elif self.keep_rotated >= 2:
                self._compress(file, current, [2])  # the runs after it were gzipped before
        except OSError as exc:
            raise TaskLogError(f"cannot rotate task log {current}", _reason(exc)) from exc

    def rotated(self, job_id: str, task_id: str) -> list[tuple[int, Path]]:
        """The task's older runs as ``(number, path)``, newest (lowest number) first."""
        current = self.path(job_id, task_id)
        found = [(number, path) for number, path, _ in _numbered_siblings(current)]
        found.sort(key=lambda item: (item[0], item[1].name))
        return found

    def _shift_numbered(self, current: Path) -> None:
        # Descending order keeps gaps and never renames onto a file still to be moved; the free-slot
        # check only matters for odd names (`X.07` next to `X.7`), where Go lost one of the two.
        entries = sorted(_numbered_siblings(current), key=lambda e: (e[0], e[1].name), reverse=True)
        for number, path, compressed in entries:
            target_number = number + 1
            while True:
                target = _rotated_path(current, target_number, compressed)
                if not target.exists():
                    break
                target_number += 1
            os.replace(path, target)

    @staticmethod
    def _shift_kept(current: str, keep: int) -> None:
        # With a cap, rotation numbers older runs X.1, X.2 ... (plain or gzipped) without gaps:
        # look for them from X.1 up to the first number with neither, instead of listing the
        # job's directory (every task's logs) or trying every number up to the cap (a second
        # run, as most re-runs are, then costs two lookups). The run that would become
        # X.<keep + 1> is deleted. Names rotation never makes (X.007, numbers past a gap or past
        # the cap) are not looked for, and stay as they are.
        runs: list[list[str]] = []
        for number in range(1, keep + 1):
            names = [
                name
                for name in (f"{current}.{number}", f"{current}.{number}.gz")
                if os.path.exists(name)
            ]
            if not names:
                break
            runs.append(names)
        if len(runs) == keep:
            for name in runs.pop():
                os.unlink(name)
        for number in range(len(runs), 0, -1):
            for name in runs[number - 1]:
                os.replace(name, f"{current}.{number + 1}" + name[len(f"{current}.{number}") :])

    def _compress(self, file: str, current: Path, numbers: list[int]) -> None:
        """Gzip the plain runs ``numbers`` of the log ``file``: small ones at once, large ones on
        the store's gzip thread (see :data:`BACKGROUND_GZIP_BYTES`)."""
        for number in numbers:
            try:
                size = os.stat(_rotated_path(current, number, compressed=False)).st_size
            except FileNotFoundError:
                continue
            if size < BACKGROUND_GZIP_BYTES:
                _gzip_quietly(current, number)
            else:
                self._compress_later(file, current, number)

    def _compress_later(self, file: str, current: Path, number: int) -> None:
        """Gzip run ``number`` of the log ``file`` on the store's gzip thread."""
        done = self._background(_GZIP, _gzip_quietly, current, number)
        with self._threads_lock:
            self._compressing[file] = done

        def forget(_: Future[None]) -> None:
            with self._threads_lock:
                # The next rotation of the log may have put its own gzip there.
                if self._compressing.get(file) is done:
                    del self._compressing[file]

        done.add_done_callback(forget)

    def _background(self, name: str, function: Callable[..., None], *args: object) -> Future[None]:
        with self._threads_lock:
            thread = self._threads.get(name)
            if thread is None:
                thread = self._threads[name] = ThreadPoolExecutor(1, thread_name_prefix=name)
            return thread.submit(function, *args)

    # Compression and reading

    def compress(self, job_id: str, task_id: str) -> Path:
        """Write ``X.gz`` (gzip level 9) next to ``X`` and return its path (spec LU-01..LU-04).

        An ``X.gz`` newer than ``X``, or one without ``X``, is reused as it is. When neither
        exists, ``X`` is first created holding :data:`MISSING_LOG_TEXT`.
        """
        current = self.path(job_id, task_id)
        packed = _with_suffix(current, ".gz")
        try:
            packed_stat = _stat_or_none(packed)
            current_stat = _stat_or_none(current)
            if packed_stat is not None and (
                current_stat is None or packed_stat.st_mtime_ns > current_stat.st_mtime_ns
            ):
                return packed
            if current_stat is None:
                fd = _open_append(current)
                try:
                    _write_all_or_nothing(fd, MISSING_LOG_TEXT.encode())
                finally:
                    os.close(fd)
            _gzip_atomically(current, packed, GZIP_LEVEL)
        except OSError as exc:
            raise TaskLogError(f"cannot compress task log {current}", _reason(exc)) from exc
        return packed

    def open_run(self, job_id: str, task_id: str, run: int = 0) -> io.BufferedIOBase:
        """Open one run's log for reading, decompressed: 0 is the current run, 1 the previous...

        The current run falls back on ``X.gz`` when ``X`` is missing; an older run is read from
        ``X.<n>`` or ``X.<n>.gz``. Raises :class:`FileNotFoundError` when the run has no log.
        """
        current = self.path(job_id, task_id)
        if run == 0:
            plain, packed = current, _with_suffix(current, ".gz")
        else:
            plain = _rotated_path(current, run, compressed=False)
            packed = _rotated_path(current, run, compressed=True)
        try:
            return plain.open("rb")
        except FileNotFoundError:
            return gzip.open(packed, "rb")

    def read_whole(self, job_id: str, task_id: str, run: int = 0) -> bytes:
        """One run's whole log, decompressed (see :meth:`open_run`); for tools and tests.

        This reads the log into memory: to send a log to a client use :meth:`serve`.
        """
        with self.open_run(job_id, task_id, run) as file:
            return file.read()

    def tail(self, job_id: str, task_id: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the current log, read from the end of the file.

        At most the last :data:`TAIL_MAX_BYTES` of the log are read: lines that do not fit
        are left out, and a line longer than that is cut at its start. ``""`` when the task
        has no log. Undecodable bytes are replaced, not fatal.
        """
        if lines <= 0:
            return ""
        try:
            file = self.path(job_id, task_id).open("rb")
        except FileNotFoundError:
            return ""
        with file:
            position = file.seek(0, os.SEEK_END)
            start = max(0, position - TAIL_MAX_BYTES)
            chunks: list[bytes] = []  # from the end backwards: joined once, not per chunk
            newlines = 0
            # lines+1 newlines guarantee the first kept line is complete.
            while position > start and newlines <= lines:
                step = min(_TAIL_STEP, position - start)
                position -= step
                file.seek(position)
                chunk = file.read(step)
                chunks.append(chunk)
                newlines += chunk.count(b"\n")
            data = b"".join(reversed(chunks))
            if newlines <= lines and position > 0:
                # Too few lines fit: the first one read is cut, unless it starts right there.
                file.seek(position - 1)
                first_end = data.find(b"\n") if file.read(1) != b"\n" else -1
                if 0 <= first_end < len(data) - 1:
                    data = data[first_end + 1 :]  # left out, since whole lines follow it
        return trim_log_tail(data.decode("utf-8", errors="replace"), lines)

    # Serving

    def serve(
        self, job_id: str, task_id: str, user_agent: str = "", *, whole: bool = False
    ) -> LogView | None:
        """What ``/logfile/{job}/{task}`` sends (spec §9.4), or ``None`` when there is no log.

        A large log is trimmed to its head and tail unless ``whole`` is asked for or the client
        is ``curl`` or ``Wget``. Raises :class:`TaskLogError` when the log exists but cannot be
        read (the route's 500).
        """
        current = self.path(job_id, task_id)
        try:
            try:
                file = current.open("rb")
            except FileNotFoundError:
                packed = _with_suffix(current, ".gz")
                packed_stat = _stat_or_none(packed)
                if packed_stat is None:
                    return None
                return LogView(
                    path=packed,
                    filename=packed.name,
                    size=packed_stat.st_size,
                    whole=True,
                    gzip=True,
                )
            try:
                size = os.fstat(file.fileno()).st_size
                if (
                    whole
                    or size < HEAD_BYTES + TAIL_BYTES
                    or user_agent.startswith(_WHOLE_FILE_AGENTS)
                ):
                    return LogView(
                        path=current, filename=current.name, size=size, whole=True, file=file
                    )
                tail_start = size - TAIL_BYTES
                # One byte early, to see whether the tail already starts on a line boundary.
                file.seek(tail_start - 1)
                window = file.read(TAIL_BYTES + 1)
            except BaseException:
                file.close()
                raise
        except OSError as exc:
            raise TaskLogError(f"cannot access task log {current}", _reason(exc)) from exc
        line_start = tail_start + window.find(b"\n")
        if not tail_start <= line_start < size:
            # No line starts in the tail: showing it cut beats showing nothing of the log's end.
            line_start = tail_start
        skipped = (
            f"...\n\n... Skipped {format_skipped(tail_start - HEAD_BYTES)}, "
            "use WGet or Curl to download the entire log ... \n\n"
        )
        return LogView(
            path=current,
            filename=current.name,
            size=size,
            whole=False,
            head=FileRange(0, HEAD_BYTES),
            skipped_text=skipped.encode(),
            tail=FileRange(line_start, size),
            file=file,
        )

    # Removal

    def delete_job(self, job_id: str) -> None:
        """Remove every log of a job; nothing happens when it has none.

        The job's directory leaves the layout at once; its files are removed on the store's
        thread (see the module's documentation).
        """
        directory = self._job_dir(job_id)
        if self._open is not None:
            self._open.close(under=f"{directory}/")  # as _file spells the paths
        target = f"{self._deleted}/{_checked_id(job_id, 'job')}-{secrets.token_hex(4)}"
        try:
            try:
                os.rename(directory, target)
            except FileNotFoundError:
                if not os.path.isdir(directory):
                    return  # the job has no logs
                os.makedirs(self._deleted, exist_ok=True)
                os.rename(directory, target)
        except OSError as exc:
            raise TaskLogError(f"cannot delete the logs in {directory}", _reason(exc)) from exc
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(directory))  # only once no other job shares the prefix
        self._remove(target)

    def remove_deleted(self) -> int:
        """Remove (on the store's thread) the logs of deleted jobs that a process stopped before
        removing; for how many jobs."""
        try:
            names = os.listdir(self._deleted)
        except OSError:
            return 0  # none left (another process may be removing them too)
        for name in names:
            self._remove(f"{self._deleted}/{name}")
        return len(names)

    def _remove(self, path: str) -> None:
        self._background(_REMOVAL, _remove_tree, path, self._deleted)


def _gzip_quietly(current: Path, number: int) -> None:
    """Gzip run ``number`` of a log. When that fails, the plain file stays, which loses nothing:
    out of space, or the job deleted meanwhile (its directory moved away). Never raises.

    Where several processes write the logs, another one may rotate them while this gzips: the
    run it read may then be ``X.<number + 1>``, and ``X.<number>`` the next run. So the gzip is
    published, and the plain file removed, only while ``X.<number>`` is still the file it read,
    under the directory lock that rotations hold; otherwise the plain file stays as it is.
    """
    path = _rotated_path(current, number, compressed=False)
    target = _rotated_path(current, number, compressed=True)
    try:
        if target.exists():
            return  # A copy from an interrupted run: keep the plain file.
        try:
            held = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # the file, whatever its name
        except FileNotFoundError:
            return  # Nothing to do.
        staged = current.parent / f".{target.name}.{secrets.token_hex(4)}"
        published = False
        try:
            _gzip_atomically(path, staged, ROTATED_GZIP_LEVEL)
            with _locked_directory(current.parent):
                if _names(path, held) and not target.exists():
                    os.replace(staged, target)
                    published = True
                    path.unlink()
        finally:
            os.close(held)
            if not published:
                with contextlib.suppress(OSError):
                    staged.unlink()
    except OSError as exc:
        _log.warning(
            "cannot gzip an older run of a task log", extra={"path": str(path), "error": str(exc)}
        )
    except Exception:
        # A gzip is worth no claim: whatever went wrong is told, and the claim goes on.
        _log.exception("gzip of an older run of a task log failed", extra={"path": str(path)})


def _remove_tree(path: str, deleted: str) -> None:
    """Remove a deleted job's logs, then their waiting room if nothing else waits there."""

    def failed(function: object, name: str, info: tuple[type, BaseException, object]) -> None:
        if not isinstance(info[1], FileNotFoundError):  # another process got there first
            _log.warning(
                "cannot remove the logs of a deleted job",
                extra={"path": name, "error": str(info[1])},
            )

    shutil.rmtree(path, onerror=failed)
    with contextlib.suppress(OSError):
        os.rmdir(deleted)


def _checked_id(value: str, what: str) -> str:
    # IDs become path components: anything but an object ID could climb out of the root.
    if not _OBJECT_ID.fullmatch(value):
        raise InvalidLogIdError(f"invalid {what} ID for a task log: {value!r}")
    return value.lower()


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _rotated_path(current: Path, number: int, compressed: bool) -> Path:
    return _with_suffix(current, f".{number}.gz" if compressed else f".{number}")


def _numbered_siblings(current: Path) -> Iterator[tuple[int, Path, bool]]:
    """``X.<n>`` and ``X.<n>.gz`` next to ``X``, as ``(n, path, compressed)``, in no order."""
    prefix = current.name
    try:
        names = os.listdir(current.parent)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        match = _ROTATED.fullmatch(name, len(prefix))
        if match is not None:
            yield int(match[1]), current.parent / name, match[2] is not None


_APPEND: Final = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


def _open_append(path: str | Path) -> int:
    """Open a log for appending, creating it (and its directories) when it does not exist."""
    try:
        return os.open(path, _APPEND)  # most appends go to a log that exists: one system call
    except FileNotFoundError:
        pass
    try:
        return _create(path)
    except FileExistsError:
        return os.open(path, _APPEND)  # created in between by another process


def _create(path: str | Path) -> int:
    """Create a log, and its directories; :class:`FileExistsError` when it exists."""
    flags = _APPEND | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    # The umask may have taken bits away from a new file; logs are world-readable in Go.
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o644)
    return fd


def _opened(path: str) -> int:
    try:
        return _open_append(path)
    except OSError as exc:
        raise TaskLogError(f"cannot open task log {path}", _reason(exc)) from exc


def _lock(fd: int, *, exclusive: bool) -> None:
    """``flock`` an open log, shared (appending) or exclusive (taking back), waiting for it.

    A file system without locks (some network and FUSE ones) leaves the log unlocked rather
    than refusing the write: the lock only narrows a window that exists without it.
    """
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def _locked_for_append(path: str) -> int:
    """Open a log for appending (see :func:`_opened`) under a shared lock (see :func:`_lock`).

    A log removed while the lock was awaited (a run taken back) is opened again by name.
    """
    while True:
        fd = _opened(path)
        _lock(fd, exclusive=False)
        try:
            if os.fstat(fd).st_nlink:
                return fd
        except OSError as exc:
            os.close(fd)
            raise TaskLogError(f"cannot open task log {path}", _reason(exc)) from exc
        os.close(fd)


def _started(path: str, rotate: Callable[[], None]) -> int:
    """Create a log for a new run, after ``rotate`` moved the previous run's aside."""
    try:
        try:
            return _create(path)
        except FileExistsError:
            rotate()
            return _open_append(path)
    except OSError as exc:
        raise TaskLogError(f"cannot create task log {path}", _reason(exc)) from exc


def _line(text: str) -> bytes:
    data = text.encode("utf-8", errors="surrogateescape")
    return data if data.endswith(b"\n") else data + b"\n"


def _write(fd: int, path: str, data: bytes) -> None:
    """Write ``data`` to an open log, all or nothing; on failure, close the log and raise
    :class:`TaskLogError`."""
    try:
        _write_all_or_nothing(fd, data)
    except OSError as exc:
        os.close(fd)
        raise TaskLogError(f"cannot write task log {path}", _reason(exc)) from exc


def _write_all_or_nothing(fd: int, data: bytes) -> None:
    written = 0
    try:
        while written < len(data):
            count = os.write(fd, data[written:])
            if count == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += count
    except OSError:
        if written:
            with contextlib.suppress(OSError):
                _cut_partial_line(fd, written)
        raise


def _cut_partial_line(fd: int, written: int) -> None:
    """Take back the ``written`` bytes a failed append left at the end of its log.

    Under an exclusive lock, and only while they still end the log: with O_APPEND, the log's
    offset after them is where they end, and a line another process appended since (appends
    share their lock) lies past it. That line is kept, and the partial one with it.
    """
    _lock(fd, exclusive=True)
    end = os.lseek(fd, 0, os.SEEK_CUR)
    if os.fstat(fd).st_size == end:
        os.ftruncate(fd, end - written)


def _gzip_atomically(source: Path, target: Path, level: int) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with (
            open(source, "rb") as plain,
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(source.name, "wb", level, raw) as packed,
        ):
            shutil.copyfileobj(plain, packed, _CHUNK)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is (still) the name of the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


@contextlib.contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a job's log directory (see :func:`_lock`), held meanwhile.

    Rotations rename a task's runs under it, and a gzipped run replaces its plain file under
    it, in whatever store and process: neither sees the other half done. Without ``flock``
    (Windows, where a directory cannot be opened either) nothing is locked.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        _lock(fd, exclusive=True)
        yield
    finally:
        os.close(fd)  # which releases the lock


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
