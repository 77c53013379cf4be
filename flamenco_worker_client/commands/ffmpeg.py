"""FFmpeg commands: ``create_video``, ``concatenate_videos``, ``mux_audio``, ``encode_audio``.

FFmpeg's console output is read into progress. The parser follows the output of FFmpeg 4.x to
7.x: the input's ``Duration: HH:MM:SS.ss`` line, then progress lines redrawn with ``\\r``::

    Duration: 00:00:04.00, start: 0.000000, bitrate: N/A
    frame=   48 fps=0.0 q=-1.0 Lsize=      44kB time=00:00:01.92 bitrate= 187.6kbits/s speed=4.56x

Progress is ``time`` over ``Duration``; the activity is the progress line itself.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
from pathlib import Path

from .context import TaskContext
from .processes import run_process
from .registry import CommandFailed, CommandRegistry, InvalidSettings

__all__ = ["FFmpegProgress", "register", "seconds"]

_DURATION = re.compile(r"^\s*Duration: (?P<time>\d+:\d+:\d+(?:\.\d+)?)")
_PROGRESS = re.compile(r"^frame=\s*(?P<frame>\d+).*?time=\s*(?P<time>-?\d+:\d+:\d+(?:\.\d+)?)")

# Useful for scrubbing: a keyframe every 18 frames, no B-frames, a fair quality.
_CONSTANT_RATE_FACTOR = "23"
_KEYFRAME_INTERVAL = "18"


def seconds(timestamp: str) -> float:
    """``HH:MM:SS.ss`` as seconds."""
    hours, minutes, secs = timestamp.split(":")
    sign = -1 if hours.startswith("-") else 1
    return sign * (abs(int(hours)) * 3600 + int(minutes) * 60 + float(secs))


class FFmpegProgress:
    """Reads FFmpeg's output lines into activity and progress."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        self.duration: float | None = None
        self.percentage = 0.0

    def __call__(self, line: str) -> str | None:
        if self.duration is None and (found := _DURATION.match(line)) is not None:
            self.duration = seconds(found["time"]) or None
        progress = _PROGRESS.match(line)
        if progress is not None:
            self._ctx.set_activity(line.strip())
            if self.duration:
                done = max(0.0, seconds(progress["time"]))
                self.percentage = min(100.0, 100 * done / self.duration)
                self._ctx.set_progress(self.percentage)
        return line


def _ffmpeg(ffmpeg_cmd: str) -> list[str]:
    try:
        args = shlex.split(ffmpeg_cmd)
    except ValueError as error:
        raise InvalidSettings(f"'ffmpeg_cmd' cannot be split: {error}") from None
    if not args or shutil.which(args[0]) is None:
        raise InvalidSettings(f"FFmpeg command {ffmpeg_cmd!r} not found on $PATH")
    return args


def _existing(name: str, value: str) -> Path:
    path = Path(value)
    if not value or not path.exists():
        raise InvalidSettings(f"{name} {value!r} does not exist")
    return path.absolute()


def _write_index(input_files: str) -> Path:
    """The concat demuxer's list of the files ``input_files`` (a glob in the file name) names.

    It lives next to the files, as FFmpeg refuses "unsafe" paths elsewhere.
    """
    pattern = Path(input_files).absolute()
    matches = sorted(pattern.parent.glob(pattern.name))
    if not matches:
        raise CommandFailed(f"no files match {input_files}")
    index = pattern.with_name("ffmpeg-input.txt")
    lines = []
    for match in matches:
        escaped = match.name.replace("'", "'\\''")
        lines.append(f"file '{escaped}'\n")
    index.write_text("".join(lines), encoding="utf-8")
    return index


async def _run(ctx: TaskContext, args: list[str], index: Path | None = None) -> None:
    try:
        await run_process(ctx, args, on_line=FFmpegProgress(ctx))
    finally:
        if index is not None:
            with contextlib.suppress(OSError):
                index.unlink()


def register(registry: CommandRegistry) -> None:
    """Add the FFmpeg commands to ``registry``."""

    @registry.command("create_video")
    async def create_video(
        ctx: TaskContext,
        input_files: str,
        output_file: str,
        fps: float,
        ffmpeg_cmd: str = "ffmpeg",
    ) -> None:
        """Make an H.264 video from the frames ``input_files`` (a glob) names."""
        args = _ffmpeg(ffmpeg_cmd)
        if fps <= 0:
            raise InvalidSettings("'fps' must be positive")
        args += ["-r", f"{fps:g}", "-pattern_type", "glob", "-i", Path(input_files).as_posix()]
        args += [
            "-c:v",
            "h264",
            "-crf",
            _CONSTANT_RATE_FACTOR,
            "-g",
            _KEYFRAME_INTERVAL,
            "-bf",
            "0",
            # yuv420p plays everywhere, and needs even dimensions.
            "-pix_fmt",
            "yuv420p",
            "-vf",
            "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-y",
            output_file,
        ]
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        await _run(ctx, args)

    @registry.command("concatenate_videos")
    async def concatenate_videos(
        ctx: TaskContext, input_files: str, output_file: str, ffmpeg_cmd: str = "ffmpeg"
    ) -> None:
        """Join the videos ``input_files`` (a glob) names, in name order, without re-encoding."""
        args = _ffmpeg(ffmpeg_cmd)
        index = _write_index(input_files)
        args += ["-f", "concat", "-i", index.as_posix(), "-c", "copy", "-y", output_file]
        await _run(ctx, args, index)

    @registry.command("mux_audio")
    async def mux_audio(
        ctx: TaskContext,
        audio_file: str,
        video_file: str,
        output_file: str,
        ffmpeg_cmd: str = "ffmpeg",
    ) -> None:
        """Put an audio track and a video track in one file, without re-encoding."""
        args = _ffmpeg(ffmpeg_cmd)
        audio = _existing("Audio file", audio_file)
        video = _existing("Video file", video_file)
        args += ["-i", str(audio), "-i", str(video), "-c", "copy", "-y"]
        args.append(str(Path(output_file).absolute()))
        await _run(ctx, args)

    @registry.command("encode_audio")
    async def encode_audio(
        ctx: TaskContext,
        input_file: str,
        output_file: str,
        bitrate: str,
        codec: str,
        ffmpeg_cmd: str = "ffmpeg",
    ) -> None:
        """Re-encode an audio file with ``codec`` at ``bitrate``."""
        args = _ffmpeg(ffmpeg_cmd)
        source = _existing("Audio file", input_file)
        args += ["-i", str(source), "-c:a", codec, "-b:a", bitrate, "-y"]
        args.append(str(Path(output_file).absolute()))
        await _run(ctx, args)
