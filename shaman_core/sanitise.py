"""Making client-supplied text safe to put in a log line."""

from __future__ import annotations

__all__ = ["sanitise_for_log"]


def sanitise_for_log(raw: bytes | str, *, limit: int = 256) -> str:
    """`raw` as one printable line: UTF-8 (else Latin-1) decoded, control and other
    non-printable characters escaped (``\\n`` becomes ``\\x0a``), cut to `limit` characters.

    Clients send ``X-Shaman-Original-Filename`` as raw bytes (BAT: Latin-1); escaping keeps a
    crafted name from forging log lines or terminal escape sequences.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    else:
        text = raw
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[: limit + 1])
    if len(text) > limit:
        return shown[:limit] + "…"
    return shown
