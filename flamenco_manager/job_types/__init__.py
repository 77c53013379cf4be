"""Job types: what a submitted job's settings mean, and the tasks they compile into.

The manager has no Flamenco Server above it, so it compiles jobs itself, into the same tasks the
Flamenco 2 Server made (spec/jobs.md §2), which unmodified Flamenco Worker 2.x runs.

- :class:`JobTypeRegistry` finds a job type by name; ``JobTypeRegistry.load(modules)`` holds the
  built-ins plus plug-ins (entry points and modules; see :mod:`.registry`).
- A job type (:class:`JobType`) has a ``name``, a ``description``, ``settings_schema()`` (JSON
  Schema), ``validate(settings)`` and ``compile(settings, context)`` giving
  :class:`~flamenco_manager.services.jobs.TaskSpec` objects. :class:`CompileContext` carries what
  compiling needs from the manager.
- Bad settings raise one :class:`JobSettingsError` listing every problem.

Built-ins: ``sleep``, ``exec-command``, ``blender-render``, ``blender-video-chunks``,
``blender-render-progressive`` (Blender 2.80-2.93 only) and ``custom`` (explicit tasks).
"""

from __future__ import annotations

from .base import MAX_TASKS, CompileContext, JobType, SchemaJobType, TaskListBuilder, command
from .blender_render import BlenderRenderJobType
from .custom import CustomJobType
from .errors import (
    JobCompileError,
    JobSettingsError,
    JobTypeLoadError,
    SettingProblem,
    UnknownJobType,
)
from .frames import (
    FrameRangeError,
    frame_range_count,
    frame_range_merge,
    frame_range_parse,
    frame_range_start_end,
    iter_frame_range,
)
from .progressive import BlenderRenderProgressiveJobType
from .registry import ENTRY_POINT_GROUP, JobTypeRegistry, builtin_job_types
from .schema import NO_DEFAULT, Kind, Setting, SettingsSchema
from .simple import ExecCommandJobType, SleepJobType
from .video_chunks import BlenderVideoChunksJobType

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_TASKS",
    "NO_DEFAULT",
    "BlenderRenderJobType",
    "BlenderRenderProgressiveJobType",
    "BlenderVideoChunksJobType",
    "CompileContext",
    "CustomJobType",
    "ExecCommandJobType",
    "FrameRangeError",
    "JobCompileError",
    "JobSettingsError",
    "JobType",
    "JobTypeLoadError",
    "JobTypeRegistry",
    "Kind",
    "SchemaJobType",
    "Setting",
    "SettingProblem",
    "SettingsSchema",
    "SleepJobType",
    "TaskListBuilder",
    "UnknownJobType",
    "builtin_job_types",
    "command",
    "frame_range_count",
    "frame_range_merge",
    "frame_range_parse",
    "frame_range_start_end",
    "iter_frame_range",
]
