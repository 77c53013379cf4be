"""The latest image: the last frame a worker produced, shrunk to a JPEG for the dashboard (§11.5).

Workers report files they produced (``/output-produced``). Up to :data:`QUEUE_CAPACITY` paths
wait in a queue; more are dropped, as in the Go manager, because only the latest image matters.
One loop (:meth:`LatestImage.run`) converts them one at a time into a JPEG of at most 1920x1080
(never enlarged, quality 85), replaces the output file atomically, and tells every subscriber.

Only files under the configured roots are read, after resolving symbolic links: a worker must not
be able to make the manager read (and show) any file on its disk. A file that is not an image, or
is broken, is logged and skipped.

Formats: whatever Pillow reads (PNG, JPEG, TIFF, BMP, WebP, ... including 16-bit PNG and TIFF).
OpenEXR files are read when the ``OpenEXR`` package (with numpy) is installed; their linear
values are clipped to 0..1 and encoded with the sRGB curve. Without it, EXR files are logged and
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EVENT",
    "JPEG_QUALITY",
    "MAX_SIZE",
    "QUEUE_CAPACITY",
    "LatestImage",
    "convert_image",
    "exr_supported",
]

QUEUE_CAPACITY: Final = 3
"""Paths waiting for conversion; more are dropped."""
MAX_SIZE: Final = (1920, 1080)
"""The converted image fits in this box."""
JPEG_QUALITY: Final = 85
IMAGE_EVENT: Final = "latest-image.jpg"
"""What subscribers receive after each conversion: the SSE ``data`` of an ``image`` event."""

_SUBSCRIBER_BACKLOG: Final = 8
_log = logging.getLogger(__name__)


def exr_supported() -> bool:
    """Whether OpenEXR files can be read here (the ``OpenEXR`` package is installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("OpenEXR", "numpy"))


