"""The content-addressed file store, on disk exactly as the Go Shaman lays it out::

    {root}/uploading/{cs[:2]}/{cs[2:]}/{size}-{9 digits}.tmp   uploads in progress
    {root}/stored/{cs[:2]}/{cs[2:]}/{size}.blob                 verified blobs

A blob only ever appears under ``stored/`` by an atomic rename of a temp file whose size and
SHA-256 were verified and whose content was fsynced, so a partial or wrong file is never visible
as stored. Every upload holds an exclusive ``flock`` on its temp file while it runs; a temp file
nobody holds is a crash leftover and `FileStore.remove_stale_uploads` deletes it (the store does
so when it opens, and so does every garbage collection sweep).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import hashlib
import mmap
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

from shaman_core.errors import InvalidRequestError, UploadMismatchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; stale detection falls back to age
    fcntl = None  # type: ignore[assignment]

__all__ = ["BlobStatus", "BlobUpload", "FileStore", "WriteBuffer", "validate_checksum"]

# Wider than SHA-256 hex on purpose: Go's tests use checksums like "da-checksum-is-long-…".
# No dot or slash can ever pass, so a checksum cannot leave its bin.
_UPLOAD_CHECKSUM = re.compile(r"[A-Za-z0-9_-]{32,200}")
_STALE_GRACE_SECONDS = 5.0

Buffer = bytes | bytearray | memoryview

BUFFER_SIZE = 4 << 20
DIRECT_IO_MIN_SIZE = 8 << 20
_ALIGNMENT = 4096


class BlobStatus(enum.Enum):
    """What the store knows about one (checksum, size)."""

    STORED = "stored"
    UPLOADING = "uploading"
    UNKNOWN = "does-not-exist"


def validate_checksum(checksum: str) -> None:
    """Refuse a checksum that cannot name a blob (`InvalidRequestError`, 400)."""
    if len(checksum.encode()) < 32:
        raise InvalidRequestError("checksum suspiciously short")
    if not _UPLOAD_CHECKSUM.fullmatch(checksum):
        raise InvalidRequestError("invalid checksum: use 32 to 200 letters, digits, '-' or '_'")


class FileStore:
    """A Shaman file store rooted at `root` (created when missing).

    `remove_stale` deletes temp files left by crashed uploads when the store opens.
    """

    def __init__(self, root: str | os.PathLike[str], *, remove_stale: bool = True) -> None:
        self.root = Path(os.path.abspath(root))
        self.stored_dir = self.root / "stored"
        self.uploading_dir = self.root / "uploading"
        self._stored_prefix = f"{self.stored_dir}{os.sep}"
        for directory in (self.stored_dir, self.uploading_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if remove_stale:
            self.remove_stale_uploads()

    def _bin(self, base: Path, checksum: str) -> Path:
        return base / checksum[:2] / checksum[2:]

    def blob_path(self, checksum: str, size: int) -> Path:
        """Absolute path where the blob (`checksum`, `size`) is (or would be) stored."""
        return Path(self.blob_location(checksum, size))

    def blob_location(self, checksum: str, size: int) -> str:
        """`blob_path` as a string; cheaper, for loops over many files."""
        return f"{self._stored_prefix}{checksum[:2]}/{checksum[2:]}/{size}.blob"

    def status(self, checksum: str, size: int, *, stored_only: bool = False) -> BlobStatus:
        """Whether the blob is stored, being uploaded (unless `stored_only`) or unknown."""
        location = self.blob_location(checksum, size)
        if os.path.exists(location):
            return BlobStatus.STORED
        if stored_only:
            return BlobStatus.UNKNOWN
        if any(map(_held, self._temp_files(checksum, size))):
            return BlobStatus.UPLOADING
        # An upload may have renamed its temp file into place since the first look: its temp
        # file is gone, and the blob is stored.
        return BlobStatus.STORED if os.path.exists(location) else BlobStatus.UNKNOWN

    def touch(self, checksum: str, size: int) -> bool:
        """Set the blob's mtime to now so GC keeps it; False when it is not stored."""
        try:
            os.utime(self.blob_location(checksum, size))
        except FileNotFoundError:
            return False
        return True

    def _temp_files(self, checksum: str, size: int) -> list[str]:
        directory = self._bin(self.uploading_dir, checksum)
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = f"{size}-"
        return [
            os.path.join(directory, name)
            for name in names
            if name.startswith(prefix) and name.endswith(".tmp")
        ]

    def begin_upload(self, checksum: str, size: int) -> BlobUpload:
        """Open a temp file for receiving the blob; use the result as a context manager."""
        validate_checksum(checksum)
        if size < 0:
            raise InvalidRequestError("invalid filesize")
        return BlobUpload(self, checksum, size)

    def iter_temp_files(self) -> Iterator[Path]:
        """Every temp file under ``uploading/``."""
        for dirpath, _dirnames, filenames in os.walk(self.uploading_dir):
            for name in filenames:
                if name.endswith(".tmp"):
                    yield Path(dirpath) / name

    def remove_stale_uploads(self, *, dry_run: bool = False) -> int:
        """Delete temp files no live upload holds (crash leftovers); return how many.

        A temp file younger than a few seconds is kept: its upload may not have locked it yet.
        A `dry_run` only counts them.
        """
        removed = 0
        now = time.time()
        for path in self.iter_temp_files():
            try:
                if now - path.stat().st_mtime < _STALE_GRACE_SECONDS or _is_locked(path):
                    continue
                if dry_run:
                    removed += 1
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            self._remove_empty_parents(path.parent, self.uploading_dir)
        return removed

    def _remove_empty_parents(self, directory: Path, base: Path) -> None:
        # Two levels: {cs[2:]} then {cs[:2]}; rmdir fails harmlessly when not empty.
        for candidate in (directory, directory.parent):
            if candidate == base or base not in candidate.parents:
                return
            try:
                candidate.rmdir()
            except OSError:
                return


