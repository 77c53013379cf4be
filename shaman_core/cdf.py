"""Checkout definition files (CDF): one ``<checksum> <size> <path>`` line per file.

The rules kept here (spec/shaman.md §5, with the deliberate differences listed in
docs/compatibility.md):

* lines are split on ``\\n`` only; every physical line counts for error line numbers, blank ones
  included; each line is trimmed of white space (Go's Unicode set), so CRLF endings are fine and
  a final line without a newline is still read;
* a line is split on single spaces into exactly three parts; the path keeps inner spaces and is
  trimmed again;
* checksums are 16 to 200 ASCII letters and digits; sizes are non-negative 64-bit decimals;
* paths are relative POSIX paths whose components are neither empty, ``.`` nor ``..``; they hold
  no NUL, do not start with a drive letter, and no component exceeds 255 bytes. ``..`` inside a
  name (``shot..v2.png``) is fine;
* a path listed twice with the same content is kept once; with different content, or used both
  as a file and as a directory, it is an error naming both lines.

Paths are text decoded from UTF-8 with ``surrogateescape``, so any byte string round-trips to the
same bytes on the wire and on a POSIX filesystem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import attrs

from shaman_core.errors import DefinitionError

__all__ = [
    "CheckoutEntry",
    "DefinitionReader",
    "format_definition",
    "parse_definition",
    "parse_size",
    "validate_path",
]

# Go's unicode.IsSpace set; Python's str.strip() would also strip \x1c-\x1f.
_GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CHECKSUM = re.compile(r"[A-Za-z0-9]{16,200}")
_SIZE = re.compile(r"[+-]?[0-9]+")
_DRIVE_LETTER = re.compile(r"[A-Za-z]:")
_MAX_INT64 = 2**63 - 1
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 3072
_NOT_CLEAN = "paths must be clean and not have any .. in them."


@attrs.frozen
class CheckoutEntry:
    """One file of a checkout: the blob (`checksum`, `size`) to link at relative `path`."""

    checksum: str
    size: int
    path: str

    @property
    def key(self) -> tuple[str, int]:
        """The blob identity: equal keys are the same stored file."""
        return (self.checksum, self.size)

    def format(self) -> bytes:
        """This entry as one CDF line, without the line ending."""
        return f"{self.checksum} {self.size} {self.path}".encode("utf-8", "surrogateescape")


def parse_size(text: str) -> int | None:
    """Parse a decimal file size like Go's ParseInt; None when invalid or negative."""
    if not _SIZE.fullmatch(text):
        return None
    value = int(text)
    if value < 0 or value > _MAX_INT64:
        return None
    return value


def validate_path(path: str) -> str | None:
    """Return why `path` is not an acceptable checkout path, or None when it is fine."""
    if not path:
        return "empty path"
    if "\x00" in path:
        return "path contains a NUL byte"
    if path.startswith("/"):
        return "no absolute paths allowed"
    if _DRIVE_LETTER.match(path):
        return "drive-letter paths are not allowed"
    length = len(path.encode("utf-8", "surrogateescape"))
    if length > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES} bytes"
    for component in path.split("/"):
        if component in ("", ".", ".."):
            return _NOT_CLEAN
        if length > MAX_COMPONENT_BYTES and (
            len(component.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES
        ):
            return f"path component longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def _parse_line(raw: bytes, line_number: int) -> CheckoutEntry | None:
    line = raw.decode("utf-8", "surrogateescape").strip(_GO_WHITESPACE)
    if not line:
        return None
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise DefinitionError(
            f"line should consist of three space-separated parts, not {len(parts)}: {line}",
            line_number,
        )
    checksum, size_text, path = parts
    if not _CHECKSUM.fullmatch(checksum):
        raise DefinitionError("invalid checksum", line_number)
    size = parse_size(size_text)
    if size is None:
        raise DefinitionError("invalid file size", line_number)
    path = path.strip(_GO_WHITESPACE)
    problem = validate_path(path)
    if problem is not None:
        raise DefinitionError(problem, line_number)
    return CheckoutEntry(checksum, size, path)


class DefinitionReader:
    """Incremental CDF parser: feed it body chunks, read the entries when done.

    Duplicate paths with equal content are dropped (first one kept); conflicting ones raise.
    The first error stops parsing, so line numbers name the first bad line.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._line_number = 0
        self._entries: list[CheckoutEntry] = []
        self._file_lines: dict[str, tuple[int, CheckoutEntry]] = {}
        self._directory_lines: dict[str, int] = {}

    @property
    def lines_read(self) -> int:
        """Physical lines read so far."""
        return self._line_number

    def feed(self, chunk: bytes) -> None:
        """Parse every complete line in `chunk` (plus what was pending)."""
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for raw in lines:
            self._add_line(raw)

    def finish(self) -> list[CheckoutEntry]:
        """Parse the final line (which needs no newline) and return all entries in CDF order."""
        if self._pending:
            pending, self._pending = self._pending, b""
            self._add_line(pending)
        return self._entries

    def _add_line(self, raw: bytes) -> None:
        self._line_number += 1
        entry = _parse_line(raw, self._line_number)
        if entry is None:
            return
        line = self._line_number
        earlier = self._file_lines.get(entry.path)
        if earlier is not None:
            earlier_line, earlier_entry = earlier
            if earlier_entry.key != entry.key:
                raise DefinitionError(
                    f"path {entry.path!r} is listed with different content on line {earlier_line}",
                    line,
                )
            return
        if entry.path in self._directory_lines:
            raise DefinitionError(
                f"path {entry.path!r} is a directory of the file on line "
                f"{self._directory_lines[entry.path]}",
                line,
            )
        parent_dir = entry.path.rpartition("/")[0]
        # A known parent directory had its own parents checked when it was first seen.
        for parent in () if parent_dir in self._directory_lines else _parents(entry.path):
            clash = self._file_lines.get(parent)
            if clash is not None:
                raise DefinitionError(
                    f"path {entry.path!r} is inside {parent!r}, a file on line {clash[0]}", line
                )
            self._directory_lines.setdefault(parent, line)
        self._file_lines[entry.path] = (line, entry)
        self._entries.append(entry)


def _parents(path: str) -> Iterator[str]:
    index = path.find("/")
    while index != -1:
        yield path[:index]
        index = path.find("/", index + 1)


def parse_definition(data: bytes | Iterable[bytes]) -> list[CheckoutEntry]:
    """Parse a whole CDF (bytes, or an iterable of byte chunks) into its entries.

    Raises `DefinitionError` naming the first bad line.
    """
    reader = DefinitionReader()
    if isinstance(data, bytes):
        reader.feed(data)
    else:
        for chunk in data:
            reader.feed(chunk)
    return reader.finish()


def format_definition(entries: Iterable[CheckoutEntry], *, trailing_newline: bool = True) -> bytes:
    """Format entries as a CDF body, one line each, in the given order."""
    body = b"\n".join(entry.format() for entry in entries)
    if trailing_newline and body:
        body += b"\n"
    return body
