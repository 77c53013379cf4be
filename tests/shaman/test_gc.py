"""Garbage collection (spec/shaman.md §9, §12 items 37-45) and its safety property."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaman_core.cdf import CheckoutEntry
from shaman_core.checkout import CheckoutBuilder
from shaman_core.config import ShamanConfig
from shaman_core.errors import GarbageCollectionError
from shaman_core.gc import collect_garbage
from shaman_core.store import FileStore

from .conftest import files_under, sha256

MAX_AGE = 31 * 24 * 3600.0


def _store_blob(store: FileStore, data: bytes, age: float = 0.0) -> tuple[str, int]:
    checksum = sha256(data)
    with store.begin_upload(checksum, len(data)) as upload:
        upload.write(data)
        path = upload.finish()
    if age:
        when = time.time() - age
        os.utime(path, (when, when))
    return checksum, len(data)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[FileStore, CheckoutBuilder, Path]:
    store = FileStore(tmp_path / "store")
    builder = CheckoutBuilder(store, tmp_path / "checkouts", wait_for_uploads=0)
    extra = tmp_path / "extra"
    extra.mkdir()
    return store, builder, extra


def test_max_age_is_sane() -> None:
    assert MAX_AGE > 600


def test_fresh_store_has_nothing_old(layout: tuple[FileStore, CheckoutBuilder, Path]) -> None:
    store, builder, extra = layout
    for index in range(4):
        _store_blob(store, b"fresh %d" % index)
    report = collect_garbage(store, [builder.root, extra], max_age=MAX_AGE)
    assert report.old_blobs == 0
    assert report.deleted == []


def test_sweep_keeps_linked_and_touched_blobs(
    layout: tuple[FileStore, CheckoutBuilder, Path],
) -> None:
    store, builder, extra = layout
    blobs = {name: _store_blob(store, name.encode() * 10, 2 * MAX_AGE) for name in "ABCD"}
    fresh = _store_blob(store, b"new")
    # A is linked from a checkout, B from the extra tree, C gets touched, D is garbage.
    assert builder.create("checkoutID", [CheckoutEntry(*blobs["A"], "a.bin")]) == "ID/checkoutID"
    when = time.time() - 2 * MAX_AGE  # creating the checkout touched A: age it again
    os.utime(store.blob_path(*blobs["A"]), (when, when))
    os.symlink(store.blob_path(*blobs["B"]), extra / "b-link")
    dry = collect_garbage(store, [builder.root, extra], max_age=MAX_AGE, dry_run=True)
    assert dry.old_blobs == 4
    assert dry.still_used == 2
    assert sorted(dry.deleted) == sorted(store.blob_path(*blobs[n]) for n in "CD")
    assert all(store.blob_path(*b).exists() for b in blobs.values())
    store.touch(*blobs["C"])
    report = collect_garbage(store, [builder.root, extra], max_age=MAX_AGE)
    assert report.deleted == [store.blob_path(*blobs["D"])]
    assert report.bytes_freed == 10
    assert not store.blob_path(*blobs["D"]).parent.exists()
    for name in "ABC":
        assert store.blob_path(*blobs[name]).exists()
    assert store.blob_path(*fresh).exists()


def test_candidate_touched_during_sweep_is_kept(
    layout: tuple[FileStore, CheckoutBuilder, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, builder, _extra = layout
    blob = _store_blob(store, b"in use soon", 2 * MAX_AGE)
    import shaman_core.gc as gc_module

    real_targets = gc_module._symlink_targets

    def touching_walk(root: Path, **options):  # type: ignore[no-untyped-def]
        store.touch(*blob)  # e.g. /checkout/requirements arrives mid-sweep
        yield from real_targets(root, **options)

    monkeypatch.setattr(gc_module, "_symlink_targets", touching_walk)
    report = collect_garbage(store, [builder.root], max_age=MAX_AGE)
    assert report.deleted == []
    assert report.kept_touched == 1
    assert store.blob_path(*blob).exists()


def test_missing_checkout_tree_aborts_without_deleting(
    layout: tuple[FileStore, CheckoutBuilder, Path], tmp_path: Path
) -> None:
    store, builder, _extra = layout
    blob = _store_blob(store, b"old", 2 * MAX_AGE)
    with pytest.raises(GarbageCollectionError):
        collect_garbage(store, [builder.root, tmp_path / "gone"], max_age=MAX_AGE)
    assert store.blob_path(*blob).exists()


def test_links_through_a_symlinked_store_path_still_count(tmp_path: Path) -> None:
    real = tmp_path / "real-store"
    FileStore(real)
    (tmp_path / "alias").symlink_to(real)
    via_alias = FileStore(tmp_path / "alias")
    blob = _store_blob(via_alias, b"linked via alias", 2 * MAX_AGE)
    builder = CheckoutBuilder(via_alias, tmp_path / "co", wait_for_uploads=0)
    builder.create("aliasjob", [CheckoutEntry(*blob, "x")])
    when = time.time() - 2 * MAX_AGE
    os.utime(via_alias.blob_path(*blob), (when, when))
    report = collect_garbage(FileStore(real), [builder.root], max_age=MAX_AGE)
    assert report.old_blobs == 1
    assert report.deleted == []
    assert report.still_used == 1


@given(
    blobs=st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=8, unique=True),
    linked=st.sets(st.integers(0, 7)),
    old=st.sets(st.integers(0, 7)),
    dry_run=st.booleans(),
)
def test_referenced_blobs_are_never_deleted(
    tmp_path_factory: pytest.TempPathFactory,
    blobs: list[bytes],
    linked: set[int],
    old: set[int],
    dry_run: bool,
) -> None:
    base = tmp_path_factory.mktemp("gcprop")
    store = FileStore(base / "store")
    builder = CheckoutBuilder(store, base / "co", wait_for_uploads=0)
    keys = [
        _store_blob(store, data, 2 * MAX_AGE if i in old else 0) for i, data in enumerate(blobs)
    ]
    entries = [CheckoutEntry(*keys[i], f"f{i}") for i in sorted(linked) if i < len(keys)]
    builder.create("propjob", entries)
    for index in old:  # creating the checkout touched linked blobs; age them again
        if index < len(keys):
            when = time.time() - 2 * MAX_AGE
            os.utime(store.blob_path(*keys[index]), (when, when))
    collect_garbage(store, [builder.root], max_age=MAX_AGE, dry_run=dry_run)
    for entry in entries:
        assert (builder.path_of("propjob") / entry.path).read_bytes() == blobs[
            keys.index(entry.key)
        ]
    for index, key in enumerate(keys):
        should_remain = dry_run or index in linked or index not in old
        assert store.blob_path(*key).exists() == should_remain
    assert "uploading" in files_under(base / "store")


@pytest.mark.anyio
async def test_periodic_collector_sweeps_at_once_and_survives_errors(
    layout: tuple[FileStore, CheckoutBuilder, Path], tmp_path: Path
) -> None:
    import asyncio

    from shaman_core.gc import run_periodically

    store, builder, _extra = layout
    old = _store_blob(store, b"old and unlinked", 2 * MAX_AGE)
    broken = asyncio.create_task(
        run_periodically(store, [tmp_path / "missing"], max_age=MAX_AGE, period=0.05)
    )
    await asyncio.sleep(0.2)
    assert not broken.done()  # a failing sweep is logged, the loop goes on
    assert store.blob_path(*old).exists()
    broken.cancel()
    task = asyncio.create_task(
        run_periodically(store, [builder.root], max_age=MAX_AGE, period=3600)
    )
    for _ in range(500):  # up to 10 s on a busy machine; usually the first sweep is at once
        if not store.blob_path(*old).exists():
            break
        await asyncio.sleep(0.02)
    assert not store.blob_path(*old).exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


DIE_MID_UPLOAD = """
import os, sys
from shaman_core.store import FileStore

