"""Built-in commands, run through a recording context; Blender and FFmpeg are fake scripts that
print the real programs' output formats."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flamenco_protocol import Task
from flamenco_worker_client.commands import (
    CommandFailed,
    CommandRegistry,
    InvalidSettings,
    ProcessLimits,
    TaskContext,
    builtin_commands,
)
from flamenco_worker_client.commands.blender import count_frames, parse_progress_line
from flamenco_worker_client.commands.files import numbered_path

BUILTIN = builtin_commands()


class RecordingReporter:
    """Stands in for the TaskReporter: keeps what a command reports."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.activities: list[str] = []
        self.progress: list[int] = []

    def log(self, text: str) -> None:
        self.lines.append(text)

    def set_activity(self, activity: str) -> None:
        self.activities.append(activity)

    def set_progress(self, percentage: int) -> None:
        self.progress.append(percentage)


class Run:
    """One command run: its reporter and the outputs it announced."""

    def __init__(self, name: str, limits: ProcessLimits | None = None) -> None:
        self.reporter = RecordingReporter()
        self.outputs: list[list[str]] = []
        self.context = TaskContext(
            task=Task(id="5f1e0c0a2b3c4d5e6f70a101"),  # type: ignore[arg-type]
            command_index=0,
            command_name=name,
            worker_id="5f1e0c0a2b3c4d5e6f708192",
            nickname="vm",
            limits=limits or ProcessLimits(terminate_grace=0.5, input_file_wait=0.01),
            reporter=self.reporter,  # type: ignore[arg-type]
            output=self.outputs.append,
        )
        self.name = name

    async def __call__(self, **settings: Any) -> None:
        spec = BUILTIN.get(self.name)
        assert spec is not None
        await spec.run(self.context, settings)

    @property
    def log(self) -> str:
        return "\n".join(self.reporter.lines)


def fake_program(directory: Path, name: str, body: str) -> Path:
    """An executable Python script that records its arguments and prints ``body``'s output."""
    path = directory / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, time\n"
        f"json.dump(sys.argv[1:], open({str(directory / (name + '.args'))!r}, 'w'))\n"
        f"{body}\n"
    )
    path.chmod(0o755)
    return path


def recorded_args(program: Path) -> list[str]:
    args: list[str] = json.loads(program.with_name(program.name + ".args").read_text())
    return args


# --- Blender ---------------------------------------------------------------------------------

BLENDER_OUTPUT = r"""
lines = [
    "Blender 3.6.5 (hash 8c9fe43ba2bd built 2023-10-17 01:28:24)",
    "Read blend: /shots/scene.blend",
    "Fra:1 Mem:103.46M (Peak 103.47M) | Time:00:00.20 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Synchronizing object | Cube",
    "Fra:1 Mem:103.46M (Peak 103.47M) | Time:00:00.21 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Synchronizing object | Light",
    "Fra:1 Mem:103.46M (Peak 103.47M) | Time:00:01.50 | Remaining:00:10.01 | Mem:15.77M, Peak:15.77M | Scene, ViewLayer | Sample 16/128",
    "Fra:1 Mem:103.46M (Peak 103.47M) | Time:00:03.10 | Remaining:00:00.51 | Mem:15.77M, Peak:15.77M | Scene, ViewLayer | Sample 128/128",
    "Saved: '/render/shot/0001.png'",
    " Time: 00:03.35 (Saving: 00:00.01)",
    "Fra:2 Mem:70.64M (Peak 84.00M) | Time:00:00.80 | Rendering 32 / 64 samples",
    "Saved: '/render/shot/0002.png'",
    "",
    "Blender quit",
]
for line in lines:
    print(line, flush=True)
"""  # noqa: E501 - Blender's lines, unwrapped


@pytest.mark.anyio
async def test_blender_render_builds_the_command_and_reads_progress(tmp_path: Path) -> None:
    blender = fake_program(tmp_path, "blender", BLENDER_OUTPUT)
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"BLENDER")
    (tmp_path / "scene-overrides.py").write_text("import bpy\n")
    run = Run("blender_render")
    await run(
        blender_cmd=f"{blender} --factory-startup",
        filepath=str(blend),
        render_output=str(tmp_path / "out" / "######"),
        frames="1..2",
        format="OPEN_EXR",
    )
    assert recorded_args(blender) == [
        "--factory-startup",
        "--enable-autoexec",
        "-noaudio",
        "--background",
        str(blend),
        "--python-exit-code",
        "42",
        "--python",
        str(tmp_path / "scene-overrides.py"),
        "--render-output",
        str(tmp_path / "out" / "######"),
        "--render-format",
        "EXR",
        "--render-frame",
        "1..2",
    ]
    assert "Fra:1 | Remaining:00:10.01 | Sample 16/128" in run.reporter.activities
    assert run.reporter.progress[-1] == 100
    assert 6 in run.reporter.progress  # 16/128 samples of the first of two frames
    assert run.outputs == [["/render/shot/0001.png"], ["/render/shot/0002.png"]]
    assert run.log.count("Synchronizing object") == 1, "repeated sync lines are logged once"
    assert "> Blender quit" in run.log


