"""The pack client, its checksum cache and progress bar, against a live Shaman on loopback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shaman_core.checksums import ChecksumCache, hash_file, hash_files
from shaman_core.client import ShamanClient, ShamanClientError, pack
from shaman_core.progress import Progress, ProgressBar, render_progress

from .conftest import LiveShaman, files_under, sha256


def _make_tree(root: Path) -> dict[str, bytes]:
    contents = {
        "scene.blend": os.urandom(300_000),
        "textures/wood.png": os.urandom(70_000),
        "textures/wood copy.png": b"",
        "textures/shot..v2.png": b"same",
        "textures/dup.png": b"same",
        "ünïcode/ß.txt": "grüße".encode(),
    }
    for relative, data in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return contents


def _checkout_matches(checkout: Path, contents: dict[str, bytes]) -> None:
    files = {p for p in files_under(checkout) if (checkout / p).is_symlink()}
    assert files == set(contents)
    for relative, data in contents.items():
        assert (checkout / relative).read_bytes() == data


def test_pack_uploads_then_reuses(tmp_path: Path, live: LiveShaman, token: str) -> None:
    source = tmp_path / "project"
    contents = _make_tree(source)
    cache = ChecksumCache(tmp_path / "cache.sqlite")
    progress = Progress()
    report = pack(
        source, live.url, checkout_id="job_one", token=token, cache=cache, progress=progress
    )
    assert report.files == 6
    assert report.uploaded_files == 5  # dup.png and shot..v2.png share one blob
    assert report.checkout_path == "ne/job_one"
    assert progress.done_files == 5
    assert (
        progress.done_bytes
        == progress.total_bytes
        == sum(len(v) for k, v in contents.items() if k != "textures/dup.png")
    )
    _checkout_matches(live.shaman.config.checkout_dir / "ne/job_one", contents)
    again = pack(source, live.url, checkout_id="job_two", token=token, cache=cache)
    assert again.uploaded_files == 0
    assert again.rounds == 1
    _checkout_matches(live.shaman.config.checkout_dir / "wo/job_two", contents)


def test_pack_errors_are_reported(tmp_path: Path, live: LiveShaman, token: str) -> None:
    source = tmp_path / "p"
    _make_tree(source)
    with pytest.raises(ShamanClientError) as caught:
        pack(source, live.url, checkout_id="x", token=token)
    assert caught.value.status == 400
    with pytest.raises(ShamanClientError) as caught:
        pack(source, live.url, checkout_id="nojwt")
    assert caught.value.status == 401
    with pytest.raises(ShamanClientError) as caught:
        pack(source, "http://127.0.0.1:9/", token=token)
    assert caught.value.status == 0
    # A missing directory, or a file, used to become an empty checkout.
    for wrong in (tmp_path / "missing", source / "scene.blend"):
        with pytest.raises(ShamanClientError, match="not a directory"):
            pack(wrong, live.url, checkout_id="co_wrong", token=token)
    assert not live.shaman.checkouts.path_of("co_wrong").exists()


def test_parallel_packs_of_the_same_files(tmp_path: Path, live: LiveShaman, token: str) -> None:
    source = tmp_path / "shared"
    contents = {f"f{i}.bin": os.urandom(200_000) for i in range(12)}
    source.mkdir()
    for name, data in contents.items():
        (source / name).write_bytes(data)
    errors: list[BaseException] = []

    def run(checkout_id: str) -> None:
        try:
            pack(source, live.url, checkout_id=checkout_id, token=token, concurrency=3)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"par_{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index in range(3):
        _checkout_matches(live.shaman.config.checkout_dir / f"_{index}/par_{index}", contents)
    assert files_under(live.shaman.store.uploading_dir) == set()


def test_checksum_cache_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    cache = ChecksumCache(tmp_path / "c.sqlite")
    hashed: list[int] = []
    assert hash_files([path], cache=cache, on_hashed=hashed.append) == [(sha256(b"one"), 3)]
    assert hash_files([path], cache=cache, on_hashed=hashed.append) == [(sha256(b"one"), 3)]
    assert hashed == [3]
    path.write_bytes(b"two")
    os.utime(path, ns=(1, 1))
    assert hash_files([path], cache=cache, on_hashed=hashed.append) == [(sha256(b"two"), 3)]
    assert hashed == [3, 3]
    assert hash_file(path) == sha256(b"two")


def test_progress_line() -> None:
    line = render_progress(5 * 2**20, 10 * 2**20, 1, 2, 2.0)
    assert line.startswith("[##########----------]  50%")
    assert "5.0 MiB/10.0 MiB" in line
    assert "1/2 files" in line
    assert "2.5 MiB/s" in line
    assert "ETA 0:00:02" in line
    assert render_progress(0, 0, 0, 0, 0.0).endswith("done")
    stream = io.StringIO()
    bar = ProgressBar(stream, interval=0)
    bar.add_work(1, 10)
    bar.advance(10)
    bar.file_done()
    bar.close()
    last_line = stream.getvalue().rsplit("\r", 1)[-1]
    assert "1/1 files" in last_line
    assert last_line.endswith("done\n")
    assert "\r[####################] 100%" in stream.getvalue()


def test_client_requirements_round_trip(live: LiveShaman, token: str) -> None:
    with ShamanClient(live.url.rstrip("/"), token) as client:
        line = f"{'a' * 64} 3 x y.txt\n".encode()
        assert client.requirements(line) == [("file-unknown", "x y.txt")]


@pytest.mark.slow
def test_cli_keys_token_pack_and_gc(tmp_path: Path, live: LiveShaman, key_dir: Path) -> None:
    def shaman(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        return subprocess.run(
            [sys.executable, "-m", "shaman_core.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    created = shaman("keys", "create", str(tmp_path / "keys"))
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "keys" / "es256-private.pem").exists()
    assert shaman("keys", "create", str(tmp_path / "keys")).returncode == 1  # never overwrites
    minted = shaman("token", "mint", "--jwt-keys", str(key_dir), "--subject", "cli-user")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    source = tmp_path / "src"
    contents = _make_tree(source)
    packed = shaman("pack", str(source), live.url, "--checkout-id", "cli_job", "--token", token)
    assert packed.returncode == 0, packed.stderr
    assert "checkout: ob/cli_job" in packed.stdout
    assert "files" in packed.stderr  # the progress bar
    _checkout_matches(live.shaman.config.checkout_dir / "ob/cli_job", contents)
    gc = shaman(
        "gc",
        "--store",
        str(live.shaman.store.root),
        "--checkouts",
        str(live.shaman.config.checkout_dir),
        "--max-age-days",
        "0",
    )
    assert gc.returncode == 0, gc.stderr
    assert "would delete 0" in gc.stdout
    not_a_store = shaman("gc", "--store", str(tmp_path / "nothing"), "--checkouts", str(tmp_path))
    assert not_a_store.returncode == 1
    assert "not a Shaman file store" in not_a_store.stderr
    assert not (tmp_path / "nothing").exists()
    failed = shaman("pack", str(source), live.url, "--checkout-id", "cli_job", "--token", token)
    assert failed.returncode == 1
    assert "409" in failed.stderr
    # A failed upload's progress line says so; it said "done".
    (bar,) = [line for line in failed.stderr.splitlines() if line.startswith("[")]
    assert bar.endswith("stopped"), failed.stderr
    refused = shaman("pack", str(source), live.url, "--checkout-id", "other")  # no token
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert "done" not in refused.stderr


@pytest.mark.slow
def test_shaman_serve_runs_standalone(tmp_path: Path, key_dir: Path, token: str) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable, "-m", "shaman_core.cli", "serve",
            "--store", str(tmp_path / "store"), "--checkouts", str(tmp_path / "co"),
            "--jwt-keys", str(key_dir), "--port", str(port), "--gc-period-hours", "0",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "my-info", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "shaman serve did not start"
                time.sleep(0.1)
        source = tmp_path / "src"
        contents = _make_tree(source)
        report = pack(source, url, checkout_id="standalone", token=token)
        assert report.checkout_path == "ne/standalone"
        _checkout_matches(tmp_path / "co/ne/standalone", contents)
        assert httpx.get(url + "get-token").status_code == 404  # not enabled
        assert httpx.options(f"{url}files/{'a' * 64}/1").status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=10)
    refused = subprocess.run(
        [sys.executable, "-m", "shaman_core.cli", "serve", "--store", "s", "--checkouts", "c"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--jwt-keys" in refused.stderr


def test_pack_waits_for_a_file_someone_else_is_uploading(
    tmp_path: Path, live: LiveShaman, token: str
) -> None:
    source = tmp_path / "p"
    source.mkdir()
    shared = os.urandom(50_000)
    (source / "shared.bin").write_bytes(shared)
    (source / "own.bin").write_bytes(b"mine")
    other = live.shaman.store.begin_upload(sha256(shared), len(shared))

    def finish_later() -> None:
        threading.Event().wait(1.0)
        other.write(shared)
        other.finish()

    finisher = threading.Thread(target=finish_later)
    finisher.start()
    try:
        report = pack(source, live.url, checkout_id="waiting", token=token, retry_wait=0.2)
    finally:
        finisher.join()
    assert report.rounds >= 2
    assert report.uploaded_files == 1
    _checkout_matches(
        live.shaman.config.checkout_dir / "ng/waiting", {"shared.bin": shared, "own.bin": b"mine"}
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["token", "mint", "--jwt-keys", "k", "--subject", "s", "--hours", "-1"], "above 0"),
        (["gc", "--store", "s", "--checkouts", "c", "--max-age-days", "-1"], "of 0 or more"),
        (["gc", "--store", "s", "--checkouts", "c", "--max-age-days", "nan"], "of 0 or more"),
        (["serve", "--store", "s", "--checkouts", "c", "--no-auth", "--port", "70000"], "65535"),
        (
            ["serve", "--store", "s", "--checkouts", "c", "--no-auth", "--gc-max-age-days", "-2"],
            "of 0 or more",
        ),
        (["pack", "d", "http://x/", "--jobs", "0"], "whole number of 1 or more"),
        (["pack", "d", "http://x/", "--jobs", "two"], "whole number of 1 or more"),
    ],
)
def test_cli_refuses_numbers_out_of_range(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    # A negative GC age deleted every unlinked blob (uploads under way included); a negative
    # token lifetime printed an expired token; --jobs 0 never uploaded anything.
    from shaman_core.cli import main

    with pytest.raises(SystemExit) as exited:
        main(arguments)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
