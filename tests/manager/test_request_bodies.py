"""Request bodies as the handlers read them: whole, in pieces, too large, or cut off."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from flamenco_manager.web.responses import BodyTooLarge, header, parse_json, read_body
from flamenco_protocol import codec

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


# --- JSON parsing: orjson where it can, the standard parser's answers always ------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None))  # lone surrogates included
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _outcome(parse: Callable[[Any], Any], text: str | bytes) -> tuple[str, str]:
    """What parsing gives, comparable (NaN included), or the exception type it raises."""
    try:
        return ("value", json.dumps(parse(text)))
    except Exception as exc:  # both parsers must raise the same kind of error
        return ("error", type(exc).__name__)


@settings(max_examples=300, deadline=None)
@given(
    value=_VALUES,
    ensure_ascii=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", None]),
)
def test_parse_json_gives_what_the_standard_parser_gives(
    value: object, ensure_ascii: bool, encoding: str | None
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    raw: str | bytes = text if encoding is None else text.encode(encoding, "surrogatepass")
    assert _outcome(parse_json, raw) == _outcome(codec.parse_json, raw)


_NUMBERS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)


@settings(max_examples=500, deadline=None)
@given(numbers=st.lists(_NUMBERS, min_size=1, max_size=4))
def test_parse_json_reads_every_number_as_the_standard_parser_does(numbers: list[str]) -> None:
    # Integers beyond 64 bits, floats beyond a float's range, whole floats, tiny ones.
    raw = "[" + ", ".join(numbers) + "]"
    assert _outcome(parse_json, raw) == _outcome(codec.parse_json, raw)


def test_timings_as_floats_are_parsed_without_the_standard_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real worker's updates carry timings as floats, with up to 32 MiB of log that the
    # standard parser takes three times as long to read.
    body = b'{"metrics": {"timing": {"total": 7.25, "blender": 1e3}}, "log": "frame 1"}'
    expected = json.loads(body)
    monkeypatch.setattr(codec, "parse_json", _refuse)
    assert parse_json(body) == expected


def _refuse(*_: object) -> object:
    raise AssertionError("the standard parser was used")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_parse_json_refuses_what_the_standard_parser_refuses(raw: bytes | str) -> None:
    assert _outcome(parse_json, raw) == _outcome(codec.parse_json, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b"NaN",
        b"[Infinity, -Infinity]",
        b'"\\ud800"',
        b"123456789012345678901234567890",
        b"1e400",
        b"\xef\xbb\xbf{}",
        "\ufeff{}",
        b"[" * 5000 + b"]" * 5000,
        b"[" * 1000 + b"1.5" + b"]" * 1000,
        b"[" * 900 + b"]" * 900,
        b"[" * 100 + b"]" * 100,
        b"[" * 101 + b"]" * 101,
        b'{"a": [' * 50 + b"1" + b"]}" * 50,
        b'{"a": [' * 50 + b"{}" + b"]}" * 50,
        b'{"\\udc80": 1}',
        b'["\\ud83d\\ude00"]',
        b"{} x",
        b"\xff",
    ],
)
def test_parse_json_on_the_edges_of_json(raw: bytes | str) -> None:
    assert _outcome(parse_json, raw) == _outcome(codec.parse_json, raw)
