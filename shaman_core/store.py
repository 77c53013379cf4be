"""The content-addressed file store, on disk exactly as the Go Shaman lays it out::

    {root}/uploading/{cs[:2]}/{cs[2:]}/{size}-{9 digits}.tmp   uploads in progress
    {root}/stored/{cs[:2]}/{cs[2:]}/{size}.blob                 verified blobs

A blob only ever appears under ``stored/`` by an atomic rename of a temp file whose size and
SHA-256 were verified and whose content was fsynced, so a partial or wrong file is never visible
as stored. Every upload holds an exclusive ``flock`` on its temp file while it runs; a temp file
nobody holds is a crash leftover and `FileStore.remove_stale_uploads` deletes it (the store does
so when it opens).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

from shaman_core.errors import InvalidRequestError, UploadMismatchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; stale detection falls back to age
    fcntl = None  # type: ignore[assignment]

__all__ = ["BlobStatus", "BlobUpload", "FileStore", "validate_checksum"]

# Wider than SHA-256 hex on purpose: Go's tests use checksums like "da-checksum-is-long-…".
# No dot or slash can ever pass, so a checksum cannot leave its bin.
_UPLOAD_CHECKSUM = re.compile(r"[A-Za-z0-9_-]{32,200}")
_STALE_GRACE_SECONDS = 5.0


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
        if os.path.exists(self.blob_location(checksum, size)):
            return BlobStatus.STORED
        if not stored_only and self._temp_files(checksum, size):
            return BlobStatus.UPLOADING
        return BlobStatus.UNKNOWN

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

    def remove_stale_uploads(self) -> int:
        """Delete temp files no live upload holds (crash leftovers); return how many."""
        removed = 0
        now = time.time()
        for path in self.iter_temp_files():
            try:
                if now - path.stat().st_mtime < _STALE_GRACE_SECONDS or _is_locked(path):
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


class BlobUpload:
    """One upload in progress: write chunks, then `finish` to verify and store.

    Leaving the context without a successful `finish` deletes the temp file and its empty
    parent directories. `write` refuses more bytes than declared at once (417).
    """

    def __init__(self, store: FileStore, checksum: str, size: int) -> None:
        self.store = store
        self.checksum = checksum
        self.size = size
        self.received = 0
        self._hasher = hashlib.sha256()
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
        self.stored_path: Path | None = None

    def __enter__(self) -> BlobUpload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`, hashing it as it goes."""
        if self._fd is None:
            raise RuntimeError("upload already closed")
        self.received += len(data)
        if self.received > self.size:
            raise UploadMismatchError(f"Received more than the {self.size} bytes you promised")
        self._hasher.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def finish(self) -> Path:
        """Verify size then checksum, fsync and rename into ``stored/``; return the blob path."""
        if self._fd is None:
            raise RuntimeError("upload already closed")
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
