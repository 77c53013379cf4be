"""The Shaman as `shaman serve` runs it (uvloop, `BodyPassingProtocol`), over real sockets."""

from __future__ import annotations

import gzip
import os
import socket
import time

import pytest

from shaman_core.serving import BodyPassingProtocol, uvicorn_options

from .conftest import LiveShaman, sha256


def test_options_pick_uvloop_and_the_body_passing_protocol() -> None:
    pytest.importorskip("uvloop")
    assert uvicorn_options() == {"loop": "uvloop", "http": BodyPassingProtocol}


def _request(live: LiveShaman, token: str, head: str, body_parts: list[bytes]) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", live.port))
    conn.sendall(head.replace("\n", "\r\n").format(token=token).encode() + b"\r\n")
    for index, part in enumerate(body_parts):
        conn.sendall(part)
        if index % 50 == 0:
            time.sleep(0.001)  # pieces arrive alone, or several in one event-loop turn
    return conn


def _read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _post_head(checksum: str, size: int, extra: str = "") -> str:
    return (
        f"POST /files/{checksum}/{size} HTTP/1.1\nHost: shaman\n"
        f"Authorization: Bearer {{token}}\n{extra}"
    )


@pytest.mark.parametrize("part_size", [7, 4096, 300_000, 5 << 20])
def test_body_in_any_pieces_is_stored_and_the_connection_reused(
    live: LiveShaman, token: str, part_size: int
) -> None:
    payload = os.urandom((9 << 20) + 123 if part_size > 4096 else 50_000)
    checksum = sha256(payload)
    parts = [payload[i : i + part_size] for i in range(0, len(payload), part_size)]
    head = _post_head(checksum, len(payload), f"Content-Length: {len(payload)}\n")
    with _request(live, token, head, parts) as conn:
        assert _read_response(conn)[0] == 204
        # The same connection serves the next request: nothing of the body was left over.
        conn.sendall(
            f"GET /files/{checksum}/{len(payload)} HTTP/1.1\r\nHost: shaman\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        status, _, body = _read_response(conn)
    assert status == 200
    assert body == payload
    assert live.shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload


def test_chunked_gzip_body_is_stored(live: LiveShaman, token: str) -> None:
    payload = os.urandom(6 << 20)
    checksum = sha256(payload)
    packed = gzip.compress(payload, compresslevel=1)
    chunks = [packed[i : i + 200_000] for i in range(0, len(packed), 200_000)]
    encoded = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks] + [b"0\r\n\r\n"]
    head = _post_head(
        checksum, len(payload), "Transfer-Encoding: chunked\nContent-Encoding: gzip\n"
    )
    with _request(live, token, head, encoded) as conn:
        assert _read_response(conn)[0] == 204
    assert live.shaman.store.blob_path(checksum, len(payload)).read_bytes() == payload


def test_wrong_checksum_is_417_and_nothing_is_stored(live: LiveShaman, token: str) -> None:
    payload = os.urandom(9 << 20)
    checksum = sha256(payload + b"!")
    head = _post_head(checksum, len(payload), f"Content-Length: {len(payload)}\n")
    with _request(live, token, head, [payload]) as conn:
        status, _, body = _read_response(conn)
    assert (status, body) == (417, b"Declared and actual checksums differ\n")
    assert not live.shaman.store.blob_path(checksum, len(payload)).exists()


def test_longer_body_than_declared_is_417(live: LiveShaman, token: str) -> None:
    payload = os.urandom(9 << 20)
    declared = len(payload) - 5000
    head = _post_head(sha256(payload), declared, f"Content-Length: {len(payload)}\n")
    with _request(live, token, head, [payload]) as conn:
        status, headers, _ = _read_response(conn)
    assert status == 417
    assert headers["connection"] == "close"
