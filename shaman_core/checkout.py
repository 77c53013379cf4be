"""Checkouts: directories of symlinks to stored blobs, one per checkout ID.

A checkout lives at ``{checkout root}/{ID[-2:]}/{ID}``; each definition entry becomes a symlink
whose target is the absolute path of its blob. The tree is built with directory file
descriptors and ``O_NOFOLLOW`` from the checkout root down, so neither a symlinked fan-out
directory nor a client path can make us create anything outside the root.

A checkout is built under a hidden name beside its final one, ``.build-{16 hex}-{ID}`` (no
checkout ID starts with a dot), and renamed to its ID once every link is made. The rename never
replaces anything (``RENAME_NOREPLACE``; see `_move_into_place` for systems without it), so two
requests for one ID cannot both win, and a checkout appears complete or not at all, even when
the process dies while building it. The builder holds an exclusive ``flock`` on its build
directory; one nobody holds is a crash leftover, which `remove_stale_builds` deletes (the
builder does so when it opens, and so does every garbage collection sweep). A checkout without
files is complete as soon as it exists: it is made with an exclusive ``mkdir`` instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import cast

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
    "is_build_name",
    "remove_stale_builds",
    "requirements",
    "validate_checkout_id",
]

_CHECKOUT_ID = re.compile(r"[A-Za-z0-9_]{2,200}")
_BUILD_NAME = re.compile(r"\.build-[0-9a-f]{16}-[A-Za-z0-9_]{2,200}")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_MAX_CACHED_DIRECTORIES = 256
# A build directory is locked just after its mkdir; younger than this, it may not be yet.
_STALE_BUILD_SECONDS = 5.0
# A failing create removes the fan-out directory it made when that is still empty; each time it
# does so under a concurrent create, that create starts again.
_FANOUT_ATTEMPTS = 10
_RENAME_NOREPLACE = 1


def validate_checkout_id(checkout_id: str) -> None:
    """Refuse IDs other than 2 to 200 ASCII letters, digits and underscores (400)."""
    if not _CHECKOUT_ID.fullmatch(checkout_id):
        raise InvalidRequestError(f"invalid checkout ID '{checkout_id}'")


def checkout_relpath(checkout_id: str) -> str:
    """The checkout's directory relative to the checkout root: ``{ID[-2:]}/{ID}``."""
    return f"{checkout_id[-2:]}/{checkout_id}"