def test_progress_lines_of_cycles_eevee_and_older_cycles_parse() -> None:
    cycles_28 = (
        "Fra:1 Mem:27.59M (Peak 27.87M) | Time:00:00.41 | Remaining:00:05.71 | "
        "Mem:0.00M, Peak:0.00M | Scene, RenderLayer | Path Tracing Tile 12/135"
    )
    progress = parse_progress_line(cycles_28)
    assert progress is not None
    assert progress.frame == 1
    assert progress.remaining == "00:05.71"
    assert progress.fraction == pytest.approx(12 / 135)
    eevee = parse_progress_line(
        "Fra:7 Mem:70.64M (Peak 84.00M) | Time:00:00.80 | Rendering 1 / 64 samples"
    )
    assert eevee is not None
    assert eevee.frame == 7
    assert eevee.fraction == pytest.approx(1 / 64)
    assert parse_progress_line("Saved: '/x.png'") is None


@pytest.mark.parametrize(
    ("spec", "count"), [("1..10", 10), ("3", 1), ("1,3,5..7", 5), ("", None), ("a..b", None)]
)
def test_frame_specs_are_counted(spec: str, count: int | None) -> None:
    assert count_frames(spec) == count


@pytest.mark.anyio
async def test_blender_render_refuses_a_missing_blender_or_blend_file(tmp_path: Path) -> None:
    run = Run("blender_render")
    with pytest.raises(InvalidSettings, match="does not exist"):
        await run(blender_cmd="/no/such/blender", filepath=str(tmp_path / "x.blend"))
    blender = fake_program(tmp_path, "blender", "")
    with pytest.raises(InvalidSettings, match="filepath"):
        await run(blender_cmd=str(blender), filepath=str(tmp_path / "missing.blend"))


@pytest.mark.anyio
async def test_blender_failure_fails_the_command(tmp_path: Path) -> None:
    blender = fake_program(tmp_path, "blender", "print('Error: bad file'); sys.exit(3)")
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"")
    with pytest.raises(CommandFailed, match="failed with status 3"):
        await Run("blender_render")(blender_cmd=str(blender), filepath=str(blend))


@pytest.mark.anyio
async def test_progressive_render_adds_the_chunk_arguments(tmp_path: Path) -> None:
    blender = fake_program(tmp_path, "blender", "")
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"")
    settings = {"blender_cmd": str(blender), "filepath": str(blend)}
    run = Run("blender_render_progressive")
    await run(**settings, cycles_num_chunks=4, cycles_chunk_start=1, cycles_chunk_end=2)
    assert recorded_args(blender)[-7:] == [
        "--",
        "--cycles-resumable-num-chunks",
        "4",
        "--cycles-resumable-start-chunk",
        "1",
        "--cycles-resumable-end-chunk",
        "2",
    ]
    with pytest.raises(InvalidSettings, match="obsolete"):
        await run(
            **settings,
            cycles_num_chunks=4,
            cycles_chunk_start=1,
            cycles_chunk_end=2,
            cycles_chunk=1,
        )
    with pytest.raises(InvalidSettings, match="positive"):
        await run(**settings, cycles_num_chunks=0, cycles_chunk_start=1, cycles_chunk_end=2)


# --- FFmpeg ----------------------------------------------------------------------------------

FFMPEG_OUTPUT = r"""
err = sys.stderr
err.write("ffmpeg version 6.1.1 Copyright (c) 2000-2023 the FFmpeg developers\n")
err.write("Input #0, image2, from '/frames/*.png':\n")
err.write("  Duration: 00:00:04.00, start: 0.000000, bitrate: N/A\n")
for frame, t in ((24, "00:00:01.00"), (48, "00:00:02.00"), (96, "00:00:04.00")):
    err.write(f"frame={frame:5d} fps=0.0 q=-1.0 size=      44kB time={t} bitrate= 187.6kbits/s speed=4.56x\r")
    err.flush()
err.write("\n[libx264 @ 0x55] kb/s:180.33\n")
"""  # noqa: E501 - FFmpeg's lines, unwrapped


