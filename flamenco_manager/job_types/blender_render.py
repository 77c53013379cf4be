"""``blender-render``: the main job type (spec/jobs.md §2.3).

Frames are rendered in chunks into an intermediate directory next to the output directory, so
that a half-finished render never mixes with the previous one; a last task moves the whole
directory into place. A video is made first when the job asks for images, has at least two
frames in a format FFmpeg reads, and some worker does ``video-encoding``.
"""

from __future__ import annotations

from typing import Any, Final

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
    intermediate_dir,
    output_dir,
    pure_path,
    video_glob_problem,
)
from .errors import SettingProblem
from .frames import frame_range_count, frame_range_merge, iter_frame_range
from .schema import Kind, Setting, SettingsSchema
from .simple import CHUNK_SIZE, FRAMES

__all__ = ["BlenderRenderJobType"]

FFMPEG_INCOMPATIBLE_FORMATS: Final = frozenset(
    {"EXR", "MULTILAYER", "OPEN_EXR", "OPEN_EXR_MULTILAYER"}
)


class BlenderRenderJobType(SchemaJobType):
    """``blender-render``: render tasks per frame chunk, optional video, then move to final."""

    name = "blender-render"
    description = (
        "Renders a blend file in chunks of frames into an intermediate directory next to the "
        "output directory, then moves it into place (an existing output directory is renamed "
        "aside first). With images_or_video 'images', fps and output_file_extension, and a "
        "worker that does video-encoding, also makes an MKV video of the frames."
    )
    schema = SettingsSchema(
        (
            FILEPATH,
            RENDER_OUTPUT,
            FRAMES,
            CHUNK_SIZE,
            BLENDER_CMD,
            Setting(
                name="format",
                kind=Kind.STRING,
                max_length=100,
                doc="Blender image format: PNG, JPEG, OPEN_EXR, OPEN_EXR_MULTILAYER, ...; "
                "absent means the blend file's own",
            ),
            Setting(
                name="fps",
                kind=Kind.NUMBER,
                exclusive_minimum=0,
                doc="frames per second of the video",
            ),
            Setting(
                name="images_or_video",
                kind=Kind.STRING,
                choices=("images", "video"),
                doc="what Blender writes; a video task is only made for 'images'",
            ),
            Setting(
                name="output_file_extension",
                kind=Kind.STRING,
                max_length=100,
                doc="extension of the rendered frames, e.g. '.png'; needed for the video",
                check=extension_check,
                json_schema_extra={"pattern": EXTENSION_PATTERN},
            ),
            RNA_OVERRIDES,
        )
    )

    def check(self, settings: dict[str, Any]) -> list[SettingProblem]:
        """Refuse jobs the Server would have failed to compile, and jobs with too many tasks."""
        problems: list[SettingProblem] = []
        frames = settings.get("frames")
        if (
            settings.get("images_or_video") == "images"
            and isinstance(frames, str)
            and frame_range_count(frames) >= 2
            and "format" not in settings
            and "frames" in settings
        ):
            # The Server read `format` unconditionally at this point and crashed without it.
            problems.append(
                SettingProblem(
                    "format",
                    "is required when images_or_video is 'images' and there are two or more "
                    "frames (it decides whether a video can be made)",
                )
            )
        if self._may_make_video(settings):
            glob = video_glob_problem(
                settings, "the create-video task", ", or leave out fps to make no video"
            )
            if glob is not None:
                problems.append(glob)
        count = task_count_problem(settings, extra=3)
        if count is not None:
            problems.append(count)
        return problems

    def build(self, settings: dict[str, Any], context: CompileContext) -> list[TaskSpec]:
        """rna-overrides?, blender-render-<chunk>..., create-video?, move-to-final."""
        settings = {
            **settings,
            "filepath": context.portable(settings["filepath"]),
            "render_output": context.portable(settings["render_output"]),
        }
        render_output = pure_path(settings["render_output"])
        final_dir = output_dir(settings["render_output"])
        render_dir = intermediate_dir(final_dir, context.created)

        tasks = TaskListBuilder()
        overrides = add_rna_overrides_task(tasks, settings)
        render_parents = () if overrides is None else (overrides,)
        renders: list[int] = []
        for chunk in iter_frame_range(settings["frames"], settings["chunk_size"]):
            renders.append(
                tasks.add(
                    f"blender-render-{frame_range_merge(chunk)}",
                    "blender-render",
                    [
                        command(
                            "blender_render",
                            blender_cmd=settings["blender_cmd"],
                            filepath=settings["filepath"],
                            # Blender's --render-format takes upper case only (the add-on
                            # sends it so; typed by hand, 'png' rendered the file's format).
                            format=_format(settings),
                            render_output=str(render_dir / render_output.name),
                            frames=frame_range_merge(chunk, blender_style=True),
                        )
                    ],
                    parents=render_parents,
                )
            )

        final_parents = tuple(renders)
        if self._makes_video(settings, context):
            ext = settings["output_file_extension"]
            # The Server's name has the frames verbatim; blanks around them (a line break
            # from a file) stay out of it.
            video_name = f"{blend_stem(settings['filepath'])}-{settings['frames'].strip()}.mkv"
            video = tasks.add(
                "create-video",
                "video-encoding",
                [
                    command(
                        "create_video",
                        input_files=str(render_dir / f"*{ext}"),
                        output_file=str(render_dir / video_name),
                        fps=settings["fps"],
                        ffmpeg_cmd="{ffmpeg}",
                    )
                ],
                parents=final_parents,
            )
            final_parents = (video,)
        tasks.add(
            "move-to-final",
            "file-management",
            [command("move_to_final", src=str(render_dir), dest=str(final_dir))],
            parents=final_parents,
        )
        return tasks.tasks

    @staticmethod
    def _may_make_video(settings: dict[str, Any]) -> bool:
        """Whether a farm with a ``video-encoding`` worker gets a create-video task."""
        frames = settings.get("frames")
        return (
            settings.get("images_or_video") == "images"
            and isinstance(frames, str)
            and frame_range_count(frames) >= 2
            and _format(settings) not in FFMPEG_INCOMPATIBLE_FORMATS
            and "fps" in settings
            and "output_file_extension" in settings
        )

    @classmethod
    def _makes_video(cls, settings: dict[str, Any], context: CompileContext) -> bool:
        return cls._may_make_video(settings) and "video-encoding" in context.worker_task_types


def _format(settings: dict[str, Any]) -> str | None:
    """The Blender image format asked for, as Blender spells it (upper case), or ``None``."""
    value = settings.get("format")
    return value.upper() if isinstance(value, str) else None
