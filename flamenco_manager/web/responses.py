"""How the manager spells answers on the wire: JSON documents and text errors, as Go wrote them."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from flamenco_protocol import codec

JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"
D = TypeVar("D")


def document(doc: Any, status: int = 200) -> Response:
    """A protocol document as JSON; Go's encoder ends every body with a newline."""
    return encoded_document(encode_document(doc), status)


def encode_document(doc: Any) -> bytes:
    """The body :func:`document` sends, for an answer sent often enough to encode once."""
    return codec.dumps(doc) + b"\n"


def encoded_document(body: bytes, status: int = 200) -> Response:
    """A document encoded by :func:`encode_document`."""
    return Response(body, status_code=status, media_type=JSON)


def text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A plain-text answer, newline-terminated like Go's ``http.Error``."""
    body = message if message.endswith("\n") or not message else message + "\n"
    return Response(body, status_code=status, media_type=TEXT, headers=headers)


def no_content() -> Response:
    """204."""
    return Response(status_code=204)


def header(request: Request, name: bytes) -> str | None:
    """The first value of a request header; ``name`` in lower case, as ASGI servers give names.

    What ``request.headers.get`` answers, without building Starlette's header mapping: the
    worker endpoints read two or three headers of every request.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def parse_json(text: str | bytes | bytearray) -> Any:
    """JSON text as Python values, exactly as :func:`flamenco_protocol.codec.parse_json` gives
    them (and raising what it raises), parsed by ``orjson`` where it can: a task update's log
    takes the standard parser three times as long. What ``orjson`` refuses goes to the standard
    parser, which accepts more (``NaN``, numbers beyond a float's range, UTF-16 text) or says what
    is wrong."""
    try:
        value = orjson.loads(text)
    except ValueError:
        return codec.parse_json(text)
    return codec.parse_json(text) if _needs_standard_parser(value) else value


def load_document(document: type[D], body: bytes) -> D:
    """A request body as a protocol document (:func:`flamenco_protocol.codec.loads`, parsed by
    :func:`parse_json`); raises :class:`~flamenco_protocol.errors.DecodeError`."""
    return codec.loads(document, body, parse=parse_json)


_BEYOND_64_BITS: Final = 2.0**63


def _needs_standard_parser(value: Any) -> bool:
    """Whether the standard parser could answer otherwise than orjson did for ``value``.

    orjson reads integers beyond 64 bits as floats, where the standard parser gives integers:
    such a float is a whole number of 2**63 or more; every other float is the same in both (the
    real worker reports its timings as floats). And orjson nests deeper than a document may
    (:data:`~flamenco_protocol.codec.MAX_NESTING`), where the standard parser says so.
    """
    level, depth = [value], 0  # level by level, not recursion: values may nest deep
    while level:
        below: list[Any] = []
        for item in level:
            if isinstance(item, float):
                if abs(item) >= _BEYOND_64_BITS and item.is_integer():
                    return True
            elif isinstance(item, (dict, list)):
                if depth == codec.MAX_NESTING:
                    return True
                below.extend(item.values() if isinstance(item, dict) else item)
        level, depth = below, depth + 1
    return False


class BodyTooLarge(Exception):
    """The request body is larger than the endpoint accepts."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading it all."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body larger than {limit} bytes")
    # The ASGI messages themselves: Request.stream() is an async generator, which the event loop
    # registers and finalizes, a cost each update paid for a body that comes in one message.
    chunks = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
