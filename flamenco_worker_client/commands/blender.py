"""Blender commands: ``blender_render``, ``blender_render_progressive``, ``blender_render_audio``.

Blender's console output is read into progress. The parser follows the render-progress lines of
Blender 2.80 to 4.1 (Cycles, Cycles X and Eevee)::

    Fra:1 Mem:27.59M (Peak 27.87M) | Time:00:00.41 | Remaining:00:05.71 | Mem:0.00M, Peak:0.00M | Scene, RenderLayer | Path Tracing Tile 12/135
    Fra:1 Mem:103.46M (Peak 103.47M) | Time:00:01.50 | Remaining:00:10.01 | Mem:15.77M, Peak:15.77M | Scene, ViewLayer | Sample 16/128
    Fra:1 Mem:70.64M (Peak 84.00M) | Time:00:00.80 | Rendering 12 / 64 samples
    Saved: '/render/shot/0001.png'

A progress line becomes the activity (frame, remaining time, status) and, with the frames
setting, the command's progress; a ``Saved:`` line is reported as produced output.
"""  # noqa: E501 - the sample lines are Blender's, unwrapped

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import attrs

from .context import TaskContext
from .processes import run_process
from .registry import CommandRegistry, InvalidSettings

__all__ = ["BlenderProgress", "count_frames", "parse_progress_line", "register"]

_PROGRESS = re.compile(r"^Fra:(?P<frame>\d+) Mem:(?P<mem>\S+) \(.*?Peak (?P<peak>\S+)\)")
_REMAINING = re.compile(r"\| Remaining:(?P<remaining>[\d:.]+)")
_ELAPSED = re.compile(r"\| Time:(?P<elapsed>[\d:.]+)")
_FRACTION = re.compile(r"(?:Sample|Tile|Rendering)\s+(?P<done>\d+)\s*/\s*(?P<total>\d+)")
_STATUS = re.compile(r"\|\s*(?P<status>[^|]+?)\s*$")
_SAVED = re.compile(r"Saved: '(?P<path>.*)'")
_MISSING_FILE = re.compile(r"Warning: (Unable to open|Path '.*' not found)")
_RENDER_FORMATS = {"OPEN_EXR": "EXR", "OPEN_EXR_MULTILAYER": "MULTILAYER"}


@attrs.frozen
class BlenderProgress:
    """What one render-progress line says."""

    frame: int
    """The frame being rendered."""
    remaining: str
    """Blender's estimate of the time left for this frame, or ``""``."""
    elapsed: str
    """Time spent on this frame so far, or ``""``."""
    status: str
    """The last field: what Blender does now (``Sample 16/128``, ``Synchronizing object``)."""
    fraction: float | None
    """How far the frame is (samples or tiles done / total), when the line says."""

    @property
    def activity(self) -> str:
        """A short activity text for the dashboard."""
        parts = [f"Fra:{self.frame}"]
        if self.remaining:
            parts.append(f"Remaining:{self.remaining}")
        if self.status:
            parts.append(self.status)
        return " | ".join(parts)


def parse_progress_line(line: str) -> BlenderProgress | None:
    """The progress a Blender output line reports, or ``None`` if it is no progress line."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    remaining = _REMAINING.search(line)
    elapsed = _ELAPSED.search(line)
    status = _STATUS.search(line)
    fraction = None
    if (counted := _FRACTION.search(line)) is not None and int(counted["total"]) > 0:
        fraction = min(1.0, int(counted["done"]) / int(counted["total"]))
    return BlenderProgress(
        frame=int(match["frame"]),
        remaining=remaining["remaining"] if remaining else "",
        elapsed=elapsed["elapsed"] if elapsed else "",
        status=status["status"] if status else "",
        fraction=fraction,
    )


def count_frames(frames: str) -> int | None:
    """How many frames Blender's ``--render-frame`` spec names (``1..10,12``), or ``None``."""
    total = 0
    for part in frames.split(","):
        part = part.strip()
        if not part:
            continue
        start, sep, end = part.partition("..")
        try:
            first = int(start)
            last = int(end) if sep else first
        except ValueError:
            return None
        total += abs(last - first) + 1
    return total or None


class _BlenderOutput:
    """Reads Blender's output lines into activity, progress and produced files."""

    def __init__(self, ctx: TaskContext, frame_count: int | None) -> None:
        self._ctx = ctx
        self._frame_count = frame_count
        self._frames_done = 0
        self._logged_sync = False

    def __call__(self, line: str) -> str | None:
        ctx = self._ctx
        if _MISSING_FILE.search(line):
            ctx.set_activity(line)
        progress = parse_progress_line(line)
        if progress is not None:
            ctx.set_activity(progress.activity)
            if self._frame_count:
                within = progress.fraction or 0.0
                ctx.set_progress(100 * (self._frames_done + within) / self._frame_count)
            if "| Synchronizing object |" in line or " | Syncing " in line:
                # Scenes with many objects print one of these per object; one is enough.
                if self._logged_sync:
                    return None
                self._logged_sync = True
        saved = _SAVED.search(line)
        if saved is not None:
            self._frames_done += 1
            if self._frame_count:
                ctx.set_progress(100 * self._frames_done / self._frame_count)
            ctx.output_produced(saved["path"])
        return line


