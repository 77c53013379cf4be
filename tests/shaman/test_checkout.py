"""Creating checkouts beside failing creates and processes that die while building one."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import shaman_core.checkout as checkout_module
from shaman_core.cdf import CheckoutEntry
from shaman_core.checkout import CheckoutBuilder
from shaman_core.errors import CheckoutExistsError, MissingFilesError
from shaman_core.gc import collect_garbage
from shaman_core.store import FileStore

from .conftest import files_under, sha256

MAX_AGE = 31 * 24 * 3600.0


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


@pytest.fixture
def builder(store: FileStore, tmp_path: Path) -> CheckoutBuilder:
    return CheckoutBuilder(store, tmp_path / "checkouts", wait_for_uploads=0)


def _entry(store: FileStore, data: bytes, path: str) -> CheckoutEntry:
    checksum = sha256(data)
    with store.begin_upload(checksum, len(data)) as upload:
        upload.write(data)
        upload.finish()
    return CheckoutEntry(checksum, len(data), path)


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def _builds(fanout: Path) -> list[Path]:
    return sorted(p for p in fanout.iterdir() if checkout_module.is_build_name(p.name))


def _assert_complete(
    builder: CheckoutBuilder, checkout_id: str, contents: dict[str, bytes]
) -> None:
    checkout = builder.path_of(checkout_id)
    assert {p for p in files_under(checkout) if (checkout / p).is_symlink()} == set(contents)
    for path, data in contents.items():
        assert (checkout / path).read_bytes() == data


# --- A failing create removes the empty fan-out directory under a concurrent create ---


def _remove_fanout_after_mkdir(fanout: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Remove `fanout` right after the create's mkdir found it, before the create opens it."""
    real_mkdir = os.mkdir
    removed: list[str] = []

    def mkdir(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        try:
            real_mkdir(path, mode, dir_fd=dir_fd)
        finally:
            if path == fanout.name and dir_fd is not None and not removed:
                removed.append(path)
                os.rmdir(fanout)  # a failing create next door cleans up its empty fan-out dir

    monkeypatch.setattr(os, "mkdir", mkdir)
    return removed


def _remove_fanout_after_open(fanout: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Remove `fanout` after the create opened it, before it makes anything inside."""
    real_open = checkout_module._open_or_make_directory
    removed: list[str] = []

    def open_directory(name: str, parent_fd: int, shown_as: str) -> int:
        fd = real_open(name, parent_fd, shown_as)
        if name == fanout.name and not removed:
            removed.append(name)
            os.rmdir(fanout)
        return fd

    monkeypatch.setattr(checkout_module, "_open_or_make_directory", open_directory)
    return removed


@pytest.mark.parametrize("remove", [_remove_fanout_after_mkdir, _remove_fanout_after_open])
def test_fanout_directory_removed_during_create_is_made_again(
    builder: CheckoutBuilder,
    store: FileStore,
    monkeypatch: pytest.MonkeyPatch,
    remove: Callable[[Path, pytest.MonkeyPatch], list[str]],
) -> None:
    entry = _entry(store, b"payload", "dir/file.txt")
    fanout = builder.root / "ab"
    fanout.mkdir()  # made by a create that fails and is about to remove it again
    removed = remove(fanout, monkeypatch)
    assert builder.create("job_ab", [entry]) == "ab/job_ab"
    assert removed == ["ab"]
    _assert_complete(builder, "job_ab", {"dir/file.txt": b"payload"})


def test_create_with_missing_blobs_makes_no_fanout_directory(
    builder: CheckoutBuilder, store: FileStore
) -> None:
    with pytest.raises(MissingFilesError):
        builder.create("bad_ab", [CheckoutEntry(sha256(b"never"), 5, "x")])
    assert files_under(builder.root) == set()


# --- A process dying while it builds a checkout ---

DIE_AFTER_TWO_LINKS = """
import os, sys
from shaman_core.cdf import CheckoutEntry
from shaman_core.checkout import CheckoutBuilder
from shaman_core.store import FileStore

builder = CheckoutBuilder(FileStore(sys.argv[1]), sys.argv[2], wait_for_uploads=0)
entries = [CheckoutEntry(*line.split(" ", 2)) for line in sys.argv[4:]]
entries = [CheckoutEntry(e.checksum, int(e.size), e.path) for e in entries]
real_symlink = os.symlink
made = []

def symlink(*args, **kwargs):
    if len(made) == 2:
        os._exit(3)  # killed: no rollback, no finally
    made.append(args)
    real_symlink(*args, **kwargs)

os.symlink = symlink
builder.create(sys.argv[3], entries)
"""


def _die_while_creating(
    store: FileStore, builder: CheckoutBuilder, checkout_id: str, entries: Sequence[CheckoutEntry]
) -> None:
    lines = [f"{e.checksum} {e.size} {e.path}" for e in entries]
    roots = [str(store.root), str(builder.root)]
    result = subprocess.run(
        [sys.executable, "-c", DIE_AFTER_TWO_LINKS, *roots, checkout_id, *lines],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr


def test_process_dying_mid_create_leaves_no_checkout_and_a_retry_succeeds(
    builder: CheckoutBuilder, store: FileStore
) -> None:
    contents = {f"d{i % 2}/f{i}.bin": b"content %d" % i for i in range(5)}
    entries = [_entry(store, data, path) for path, data in contents.items()]
    _die_while_creating(store, builder, "dying_job", entries)
    assert not os.path.lexists(builder.path_of("dying_job"))
    [leftover] = _builds(builder.root / "ob")
    assert len([p for p in files_under(leftover) if p.count("/") == 1]) == 2  # half-built

    assert builder.create("dying_job", entries) == "ob/dying_job"
    _assert_complete(builder, "dying_job", contents)
    assert leftover.exists()  # just left: a live create might still be holding it

    _age(leftover, 60)
    CheckoutBuilder(store, builder.root)  # opening the checkout root again cleans up
    assert not leftover.exists()
    assert _builds(builder.root / "ob") == []
    _assert_complete(builder, "dying_job", contents)


def _leftover_build(builder: CheckoutBuilder, entry: CheckoutEntry, checkout_id: str) -> Path:
    """A build directory as a dead process leaves it: one link made, nobody holding it."""
    build = builder.root / checkout_id[-2:] / f".build-{'0' * 16}-{checkout_id}"
    build.mkdir(parents=True)
    (build / entry.path).symlink_to(builder.store.blob_location(entry.checksum, entry.size))
    _age(build, 60)
    return build


@pytest.mark.parametrize("dry_run", [True, False])
def test_gc_removes_leftover_builds_whose_links_keep_nothing(
    builder: CheckoutBuilder, store: FileStore, dry_run: bool
) -> None:
    entry = _entry(store, b"only the dead build links this", "file.bin")
    build = _leftover_build(builder, entry, "dead_job")
    _age(store.blob_path(entry.checksum, entry.size), 2 * MAX_AGE)
    report = collect_garbage(store, [builder.root], max_age=MAX_AGE, dry_run=dry_run)
    assert report.stale_builds == 1
    assert report.deleted == [store.blob_path(entry.checksum, entry.size)]
    assert build.exists() is dry_run
    assert store.blob_path(entry.checksum, entry.size).exists() is dry_run
    assert not os.path.lexists(builder.path_of("dead_job"))


def test_build_held_by_a_live_create_is_kept_and_keeps_its_blobs(
    builder: CheckoutBuilder, store: FileStore
) -> None:
    entry = _entry(store, b"linked by a build in progress", "file.bin")
    build = _leftover_build(builder, entry, "slow_job")
    _age(store.blob_path(entry.checksum, entry.size), 2 * MAX_AGE)
    fd = os.open(build, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what the create building it (in any process) holds
        assert checkout_module.remove_stale_builds(builder.root) == []
        report = collect_garbage(store, [builder.root], max_age=MAX_AGE)
    finally:
        os.close(fd)
    assert build.exists()
    assert report.stale_builds == 0
    assert report.still_used == 1
    assert store.blob_path(entry.checksum, entry.size).exists()
    assert checkout_module.remove_stale_builds(builder.root) == [build]  # once its process is gone
    assert not build.exists()


def test_fresh_unheld_build_is_kept(builder: CheckoutBuilder, store: FileStore) -> None:
    # Between its mkdir and its flock a build is not held yet: only its age tells.
    build = _leftover_build(builder, _entry(store, b"x", "x"), "new_job")
    os.utime(build)
    assert checkout_module.remove_stale_builds(builder.root) == []
    assert build.exists()


def test_gc_ignores_a_build_moved_into_place_while_it_walks(
    builder: CheckoutBuilder, store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _entry(store, b"just created", "file.bin")
    garbage = _entry(store, b"garbage", "garbage.bin")
    _age(store.blob_path(garbage.checksum, garbage.size), 2 * MAX_AGE)
    fd = os.open(_leftover_build(builder, entry, "done_job"), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fanout = builder.root / "ob"
    real_walk = os.walk

    def walk(top: str, **options: object) -> Iterator[tuple[str, list[str], list[str]]]:
        for step in real_walk(top, **options):  # type: ignore[call-overload]
            yield step
            if step[0] == str(fanout):  # listed the build; its create finishes now
                [build] = _builds(fanout)
                os.rename(build, fanout / "done_job")

    monkeypatch.setattr(os, "walk", walk)
    try:
        report = collect_garbage(store, [builder.root], max_age=MAX_AGE)
    finally:
        os.close(fd)
    assert report.deleted == [store.blob_path(garbage.checksum, garbage.size)]
    assert (builder.path_of("done_job") / "file.bin").read_bytes() == b"just created"


# --- Never replacing an existing checkout, with or without RENAME_NOREPLACE ---


def _unsupported_renameat2(*_args: object) -> int:
    ctypes.set_errno(errno.EINVAL)  # what a filesystem without the flag answers (NFS)
    return -1


RENAMES = {
    "renameat2": lambda: checkout_module._renameat2,
    "no renameat2": lambda: None,
    "filesystem without RENAME_NOREPLACE": lambda: _unsupported_renameat2,
}


@pytest.fixture(params=sorted(RENAMES))
def rename_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(checkout_module, "_renameat2", RENAMES[request.param]())
    return str(request.param)


def test_existing_empty_checkout_is_never_replaced(
    builder: CheckoutBuilder, store: FileStore, monkeypatch: pytest.MonkeyPatch, rename_mode: str
) -> None:
    entry = _entry(store, b"late", "late.txt")
    real_link_all = builder._link_all

    def link_all_while_another_wins(entries: Sequence[CheckoutEntry], checkout_fd: int) -> None:
        real_link_all(entries, checkout_fd)
        assert builder.create("same_job", []) == "ob/same_job"  # a checkout without files

    monkeypatch.setattr(builder, "_link_all", link_all_while_another_wins)
    with pytest.raises(CheckoutExistsError):
        builder.create("same_job", [entry])
    assert files_under(builder.root / "ob") == {"same_job"}  # still empty, no build left


def test_concurrent_creates_of_one_id_one_wins(
    builder: CheckoutBuilder, store: FileStore, rename_mode: str
) -> None:
    contents = {f"d{i % 3}/f{i}": b"%d" % i for i in range(50)}
    entries = [_entry(store, data, path) for path, data in contents.items()]
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def create() -> None:
        start.wait()
        try:
            builder.create("race_job", entries)
            outcomes.append("created")
        except CheckoutExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"]
    _assert_complete(builder, "race_job", contents)
    assert _builds(builder.root / "ob") == []
