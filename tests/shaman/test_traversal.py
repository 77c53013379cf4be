"""Nothing a client sends creates a file or link outside the store and checkout roots."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

import shaman_core.checkout as checkout_module
from shaman_core.cdf import CheckoutEntry, format_definition
from shaman_core.config import Shaman

from .conftest import files_under, put_blob

pytestmark = pytest.mark.anyio

TEXT = {"Content-Type": "text/plain"}
CS = "a" * 64


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


def _line(path: str, checksum: str = CS, size: int = 1) -> bytes:
    return f"{checksum} {size} {path}".encode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "path",
    [
        "../escape.txt",
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a/../b",
        "ok/./x",
        "a\x00b",
        "C:/Windows/x",
        "x" * 4096,
        "/".join(["d"] * 2000),
    ],
)
@pytest.mark.parametrize("endpoint", ["/checkout/requirements", "/checkout/create/trav_01"])
async def test_bad_paths_refused(
    client: httpx.AsyncClient, shaman: Shaman, outside: Path, path: str, endpoint: str
) -> None:
    checksum, size = put_blob(shaman, b"x")
    body = b"\n".join([_line("fine.txt", checksum, size), _line(path, checksum, size)])
    response = await client.post(endpoint, content=body, headers=TEXT)
    assert response.status_code == 400
    assert response.text.startswith("ERROR invalid line 2: ")
    assert files_under(shaman.config.checkout_dir) == set()
    assert files_under(outside) == set()


@pytest.mark.parametrize(
    "url",
    [
        f"/files/{'..%2F' * 10}{CS}/1",
        f"/files/..{CS}/1",
        f"/files/{CS}%00/1",
        f"/files/{'a' * 4096}/1",
        f"/files/{CS}/{'9' * 4096}",
        "/checkout/create/" + "x" * 4096,
        "/checkout/create/..%2F..%2Fetc",
        "/checkout/create/id%00x",
    ],
)
async def test_bad_url_parameters_refused(
    client: httpx.AsyncClient, shaman: Shaman, url: str
) -> None:
    response = await client.post(url, content=b"x", headers=TEXT)
    assert 400 <= response.status_code < 500
    assert files_under(shaman.config.checkout_dir) == set()
    assert files_under(shaman.store.root) == {"stored", "uploading"}


async def test_symlinked_fanout_directory_is_not_followed(
    client: httpx.AsyncClient, shaman: Shaman, outside: Path
) -> None:
    (shaman.config.checkout_dir / "er").symlink_to(outside)
    entry = CheckoutEntry(*put_blob(shaman, b"payload"), "file.txt")
    response = await client.post(
        "/checkout/create/jemoeder", content=format_definition([entry]), headers=TEXT
    )
    assert response.status_code == 400
    assert "symlink" in response.text
    assert files_under(outside) == set()


async def test_existing_symlinked_checkout_is_409(
    client: httpx.AsyncClient, shaman: Shaman, outside: Path
) -> None:
    (shaman.config.checkout_dir / "er").mkdir()
    (shaman.config.checkout_dir / "er" / "jemoeder").symlink_to(outside)
    response = await client.post("/checkout/create/jemoeder", content=b"", headers=TEXT)
    assert response.status_code == 409
    assert files_under(outside) == set()


async def test_symlink_planted_during_creation_is_not_followed(
    client: httpx.AsyncClient,
    shaman: Shaman,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = checkout_module._open_or_make_directory

    def racing(name: str, parent_fd: int, shown_as: str) -> int:
        if name == "sub":  # an attacker swaps in a symlink just before we open the dir
            os.symlink(outside, name, dir_fd=parent_fd)
        return real(name, parent_fd, shown_as)

    monkeypatch.setattr(checkout_module, "_open_or_make_directory", racing)
    entry = CheckoutEntry(*put_blob(shaman, b"payload"), "sub/file.txt")
    response = await client.post(
        "/checkout/create/racejob", content=format_definition([entry]), headers=TEXT
    )
    assert response.status_code == 400
    assert files_under(outside) == set()
    assert not (shaman.config.checkout_dir / "ob" / "racejob").exists()


async def test_two_creates_of_one_id_race_one_wins(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    import asyncio

    entries = [CheckoutEntry(*put_blob(shaman, b"%d" % i), f"d{i % 7}/f{i}") for i in range(300)]
    body = format_definition(entries)
    responses = await asyncio.gather(
        *(client.post("/checkout/create/samejob", content=body, headers=TEXT) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    checkout = shaman.config.checkout_dir / "ob" / "samejob"
    assert len([p for p in files_under(checkout) if p.count("/") == 1]) == 300


@pytest.mark.slow
async def test_hundred_thousand_line_definition(client: httpx.AsyncClient, shaman: Shaman) -> None:
    lines = [_line(f"dir{i % 50}/f{i}.bin", f"{i:064x}", i) for i in range(100_000)]
    response = await client.post(
        "/checkout/requirements",
        content=b"\n".join([*lines, b"x" * 20 + b" 1 ../up"]),
        headers=TEXT,
    )
    assert response.status_code == 400
    assert response.text.startswith("ERROR invalid line 100001: ")
    response = await client.post("/checkout/requirements", content=b"\n".join(lines), headers=TEXT)
    assert response.status_code == 200
    assert response.content.count(b"\n") == 100_000
    assert response.content.startswith(b"file-unknown dir0/f0.bin\n")