def _blender_args(blender_cmd: str) -> list[str]:
    try:
        args = shlex.split(blender_cmd)
    except ValueError as error:
        raise InvalidSettings(f"'blender_cmd' cannot be split: {error}") from None
    if not args:
        raise InvalidSettings("'blender_cmd' may not be empty")
    if not Path(args[0]).exists() and shutil.which(args[0]) is None:
        raise InvalidSettings(f"blender_cmd {args[0]!r} does not exist")
    return args


async def _existing_file(ctx: TaskContext, filepath: str) -> Path:
    path = Path(filepath)
    if not path.exists():
        # Shared storage is sometimes a little behind; give the file a moment to appear.
        ctx.log(f"{ctx.command_name}: {filepath} does not exist, waiting for it to appear")
        await asyncio.sleep(ctx.limits.input_file_wait)
    if not path.exists():
        raise InvalidSettings(f"filepath {filepath!r} does not exist")
    return path


def _override_args(ctx: TaskContext, filepath: str) -> list[str]:
    index = filepath.lower().rfind(".blend")
    if index < 0:
        return []
    overrides = Path(filepath[:index] + "-overrides.py")
    if not overrides.exists():
        return []
    ctx.log(f"Override file found in {overrides}")
    ctx.log(f"Override file contains:\n{overrides.read_text(encoding='utf-8')}")
    return ["--python-exit-code", "42", "--python", overrides.as_posix()]


async def _render(
    ctx: TaskContext,
    blender_cmd: str,
    filepath: str,
    *,
    render_output: str | None,
    frames: str | int | None,
    format: str | None,
    python_expr: str | None,
    extra: list[str],
) -> None:
    args = _blender_args(blender_cmd)
    await _existing_file(ctx, filepath)
    if render_output:
        try:
            Path(render_output).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidSettings(f"'render_output' directory cannot be created: {error}") from None
    args += ["--enable-autoexec", "-noaudio", "--background", filepath]
    args += _override_args(ctx, filepath)
    if python_expr:
        args += ["--python-expr", python_expr]
    if render_output:
        args += ["--render-output", render_output]
    if format:
        args += ["--render-format", _RENDER_FORMATS.get(format, format)]
    frame_spec = str(frames) if frames is not None and frames != "" else ""
    if frame_spec:
        args += ["--render-frame", frame_spec]
    args += extra
    ctx.set_activity("Starting Blender")
    output = _BlenderOutput(ctx, count_frames(frame_spec) if frame_spec else None)
    await run_process(ctx, args, on_line=output)


def register(registry: CommandRegistry) -> None:
    """Add the Blender commands to ``registry``."""

    @registry.command("blender_render")
    async def blender_render(
        ctx: TaskContext,
        blender_cmd: str,
        filepath: str,
        render_output: str | None = None,
        frames: str | int | None = None,
        format: str | None = None,
        python_expr: str | None = None,
        render_format: str | None = None,
    ) -> None:
        """Render ``filepath`` with Blender in the background."""
        await _render(
            ctx,
            blender_cmd,
            filepath,
            render_output=render_output,
            frames=frames,
            format=format,
            python_expr=python_expr,
            extra=[],
        )

    @registry.command("blender_render_progressive")
    async def blender_render_progressive(
        ctx: TaskContext,
        blender_cmd: str,
        filepath: str,
        cycles_num_chunks: int,
        cycles_chunk_start: int,
        cycles_chunk_end: int,
        render_output: str | None = None,
        frames: str | int | None = None,
        format: str | None = None,
        python_expr: str | None = None,
        cycles_chunk: Any = None,
    ) -> None:
        """Render one range of Cycles' resumable chunks."""
        if cycles_chunk is not None:
            raise InvalidSettings("'cycles_chunk' is an obsolete setting; recreate the job")
        for name, value in (
            ("cycles_num_chunks", cycles_num_chunks),
            ("cycles_chunk_start", cycles_chunk_start),
            ("cycles_chunk_end", cycles_chunk_end),
        ):
            if value < 1:
                raise InvalidSettings(f"{name!r} must be a positive integer")
        chunks = [
            "--",
            "--cycles-resumable-num-chunks",
            str(cycles_num_chunks),
            "--cycles-resumable-start-chunk",
            str(cycles_chunk_start),
            "--cycles-resumable-end-chunk",
            str(cycles_chunk_end),
        ]
        await _render(
            ctx,
            blender_cmd,
            filepath,
            render_output=render_output,
            frames=frames,
            format=format,
            python_expr=python_expr,
            extra=chunks,
        )

    @registry.command("blender_render_audio")
    async def blender_render_audio(
        ctx: TaskContext,
        blender_cmd: str,
        filepath: str,
        render_output: str,
        frame_start: int | None = None,
        frame_end: int | None = None,
    ) -> None:
        """Mix the scene's audio down to a FLAC file."""
        if not render_output:
            raise InvalidSettings("'render_output' may not be empty")
        args = _blender_args(blender_cmd)
        await _existing_file(ctx, filepath)
        script = ["import bpy"]
        if frame_start is not None:
            script.append(f"bpy.context.scene.frame_start = {frame_start}")
        if frame_end is not None:
            script.append(f"bpy.context.scene.frame_end = {frame_end}")
        script.append(
            f"bpy.ops.sound.mixdown(filepath={render_output!r}, codec='FLAC', "
            "container='FLAC', accuracy=128)"
        )
        script.append("bpy.ops.wm.quit_blender()")
        args += ["--enable-autoexec", "-noaudio", "--background", filepath]
        args += ["--python-exit-code", "47", "--python-expr", "\n".join(script)]
        await run_process(ctx, args)
        ctx.output_produced(render_output)
