"""``blender-render-progressive``: Cycles renders refined in sample chunks (spec/jobs.md §2.4).

Every frame is rendered several times with a growing range of Cycles samples; each new pass is
merged with the previous result, so a preview of the whole shot improves step by step. The
worker asks Cycles for a sample range with ``--cycles-resumable-num-chunks/-start-chunk/
-end-chunk``.

**Blender support.** Those options exist from Blender 2.80 to 2.93. Cycles X (Blender 3.0 and
later) removed resumable rendering, and Blender ignores unknown options after ``--``, so a newer
Blender renders *all* samples in every task: nothing fails, the farm just does the full render
once per sample chunk. The job type still compiles exactly as the Server did, for farms that
keep a 2.8x/2.9x Blender; its description says so. Use ``blender-render`` with current Blender.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs

from flamenco_manager.services.jobs import TaskSpec

from .base import (
    MAX_TASKS,
    CompileContext,
    SchemaJobType,
    TaskListBuilder,
    command,
    command_line_check,
)
from .blender_common import (
    FILEPATH,
    MAX_PATH,
    RNA_OVERRIDES,
    add_rna_overrides_task,
    intermediate_dir,
    output_dir,
    pure_path,
    render_output_check,
    video_glob_problem,
)
from .errors import SettingProblem
from .frames import (
    FrameRangeError,
    frame_range_count,
    frame_range_merge,
    frame_range_start_end,
    iter_frame_range,
)
from .schema import Kind, Setting, SettingsSchema
from .simple import CHUNK_SIZE, FRAMES

__all__ = ["BlenderRenderProgressiveJobType", "sample_chunks"]

UNCAPPED_CHUNKS: Final = 4
"""Sample chunks that follow the curve before the cap takes over (the Server's value)."""
MAX_SAMPLE_CHUNKS: Final = 1000
MAX_SAMPLES: Final = 1_000_000
MAX_PUBLISHED_FRAMES: Final = 10_000
"""The most frames a job may have: each publish task copies every frame, one command each."""


@attrs.frozen
class _SampleCurve:
    """Where sample chunk ``i`` ends: a curve just under quadratic, from count/40 upwards."""

    sample_count: int
    uncapped_chunks: int

    def __call__(self, index: int) -> float:
        start = self.sample_count / 40
        exponent = 5 / 3
        step = (self.sample_count - start) ** (1 / exponent) / (self.uncapped_chunks - 1)
        return float((step * index) ** exponent + start)


def _chunks(
    sample_count: int, sample_cap: int, curve: Callable[[int], float]
) -> Iterator[tuple[int, int]]:
    last = 0
    index = 0
    while last < sample_count:
        sample = round(curve(index))
        index += 1
        if sample - last > sample_cap:
            break
        yield last + 1, sample
        last = sample
    if last >= sample_count:
        return
    # The rest is split into as few chunks under the cap as possible, as equal as possible.
    left = sample_count - last
    per_chunk = left / math.ceil(left / sample_cap)
    position: float = last
    while position < sample_count:
        end = min(position + per_chunk, sample_count)
        yield math.floor(position) + 1, math.floor(end)
        position = end


def sample_chunks(
    sample_count: int, sample_cap: int, uncapped_chunks: int = UNCAPPED_CHUNKS
) -> list[tuple[int, int]]:
    """The Server's Cycles sample chunks: ``(first, last)`` sample numbers, base 1, inclusive.

    ``sample_chunks(400, 100)`` is ``[(1, 10), (11, 72), (73, 154), (155, 236), (237, 318),
    (319, 400)]``. For very small sample counts the curve yields empty chunks (``last <
    first``); callers refuse those.
    """
    return list(_chunks(sample_count, sample_cap, _SampleCurve(sample_count, uncapped_chunks)))


def frame_chunk_size(max_samples_per_task: int, total_frames: int, chunk_samples: int) -> int:
    """Frames per render task for a sample chunk, keeping samples per task about constant.

    A size above 2 shrinks by one when that leaves a fuller last task.
    """
    size = max_samples_per_task // chunk_samples
    if size > 2:
        in_last = total_frames % size
        if 0 < in_last < total_frames % (size - 1):
            size -= 1
    return size


def _exr_format_check(value: str) -> str | None:
    if value.upper() not in {"OPEN_EXR", "EXR"}:
        return f"must be 'OPEN_EXR' (progressive renders are merged as EXR), not {value!r}"
    return None


def _six_hashes_check(value: str) -> str | None:
    if not value.endswith("######") or value.endswith("#######"):
        return (
            "must end in exactly six '#' (the frame number), e.g. /render/shot/frames-######, "
            f"not {value!r}"
        )
    if '"' in value:
        # The worker's EXR merge puts the paths in a Python string and refuses double quotes.
        return f"must not contain double quotes (the EXR merge refuses them), not {value!r}"
    return render_output_check(value)


class BlenderRenderProgressiveJobType(SchemaJobType):
    """``blender-render-progressive``: sample-chunked Cycles renders merged step by step."""

    name = "blender-render-progressive"
    description = (
        "Cycles only, Blender 2.80 to 2.93: renders every frame in growing chunks of samples "
        "and merges them, so previews (JPEG and MKV) improve as the job runs; the final EXR "
        "frames, previews and video are published to the output directory at the end. "
        "Blender 3.0 and later ignore the resumable-render options and render all samples in "
        "every task; use blender-render there."
    )
    schema = SettingsSchema(
        (
            FILEPATH,
            Setting(
                name="blender_cmd",
                kind=Kind.STRING,
                required=True,
                max_length=MAX_PATH,
                doc="the Blender command line, e.g. '{blender}'",
                check=command_line_check,
            ),
            Setting(
                name="render_output",
                kind=Kind.STRING,
                required=True,
                max_length=MAX_PATH,
                doc="output file pattern ending in exactly six '#', e.g. '{render}/shot/f-######'",
                check=_six_hashes_check,
            ),
            FRAMES,
            CHUNK_SIZE,
            Setting(
                name="format",
                kind=Kind.STRING,
                required=True,
                doc="must be 'OPEN_EXR'",
                check=_exr_format_check,
            ),
            Setting(
                name="cycles_sample_count",
                kind=Kind.INTEGER,
                required=True,
                minimum=1,
                maximum=MAX_SAMPLES,
                doc="total Cycles samples per frame",
            ),
            Setting(
                name="cycles_sample_cap",
                kind=Kind.INTEGER,
                required=True,
                minimum=1,
                maximum=MAX_SAMPLES,
                doc="most samples one render task may do",
            ),
            Setting(
                name="fps",
                kind=Kind.NUMBER,
                required=True,
                exclusive_minimum=0,
                doc="frames per second of the preview video",
            ),
            RNA_OVERRIDES,
        ),
        removed={
            "cycles_num_chunks": "is no longer supported: the job was made by an outdated "
            "Blender Cloud add-on; give cycles_sample_count and cycles_sample_cap instead",
        },
    )

    def __init__(self, *, uncapped_chunks: int = UNCAPPED_CHUNKS) -> None:
        if uncapped_chunks < 2:
            raise ValueError(f"uncapped_chunks must be at least 2, not {uncapped_chunks}")
        self.uncapped_chunks = uncapped_chunks
        """Steepness of the sample curve; the Server's tests used 3 to keep jobs small."""

    def check(self, settings: dict[str, Any]) -> list[SettingProblem]:
        """The sample chunking must be progressive and the job not too large."""
        count, cap = settings.get("cycles_sample_count"), settings.get("cycles_sample_cap")
        if not isinstance(count, int) or not isinstance(cap, int):
            return []
        if math.ceil(count / cap) + self.uncapped_chunks > MAX_SAMPLE_CHUNKS:
            return [
                SettingProblem(
                    "cycles_sample_cap",
                    f"{count} samples in chunks of at most {cap} make too many sample chunks "
                    f"(at most {MAX_SAMPLE_CHUNKS})",
                )
            ]
        chunks = sample_chunks(count, cap, self.uncapped_chunks)
        if any(last < first for first, last in chunks):
            return [
                SettingProblem(
                    "cycles_sample_count",
                    f"{count} samples are too few to split into sample chunks; use "
                    "blender-render instead",
                )
            ]
        if len(chunks) < 2:
            return [
                SettingProblem(
                    "cycles_sample_cap",
                    "this job would not be progressive (one sample chunk); use a larger "
                    "cycles_sample_count, a smaller cycles_sample_cap, or blender-render",
                )
            ]
        frames, chunk_size = settings.get("frames"), settings.get("chunk_size")
        if not isinstance(frames, str) or not isinstance(chunk_size, int):
            return []
        try:
            total = frame_range_count(frames)
        except FrameRangeError:
            return []
        if total > MAX_PUBLISHED_FRAMES:
            # The Server made publish tasks of any size: a million frames meant tasks of a
            # million copy_file commands (over 100 MB each) and a minute of compiling.
            return [
                SettingProblem(
                    "frames",
                    f"selects {total} frames; a progressive job publishes every frame in one "
                    f"task, so at most {MAX_PUBLISHED_FRAMES} are allowed",
                )
            ]
        # Exactly what _ProgressiveBuild makes, so that no accepted job fails to compile.
        videos = 1 if total > 1 else 0
        glob = video_glob_problem(settings, "the create-preview-video tasks") if videos else None
        if glob is not None:
            return [glob]
        # destroy, move-outdir, publish exr and jpeg (and video), rna-overrides if any
        tasks = 4 + videos + (1 if settings.get("rna_overrides") else 0)
        for index, (first, last) in enumerate(chunks):
            size = frame_chunk_size(chunk_size * cap, total, last - first + 1)
            merge = 1 if index > 0 else 0
            tasks += math.ceil(total / size) + merge + 1 + videos  # renders, merge, previews
        if tasks > MAX_TASKS:
            return [
                SettingProblem(
                    "chunk_size",
                    f"the job would have {tasks} tasks; at most {MAX_TASKS} are allowed",
                )
            ]
        return []

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """The task graph of spec/jobs.md §2.4, in the Server's creation order."""
        settings = {
            **settings,
            "filepath": context.portable(settings["filepath"]),
            "render_output": context.portable(settings["render_output"]),
        }
        chunks = sample_chunks(
            settings["cycles_sample_count"], settings["cycles_sample_cap"], self.uncapped_chunks
        )
        return _ProgressiveBuild(settings, context, chunks).tasks.tasks


class _ProgressiveBuild:
    """One compilation; keeps the paths and settings the task makers share."""

    def __init__(
        self, settings: dict[str, Any], context: CompileContext, chunks: list[tuple[int, int]]
    ) -> None:
        self.settings = settings
        self.chunks = chunks
        self.frames: str = settings["frames"]
        self.blender_cmd: str = settings["blender_cmd"]
        self.render_output = pure_path(settings["render_output"])
        self.render_path = output_dir(settings["render_output"])
        self.intermediate = intermediate_dir(self.render_path, context.created)
        self.total_frames = frame_range_count(self.frames)
        self.make_video = self.total_frames > 1
        self.tasks = TaskListBuilder()
        self._build()

    def _render_output(self, first: int, last: int) -> str:
        return str(self.intermediate / f"render-smpl-{first:04d}-{last:04d}-######")

    def _merge_output(self, last: int) -> str:
        return str(self.intermediate / f"merge-smpl-{last:04d}-######")

    def _build(self) -> None:
        settings, tasks = self.settings, self.tasks
        destroy = tasks.add(
            "destroy-preexisting-intermediate",
            "file-management",
            [command("remove_tree", path=str(self.intermediate))],
        )
        overrides = add_rna_overrides_task(tasks, settings, (destroy,))
        render_parent = destroy if overrides is None else overrides

        sample_count: int = settings["cycles_sample_count"]
        sample_cap: int = settings["cycles_sample_cap"]
        max_samples_per_task = settings["chunk_size"] * sample_cap

        merge_deps: list[int] = []
        images: int | None = None
        video: int | None = None
        samples_so_far = 0
        for index, (first, last) in enumerate(self.chunks):
            priority = -10 * index
            size = frame_chunk_size(max_samples_per_task, self.total_frames, last - first + 1)
            renders = [
                tasks.add(
                    f"render-s_{first}-{last}-f_{frame_range_merge(chunk)}",
                    "blender-render",
                    [
                        command(
                            "blender_render_progressive",
                            blender_cmd=self.blender_cmd,
                            filepath=settings["filepath"],
                            # Blender's --render-format only knows upper case ('exr' is
                            # ignored and the blend file's own format used), and the worker
                            # maps only 'OPEN_EXR' to 'EXR'.
                            format=settings["format"].upper(),
                            render_output=self._render_output(first, last),
                            frames=frame_range_merge(chunk, blender_style=True),
                            # One Cycles chunk per sample, so the chunk numbers are samples.
                            cycles_num_chunks=sample_count,
                            cycles_chunk_start=first,
                            cycles_chunk_end=last,
                        )
                    ],
                    parents=(render_parent,),
                    priority=priority,
                )
                for chunk in iter_frame_range(self.frames, size)
            ]
            if index == 0:
                latest = self._render_output(first, last)
                images, video = self._previews(renders, images, video, latest, priority + 1)
                merge_deps = renders
            else:
                merge = self._merge(merge_deps + renders, index, samples_so_far, first, last)
                images, video = self._previews([merge], images, video, self._merge_output(last), 1)
                merge_deps = [merge]
            samples_so_far = last

        out_of_way = tasks.add(
            "move-outdir-out-of-way",
            "file-management",
            [command("move_out_of_way", src=str(self.render_path))],
            parents=tuple(merge_deps),
            priority=1,
        )
        self._publish(out_of_way, images, video, sample_count)

    def _previews(
        self,
        parents: list[int],
        previous_images: int | None,
        previous_video: int | None,
        latest_output: str,
        priority: int,
    ) -> tuple[int, int | None]:
        settings, tasks = self.settings, self.tasks
        image_parents = parents if previous_images is None else [previous_images, *parents]
        images = tasks.add(
            "create-preview-images",
            "blender-render",
            [
                command(
                    "exr_sequence_to_jpeg",
                    blender_cmd=self.blender_cmd,
                    filepath=settings["filepath"],
                    exr_glob=_with_name(latest_output, "######", "*.exr"),
                    output_pattern="preview-######",
                )
            ],
            parents=tuple(image_parents),
            priority=priority,
        )
        if not self.make_video:
            return images, None
        video_parents = (images,) if previous_video is None else (previous_video, images)
        video = tasks.add(
            "create-preview-video",
            "video-encoding",
            [
                command(
                    "create_video",
                    input_files=str(self.intermediate / "preview-*.jpg"),
                    output_file=str(self.intermediate / "preview.mkv"),
                    fps=settings["fps"],
                    ffmpeg_cmd="{ffmpeg}",
                )
            ],
            parents=video_parents,
            priority=priority,
        )
        return images, video

    def _merge(
        self, parents: list[int], index: int, samples_so_far: int, first: int, last: int
    ) -> int:
        start_end = frame_range_start_end(self.frames)
        assert start_end is not None  # validation refuses ranges without frames
        frame_start, frame_end = start_end
        # The first merge reads the first render; later ones the previous merge.
        input1 = (
            self._render_output(1, samples_so_far)
            if index == 1
            else self._merge_output(samples_so_far)
        )
        input2 = self._render_output(first, last)
        return self.tasks.add(
            f"merge-to-s_{last}-f_{frame_start}-{frame_end}",
            "exr-merge",
            [
                command(
                    "merge_progressive_render_sequence",
                    input1=input1.replace("######", f"{frame_start:06d}.exr"),
                    input2=input2.replace("######", f"{frame_start:06d}.exr"),
                    output=self._merge_output(last),
                    weight1=samples_so_far,
                    weight2=last - first + 1,
                    blender_cmd=self.blender_cmd,
                    frame_start=frame_start,
                    frame_end=frame_end,
                )
            ],
            parents=tuple(parents),
            priority=1,
        )

    def _publish(self, out_of_way: int, images: int | None, video: int | None, total: int) -> None:
        settings, tasks = self.settings, self.tasks
        frames = [
            frame
            for chunk in iter_frame_range(self.frames, settings["chunk_size"])
            for frame in chunk
        ]
        merged = self._merge_output(total)
        output = str(self.render_output)
        tasks.add(
            "publish-exr-to-output",
            "file-management",
            [
                command(
                    "copy_file",
                    src=merged.replace("######", f"{frame:06d}.exr"),
                    dest=output.replace("######", f"{frame:06d}.exr"),
                )
                for frame in frames
            ],
            parents=(out_of_way,),
            priority=1,
        )
        assert images is not None  # there are always at least two sample chunks
        tasks.add(
            "publish-jpeg-to-output",
            "file-management",
            [
                command(
                    "copy_file",
                    src=str(self.intermediate / f"preview-{frame:06d}.jpg"),
                    dest=output.replace("######", f"{frame:06d}.jpg"),
                )
                for frame in frames
            ],
            parents=(images, out_of_way),
            priority=1,
        )
        if video is None:
            return
        tasks.add(
            "publish-video-to-output",
            "file-management",
            [
                command(
                    "copy_file",
                    src=str(self.intermediate / "preview.mkv"),
                    dest=str(self.render_path / "preview.mkv"),
                )
            ],
            parents=(video, out_of_way),
            priority=1,
        )


def _with_name(path: str, old: str, new: str) -> str:
    """``path`` with ``old`` replaced by ``new`` in its last component only."""
    pure = pure_path(path)
    return str(pure.with_name(pure.name.replace(old, new)))
