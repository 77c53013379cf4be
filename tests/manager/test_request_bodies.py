"""Request bodies as the handlers read them: whole, in pieces, too large, or cut off."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from flamenco_manager.web.responses import BodyTooLarge, header, read_body

pytestmark = pytest.mark.anyio


def _request(messages: Sequence[Message], headers: dict[str, str] | None = None) -> Request:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/tasks/x/update",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive)


def _with_raw_headers(raw: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/task", "headers": raw})


def _piece(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_in_pieces_is_read_whole() -> None:
    request = _request([_piece(b'{"a":', True), _piece(b"", True), _piece(b" 1}", False)])
    assert await read_body(request, 100) == b'{"a": 1}'


async def test_a_body_larger_than_the_limit_is_refused_as_it_arrives() -> None:
    # No Content-Length: the pieces add up past the limit.
    request = _request([_piece(b"x" * 60, True), _piece(b"x" * 60, True)])
    with pytest.raises(BodyTooLarge, match="larger than 100 bytes"):
        await read_body(request, 100)


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request = _request([], headers={"content-length": "101"})
    with pytest.raises(BodyTooLarge):
        await read_body(request, 100)


async def test_a_client_that_goes_away_mid_body_is_a_disconnect() -> None:
    request = _request([_piece(b"half", True), {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnect):
        await read_body(request, 100)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([(b"user-agent", b"Flamenco-Worker/2.5")], "Flamenco-Worker/2.5"),
        ([(b"accept", b"*/*"), (b"user-agent", b"a"), (b"user-agent", b"b")], "a"),  # the first
        ([(b"user-agent", "Blender \xe9".encode("latin-1"))], "Blender \xe9"),  # latin-1
        ([(b"user-agent-x", b"no"), (b"accept", b"*/*")], None),
        ([], None),
    ],
)
def test_a_header_reads_as_starlette_reads_it(
    raw: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    request = _with_raw_headers(raw)
    assert header(request, b"user-agent") == expected == request.headers.get("user-agent")
