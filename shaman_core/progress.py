"""Upload progress: thread-safe counters and a one-line text bar (bytes, files, rate, ETA)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress", "ProgressBar", "format_bytes", "render_progress"]


def format_bytes(count: float) -> str:
    """Human-readable binary size: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _format_duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def render_progress(
    done_bytes: int,
    total_bytes: int,
    done_files: int,
    total_files: int,
    elapsed: float,
    *,
    stopped: bool = False,
) -> str:
    """The progress line, e.g. ``[#####-----]  50%  5.0 MiB/10.0 MiB  1/2 files
    2.5 MiB/s  ETA 0:00:02``; ``stopped`` ends it in "stopped" (an upload that failed)."""
    fraction = done_bytes / total_bytes if total_bytes else 1.0
    width = 20
    filled = int(fraction * width)
    rate = done_bytes / elapsed if elapsed > 0 else 0.0
    if stopped:
        eta = "stopped"
    elif fraction >= 1.0:
        eta = "done"
    elif rate > 0:
        eta = "ETA " + _format_duration((total_bytes - done_bytes) / rate)
    else:
        eta = "ETA --:--:--"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}  "
        f"{format_bytes(done_bytes)}/{format_bytes(total_bytes)}  "
        f"{done_files}/{total_files} files  {format_bytes(rate)}/s  {eta}"
    )


class Progress:
    """Counters updated from upload threads; `on_change` is called after each update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total_bytes = 0
        self.total_files = 0
        self.done_bytes = 0
        self.done_files = 0
        self.started = time.monotonic()

    def add_work(self, files: int, size: int) -> None:
        """More files/bytes to send."""
        with self._lock:
            self.total_files += files
            self.total_bytes += size
        self.on_change()

    def advance(self, size: int) -> None:
        """`size` more bytes were sent."""
        with self._lock:
            self.done_bytes += size
        self.on_change()

    def retract(self, size: int) -> None:
        """Bytes counted for an upload that did not complete (deferred or failed)."""
        with self._lock:
            self.done_bytes -= size
            self.total_bytes -= size
            self.total_files -= 1
        self.on_change()

    def file_done(self) -> None:
        """One more file completely sent."""
        with self._lock:
            self.done_files += 1
        self.on_change()

    def line(self, *, stopped: bool = False) -> str:
        """The current progress line (see :func:`render_progress`)."""
        with self._lock:
            return render_progress(
                self.done_bytes,
                self.total_bytes,
                self.done_files,
                self.total_files,
                time.monotonic() - self.started,
                stopped=stopped,
            )

    def on_change(self) -> None:
        """Called after every change; subclasses redraw."""


class ProgressBar(Progress):
    """A `Progress` that redraws its line on a terminal stream at most ten times a second."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.1) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last_draw = 0.0

    def on_change(self) -> None:
        """Redraw if the last drawing is old enough."""
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self.draw()

    def draw(self, *, stopped: bool = False) -> None:
        """Write the line now (carriage return, no newline)."""
        self.stream.write("\r" + self.line(stopped=stopped))
        self.stream.flush()

    def close(self, *, stopped: bool = False) -> None:
        """Draw the final state and end the line; ``stopped`` when the upload failed, so that
        the line does not say "done"."""
        self.draw(stopped=stopped)
        self.stream.write("\n")
        self.stream.flush()
