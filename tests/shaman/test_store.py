"""The on-disk file store (spec/shaman.md §7, §12 items 22-36)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from shaman_core.errors import InvalidRequestError, UploadMismatchError
from shaman_core.store import DIRECT_IO_MIN_SIZE, BlobStatus, FileStore

from .conftest import files_under, sha256

CS = "abcdefxxx" + "0" * 30


def test_layout_directories_exist_after_opening(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    assert (tmp_path / "store" / "uploading").is_dir()
    assert (tmp_path / "store" / "stored").is_dir()
    assert store.blob_path(CS, 123) == tmp_path / "store/stored/ab" / CS[2:] / "123.blob"


def test_status_follows_files_on_disk(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert store.status(CS, 123) is BlobStatus.UNKNOWN
    temp = tmp_path / "uploading/ab" / CS[2:] / "123-000000001.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"x")
    # A temp file nobody holds is a crash leftover, not an upload in progress.
    assert store.status(CS, 123) is BlobStatus.UNKNOWN
    with open(temp, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a live upload (of any process) does
        assert store.status(CS, 123) is BlobStatus.UPLOADING
        assert store.status(CS, 123, stored_only=True) is BlobStatus.UNKNOWN
        assert store.status(CS, 12) is BlobStatus.UNKNOWN  # "12-" must not match "123-"
    blob = store.blob_path(CS, 123)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 123)
    assert store.status(CS, 123) is BlobStatus.STORED
    assert store.status(CS, 123, stored_only=True) is BlobStatus.STORED


def test_go_store_is_read_as_is(tmp_path: Path) -> None:
    data = b"hahaha"
    checksum = sha256(data)
    assert checksum == "be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912"
    blob = tmp_path / "stored" / checksum[:2] / checksum[2:] / "6.blob"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    assert FileStore(tmp_path).status(checksum, 6) is BlobStatus.STORED


def test_open_upload_is_visible_as_uploading(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    payload = "je moešje".encode()
    checksum = sha256(payload)
    with store.begin_upload(checksum, len(payload)) as upload:
        upload.write(payload)
        upload.flush()
        assert store.status(checksum, len(payload)) is BlobStatus.UPLOADING
        assert upload.temp_path.name.startswith(f"{len(payload)}-")
        assert upload.temp_path.read_bytes() == payload
        stored = upload.finish()
    assert stored != upload.temp_path
    assert stored.read_bytes() == payload
    assert not upload.temp_path.exists()
    assert not upload.temp_path.parent.exists()
    assert not upload.temp_path.parent.parent.exists()
    assert store.status(checksum, len(payload)) is BlobStatus.STORED


def test_an_upload_ending_while_its_status_is_read_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status looks for the blob, then for uploads: an upload that stores the blob between
    # the two looks leaves no temp file behind, and the blob is stored, not unknown.
    store = FileStore(tmp_path)
    payload = b"finished just now"
    checksum = sha256(payload)
    upload = store.begin_upload(checksum, len(payload))
    upload.write(payload)
    list_temp_files = store._temp_files

    def finishing_first(checksum: str, size: int) -> list[str]:
        upload.finish()
        return list_temp_files(checksum, size)

    monkeypatch.setattr(store, "_temp_files", finishing_first)
    assert store.status(checksum, len(payload)) is BlobStatus.STORED


@pytest.mark.parametrize(
    ("payload", "declared", "message"),
    [
        (b"short", 9, "Received 5 bytes but you promised 9"),
        ("hähähä".encode(), 9, "Declared and actual checksums differ"),
    ],
)
def test_mismatch_leaves_nothing(
    tmp_path: Path, payload: bytes, declared: int, message: str
) -> None:
    store = FileStore(tmp_path)
    checksum = "da-checksum-is-long-enough-like-this"
    with store.begin_upload(checksum, declared) as upload:
        upload.write(payload)
        with pytest.raises(UploadMismatchError, match=message):
            upload.finish()
    assert store.status(checksum, declared) is BlobStatus.UNKNOWN
    assert files_under(tmp_path) == {"stored", "uploading"}


def test_more_bytes_than_declared_refused_at_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with store.begin_upload("c" * 64, 3) as upload, pytest.raises(UploadMismatchError):
        upload.write(b"four")
    assert files_under(tmp_path) == {"stored", "uploading"}


def test_sha256_reference_values() -> None:
    assert sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256("hähähä".encode()) == (
        "05b373f2ab421a112c779258ea456c17160fcc1d0fe0bb8282de26122873f6e2"
    )


@pytest.mark.parametrize("checksum", ["short", "../" + "a" * 40, "a" * 30 + "*?[", "a" * 201])
def test_unsafe_checksums_refused(tmp_path: Path, checksum: str) -> None:
    with pytest.raises(InvalidRequestError):
        FileStore(tmp_path).begin_upload(checksum, 1)


def test_touch_refreshes_mtime(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    blob = store.blob_path(CS, 1)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    old = time.time() - 5 * 3600
    os.utime(blob, (old, old))
    assert store.touch(CS, 1)
    assert abs(blob.stat().st_mtime - time.time()) < 5
    assert not store.touch(CS, 2)


def test_crash_leftovers_removed_at_start_but_live_uploads_kept(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    live = store.begin_upload("a" * 64, 10)
    leftover = tmp_path / "uploading/bb" / ("b" * 62) / "10-123456789.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    old = time.time() - 60
    os.utime(leftover, (old, old))
    os.utime(live.temp_path, (old, old))
    reopened = FileStore(tmp_path)
    assert not leftover.exists()
    assert not leftover.parent.exists()
    assert live.temp_path.exists()
    assert reopened.status("b" * 64, 10) is BlobStatus.UNKNOWN
    live.discard()
    assert files_under(tmp_path) == {"stored", "uploading"}


def test_concurrent_uploads_of_one_blob_one_failing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    payload = os.urandom(300_000)
    checksum = sha256(payload)
    results: list[str] = []

    def upload(data: bytes) -> None:
        with store.begin_upload(checksum, len(payload)) as up:
            for start in range(0, len(data), 10_000):
                up.write(data[start : start + 10_000])
                time.sleep(0.0005)
            try:
                up.finish()
                results.append("ok")
            except UploadMismatchError:
                results.append("mismatch")

    corrupt = bytes(len(payload))
    threads = [threading.Thread(target=upload, args=(d,)) for d in (payload, corrupt, payload)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["mismatch", "ok", "ok"]
    assert store.blob_path(checksum, len(payload)).read_bytes() == payload
    assert files_under(tmp_path / "uploading") == set()


@pytest.mark.parametrize("size", [DIRECT_IO_MIN_SIZE + 12_345, DIRECT_IO_MIN_SIZE + 4 * 4096])
def test_large_uploads_with_direct_io_store_exact_bytes(tmp_path: Path, size: int) -> None:
    store = FileStore(tmp_path)
    payload = os.urandom(size)
    checksum = sha256(payload)
    with store.begin_upload(checksum, size) as upload:
        for start in range(0, size, 777_777):  # chunks that never line up with the buffers
            upload.write(payload[start : start + 777_777])
        path = upload.finish()
    assert path.read_bytes() == payload


def test_absorbed_pieces_are_hashed_and_stored_in_order(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    payload = os.urandom(DIRECT_IO_MIN_SIZE + 12_345)
    checksum = sha256(payload)
    with store.begin_upload(checksum, len(payload)) as upload:
        buffer = upload.new_buffer()
        for start in range(0, len(payload), buffer.capacity):
            batch = payload[start : start + buffer.capacity]
            pieces = [memoryview(batch)[i : i + 100_000] for i in range(0, len(batch), 100_000)]
            upload.accept(len(batch))
            buffer.clear()
            upload.absorb(buffer, pieces)
            assert buffer.data == batch
            upload.store_chunk(buffer)
        full = upload.new_buffer()
        full.fill(bytes(full.capacity))
        with pytest.raises(ValueError, match="larger than the buffer"):
            upload.absorb(full, [b"x"])
        path = upload.finish()
    assert path.read_bytes() == payload
