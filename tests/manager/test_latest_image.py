"""The latest image: bounded queue, allowed roots, conversion and subscriber notification."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import anyio
import pytest
from PIL import Image, UnidentifiedImageError

from flamenco_manager.services import latest_image
from flamenco_manager.services.latest_image import (
    IMAGE_EVENT,
    LatestImage,
    convert_image,
    exr_supported,
)

from .harness import Farm


@pytest.fixture
def renders(tmp_path: Path) -> Path:
    root = tmp_path / "render"
    root.mkdir()
    return root


@pytest.fixture
def latest(tmp_path: Path, renders: Path) -> LatestImage:
    return LatestImage.in_data_dir(tmp_path / "data", [renders])


def _png(
    path: Path, size: tuple[int, int], mode: str = "RGB", colour: object = (200, 10, 10)
) -> Path:
    Image.new(mode, size, colour).save(path)  # type: ignore[arg-type]
    return path


def test_only_three_paths_are_queued_in_order(latest: LatestImage, renders: Path) -> None:
    # LI-01: eight one-path offers; the first three are queued, the rest dropped.
    paths = [renders / f"frame-{n:04d}.png" for n in range(8)]
    assert [latest.offer([path]) for path in paths] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert latest.pending() == paths[:3]


def test_paths_outside_the_roots_are_refused(
    latest: LatestImage, renders: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret.png"
    _png(secret, (4, 4))
    (renders / "escape.png").symlink_to(secret)
    caplog.set_level(logging.WARNING)
    offered = [secret, renders / "escape.png", "render/relative.png", renders / ".." / "x.png"]
    assert latest.offer(offered) == 0
    assert latest.pending() == []
    assert sum("refusing" in record.getMessage() for record in caplog.records) == len(offered)


def test_a_symlink_inside_the_roots_is_followed(latest: LatestImage, renders: Path) -> None:
    real = _png(renders / "real.png", (4, 4))
    (renders / "link.png").symlink_to(real)
    assert latest.offer([renders / "link.png"]) == 1
    assert latest.pending() == [real]


@pytest.mark.parametrize(
    ("size", "expected"),
    [((4000, 1000), (1920, 480)), ((1000, 3000), (360, 1080)), ((100, 50), (100, 50))],
)
def test_conversion_shrinks_to_fit_and_never_enlarges(
    tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    target = tmp_path / "out" / "latest-image.jpg"
    convert_image(_png(tmp_path / "in.png", size), target)
    with Image.open(target) as result:
        assert result.format == "JPEG"
        assert result.size == expected
    assert [p.name for p in target.parent.iterdir()] == ["latest-image.jpg"]  # no temp files


@pytest.mark.parametrize(
    ("name", "mode", "colour"),
    [
        ("rgba.png", "RGBA", (255, 0, 0, 128)),
        ("grey16.png", "I;16", 40000),
        ("photo.jpg", "RGB", (0, 128, 255)),
        ("scan.tiff", "RGB", (10, 20, 30)),
        ("palette.png", "P", 3),
    ],
)
def test_common_formats_convert(tmp_path: Path, name: str, mode: str, colour: object) -> None:
    source = _png(tmp_path / name, (64, 32), mode, colour)
    target = tmp_path / "latest-image.jpg"
    convert_image(source, target)
    with Image.open(target) as result:
        assert (result.mode, result.size) == ("RGB", (64, 32))
    if mode == "I;16":
        with Image.open(target) as result:
            assert 140 < result.getpixel((5, 5))[0] < 170  # type: ignore[index]  # 40000/256


@pytest.mark.skipif(not exr_supported(), reason="the OpenEXR package is not installed")
def test_exr_converts(tmp_path: Path) -> None:
    import numpy as np
    import OpenEXR  # type: ignore[import-not-found, unused-ignore]

    pixels = np.full((40, 80, 3), 0.5, dtype=np.float32)
    source = tmp_path / "frame.exr"
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"RGB": pixels}).write(str(source))
    target = tmp_path / "latest-image.jpg"
    convert_image(source, target)
    with Image.open(target) as result:
        assert result.size == (80, 40)
        red = result.getpixel((10, 10))[0]  # type: ignore[index]
        assert 180 < red < 195  # linear 0.5 is sRGB 188


def test_broken_files_are_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(UnidentifiedImageError):
        convert_image(broken, tmp_path / "latest-image.jpg")
    assert not (tmp_path / "latest-image.jpg").exists()


@pytest.mark.anyio
async def test_the_loop_converts_notifies_and_skips_broken_files(
    latest: LatestImage, renders: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (renders / "broken.png").write_bytes(b"not an image")
    _png(renders / "good.png", (3000, 3000))
    heard: list[Path] = []
    latest.add_listener(heard.append)
    events: list[str] = []

    async def listen() -> None:
        async for event in latest.subscribe():
            events.append(event)
            return

    async with anyio.create_task_group() as group:
        group.start_soon(latest.run)
        group.start_soon(listen)
        while latest.subscriber_count == 0:
            await anyio.sleep(0.01)
        assert latest.offer([renders / "broken.png", renders / "good.png"]) == 2
        with anyio.fail_after(10):
            while not events:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()

    assert events == [IMAGE_EVENT]
    assert heard == [latest.output_path]
    assert latest.converted == 1
    assert latest.subscriber_count == 0
    with Image.open(latest.output_path) as result:
        assert result.size == (1080, 1080)
    assert any("cannot convert" in record.getMessage() for record in caplog.records)


def test_a_path_with_a_nul_byte_is_refused_not_raised(
    latest: LatestImage, renders: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No file can have this name; resolving it raised ValueError, a 500 on /output-produced.
    caplog.set_level(logging.WARNING)
    assert latest.offer([f"{renders}/frame\x00.png", renders / "next.png"]) == 1
    assert latest.pending() == [renders / "next.png"]
    assert any("cannot resolve" in record.getMessage() for record in caplog.records)


@pytest.mark.anyio
async def test_output_produced_with_a_nul_byte_is_not_a_server_error(
    farm: Farm, tmp_path: Path
) -> None:
    worker = await farm.register()
    body = {"paths": [f"{tmp_path}/frame\x00.png"]}
    response = await farm.call(worker, "POST", "/output-produced", json=body)
    assert response.status_code == 204
    assert farm.manager.latest_image.pending() == []


def test_a_full_queue_drops_paths_without_resolving_them(
    latest: LatestImage, renders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [renders / f"frame-{n:04d}.png" for n in range(1000)]
    resolved: list[Path] = []
    real_resolve = Path.resolve

    def counting_resolve(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real_resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", counting_resolve)
    assert latest.offer(paths) == 3
    assert resolved == paths[:3]


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes: the converter stopped for good.
    pipe = tmp_path / "frame.png"
    os.mkfifo(pipe)
    outcome: list[BaseException | None] = []

    def convert() -> None:
        try:
            convert_image(pipe, tmp_path / "latest-image.jpg")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=convert, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # free the blocked thread before failing
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], ValueError)
    assert "not a regular file" in str(outcome[0])


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "frame.png").mkdir()
    with pytest.raises((OSError, ValueError)):
        convert_image(tmp_path / "frame.png", tmp_path / "latest-image.jpg")


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _png(tmp_path / "big.png", (200, 100))
    monkeypatch.setattr(latest_image, "MAX_PIXELS", 200 * 100 - 1)
    with pytest.raises(ValueError, match=re.escape(f"{source} is too large: 200 x 100")):
        convert_image(source, tmp_path / "latest-image.jpg")
    assert not (tmp_path / "latest-image.jpg").exists()


@pytest.mark.skipif(not exr_supported(), reason="the OpenEXR package is not installed")
def test_an_exr_over_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _exr(tmp_path / "big.exr", {"R": 0.5, "G": 0.5, "B": 0.5}, (200, 100))
    monkeypatch.setattr(latest_image, "MAX_PIXELS", 200 * 100 - 1)
    with pytest.raises(ValueError, match="too large"):
        convert_image(source, tmp_path / "latest-image.jpg")


# VmHWM, the peak of this process's own memory: ru_maxrss also counts the parent's peak from
# before the exec, which in a whole test run is pytest's own (400 MiB and more).
_PEAK_RSS = """
import sys
from pathlib import Path
from flamenco_manager.services.latest_image import convert_image
convert_image(Path(sys.argv[1]), Path(sys.argv[2]))
status = Path("/proc/self/status").read_text()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def _peak_rss_mib(source: Path, target: Path) -> float:
    """Convert in a process of its own and return its peak memory, in MiB."""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PEAK_RSS, str(source), str(target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(done.stdout.split()[-1]) / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM is read from Linux's /proc")
def test_a_large_png_is_reduced_before_it_is_converted(tmp_path: Path) -> None:
    # 6000 x 6000 RGBA is 137 MiB decoded; converted to RGB on black at full size before
    # shrinking, it took five times that (and a 0.5 MB, 12,000 x 12,000 PNG 3.4 GB).
    source = _png(tmp_path / "big.png", (6000, 6000), "RGBA", (255, 0, 0, 128))
    target = tmp_path / "latest-image.jpg"
    assert _peak_rss_mib(source, target) < 400
    with Image.open(target) as result:
        assert result.size == (1080, 1080)
        red, green, blue = result.getpixel((500, 500))  # type: ignore[misc]
        assert 120 < red < 136  # half-transparent red on black
        assert max(green, blue) < 8


@pytest.mark.skipif(not exr_supported(), reason="the OpenEXR package is not installed")
@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM is read from Linux's /proc")
def test_a_large_exr_is_read_in_strips(tmp_path: Path) -> None:
    # 4000 x 4000 RGBA half floats: 122 MiB of channels, about 1.5 GiB when read whole and
    # converted in float32 (a 1.2 MB, 12,000 x 12,000 one took 8.3 GB).
    source = _exr(tmp_path / "big.exr", {"R": 1.0, "G": 0.0, "B": 0.0, "A": 1.0}, (4000, 4000))
    target = tmp_path / "latest-image.jpg"
    assert _peak_rss_mib(source, target) < 400
    with Image.open(target) as result:
        assert result.size == (1080, 1080)
        assert result.getpixel((500, 500))[0] > 245  # type: ignore[index]


@pytest.mark.skipif(not exr_supported(), reason="the OpenEXR package is not installed")
@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        # Blender's multilayer files: the Combined pass, R G and B of one layer.
        (
            {
                "ViewLayer.AO.R": 0.0,
                "ViewLayer.AO.G": 0.0,
                "ViewLayer.AO.B": 0.0,
                "ViewLayer.Combined.R": 1.0,
                "ViewLayer.Combined.G": 1.0,
                "ViewLayer.Combined.B": 1.0,
                "ViewLayer.Depth.Z": 0.0,
            },
            255,
        ),
        ({"Y": 1.0, "A": 0.0}, 255),  # luminance
        ({"Z": 1.0}, 255),  # no colour: the first channel
        ({"R": float("nan"), "G": float("inf"), "B": float("-inf")}, (0, 255, 0)),
    ],
)
def test_exr_channels(tmp_path: Path, channels: dict[str, float], expected: object) -> None:
    source = _exr(tmp_path / "frame.exr", channels, (32, 16))
    target = tmp_path / "latest-image.jpg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN cast to bytes warned, and its value was undefined
        convert_image(source, target)
    with Image.open(target) as result:
        assert result.size == (32, 16)
        pixel = result.getpixel((8, 8))
        if isinstance(expected, int):
            assert pixel == (expected,) * 3
        else:
            assert all(abs(a - b) <= 2 for a, b in zip(pixel, expected, strict=True))  # type: ignore[arg-type]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    source = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    Image.new("RGB", (400, 100), (0, 128, 255)).save(source, exif=exif)
    target = tmp_path / "latest-image.jpg"
    convert_image(source, target)
    with Image.open(target) as result:
        assert result.size == (100, 400)


def _exr(path: Path, channels: dict[str, float], size: tuple[int, int]) -> Path:
    """A half-float EXR of ``size`` with every channel at one value (ZIP: a small file)."""
    import numpy as np
    import OpenEXR  # type: ignore[import-not-found, unused-ignore]

    width, height = size
    pixels = {
        name: np.full((height, width), value, dtype=np.float16 if value == value else np.float32)
        for name, value in channels.items()
    }
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    OpenEXR.File(header, pixels).write(str(path))
    return path
