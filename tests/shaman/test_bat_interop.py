"""Blender Asset Tracer's own Shaman client against our Shaman served by uvicorn on loopback."""

from __future__ import annotations

import os
import pathlib
import threading
from pathlib import Path

import pytest
import requests

from .conftest import LiveShaman, files_under, sha256

bat_shaman = pytest.importorskip("blender_asset_tracer.pack.shaman")
bat_cache = pytest.importorskip("blender_asset_tracer.pack.shaman.cache")

pytestmark = pytest.mark.slow

# The fixture lives next to the repository (../shared/fixtures), never inside it.
TEST_BLEND = Path(
    os.environ.get(
        "FLAMENCO_TEST_BLEND",
        Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "test.blend",
    )
)


@pytest.fixture(autouse=True)
def private_bat_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bat_cache, "CACHE_ROOT", tmp_path / "bat-cache")


def _transfer(live: LiveShaman, token: str, root: Path, checkout_id: str) -> object:
    transferrer = bat_shaman.ShamanTransferrer(token, root, live.url, checkout_id)
    transferrer.start()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        transferrer.queue_copy(path, pathlib.PurePosixPath("/", path.relative_to(root).as_posix()))
    transferrer.done_and_join()
    return transferrer


def _tree(root: Path) -> dict[str, bytes]:
    contents = {
        "a.txt": b"hello!",
        "dup.txt": b"hello!",
        "sub dir/big.bin": os.urandom(3_000_000),
        "sub dir/ünï.txt": b"latin-1 only",
        "empty.txt": b"",
        "textures/shot..v2.png": os.urandom(1000),
    }
    for relative, data in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return contents


def _assert_checkout(live: LiveShaman, relative: str, contents: dict[str, bytes]) -> None:
    checkout = live.shaman.config.checkout_dir / relative
    links = {p for p in files_under(checkout) if (checkout / p).is_symlink()}
    assert links == set(contents)
    for name, data in contents.items():
        assert (checkout / name).read_bytes() == data


def test_transferrer_uploads_arbitrary_files(tmp_path: Path, live: LiveShaman, token: str) -> None:
    root = tmp_path / "project"
    contents = _tree(root)
    transferrer = _transfer(live, token, root, "abcDEF123")
    assert not transferrer.has_error, transferrer.error_message()
    assert transferrer.checkout_location == "23/abcDEF123"
    assert transferrer.uploaded_files == 5
    _assert_checkout(live, "23/abcDEF123", contents)
    again = _transfer(live, token, root, "abcDEF124")
    assert not again.has_error, again.error_message()
    assert again.uploaded_files == 0
    _assert_checkout(live, "24/abcDEF124", contents)


def test_transferrer_sees_our_errors(tmp_path: Path, live: LiveShaman, token: str) -> None:
    root = tmp_path / "project"
    _tree(root)
    first = _transfer(live, token, root, "samejob")
    assert not first.has_error
    second = _transfer(live, token, root, "samejob")
    assert second.has_error
    assert "409" in second.error_message()
    bad_token = _transfer(live, token[:-4] + "AAAA", root, "other")
    assert bad_token.has_error
    assert "401" in bad_token.error_message()


def test_parallel_transferrers_share_uploads(tmp_path: Path, live: LiveShaman, token: str) -> None:
    root = tmp_path / "project"
    contents = {f"file{i}.bin": os.urandom(1_500_000) for i in range(10)}
    root.mkdir()
    for name, data in contents.items():
        (root / name).write_bytes(data)
    results: dict[str, object] = {}

    def run(checkout_id: str) -> None:
        results[checkout_id] = _transfer(live, token, root, checkout_id)

    threads = [threading.Thread(target=run, args=(f"parallel_{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for checkout_id, transferrer in results.items():
        assert not transferrer.has_error, transferrer.error_message()
        _assert_checkout(live, f"_{checkout_id[-1]}/{checkout_id}", contents)
    assert files_under(live.shaman.store.uploading_dir) == set()


def test_early_208_for_large_body_over_a_real_socket(live: LiveShaman, token: str) -> None:
    payload = os.urandom(8 << 20)
    checksum = sha256(payload)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    url = f"{live.url}files/{checksum}/{len(payload)}"
    assert session.post(url, data=payload).status_code == 204
    try:
        again = session.post(url, data=payload)
    except requests.ConnectionError:
        pass  # allowed: the server replied early and closed while we were still sending
    else:
        assert again.status_code == 208
        assert again.headers["Location"] == f"/files/{checksum}/{len(payload)}"
        assert again.headers["Connection"] == "close"
    small = b"small body" * 100
    small_url = f"{live.url}files/{sha256(small)}/{len(small)}"
    assert session.post(small_url, data=small).status_code == 204
    for _ in range(3):  # keep-alive survives early replies for small bodies
        response = session.post(small_url, data=small)
        assert response.status_code == 208
        assert "close" not in response.headers.get("Connection", "")
    assert live.shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload


@pytest.mark.skipif(not TEST_BLEND.exists(), reason=f"{TEST_BLEND} is not available")
def test_bat_pack_of_test_blend(
    tmp_path: Path, live: LiveShaman, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHAMAN_JWT_TOKEN", raising=False)  # BAT falls back to GET /get-token
    project = TEST_BLEND.parent
    packer = bat_shaman.ShamanPacker(
        TEST_BLEND, project, "/", endpoint=live.url, checkout_id="packjob_42"
    )
    with packer:
        packer.strategise()
        packer.execute()
    assert packer.checkout_location == "42/packjob_42"
    assert str(packer.output_path) == "42/packjob_42/test.blend"
    checkout = live.shaman.config.checkout_dir / "42/packjob_42"
    assert (checkout / "test.blend").read_bytes() == TEST_BLEND.read_bytes()
    assert (checkout / "pack-info.txt").is_symlink()
    assert b"Blender Asset Tracer pack" in (checkout / "pack-info.txt").read_bytes()
    assert files_under(checkout) == {"test.blend", "pack-info.txt"}
