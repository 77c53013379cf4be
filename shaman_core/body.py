"""Request-body decoding for the Shaman endpoints: identity or gzip, decompressed in bounded
pieces so that a small compressed body cannot balloon in memory."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from shaman_core.errors import InvalidRequestError

__all__ = ["BodyDecoder", "body_decoder"]

_PIECE = 1 << 20


class BodyDecoder:
    """Turns received body chunks into content bytes; `finish` checks the stream is complete."""

    def __init__(self, gzipped: bool) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._seen_input = False

    def decode(self, chunk: bytes) -> list[bytes]:
        """The content bytes in `chunk` (for gzip, in pieces of at most 1 MiB)."""
        if self._inflater is None:
            return [chunk] if chunk else []
        if not chunk:
            return []
        self._seen_input = True
        pieces: list[bytes] = []
        data = chunk
        try:
            while data:
                if self._inflater.eof:
                    raise InvalidRequestError("gzip: data after the end of the gzip stream")
                piece = self._inflater.decompress(data, _PIECE)
                if piece:
                    pieces.append(piece)
                data = self._inflater.unconsumed_tail
        except zlib.error as error:
            raise InvalidRequestError(f"gzip: invalid data ({error})") from None
        return pieces

    def finish(self) -> list[bytes]:
        """Whatever content is left; raises `InvalidRequestError` for a truncated gzip body."""
        if self._inflater is None:
            return []
        if not self._seen_input:
            raise InvalidRequestError("EOF")
        try:
            rest = self._inflater.flush()
        except zlib.error as error:  # pragma: no cover - flush only raises on internal errors
            raise InvalidRequestError(f"gzip: invalid data ({error})") from None
        if not self._inflater.eof:
            raise InvalidRequestError("unexpected EOF")
        return [rest] if rest else []


def body_decoder(headers: Mapping[str, str]) -> BodyDecoder:
    """The decoder for a request's ``Content-Encoding`` (400 when not identity or gzip)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return BodyDecoder(gzipped=False)
    if encoding == "gzip":
        return BodyDecoder(gzipped=True)
    raise InvalidRequestError("Content-Encoding not supported")
