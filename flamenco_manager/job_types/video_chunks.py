"""``blender-video-chunks``: render a video edit in chunks, encode each, join them (§2.5).

Frames go to ``<output dir>/frames/chunk-<first>-<last>/`` as JPEG, each chunk becomes a video,
the videos are concatenated (and muxed with the sound track when ``extract_audio``), and the
result is moved next to the output with a counter so earlier results are kept.
"""

from __future__ import annotations

from typing import Any

from flamenco_manager.services.jobs import TaskSpec

from .base import CompileContext, SchemaJobType, TaskListBuilder, command, task_count_problem
from .blender_common import (
    BLENDER_CMD,
    EXTENSION_PATTERN,
    FILEPATH,
    RENDER_OUTPUT,
    RNA_OVERRIDES,
    add_rna_overrides_task,
    blend_stem,
    extension_check,
    output_dir,
    render_output_check,
    video_glob_problem,
)
from .errors import SettingProblem
from .frames import (
    frame_range_merge,
    frame_range_start_end,
    iter_frame_range,
)
from .schema import Kind, Setting, SettingsSchema
from .simple import CHUNK_SIZE, FRAMES

__all__ = ["BlenderVideoChunksJobType"]


class BlenderVideoChunksJobType(SchemaJobType):
    """``blender-video-chunks``: frame chunks -> video chunks -> one video (with sound)."""

    name = "blender-video-chunks"
    description = (
        "Renders a video (e.g. a sequencer edit) in chunks of frames, encodes each chunk, "
        "joins the chunks into one video and, with extract_audio, adds the sound. The result "
        "is moved to <output dir>/<YYYY_MM_DD>-<blend name><ext>, with a counter if taken."
    )
    schema = SettingsSchema(
        (
            FILEPATH,
            Setting(
                name="render_output",
                kind=Kind.STRING,
                required=True,
                max_length=RENDER_OUTPUT.max_length,
                doc="output path; only its directory is used, e.g. '{render}/edit/video'",
                check=render_output_check,
            ),
            FRAMES,
            CHUNK_SIZE,
            Setting(
                name="output_file_extension",
                kind=Kind.STRING,
                required=True,
                max_length=100,
                doc="container of the video, e.g. '.mkv'",
                check=extension_check,
                json_schema_extra={"pattern": EXTENSION_PATTERN},
            ),
            Setting(
                name="images_or_video",
                kind=Kind.STRING,
                required=True,
                choices=("video",),
                doc="must be 'video' for this job type",
            ),
            Setting(
                name="fps",
                kind=Kind.NUMBER,
                required=True,
                exclusive_minimum=0,
                doc="frames per second of the video",
            ),
            Setting(
                name="extract_audio",
                kind=Kind.BOOLEAN,
                required=True,
                doc="also render the sound and mux it into the video",
            ),
            BLENDER_CMD,
            RNA_OVERRIDES,
        )
    )

    def check(self, settings: dict[str, Any]) -> list[SettingProblem]:
        """Refuse frame ranges that would make too many tasks, and unglobbable directories."""
        problems = [
            task_count_problem(settings, per_chunk=2, extra=7),
            video_glob_problem(settings, "each video-chunk task"),
        ]
        return [problem for problem in problems if problem is not None]

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """move-out-of-way, rna-overrides?, frame/video chunk pairs, audio?, concat, mux?, move."""
        settings = {
            **settings,
            "filepath": context.portable(settings["filepath"]),
            "render_output": context.portable(settings["render_output"]),
        }
        ext: str = settings["output_file_extension"]
        out = output_dir(settings["render_output"])
        frames_dir = out / "frames"
        audio = frames_dir / "audio.aac"
        video = frames_dir / f"video{ext}"
        muxed = frames_dir / f"muxed{ext}"
        # The Server used the compile time; the creation time is the same moment here.
        day = context.created.astimezone() if context.created.tzinfo else context.created
        final = out / f"{day:%Y_%m_%d}-{blend_stem(settings['filepath'])}{ext}"

        tasks = TaskListBuilder()
        out_of_way = tasks.add(
            "move-out-of-way",
            "file-management",
            [command("move_out_of_way", src=str(frames_dir))],
        )
        overrides = add_rna_overrides_task(tasks, settings, (out_of_way,))
        render_parent = out_of_way if overrides is None else overrides

        # The worker concatenates chunk-*<ext> in name order, so every number needs the same
        # width: the Server's five digits put chunk-100000-... before chunk-99990-....
        first_last = frame_range_start_end(settings["frames"])
        width = max(5, len(str(first_last[1] if first_last else 0)))
        video_chunks: list[int] = []
        for chunk in iter_frame_range(settings["frames"], settings["chunk_size"]):
            name = frame_range_merge(chunk)
            chunk_dir = f"chunk-{chunk[0]:0{width}d}-{chunk[-1]:0{width}d}"
            frame_chunk = tasks.add(
                f"frame-chunk-{name}",
                "blender-render",
                [
                    command(
                        "blender_render",
                        blender_cmd=settings["blender_cmd"],
                        filepath=settings["filepath"],
                        format="JPEG",
                        render_output=str(frames_dir / chunk_dir / "######.jpg"),
                        frames=frame_range_merge(chunk, blender_style=True),
                    )
                ],
                parents=(render_parent,),
            )
            video_chunks.append(
                tasks.add(
                    f"video-chunk-{name}",
                    "video-encoding",
                    [
                        command(
                            "create_video",
                            input_files=str(frames_dir / chunk_dir / "*.jpg"),
                            output_file=str(frames_dir / f"{chunk_dir}{ext}"),
                            fps=settings["fps"],
                            ffmpeg_cmd="{ffmpeg}",
                        )
                    ],
                    parents=(frame_chunk,),
                )
            )

        encode_audio: int | None = None
        if settings["extract_audio"]:
            assert first_last is not None  # validation refuses ranges without frames
            flac = frames_dir / "audio.flac"
            render_audio = tasks.add(
                "render-audio",
                "blender-render",
                [
                    command(
                        "blender_render_audio",
                        blender_cmd=settings["blender_cmd"],
                        filepath=settings["filepath"],
                        render_output=str(flac),
                        frame_start=first_last[0],
                        frame_end=first_last[1],
                    )
                ],
                parents=(out_of_way,),
            )
            encode_audio = tasks.add(
                "encode-audio",
                "video-encoding",
                [
                    command(
                        "encode_audio",
                        input_file=str(flac),
                        codec="aac",
                        bitrate="192k",
                        output_file=str(audio),
                        ffmpeg_cmd="{ffmpeg}",
                    )
                ],
                parents=(render_audio,),
            )

        concatenate = tasks.add(
            "concatenate-videos",
            "video-encoding",
            [
                command(
                    "concatenate_videos",
                    input_files=str(frames_dir / f"chunk-*{ext}"),
                    output_file=str(video),
                    ffmpeg_cmd="{ffmpeg}",
                    counter_in_output_name=False,
                )
            ],
            parents=tuple(video_chunks),
        )
        final_parent, result = concatenate, video
        if encode_audio is not None:
            final_parent = tasks.add(
                "mux-audio-video",
                "video-encoding",
                [
                    command(
                        "mux_audio",
                        audio_file=str(audio),
                        video_file=str(video),
                        output_file=str(muxed),
                        ffmpeg_cmd="{ffmpeg}",
                    )
                ],
                parents=(encode_audio, concatenate),
            )
            result = muxed
        # Without sound the Server still moved muxed<ext>, which nothing makes (§2.5): we move
        # the video that exists.
        tasks.add(
            "move-with-counter",
            "file-management",
            [command("move_with_counter", src=str(result), dest=str(final))],
            parents=(final_parent,),
        )
        return tasks.tasks
