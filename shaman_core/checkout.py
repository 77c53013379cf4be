"""Checkouts: directories of symlinks to stored blobs, one per checkout ID.

A checkout lives at ``{checkout root}/{ID[-2:]}/{ID}``; each definition entry becomes a symlink
whose target is the absolute path of its blob. The tree is built with directory file
descriptors and ``O_NOFOLLOW`` from the checkout root down, so neither a symlinked fan-out
directory nor a client path can make us create anything outside the root, and the checkout
directory is claimed with an exclusive ``mkdir`` so two requests for one ID cannot both win.
Either every link is made or the checkout is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from shaman_core.cdf import CheckoutEntry
from shaman_core.errors import (
    CheckoutConflictError,
    CheckoutExistsError,
    InvalidRequestError,
    MissingFilesError,
)
from shaman_core.store import BlobStatus, FileStore

__all__ = [
    "CheckoutBuilder",
    "checkout_relpath",
    "format_requirements",
    "requirements",
    "validate_checkout_id",
]

_CHECKOUT_ID = re.compile(r"[A-Za-z0-9_]{2,200}")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_MAX_CACHED_DIRECTORIES = 256


def validate_checkout_id(checkout_id: str) -> None:
    """Refuse IDs other than 2 to 200 ASCII letters, digits and underscores (400)."""
    if not _CHECKOUT_ID.fullmatch(checkout_id):
        raise InvalidRequestError(f"invalid checkout ID '{checkout_id}'")


def checkout_relpath(checkout_id: str) -> str:
    """The checkout's directory relative to the checkout root: ``{ID[-2:]}/{ID}``."""
    return f"{checkout_id[-2:]}/{checkout_id}"


def requirements(store: FileStore, entries: Iterable[CheckoutEntry]) -> list[tuple[str, str]]:
    """What the client must do for each entry: ``(status, path)`` pairs in definition order.

    Stored blobs are touched and left out; each other blob is listed once (first path wins)
    as ``file-unknown`` or ``already-uploading``.
    """
    answer: list[tuple[str, str]] = []
    listed: set[tuple[str, int]] = set()
    for entry in entries:
        key = entry.key
        if key in listed or store.touch(entry.checksum, entry.size):
            continue
        listed.add(key)
        status = store.status(entry.checksum, entry.size)
        if status is BlobStatus.UPLOADING:
            answer.append(("already-uploading", entry.path))
        elif status is BlobStatus.UNKNOWN:
            answer.append(("file-unknown", entry.path))
        else:  # stored by an upload that ended since the first look
            store.touch(entry.checksum, entry.size)
    return answer


def format_requirements(answer: Sequence[tuple[str, str]]) -> bytes:
    """The ``/checkout/requirements`` body: ``<status> <path>\\n`` per line, nothing else."""
    return "".join(f"{status} {path}\n" for status, path in answer).encode(
        "utf-8", "surrogateescape"
    )


