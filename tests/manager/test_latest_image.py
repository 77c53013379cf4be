"""The latest image: bounded queue, allowed roots, conversion and subscriber notification."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from PIL import Image, UnidentifiedImageError

from flamenco_manager.services.latest_image import (
    IMAGE_EVENT,
    LatestImage,
    convert_image,
    exr_supported,
)


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