def is_build_name(name: str) -> bool:
    """Whether `name` is that of a checkout being built (or left half-built by a dead process)."""
    return _BUILD_NAME.fullmatch(name) is not None


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
        remove_stale: bool = True,
    ) -> None:
        self.store = store
        self.root = Path(os.path.abspath(checkout_root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.wait_for_uploads = wait_for_uploads
        if remove_stale:
            remove_stale_builds(self.root)

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
            if _checkout_exists(fanout, checkout_id, root_fd):
                raise CheckoutExistsError(f"checkout '{checkout_id}' already exists")
            # Before anything is made: a create that lacks blobs leaves no fan-out directory
            # behind, so it has none to remove from under a concurrent create.
            self._require_stored(entries)
            for _attempt in range(_FANOUT_ATTEMPTS):
                try:
                    fanout_fd = _open_or_make_directory(fanout, root_fd, fanout)
                except _Vanished:
                    continue  # a failing create next door removed the empty fan-out dir
                try:
                    return self._create_in(checkout_id, entries, fanout_fd)
                except _Vanished:
                    continue
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
        if not entries:
            _make_directory(checkout_id, fanout_fd)
            return checkout_relpath(checkout_id)
        build_name = f".build-{secrets.token_hex(8)}-{checkout_id}"
        _make_directory(build_name, fanout_fd)
        try:
            build_fd = os.open(build_name, _DIRECTORY_FLAGS, dir_fd=fanout_fd)
            try:
                fcntl.flock(build_fd, fcntl.LOCK_EX)
                self._link_all(entries, build_fd)
                _move_into_place(build_name, checkout_id, fanout_fd)
            finally:
                os.close(build_fd)
        except BaseException:
            with contextlib.suppress(OSError):  # gone already when it was moved into place
                shutil.rmtree(build_name, dir_fd=fanout_fd)
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

    def _link_all(self, entries: Sequence[CheckoutEntry], checkout_fd: int) -> None:
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
            _close_all(directories, keep=checkout_fd)


def remove_stale_builds(
    checkout_root: str | os.PathLike[str], *, dry_run: bool = False
) -> list[Path]:
    """Delete the build directories that dead processes left under `checkout_root`.

    A build directory (``{fan-out}/.build-*``) is stale when no live create holds its ``flock``
    and it is at least a few seconds old. Returns the paths deleted (in a `dry_run`, those that
    would be); a missing root has none.
    """
    root = Path(os.path.abspath(checkout_root))
    found: list[Path] = []
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return found
    try:
        with os.scandir(root_fd) as fanouts:
            fanout_names = [e.name for e in fanouts if e.is_dir(follow_symlinks=False)]
        cutoff = time.time() - _STALE_BUILD_SECONDS
        for fanout in fanout_names:
            try:
                fanout_fd = os.open(fanout, _DIRECTORY_FLAGS, dir_fd=root_fd)
            except OSError:
                continue  # removed or replaced since it was listed
            try:
                with os.scandir(fanout_fd) as listing:
                    names = [e.name for e in listing if is_build_name(e.name)]
                for name in names:
                    if _remove_if_stale(name, fanout_fd, cutoff, dry_run):
                        found.append(root / fanout / name)
            finally:
                os.close(fanout_fd)
    finally:
        os.close(root_fd)
    return found


def _remove_if_stale(name: str, fanout_fd: int, cutoff: float, dry_run: bool) -> bool:
    try:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=fanout_fd)
    except OSError:
        return False  # moved into place or removed since it was listed (or not a directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live create is building it (or another sweep is removing it)
        held = os.fstat(fd)
        if held.st_mtime >= cutoff:
            return False
        try:
            named = os.stat(name, dir_fd=fanout_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False  # its create moved it into place just before letting go of it
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return False
        if not dry_run:
            try:
                shutil.rmtree(name, dir_fd=fanout_fd)
            except OSError:
                return False  # what is left is tried again next time
        return True
    finally:
        os.close(fd)


class _Vanished(Exception):
    """A directory that mkdir found or made was gone when opened or used."""


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
    try:
        fd = _open_or_make_directory(name, parent_fd, relative)
    except _Vanished:
        raise CheckoutConflictError(
            f"cannot use {relative!r} as a directory: it was removed meanwhile"
        ) from None
    directories[relative] = fd
    return fd


def _open_or_make_directory(name: str, parent_fd: int, shown_as: str) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=parent_fd)
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise _Vanished from None  # it existed at the mkdir: someone removed it since
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CheckoutConflictError(
                f"cannot use {shown_as!r} as a directory: it is a symlink or a file"
            ) from None
        raise


def _make_directory(name: str, fanout_fd: int) -> None:
    try:
        os.mkdir(name, dir_fd=fanout_fd)
    except FileExistsError:
        raise CheckoutExistsError(f"checkout '{name}' already exists") from None
    except FileNotFoundError:
        raise _Vanished from None  # a failing create removed the fan-out directory


def _checkout_exists(fanout: str, checkout_id: str, root_fd: int) -> bool:
    try:
        fanout_fd = os.open(fanout, _DIRECTORY_FLAGS, dir_fd=root_fd)
    except OSError:
        return False  # no fan-out directory, or not a usable one: creating says which
    try:
        return _lexists(checkout_id, fanout_fd)
    finally:
        os.close(fanout_fd)


def _move_into_place(build_name: str, checkout_id: str, fanout_fd: int) -> None:
    """Rename the finished build to `checkout_id`, never over anything already there."""
    if _rename_noreplace(build_name, checkout_id, fanout_fd):
        return
    # Without RENAME_NOREPLACE: claim the name with an exclusive mkdir, then rename over that
    # empty claim (rename replaces an empty directory, so it cannot be the only guard: that
    # would replace a checkout without files). Only a crash between the two calls can leave
    # an empty checkout behind.
    try:
        os.mkdir(checkout_id, dir_fd=fanout_fd)
    except FileExistsError:
        raise CheckoutExistsError(f"checkout '{checkout_id}' already exists") from None
    try:
        os.rename(build_name, checkout_id, src_dir_fd=fanout_fd, dst_dir_fd=fanout_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(checkout_id, dir_fd=fanout_fd)  # our claim, still empty
        raise


def _rename_noreplace(old: str, new: str, dir_fd: int) -> bool:
    """Rename with ``RENAME_NOREPLACE``; False when this system or filesystem lacks it."""
    if _renameat2 is None:
        return False
    if _renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), _RENAME_NOREPLACE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # a kernel before 3.15, or a filesystem without the flag (NFS)
    if error == errno.EEXIST:
        raise CheckoutExistsError(f"checkout '{new}' already exists")
    raise OSError(error, os.strerror(error), new)


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc before 2.28, or another libc without it
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return cast(Callable[[int, bytes, int, bytes, int], int], function)


_renameat2 = _load_renameat2()


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True