def convert_image(
    source: Path,
    target: Path,
    max_size: tuple[int, int] = MAX_SIZE,
    quality: int = JPEG_QUALITY,
) -> None:
    """Write ``source`` as a JPEG at ``target``, shrunk to fit ``max_size``, never enlarged.

    ``target`` is replaced atomically (a temporary file in its directory, then a rename), so a
    reader never sees half an image. Raises :class:`OSError` or :class:`ValueError` for files
    that cannot be read as images.
    """
    image = _read_exr(source) if source.suffix.lower() == ".exr" else _read_pillow(source, max_size)
    image.thumbnail(max_size, Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            image.save(file, "JPEG", quality=quality)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_pillow(source: Path, max_size: tuple[int, int]) -> Image.Image:
    with Image.open(source) as opened:
        # JPEG decoders can scale while decoding: far faster for large frames.
        opened.draft("RGB", max_size)
        image = ImageOps.exif_transpose(opened)
        image.load()
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer greys: scale to 8 bits rather than clipping everything to white.
        image = image.convert("I")
        shift = 1 / 256 if image.getextrema()[1] > 255 else 1  # type: ignore[operator]
        image = image.point(lambda value: value * shift).convert("L")
    elif image.mode == "F":
        image = image.point(lambda value: value * 255).convert("L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _read_exr(source: Path) -> Image.Image:
    try:
        # Optional packages, imported by name so that type checking never needs them installed.
        np = importlib.import_module("numpy")
        openexr = importlib.import_module("OpenEXR")
    except ImportError as exc:
        raise ValueError("reading EXR files needs the OpenEXR package") from exc
    with openexr.File(str(source), separate_channels=True) as exr:
        channels: dict[str, Any] = {name: c.pixels for name, c in exr.channels().items()}
    # Layered files name channels "layer.R"; take the first layer that has colour.
    by_suffix = {name.rpartition(".")[2].upper(): pixels for name, pixels in channels.items()}
    if all(key in by_suffix for key in "RGB"):
        planes = [by_suffix[key] for key in "RGB"]
    elif "Y" in by_suffix:
        planes = [by_suffix["Y"]] * 3
    elif channels:
        planes = [next(iter(channels.values()))] * 3
    else:
        raise ValueError(f"{source} has no image channels")
    linear = np.clip(np.stack([np.asarray(p, dtype=np.float32) for p in planes], axis=-1), 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return Image.fromarray((srgb * 255 + 0.5).astype(np.uint8), "RGB")


class LatestImage:
    """The queue, converter loop and subscribers of the latest image.

    Use it from one event loop: :meth:`offer` from request handlers, :meth:`run` as a background
    task, :meth:`subscribe` from the SSE route.
    """

    def __init__(
        self,
        output_path: Path,
        allowed_roots: Sequence[Path],
        *,
        capacity: int = QUEUE_CAPACITY,
        max_size: tuple[int, int] = MAX_SIZE,
        quality: int = JPEG_QUALITY,
    ) -> None:
        self.output_path = Path(output_path)
        """Where the converted JPEG goes (``<data_dir>/latest-image/latest-image.jpg``)."""
        self.allowed_roots = tuple(Path(root).resolve() for root in allowed_roots)
        """Only files under these directories are read."""
        self.max_size = max_size
        self.quality = quality
        self.converted = 0
        """How many images were converted since start."""
        self._queue: asyncio.Queue[Path] = asyncio.Queue(maxsize=capacity)
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._listeners: list[Callable[[Path], object]] = []

    @classmethod
    def in_data_dir(cls, data_dir: Path, allowed_roots: Sequence[Path]) -> LatestImage:
        """The latest image of a manager whose data directory is ``data_dir``."""
        return cls(data_dir / "latest-image" / "latest-image.jpg", allowed_roots)

    # Input

    def offer(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Queue produced files for conversion; return how many were queued (spec LI-01).

        Paths outside the allowed roots, or not absolute, are refused with a warning; paths that
        do not fit in the queue are dropped.
        """
        queued = 0
        for raw in paths:
            path = self._allowed(raw)
            if path is None:
                continue
            try:
                self._queue.put_nowait(path)
            except asyncio.QueueFull:
                _log.debug("latest-image queue full, dropping %s", path)
                continue
            queued += 1
        return queued

    def pending(self) -> list[Path]:
        """The queued paths, oldest first."""
        return list(self._queue._queue)  # type: ignore[attr-defined]

    def _allowed(self, raw: str | os.PathLike[str]) -> Path | None:
        path = Path(raw)
        if not path.is_absolute():
            _log.warning("latest image: refusing relative path %r", str(raw))
            return None
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:
            _log.warning("latest image: cannot resolve %r: %s", str(raw), exc)
            return None
        if not any(resolved.is_relative_to(root) for root in self.allowed_roots):
            _log.warning("latest image: refusing %r, outside the allowed roots", str(raw))
            return None
        return resolved

    # Processing

    async def run(self) -> None:
        """Convert queued files one at a time, for ever (cancel the task to stop)."""
        while True:
            path = await self._queue.get()
            try:
                await self.process(path)
            finally:
                self._queue.task_done()

    async def process(self, path: str | os.PathLike[str]) -> bool:
        """Convert one file now and tell the subscribers; ``False`` if refused or broken."""
        allowed = self._allowed(path)  # Again: a symlink may have changed since it was queued.
        if allowed is None:
            return False
        try:
            await asyncio.to_thread(
                convert_image, allowed, self.output_path, self.max_size, self.quality
            )
        except Exception as exc:  # Pillow raises many kinds for broken files.
            _log.warning("latest image: cannot convert %s: %s", allowed, exc)
            return False
        self.converted += 1
        self._notify()
        return True

    # Output

    def add_listener(self, callback: Callable[[Path], object]) -> None:
        """Call ``callback(output_path)`` after each conversion (errors are logged)."""
        self._listeners.append(callback)

    async def subscribe(self) -> AsyncIterator[str]:
        """Yield :data:`IMAGE_EVENT` after each conversion, until the caller stops iterating.

        A subscriber that falls behind loses the oldest events, never blocks the converter.
        """
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=_SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are listening."""
        return len(self._subscribers)

    def _notify(self) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(IMAGE_EVENT)
        for callback in self._listeners:
            try:
                callback(self.output_path)
            except Exception:
                _log.exception("latest image listener failed")