class CheckoutBuilder:
    """Creates checkouts under `checkout_root` from blobs in `store`.

    `wait_for_uploads` is how long `create` waits for blobs that are still being uploaded before
    calling them missing (it softens a race in BAT, which may defer an upload and ask for the
    checkout before the other uploader is done).
    """

    def __init__(
        self,
        store: FileStore,
        checkout_root: str | os.PathLike[str],
        *,
        wait_for_uploads: float = 10.0,
    ) -> None:
        self.store = store
        self.root = Path(os.path.abspath(checkout_root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.wait_for_uploads = wait_for_uploads

    def path_of(self, checkout_id: str) -> Path:
        """Absolute path of the checkout directory for `checkout_id`."""
        return self.root / checkout_relpath(checkout_id)

    def create(self, checkout_id: str, entries: Sequence[CheckoutEntry]) -> str:
        """Create the checkout and return its relative path ``{ID[-2:]}/{ID}``.

        Raises `InvalidRequestError` (bad ID), `CheckoutExistsError` (409),
        `MissingFilesError` (400, nothing created) or `CheckoutConflictError`.
        """
        validate_checkout_id(checkout_id)
        fanout = checkout_id[-2:]
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _attempt in range(3):
                fanout_fd = _open_or_make_directory(fanout, root_fd, fanout)
                try:
                    return self._create_in(checkout_id, entries, fanout_fd)
                except _FanoutVanished:
                    continue  # a failing create next door removed the empty fan-out dir
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.rmdir(fanout, dir_fd=root_fd)  # only succeeds when empty
                    raise
                finally:
                    os.close(fanout_fd)
            raise CheckoutConflictError(f"could not create the directory for '{checkout_id}'")
        finally:
            os.close(root_fd)

    def _create_in(self, checkout_id: str, entries: Sequence[CheckoutEntry], fanout_fd: int) -> str:
        if _lexists(checkout_id, fanout_fd):
            raise CheckoutExistsError(f"checkout '{checkout_id}' already exists")
        self._require_stored(entries)
        try:
            os.mkdir(checkout_id, dir_fd=fanout_fd)
        except FileExistsError:
            raise CheckoutExistsError(f"checkout '{checkout_id}' already exists") from None
        except FileNotFoundError:
            raise _FanoutVanished from None
        try:
            self._link_all(checkout_id, entries, fanout_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(checkout_id, dir_fd=fanout_fd)
            raise
        return checkout_relpath(checkout_id)

    def _require_stored(self, entries: Sequence[CheckoutEntry]) -> None:
        store = self.store
        missing = [e for e in entries if not store.touch(e.checksum, e.size)]
        deadline = time.monotonic() + self.wait_for_uploads
        while missing:
            uploading = any(
                store.status(e.checksum, e.size) is BlobStatus.UPLOADING for e in missing
            )
            # Looked for again after the uploads: one that ended since the last look stored its
            # blob, which is then not missing (BAT asks for a checkout while others upload).
            missing = [e for e in missing if not store.touch(e.checksum, e.size)]
            if not (missing and uploading) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if missing:
            raise MissingFilesError([e.path for e in missing])

    def _link_all(self, checkout_id: str, entries: Sequence[CheckoutEntry], fanout_fd: int) -> None:
        checkout_fd = os.open(checkout_id, _DIRECTORY_FLAGS, dir_fd=fanout_fd)
        directories: dict[str, int] = {"": checkout_fd}
        blob_location = self.store.blob_location
        try:
            for entry in entries:
                parent, _, name = entry.path.rpartition("/")
                parent_fd = directories.get(parent)
                if parent_fd is None:
                    if len(directories) > _MAX_CACHED_DIRECTORIES:
                        _close_all(directories, keep=checkout_fd)
                    parent_fd = _directory_fd(parent, directories)
                try:
                    os.symlink(blob_location(entry.checksum, entry.size), name, dir_fd=parent_fd)
                except OSError as error:
                    raise CheckoutConflictError(
                        f"cannot link {entry.path!r}: {os.strerror(error.errno or 0)}"
                    ) from None
        finally:
            _close_all(directories, keep=None)


class _FanoutVanished(Exception):
    pass


def _close_all(directories: dict[str, int], keep: int | None) -> None:
    for key, fd in list(directories.items()):
        if fd != keep:
            os.close(fd)
            del directories[key]


def _directory_fd(relative: str, directories: dict[str, int]) -> int:
    cached = directories.get(relative)
    if cached is not None:
        return cached
    parent, _, name = relative.rpartition("/")
    parent_fd = _directory_fd(parent, directories)
    fd = _open_or_make_directory(name, parent_fd, relative)
    directories[relative] = fd
    return fd


def _open_or_make_directory(name: str, parent_fd: int, shown_as: str) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=parent_fd)
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise CheckoutConflictError(
                f"cannot use {shown_as!r} as a directory: it is a symlink or a file"
            ) from None
        raise


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True