def _held(path: str) -> bool:
    """Whether a live upload holds this temp file. Another process sharing the store may have
    died mid-upload: its leftover must not read as "being uploaded" until the next clean-up."""
    return fcntl is None or _is_locked(Path(path))


def _is_locked(path: Path) -> bool:
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class WriteBuffer:
    """A page-aligned buffer (anonymous mmap) that direct I/O can write from.

    Fill it with `fill`; hand it to `BlobUpload.hash_chunk` and `BlobUpload.store_chunk`.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self._map = mmap.mmap(-1, capacity)
        self._view = memoryview(self._map)

    @property
    def full(self) -> bool:
        """True when no byte fits any more."""
        return self.length >= self.capacity

    @property
    def data(self) -> memoryview:
        """The bytes filled so far."""
        return self._view[: self.length]

    def fill(self, data: Buffer) -> int:
        """Copy as much of `data` as fits; return how many bytes were taken."""
        view = memoryview(data)
        taken = min(len(view), self.capacity - self.length)
        self._view[self.length : self.length + taken] = view[:taken]
        self.length += taken
        return taken

    def clear(self) -> None:
        """Empty the buffer for reuse."""
        self.length = 0


class BlobUpload:
    """One upload in progress: write chunks, then `finish` to verify and store.

    Leaving the context without a successful `finish` deletes the temp file and its empty
    parent directories. `write` refuses more bytes than declared at once (417).

    Large uploads are written with direct I/O where the filesystem allows it: the data goes from
    the aligned buffers to the disk without a copy through the page cache, which is most of the
    CPU cost of writing. Everything else (and any unaligned tail) goes through the page cache.
    """

    def __init__(self, store: FileStore, checksum: str, size: int) -> None:
        self.store = store
        self.checksum = checksum
        self.size = size
        self.received = 0
        self._written = 0
        self._hasher = hashlib.sha256()
        self._staging: WriteBuffer | None = None
        directory = store._bin(store.uploading_dir, checksum)
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            name = f"{size}-{random.randrange(10**9):09d}.tmp"
            self.temp_path = directory / name
            try:
                self._fd: int | None = os.open(
                    self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666
                )
            except FileExistsError:
                continue
            except FileNotFoundError:
                # A concurrent cleanup removed the empty bin between mkdir and open.
                directory.mkdir(parents=True, exist_ok=True)
                continue
            break
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._direct = size >= DIRECT_IO_MIN_SIZE and self._set_direct(True)
        self.stored_path: Path | None = None

    def __enter__(self) -> BlobUpload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def new_buffer(self) -> WriteBuffer:
        """An aligned buffer sized for this upload (at most `BUFFER_SIZE`)."""
        rounded = -(-max(self.size, 1) // _ALIGNMENT) * _ALIGNMENT
        return WriteBuffer(min(BUFFER_SIZE, rounded))

    def write(self, data: Buffer) -> None:
        """Append `data`, hashing it as it goes."""
        self.accept(len(data))
        view = memoryview(data)
        while view:
            if self._staging is None:
                self._staging = self.new_buffer()
            taken = self._staging.fill(view)
            view = view[taken:]
            if self._staging.full:
                self._flush_staging()

    def flush(self) -> None:
        """Write what `write` has buffered so far to the temp file."""
        self._flush_staging()

    def _flush_staging(self) -> None:
        if self._staging is not None and self._staging.length:
            self.hash_chunk(self._staging)
            self.store_chunk(self._staging)
            self._staging.clear()

    # The steps of `write`, for callers that overlap receiving, hashing and writing on threads:
    # `accept` a buffer's length, fill a `new_buffer` and hash it (`absorb` does both, or `fill`
    # then `hash_chunk`), then `store_chunk` it; buffers in order in each step.

    def accept(self, length: int) -> None:
        """Count `length` more bytes; `UploadMismatchError` (417) once more than declared."""
        if self._fd is None:
            raise RuntimeError("upload already closed")
        self.received += length
        if self.received > self.size:
            raise UploadMismatchError(f"Received more than the {self.size} bytes you promised")

    def absorb(self, buffer: WriteBuffer, pieces: Iterable[Buffer]) -> None:
        """Append `pieces` to `buffer`, then feed what they added to the checksum.

        Meant for a worker thread. The copies hold the GIL (a fraction of a millisecond for a
        4 MiB buffer), the one hash of the whole batch releases it: hashing piece by piece
        instead hands the GIL back and forth with the event loop for every piece, which
        measured 15 % slower uploads.
        """
        start = buffer.length
        for piece in pieces:
            if buffer.fill(piece) != len(piece):
                raise ValueError("pieces larger than the buffer")
        self._hasher.update(buffer.data[start:])

    def hash_chunk(self, chunk: WriteBuffer | Buffer) -> None:
        """Feed `chunk` to the checksum."""
        self._hasher.update(chunk.data if isinstance(chunk, WriteBuffer) else chunk)

    def store_chunk(self, chunk: WriteBuffer | Buffer) -> None:
        """Append `chunk` to the temp file (direct I/O for whole aligned buffers)."""
        fd = self._fd
        if fd is None:
            raise RuntimeError("upload already closed")
        if isinstance(chunk, WriteBuffer):
            view, aligned = chunk.data, chunk.length % _ALIGNMENT == 0
        else:
            view, aligned = memoryview(chunk), False
        if self._direct and not aligned:
            self._direct = self._set_direct(False)
        start = self._written
        while view:
            try:
                written = os.write(fd, view)
            except OSError as error:
                if not (self._direct and error.errno == errno.EINVAL):
                    raise
                self._direct = self._set_direct(False)  # the filesystem refuses direct I/O
                continue
            view = view[written:]
            self._written += written
        if not self._direct:
            _start_writeback(fd, start, self._written - start)

    def _set_direct(self, enabled: bool) -> bool:
        direct_flag = getattr(os, "O_DIRECT", 0)
        if fcntl is None or not direct_flag or self._fd is None:
            return False
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            wanted = flags | direct_flag if enabled else flags & ~direct_flag
            fcntl.fcntl(self._fd, fcntl.F_SETFL, wanted)
        except OSError:
            return False
        return enabled

    def finish(self) -> Path:
        """Verify size then checksum, fsync and rename into ``stored/``; return the blob path."""
        if self._fd is None:
            raise RuntimeError("upload already closed")
        self._flush_staging()
        if self.received != self.size:
            raise UploadMismatchError(
                f"Received {self.received} bytes but you promised {self.size}"
            )
        if self._hasher.hexdigest() != self.checksum:
            raise UploadMismatchError("Declared and actual checksums differ")
        os.fsync(self._fd)
        target = self.store.blob_path(self.checksum, self.size)
        for _attempt in range(3):
            # GC may remove an emptied bin between mkdir and rename; simply make it again.
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(self.temp_path, target)
                break
            except FileNotFoundError:
                if not self.temp_path.exists():
                    raise
        else:
            os.rename(self.temp_path, target)
        _fsync_directory(target.parent)
        self.stored_path = target
        self._close()
        self.store._remove_empty_parents(self.temp_path.parent, self.store.uploading_dir)
        return target

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Drop the upload (no-op after a successful `finish`)."""
        self._close()
        if self.stored_path is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)
            self.store._remove_empty_parents(self.temp_path.parent, self.store.uploading_dir)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    # Only a hint to the kernel: errors are ignored, fsync in `finish` is what guarantees.
    if _sync_file_range is not None and length:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:  # pragma: no cover - some filesystems refuse opening dirs
        if error.errno in (errno.EACCES, errno.EINVAL):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