@pytest.mark.anyio
async def test_create_video_passes_the_arguments_and_reads_progress(tmp_path: Path) -> None:
    ffmpeg = fake_program(tmp_path, "ffmpeg", FFMPEG_OUTPUT)
    run = Run("create_video")
    output = tmp_path / "out" / "video.mkv"
    await run(ffmpeg_cmd=str(ffmpeg), input_files="/frames/*.png", output_file=str(output), fps=24)
    args = recorded_args(ffmpeg)
    assert args[:6] == ["-r", "24", "-pattern_type", "glob", "-i", "/frames/*.png"]
    assert args[args.index("-c:v") + 1] == "h264"
    assert args[-2:] == ["-y", str(output)]
    assert run.reporter.progress == [25, 50, 100]
    assert any(a.startswith("frame=   96") for a in run.reporter.activities)
    assert "> [libx264 @ 0x55] kb/s:180.33" in run.log


@pytest.mark.anyio
async def test_ffmpeg_missing_from_path_is_invalid_settings() -> None:
    with pytest.raises(InvalidSettings, match="not found on \\$PATH"):
        await Run("create_video")(
            ffmpeg_cmd="no-such-ffmpeg-here", input_files="*.png", output_file="o.mkv", fps=24
        )


@pytest.mark.anyio
async def test_concatenate_videos_writes_and_removes_the_index(tmp_path: Path) -> None:
    ffmpeg = fake_program(
        tmp_path,
        "ffmpeg",
        "import pathlib; print(pathlib.Path(sys.argv[sys.argv.index('-i') + 1]).read_text())",
    )
    videos = tmp_path / "chunks"
    videos.mkdir()
    for name in ("b.mkv", "a.mkv", "it's.mkv"):
        (videos / name).write_bytes(b"")
    run = Run("concatenate_videos")
    await run(ffmpeg_cmd=str(ffmpeg), input_files=str(videos / "*.mkv"), output_file="/out/all.mkv")
    args = recorded_args(ffmpeg)
    assert args == [
        "-f", "concat", "-i", str(videos / "ffmpeg-input.txt"), "-c", "copy", "-y", "/out/all.mkv"
    ]  # fmt: skip
    assert "> file 'a.mkv'" in run.log
    assert "> file 'it'\\''s.mkv'" in run.log
    assert not (videos / "ffmpeg-input.txt").exists()


@pytest.mark.anyio
async def test_mux_and_encode_audio_arguments(tmp_path: Path) -> None:
    ffmpeg = fake_program(tmp_path, "ffmpeg", "")
    audio, video = tmp_path / "a.flac", tmp_path / "v.mkv"
    audio.write_bytes(b"")
    video.write_bytes(b"")
    await Run("mux_audio")(
        ffmpeg_cmd=str(ffmpeg),
        audio_file=str(audio),
        video_file=str(video),
        output_file=str(tmp_path / "o.mkv"),
    )
    assert recorded_args(ffmpeg) == [
        "-i", str(audio), "-i", str(video), "-c", "copy", "-y", str(tmp_path / "o.mkv")
    ]  # fmt: skip
    await Run("encode_audio")(
        ffmpeg_cmd=str(ffmpeg),
        input_file=str(audio),
        output_file=str(tmp_path / "o.aac"),
        bitrate="192k",
        codec="aac",
    )
    assert recorded_args(ffmpeg) == [
        "-i", str(audio), "-c:a", "aac", "-b:a", "192k", "-y", str(tmp_path / "o.aac")
    ]  # fmt: skip
    with pytest.raises(InvalidSettings, match="does not exist"):
        await Run("mux_audio")(
            ffmpeg_cmd=str(ffmpeg), audio_file="/nope", video_file=str(video), output_file="o"
        )


# --- exec and subprocesses -------------------------------------------------------------------


@pytest.mark.anyio
async def test_exec_logs_each_line_with_the_pid() -> None:
    run = Run("exec")
    await run(cmd="/bin/sh -c 'echo one; echo two >&2; printf \"three\\rfour\"'")
    lines = [line for line in run.reporter.lines if " > " in line]
    assert [line.split(" > ", 1)[1] for line in lines] == ["one", "two", "three", "four"]
    assert all(line.startswith("pid=") for line in lines)


@pytest.mark.anyio
async def test_exec_non_utf8_output_is_logged_with_replacements() -> None:
    run = Run("exec")
    await run(cmd="/bin/sh -c 'printf \"caf\\351\\n\"'")
    assert "> caf\N{REPLACEMENT CHARACTER}" in run.log


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("cmd", "error"),
    [
        ("/bin/false", "Command /bin/false \\(pid=\\d+\\) failed with status 1"),
        ("/no/such/program", "unable to start /no/such/program"),
    ],
)
async def test_exec_failures(cmd: str, error: str) -> None:
    with pytest.raises(CommandFailed, match=error):
        await Run("exec")(cmd=cmd)


