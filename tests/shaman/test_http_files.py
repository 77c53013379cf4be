"""`/files/{checksum}/{filesize}`: upload, status probe and download over HTTP
(spec/shaman.md §4.3-4.5, §12 items 17-21)."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from shaman_core.config import Shaman
from shaman_core.store import BlobStatus
from tests.support import http_scope

from .conftest import files_under, put_blob, sha256

pytestmark = pytest.mark.anyio

HAHAHA = "hähähä".encode()
HAHAHA_SUM = "05b373f2ab421a112c779258ea456c17160fcc1d0fe0bb8282de26122873f6e2"
FAKE_SUM = "da-checksum-is-long-enough-like-this"
GZIP = {"Content-Encoding": "gzip"}


async def test_gzip_upload_with_wrong_checksum_is_417_and_leaves_nothing(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    response = await client.post(
        f"/files/{FAKE_SUM}/9", content=gzip.compress(HAHAHA), headers=GZIP
    )
    assert response.status_code == 417
    assert response.text == "Declared and actual checksums differ\n"
    assert shaman.store.status(FAKE_SUM, 9) is BlobStatus.UNKNOWN
    assert files_under(shaman.store.root) == {"stored", "uploading"}


async def test_gzip_upload_stores_uncompressed_payload(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    response = await client.post(
        f"/files/{HAHAHA_SUM}/9", content=gzip.compress(HAHAHA), headers=GZIP
    )
    assert response.status_code == 204
    assert response.headers["x-user-id-from-token"] == "user-ID"
    assert shaman.store.status(HAHAHA_SUM, 9) is BlobStatus.STORED
    assert shaman.store.blob_path(HAHAHA_SUM, 9).read_bytes() == HAHAHA


async def test_get_serves_stored_blob_without_rehashing(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    blob = shaman.store.blob_path(FAKE_SUM, 9)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(HAHAHA)
    response = await client.get(f"/files/{FAKE_SUM}/9")
    assert response.status_code == 200
    assert response.content == HAHAHA
    assert response.headers["etag"] == f"'{FAKE_SUM}-9'"
    assert response.headers["x-shaman-checksum"] == FAKE_SUM
    assert response.headers["content-type"] == "application/binary"
    assert (await client.get(f"/files/{HAHAHA_SUM}/9")).status_code == 404


async def test_size_mismatch_checked_before_checksum(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/files/{FAKE_SUM}/10", content=HAHAHA)
    assert response.status_code == 417
    assert response.text == "Received 9 bytes but you promised 10\n"


async def test_longer_body_than_declared_is_417(client: httpx.AsyncClient, shaman: Shaman) -> None:
    payload = os.urandom(3 << 20)
    response = await client.post(f"/files/{sha256(payload)}/1000", content=payload)
    assert response.status_code == 417
    assert "promised" in response.text
    assert files_under(shaman.store.root) == {"stored", "uploading"}


async def test_already_stored_is_208_with_location(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    checksum, size = put_blob(shaman, b"hello")
    response = await client.post(f"/files/{checksum}/{size}?x=1", content=b"hello")
    assert response.status_code == 208
    assert response.text == "File already stored\n"
    assert response.headers["location"] == f"/files/{checksum}/{size}?x=1"


async def test_being_uploaded_with_defer_header_is_208_without_location(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    payload = b"someone else is sending this"
    checksum = sha256(payload)
    with shaman.store.begin_upload(checksum, len(payload)):
        deferred = await client.post(
            f"/files/{checksum}/{len(payload)}",
            content=payload,
            headers={"X-Shaman-Can-Defer-Upload": "true"},
        )
        assert deferred.status_code == 208
        assert deferred.text == "File being uploaded, please defer\n"
        assert "location" not in deferred.headers
        probe = await client.options(f"/files/{checksum}/{len(payload)}")
        assert probe.status_code == 420
        # Without the header a parallel upload is accepted into its own temp file.
        parallel = await client.post(f"/files/{checksum}/{len(payload)}", content=payload)
        assert parallel.status_code == 204
    assert shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload


async def test_options_probe(client: httpx.AsyncClient, shaman: Shaman) -> None:
    checksum, size = put_blob(shaman, b"stored")
    assert (await client.options(f"/files/{checksum}/{size}")).status_code == 200
    assert (await client.options(f"/files/{'f' * 64}/3")).status_code == 404
    assert (await client.options(f"/files/{'f' * 64}/x")).status_code == 400


async def test_chunked_bodies_including_empty(client: httpx.AsyncClient, shaman: Shaman) -> None:
    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    async def empty() -> AsyncIterator[bytes]:
        return
        yield b""

    payload = os.urandom(5000)
    response = await client.post(f"/files/{sha256(payload)}/5000", content=chunks(payload))
    assert response.status_code == 204
    response = await client.post(f"/files/{sha256(b'')}/0", content=empty())
    assert response.status_code == 204
    assert shaman.store.blob_path(sha256(b""), 0).read_bytes() == b""


@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [
        ("/files/abc/1", {}, 400, "checksum suspiciously short\n"),
        (f"/files/{'a' * 64}/-1", {}, 400, "invalid filesize\n"),
        (f"/files/{'a' * 64}/1_0", {}, 400, "invalid filesize\n"),
        (
            f"/files/{'a' * 64}/1",
            {"Content-Encoding": "br"},
            400,
            "Content-Encoding not supported\n",
        ),
        (f"/files/{'..' * 20}/1", {}, 400, None),
        (f"/files/{'a' * 64}/1", {"Content-Encoding": "gzip"}, 400, None),
    ],
)
async def test_bad_requests_are_400(
    client: httpx.AsyncClient,
    shaman: Shaman,
    path: str,
    headers: dict[str, str],
    status: int,
    message: str | None,
) -> None:
    response = await client.post(path, content=b"x", headers=headers)
    assert response.status_code == status
    if message is not None:
        assert response.text == message
    assert files_under(shaman.store.root) == {"stored", "uploading"}


async def test_truncated_gzip_is_400(client: httpx.AsyncClient, shaman: Shaman) -> None:
    body = gzip.compress(HAHAHA)[:-6]
    response = await client.post(f"/files/{HAHAHA_SUM}/9", content=body, headers=GZIP)
    assert response.status_code == 400
    assert files_under(shaman.store.root) == {"stored", "uploading"}


async def test_original_filename_is_sanitised_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="shaman_core.asgi")
    response = await client.post(
        f"/files/{HAHAHA_SUM}/9",
        content=HAHAHA,
        headers={"X-Shaman-Original-Filename": "evil\r\nFAKE LOG LINE \x1b[31m".encode("latin-1")},
    )
    assert response.status_code == 204
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name == "shaman_core.asgi"
    )
    assert "evil\\x0d\\x0aFAKE LOG LINE \\x1b[31m" in logged
    assert "\n" not in logged.split("evil", 1)[1]


async def test_methods_not_served(client: httpx.AsyncClient) -> None:
    assert (await client.put(f"/files/{HAHAHA_SUM}/9", content=b"")).status_code == 405
    assert (await client.get("/checkout/requirements")).status_code == 405
    assert (await client.get("/nothing-here")).status_code == 404


async def test_large_chunked_upload_streams_through_buffers(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    payload = os.urandom(9 * 2**20 + 4321)

    async def odd_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 333_333):
            yield payload[start : start + 333_333]

    response = await client.post(f"/files/{sha256(payload)}/{len(payload)}", content=odd_chunks())
    assert response.status_code == 204
    assert shaman.store.blob_path(sha256(payload), len(payload)).read_bytes() == payload


async def test_upload_stops_with_208_once_someone_else_stored_the_blob(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    payload = os.urandom(9 * 2**20)
    checksum = sha256(payload)

    async def slow_body() -> AsyncIterator[bytes]:
        for index, start in enumerate(range(0, len(payload), 2**20)):
            if index == 2:
                put_blob(shaman, payload)  # another upload finishes first
            yield payload[start : start + 2**20]

    response = await client.post(f"/files/{checksum}/{len(payload)}", content=slow_body())
    assert response.status_code == 208
    assert response.headers["location"] == f"/files/{checksum}/{len(payload)}"
    assert shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload
    assert files_under(shaman.store.uploading_dir) == set()


async def test_failed_upload_does_not_disturb_a_parallel_one(
    client: httpx.AsyncClient, shaman: Shaman
) -> None:
    import asyncio

    payload = os.urandom(6 * 2**20)
    checksum = sha256(payload)
    url = f"/files/{checksum}/{len(payload)}"

    async def body(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 2**19):
            await asyncio.sleep(0.005)
            yield data[start : start + 2**19]

    corrupt = payload[:-1] + bytes([payload[-1] ^ 0xFF])  # always another last byte
    good, bad = await asyncio.gather(
        client.post(url, content=body(payload)), client.post(url, content=body(corrupt))
    )
    assert bad.status_code == 417
    assert good.status_code == 204
    assert shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload


async def test_client_going_away_mid_definition(shaman: Shaman, token: str) -> None:
    from shaman_core.asgi import create_app

    app = create_app(shaman.config, run_gc=False)
    messages = iter(
        [
            {"type": "http.request", "body": b"a" * 20 + b" 1 one\n", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"text/plain"), (b"authorization", f"Bearer {token}".encode())]
    await app(http_scope("POST", "/checkout/requirements", headers), receive, send)
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"ERROR context canceled\n\n"


async def test_full_disk_is_a_clear_507(
    client: httpx.AsyncClient, shaman: Shaman, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from shaman_core.store import BlobUpload

    def no_space(self: BlobUpload, chunk: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(BlobUpload, "store_chunk", no_space)
    response = await client.post(f"/files/{HAHAHA_SUM}/9", content=HAHAHA)
    assert response.status_code == 507
    assert response.text == "I/O error: No space left on device\n"
    assert files_under(shaman.store.root) == {"stored", "uploading"}
