"""The latest image: the last frame a worker produced, shrunk to a JPEG for the dashboard (§11.5).

Workers report files they produced (``/output-produced``). Up to :data:`QUEUE_CAPACITY` paths
wait in a queue; more are dropped, as in the Go manager, because only the latest image matters.
One loop (:meth:`LatestImage.run`) converts them one at a time into a JPEG of at most 1920x1080
(never enlarged, quality 85), replaces the output file atomically, and tells every subscriber.

Only regular files under the configured roots are read, after resolving symbolic links: a worker
must not be able to make the manager read (and show) any file on its disk, nor make it wait for
ever on a named pipe. A file that is not an image, is broken, or has more than
:data:`MAX_PIXELS` pixels, is logged and skipped.

Memory stays a small multiple of the decoded frame: a large frame is first reduced by a whole
factor to at least twice its output size (JPEGs already while they are decoded), and only then
converted and filtered. An OpenEXR file is read a strip of scanlines at a time, and only its
three colour channels: a 12,000 x 12,000 RGBA EXR of 1.2 MB took 8.3 GB to convert when read
whole (0.15 GB in strips), a 12,000 x 12,000 RGBA PNG of 0.5 MB 3.4 GB when converted before it
was reduced (0.7 GB, 0.55 GB of which is the decoded frame).

Formats: whatever Pillow reads (PNG, JPEG, TIFF, BMP, WebP, ... including 16-bit PNG and TIFF).
OpenEXR files are read when the ``OpenEXR`` package (with numpy) is installed; their linear
values are clipped to 0..1 (NaN as 0) and encoded with the sRGB curve. Without it, EXR files are
logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EVENT",
    "JPEG_QUALITY",
    "MAX_PIXELS",
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
MAX_PIXELS: Final = 178_956_970
"""Larger images are refused before they are decoded (Pillow's own refusal threshold: a 16K
frame, 15,360 x 8,640, is 132.7 million pixels)."""
IMAGE_EVENT: Final = "latest-image.jpg"
"""What subscribers receive after each conversion: the SSE ``data`` of an ``image`` event."""

_SUBSCRIBER_BACKLOG: Final = 8
_EXR_STRIP_ROWS: Final = 256
"""Scanlines of an EXR file read at a time (about 12 MB for three float channels at 4K)."""
_REDUCE_BAND_ROWS: Final = 512
_REDUCIBLE_MODES: Final = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"})
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
    that cannot be read as images: not regular files, broken, or larger than :data:`MAX_PIXELS`.
    """
    with _opened_regular_file(source) as file:
        if source.suffix.lower() == ".exr":
            image = _read_exr(source, max_size)
        else:
            image = _read_pillow(file, source, max_size)
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


def _opened_regular_file(source: Path) -> Any:
    """``source`` opened for reading; :class:`ValueError` unless it is a regular file.

    Opened without blocking: opening a named pipe for reading would otherwise wait for a writer,
    and stop the converter for good.
    """
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{source} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_pixels(source: object, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"{source} has no pixels ({width} x {height})")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{source} is too large: {width} x {height} is more than {MAX_PIXELS} pixels"
        )


