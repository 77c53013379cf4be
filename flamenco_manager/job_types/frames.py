"""Frame ranges: parsing ``"1-10,20"``, cutting frame lists into chunks, writing chunks back.

These follow the Flamenco 2 Server's helpers (spec/jobs.md §2.0) for every range it accepted and
used correctly:

- the parsed list is sorted and keeps duplicates; ``"1-30, 40-44"`` (spaces, tabs, line breaks)
  is fine;
- chunks are consecutive slices of the sorted list, so a chunk may span a gap (``[4, 5, 8]``);
- a chunk is written back with runs of three or more frames as ``A-B`` (``A..B`` in Blender
  style), runs of two as ``A,B`` and single frames as ``A``.

Where the Server silently did something odd, parsing refuses instead, with a message naming the
bad part: a reversed range (``5-1`` gave no frames), a part with two dashes (``1-2-3`` was
skipped), anything but ASCII digits (Python's ``int`` took ``+5``, ``1_0`` and other scripts'
digits; Blender does not). Parsing also refuses ranges of more than ``max_frames`` frames, counted
before expanding, so ``0-999999999`` costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Final

__all__ = [
    "MAX_FRAMES",
    "FrameRangeError",
    "frame_range_count",
    "frame_range_merge",
    "frame_range_parse",
    "frame_range_start_end",
    "iter_frame_range",
]

MAX_FRAMES: Final = 1_000_000
"""The most frames one range may select."""

# Blanks as int() strips them (ASCII only): "1-10\n" from a file worked on the Server.
_BLANK: Final = r"[ \t\r\n\f\v]*"
_PART: Final = re.compile(f"{_BLANK}([0-9]+){_BLANK}(?:-{_BLANK}([0-9]+){_BLANK})?")
# Frame numbers longer than this are refused before int() sees them: no render has them, and
# int() on thousands of digits is slow.
_MAX_DIGITS: Final = 9


class FrameRangeError(ValueError):
    """A frame range string that cannot be parsed; the message names the bad part."""


def _parts(frame_range: str) -> list[tuple[int, int]]:
    if not frame_range.strip():
        return []
    parts: list[tuple[int, int]] = []
    for part in frame_range.split(","):
        match = _PART.fullmatch(part)
        if match is None:
            raise FrameRangeError(
                f"{part.strip()!r} is not a frame number or a range like 1-10 (in {frame_range!r})"
            )
        start_text, end_text = match.group(1), match.group(2) or match.group(1)
        if len(start_text) > _MAX_DIGITS or len(end_text) > _MAX_DIGITS:
            raise FrameRangeError(f"{part.strip()!r}: frame numbers have at most 9 digits")
        start, end = int(start_text), int(end_text)
        if end < start:
            raise FrameRangeError(f"{part.strip()!r}: the range ends before it starts")
        parts.append((start, end))
    return parts


def frame_range_count(frame_range: str) -> int:
    """How many frames ``frame_range`` selects (duplicates count), without expanding it."""
    return sum(end - start + 1 for start, end in _parts(frame_range))


def frame_range_start_end(frame_range: str) -> tuple[int, int] | None:
    """The first and last frame of ``frame_range``, or ``None`` if it selects none."""
    parts = _parts(frame_range)
    if not parts:
        return None
    return min(start for start, _ in parts), max(end for _, end in parts)


def frame_range_parse(frame_range: str, *, max_frames: int = MAX_FRAMES) -> list[int]:
    """Every frame of ``frame_range``, sorted, duplicates kept.

    ``"1,3-5,8"`` gives ``[1, 3, 4, 5, 8]``; an empty (or blank) string gives ``[]``.
    Raises :class:`FrameRangeError` for anything else that is not a range, or for more than
    ``max_frames`` frames.
    """
    parts = _parts(frame_range)
    count = sum(end - start + 1 for start, end in parts)
    if count > max_frames:
        raise FrameRangeError(
            f"{frame_range!r} selects {count} frames; at most {max_frames} are allowed"
        )
    frames: list[int] = []
    for start, end in parts:
        frames.extend(range(start, end + 1))
    frames.sort()
    return frames


def frame_range_merge(frames: Sequence[int], *, blender_style: bool = False) -> str:
    """Write a sorted frame list back as a range string.

    Runs of three or more consecutive frames become ``A-B`` (``A..B`` with ``blender_style``,
    the notation Blender's ``--render-frame`` takes), a run of two stays ``A,B``.
    ``[1, 2, 3, 5, 6, 9]`` gives ``"1-3,5,6,9"``.
    """
    if not frames:
        return ""
    separator = ".." if blender_style else "-"
    pieces: list[str] = []

    def close(start: int, end: int) -> None:
        if start == end:
            pieces.append(str(start))
        elif start + 1 == end:
            pieces.extend((str(start), str(end)))
        else:
            pieces.append(f"{start}{separator}{end}")

    start = previous = frames[0]
    for frame in frames[1:]:
        if frame != previous + 1:
            close(start, previous)
            start = frame
        previous = frame
    close(start, previous)
    return ",".join(pieces)


def iter_frame_range(
    frame_range: str, chunk_size: int, *, max_frames: int = MAX_FRAMES
) -> Iterator[list[int]]:
    """The frames of ``frame_range`` in chunks of ``chunk_size``; only the last may be shorter."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    frames = frame_range_parse(frame_range, max_frames=max_frames)
    for index in range(0, len(frames), chunk_size):
        yield frames[index : index + chunk_size]