@pytest.mark.anyio
@pytest.mark.parametrize(("cmd", "why"), [("", "may not be empty"), ("'open", "cannot be split")])
async def test_exec_invalid_settings(cmd: str, why: str) -> None:
    with pytest.raises(InvalidSettings, match=why):
        await Run("exec")(cmd=cmd)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not reaped by a container's init) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


async def _dies_soon(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` is gone within ``within`` seconds (polled, so a busy machine is fine)."""
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _start_and_cancel(run: Run, cmd: str, pid_file: Path) -> float:
    command = asyncio.create_task(run(cmd=cmd))
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    started = time.monotonic()
    command.cancel()
    with pytest.raises(asyncio.CancelledError):
        await command
    return time.monotonic() - started


@pytest.mark.anyio
async def test_cancelling_exec_terminates_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    run = Run("exec")
    cmd = f"/bin/sh -c 'sleep 30 & echo $! > {pid_file}; wait'"
    elapsed = await _start_and_cancel(run, cmd, pid_file)
    # SIGTERM was enough: no wait for the grace period (generous bound: CI machines are busy).
    assert elapsed < ProcessLimits().terminate_grace
    assert await _dies_soon(int(pid_file.read_text())), "the grandchild went too"


@pytest.mark.anyio
async def test_a_subprocess_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "child.pid"
    run = Run("exec", ProcessLimits(terminate_grace=0.3))
    cmd = f"/bin/sh -c 'trap \"\" TERM; echo $$ > {pid_file}; while true; do sleep 0.05; done'"
    elapsed = await _start_and_cancel(run, cmd, pid_file)
    assert elapsed >= 0.3
    assert await _dies_soon(int(pid_file.read_text()))


@pytest.mark.anyio
async def test_a_silent_subprocess_fails_after_the_line_timeout() -> None:
    run = Run("exec", ProcessLimits(terminate_grace=0.2, line_timeout=0.2))
    with pytest.raises(CommandFailed, match=r"produced no output for 0\.2 seconds"):
        await run(cmd="/bin/sleep 10")


# --- basic commands --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_echo_sleep_and_log_a_lot() -> None:
    echo = Run("echo")
    await echo(message="hello")
    assert echo.reporter.lines == ["hello"]
    sleep = Run("sleep")
    started = time.monotonic()
    await sleep(time_in_seconds=0.1)
    assert time.monotonic() - started >= 0.1
    many = Run("log_a_lot")
    await many(lines=3)
    assert many.reporter.activities == ["logging 3 lines"]
    assert len(many.reporter.lines) == 3


# --- file commands ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_copy_file_creates_the_parent_and_announces_the_output(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("data")
    source.chmod(0o640)
    run = Run("copy_file")
    dest = tmp_path / "deep" / "er" / "b.txt"
    await run(src=str(source), dest=str(dest))
    assert dest.read_text() == "data"
    assert dest.stat().st_mode & 0o777 == 0o640
    assert run.outputs == [[str(dest)]]
    with pytest.raises(CommandFailed, match="does not exist"):
        await run(src=str(tmp_path / "missing"), dest=str(dest))
    with pytest.raises(InvalidSettings, match="may not be empty"):
        await run(src="", dest=str(dest))


@pytest.mark.anyio
async def test_move_out_of_way_names_after_the_mtime_and_counts_collisions(
    tmp_path: Path,
) -> None:
    target = tmp_path / "render"
    for _ in range(2):
        target.mkdir()
        os.utime(target, (1_600_000_000, 1_600_000_000))
        await Run("move_out_of_way")(src=str(target))
    stamp = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(1_600_000_000))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"render-{stamp}", f"render-{stamp}~1"]
    await Run("move_out_of_way")(src=str(tmp_path / "missing"))


@pytest.mark.anyio
async def test_move_to_final_moves_an_existing_destination_aside(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "final").mkdir()
    await Run("move_to_final")(src=str(tmp_path / "new"), dest=str(tmp_path / "final"))
    assert (tmp_path / "final" / "f").read_text() == "new"
    assert len(list(tmp_path.glob("final-*"))) == 1
    await Run("move_to_final")(src=str(tmp_path / "gone"), dest=str(tmp_path / "final"))
    (tmp_path / "again").mkdir()
    with pytest.raises(CommandFailed, match="No such file"):
        await Run("move_to_final")(src=str(tmp_path / "again"), dest=str(tmp_path / "x" / "y"))


def test_numbered_paths(tmp_path: Path) -> None:
    assert numbered_path(tmp_path / "2018_12_06-spring.mkv").name == "2018_12_06_001-spring.mkv"
    assert numbered_path(tmp_path / "video.mkv").name == "video_001.mkv"
    (tmp_path / "video_007.mkv").write_bytes(b"")
    assert numbered_path(tmp_path / "video.mkv").name == "video_008.mkv"


@pytest.mark.anyio
async def test_move_with_counter(tmp_path: Path) -> None:
    source = tmp_path / "made.py"
    source.write_text("x")
    run = Run("move_with_counter")
    await run(src=str(source), dest=str(tmp_path / "final" / "2020_01_01-made.py"))
    moved = tmp_path / "final" / "2020_01_01_001-made.py"
    assert moved.read_text() == "x"
    assert run.outputs == [[str(moved)]]
    with pytest.raises(CommandFailed, match="does not exist"):
        await run(src=str(source), dest=str(tmp_path / "final" / "x.py"))


@pytest.mark.anyio
async def test_remove_file_and_remove_tree(tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CommandFailed, match="is a directory"):
        await Run("remove_file")(path=str(tmp_path / "dir"))
    await Run("remove_file")(path=str(tmp_path / "file"))
    await Run("remove_file")(path=str(tmp_path / "file"))
    await Run("remove_tree")(path=str(tmp_path / "dir"))
    await Run("remove_tree")(path=str(tmp_path / "dir"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_create_python_file(tmp_path: Path) -> None:
    run = Run("create_python_file")
    target = tmp_path / "sub" / "made.py"
    await run(filepath=str(target), contents="print('é')\n")
    assert target.read_text(encoding="utf-8") == "print('é')\n"
    with pytest.raises(InvalidSettings, match=r"must end in \.py"):
        await run(filepath=str(tmp_path / "made.txt"), contents="")


# --- the registry ----------------------------------------------------------------------------


def test_every_flamenco_worker_2_command_name_is_built_in() -> None:
    assert set(BUILTIN) >= {
        "echo", "sleep", "exec", "log_a_lot", "copy_file", "move_out_of_way", "move_to_final",
        "move_with_counter", "remove_file", "remove_tree", "create_python_file",
        "blender_render", "blender_render_progressive", "blender_render_audio",
        "create_video", "concatenate_videos", "mux_audio", "encode_audio",
    }  # fmt: skip


def test_settings_are_checked_against_the_signature() -> None:
    registry = CommandRegistry()

    @registry.command("greet")
    async def greet(
        ctx: TaskContext, name: str, times: int = 1, ratio: float | None = None, **extra: Any
    ) -> None:
        """A test command."""

    spec = registry.get("greet")
    assert spec is not None
    assert spec.bind({"name": "x", "ratio": 2, "other": [1]}) == {
        "name": "x",
        "ratio": 2,
        "other": [1],
    }
    with pytest.raises(InvalidSettings) as caught:
        spec.bind({"times": True, "ratio": "big"})
    message = str(caught.value)
    assert "'name' is required" in message
    assert "'times' must be an integer, not a boolean" in message
    assert "'ratio' must be a number or null, not a string" in message
    with pytest.raises(InvalidSettings, match="must be an object"):
        spec.bind([])  # type: ignore[arg-type]


def test_a_command_must_be_async_and_take_the_context() -> None:
    registry = CommandRegistry()
    with pytest.raises(TypeError, match="async"):
        registry.add("sync", lambda ctx: None)  # type: ignore[arg-type,return-value]

    async def no_context() -> None:
        """Nothing."""

    with pytest.raises(TypeError, match="TaskContext"):
        registry.add("bad", no_context)


@pytest.mark.anyio
async def test_what_a_subprocess_says_as_it_is_stopped_is_logged(tmp_path: Path) -> None:
    # Blender, stopped, says why and quits; those last lines were never read.
    pid_file = tmp_path / "child.pid"
    run = Run("exec")
    script = (
        "trap 'echo saving what I have; echo stopped cleanly; exit 1' TERM; "
        f"echo rendering; echo $$ > {pid_file}; while true; do sleep 0.05; done"
    )
    await _start_and_cancel(run, f"/bin/sh -c {shlex.quote(script)}", pid_file)
    said = [line.partition(" > ")[2] for line in run.reporter.lines if line.startswith("pid=")]
    assert said[:1] == ["rendering"], run.reporter.lines
    assert said[-2:] == ["saving what I have", "stopped cleanly"]  # after the shell's "Terminated"