def _reduction(size: tuple[int, int], max_size: tuple[int, int]) -> int:
    """The largest whole factor that leaves ``size`` at least twice as large as it will be once
    shrunk to fit ``max_size`` (1 when there is none)."""
    shrink = max(size[0] / max_size[0], size[1] / max_size[1])
    return max(1, int(shrink // 2))


def _read_pillow(file: Any, source: Path, max_size: tuple[int, int]) -> Image.Image:
    with Image.open(file) as opened:
        _check_pixels(source, opened.size)
        # JPEG decoders can scale while decoding: far faster for large frames.
        opened.draft("RGB", max_size)
        opened.load()
        # In place: without a rotation to apply, as most images have, no copy is made.
        ImageOps.exif_transpose(opened, in_place=True)
        image: Image.Image = opened
        factor = _reduction(image.size, max_size)
        if factor > 1 and image.mode in _REDUCIBLE_MODES:
            image = _reduced(image, factor)  # before the conversions below copy the frame
        return _to_rgb(image)  # before the image is closed


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """``image.reduce(factor)``, a band of rows at a time: reducing an image with alpha makes a
    premultiplied copy of it, which for a whole large frame doubles the memory it takes."""
    width, height = image.size
    reduced = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, _REDUCE_BAND_ROWS // factor)
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height)))
        reduced.paste(band.reduce(factor), (0, top // factor))
    return reduced


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


def _read_exr(source: Path, max_size: tuple[int, int]) -> Image.Image:
    try:
        # Optional packages, imported by name so that type checking never needs them installed.
        np = importlib.import_module("numpy")
        openexr = importlib.import_module("OpenEXR")
        imath = importlib.import_module("Imath")
    except ImportError as exc:
        raise ValueError("reading EXR files needs the OpenEXR package") from exc
    try:
        # The bindings raise plain exceptions (OpenEXR.error, or Exception) for broken files.
        exr = openexr.InputFile(str(source))
    except Exception as exc:
        raise ValueError(f"{source} is not a readable EXR file: {exc}") from exc
    try:
        header = exr.header()
        window = header["dataWindow"]
        left, top, bottom = window.min.x, window.min.y, window.max.y
        size = (window.max.x - left + 1, bottom - top + 1)
        _check_pixels(source, size)
        names = _exr_colour_channels(source, header["channels"])
        # Every step-th pixel of every step-th row: at least twice the output size is left
        # for the filter, and memory holds one strip, not the frame.
        step = _reduction(size, max_size)
        rows_per_strip = step * max(1, _EXR_STRIP_ROWS // step)
        float_type = imath.PixelType(imath.PixelType.FLOAT)
        unique = list(dict.fromkeys(names))
        strips = []
        for first in range(top, bottom + 1, rows_per_strip):
            last = min(first + rows_per_strip - 1, bottom)
            try:
                buffers = exr.channels(unique, float_type, first, last)
            except Exception as exc:
                raise ValueError(f"cannot read {source}: {exc}") from exc
            planes = {
                name: np.frombuffer(buffer, dtype=np.float32).reshape(-1, size[0])[::step, ::step]
                for name, buffer in zip(unique, buffers, strict=True)
            }
            strips.append(_srgb_bytes(np, np.stack([planes[name] for name in names], axis=-1)))
    finally:
        exr.close()
    return Image.fromarray(np.concatenate(strips), "RGB")


def _srgb_bytes(np: Any, linear: Any) -> Any:
    """Linear float values as 8-bit sRGB: clipped to 0..1, NaN as 0."""
    linear = np.clip(np.nan_to_num(linear, nan=0.0), 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return (srgb * 255 + 0.5).astype(np.uint8)


def _exr_colour_channels(source: Path, channels: dict[str, Any]) -> list[str]:
    """The three channels shown: R, G and B of one layer, else Y three times, else one channel.

    Layered files name channels ``layer.R``: unlayered channels come first, then a layer whose
    name ends in ``Combined`` (Blender's beauty pass), then the others by name.
    """
    layers: dict[str, dict[str, str]] = {}
    for name in channels:
        layer, _, suffix = name.rpartition(".")
        layers.setdefault(layer, {})[suffix.upper()] = name
    order = sorted(layers, key=lambda layer: (layer != "", not layer.endswith("Combined"), layer))
    names: list[str] = []
    for layer in order:
        found = layers[layer]
        if all(key in found for key in "RGB"):
            names = [found[key] for key in "RGB"]
            break
    else:
        grey = next((layers[layer]["Y"] for layer in order if "Y" in layers[layer]), None)
        if grey is None and channels:
            grey = sorted(channels)[0]
        if grey is None:
            raise ValueError(f"{source} has no image channels")
        names = [grey] * 3
    for name in set(names):
        sampling = channels[name]
        if (getattr(sampling, "xSampling", 1), getattr(sampling, "ySampling", 1)) != (1, 1):
            raise ValueError(f"{source}: channel {name} is subsampled")
    return names


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

        Paths outside the allowed roots, not absolute, or that no file can have (a NUL byte)
        are refused with a warning; paths that do not fit in the queue are dropped, without
        looking at the disk for them.
        """
        queued = 0
        for raw in paths:
            if self._queue.full():
                _log.debug("latest-image queue full, dropping %s", str(raw))
                continue
            path = self._allowed(raw)
            if path is None:
                continue
            self._queue.put_nowait(path)
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
        except (OSError, RuntimeError, ValueError) as exc:  # ValueError: a NUL byte
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