upload = FileStore(sys.argv[1]).begin_upload("d" * 64, 10)
upload.write(b"half")
upload.flush()
os._exit(0)  # killed mid-upload: its flock goes, its temp file stays
"""


def test_sweep_removes_upload_leftovers_of_a_process_that_died_meanwhile(
    layout: tuple[FileStore, CheckoutBuilder, Path],
) -> None:
    store, builder, extra = layout
    subprocess.run([sys.executable, "-c", DIE_MID_UPLOAD, str(store.root)], check=True, timeout=60)
    [leftover] = store.iter_temp_files()
    restarted = FileStore(store.root)  # its replacement opens the store a second later
    assert leftover.exists()  # too young to tell from an upload that has not locked it yet
    live = restarted.begin_upload(sha256(b"writingand"), 10)
    live.write(b"writing")
    live.flush()
    for path in (leftover, live.temp_path):  # the next sweep comes minutes later
        when = time.time() - 600
        os.utime(path, (when, when))
    dry = collect_garbage(restarted, [builder.root, extra], max_age=MAX_AGE, dry_run=True)
    assert leftover.exists()
    report = collect_garbage(restarted, [builder.root, extra], max_age=MAX_AGE)
    assert not leftover.exists()
    assert not leftover.parent.exists()
    assert live.temp_path.read_bytes() == b"writing"
    live.write(b"and")
    assert live.finish().read_bytes() == b"writingand"
    assert (dry.stale_uploads, report.stale_uploads) == (1, 1)


@pytest.mark.parametrize("max_age", [-1.0, math.nan, math.inf])
def test_an_age_below_zero_or_not_finite_is_refused_before_anything_is_deleted(
    layout: tuple[FileStore, CheckoutBuilder, Path], max_age: float
) -> None:
    # A negative age made every unlinked blob "old": the blobs of an upload under way, for a
    # checkout about to be made, were deleted.
    store, builder, _ = layout
    checksum, size = _store_blob(store, b"uploaded, its checkout not made yet", age=60)
    with pytest.raises(ValueError, match="max_age must be a finite number of seconds"):
        collect_garbage(store, [builder.root], max_age=max_age)
    assert store.blob_path(checksum, size).exists()
    with pytest.raises(ValueError, match="gc_max_age must be"):
        ShamanConfig(store_dir="s", checkout_dir="c", auth_disabled=True, gc_max_age=max_age)
