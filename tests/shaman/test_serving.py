"""The Shaman as `shaman serve` runs it (uvloop, `BodyPassingProtocol`), over real sockets."""

from __future__ import annotations

import gzip
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shaman_core.serving import (
    OPEN_FILES_ADVISED,
    BodyPassingProtocol,
    OpenFilesWatch,
    announce_open_files_limit,
    open_files_in_use,
    uvicorn_options,
)

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


# --- open files ----------------------------------------------------------------------------------


def test_open_files_in_use_counts_what_the_process_opens(tmp_path: Path) -> None:
    before = open_files_in_use()
    assert before is not None
    opened = [os.open(tmp_path / f"f{index}", os.O_CREAT | os.O_WRONLY) for index in range(40)]
    try:
        assert open_files_in_use() == before + 40
    finally:
        for descriptor in opened:
            os.close(descriptor)
    assert open_files_in_use() == before


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    resource = pytest.importorskip("resource")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    script = (
        "from shaman_core.serving import open_files_limit, raise_open_files_limit\n"
        "print(raise_open_files_limit(), open_files_limit())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    raised = 2**20 if hard == resource.RLIM_INFINITY else hard
    assert done.stdout.split() == ["(256,", f"{raised})", str(raised)]


@pytest.mark.parametrize(
    ("limit", "logged"),
    [
        (300, "may open only 300 files"),
        (OPEN_FILES_ADVISED - 1, f"may open only {OPEN_FILES_ADVISED - 1} files"),
        (OPEN_FILES_ADVISED, "open files limit"),
    ],
)
def test_the_limit_is_announced_and_a_low_one_warned_of(
    caplog: pytest.LogCaptureFixture, limit: int, logged: str
) -> None:
    logger = logging.getLogger("test.open_files")
    with caplog.at_level(logging.INFO, logger="test.open_files"):
        announce_open_files_limit((256, limit), logger)
    [record] = caplog.records
    assert logged in record.getMessage()
    assert record.levelno == (logging.INFO if limit >= OPEN_FILES_ADVISED else logging.WARNING)
    assert record.limit == limit  # type: ignore[attr-defined]


def test_the_watch_warns_near_the_limit_repeats_and_says_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_use = [100]
    watch = OpenFilesWatch(
        logging.getLogger("test.open_files"), limit=lambda: 1000, in_use=lambda: in_use[0], repeat=3
    )

    def levels_after(*counts: int) -> list[tuple[int, int]]:
        caplog.clear()
        for count in counts:
            in_use[0] = count
            watch.check()
        return [(record.levelno, record.open_files) for record in caplog.records]  # type: ignore[attr-defined]

    with caplog.at_level(logging.INFO, logger="test.open_files"):
        assert levels_after(100, 799) == []
        assert levels_after(800) == [(logging.WARNING, 800)]
        # Again after `repeat` more checks while high; not while between low and high.
        assert levels_after(850, 750, 900, 950) == []
        assert levels_after(960) == [(logging.WARNING, 960)]
        assert levels_after(700) == []
        assert levels_after(699) == [(logging.INFO, 699)]
        assert levels_after(500, 800) == [(logging.WARNING, 800)]


def test_the_watch_is_quiet_where_it_cannot_tell(caplog: pytest.LogCaptureFixture) -> None:
    unknown = OpenFilesWatch(logging.getLogger("test.open_files"), limit=lambda: None)
    with caplog.at_level(logging.INFO, logger="test.open_files"):
        unknown.check()
    assert caplog.records == []
