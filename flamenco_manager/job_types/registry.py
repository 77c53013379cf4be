"""The job types a manager knows: the built-ins plus plug-ins.

Plug-ins come from two places, loaded in this order (a later one may replace an earlier type of
the same name only when it says so with ``replace=True``):

1. **Entry points** in the group ``flamenco_manager.job_types``. Each entry point names a job
   type object, a job type class (called without arguments), or a ``register(registry)``
   function.
2. **Modules** named in the manager's settings (dotted paths, ``"studio.job_types"``). A module
   either defines ``register(registry)``, which is called, or ``JOB_TYPES``, a sequence of job
   types (objects or classes) that are registered. A module with both has ``register`` called
   only.

A plug-in that cannot be imported, or that registers something that is not a job type, stops the
manager with a :class:`JobTypeLoadError` naming it: a farm silently missing a studio's job type
is worse than one that does not start.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from flamenco_manager.services.jobs import TaskSpec

from .base import MAX_TASKS, CompileContext, JobType
from .blender_render import BlenderRenderJobType
from .custom import CustomJobType
from .errors import JobCompileError, JobSettingsError, JobTypeLoadError, UnknownJobType
from .progressive import BlenderRenderProgressiveJobType
from .simple import ExecCommandJobType, SleepJobType
from .video_chunks import BlenderVideoChunksJobType

__all__ = ["ENTRY_POINT_GROUP", "JobTypeRegistry", "builtin_job_types"]

ENTRY_POINT_GROUP: Final = "flamenco_manager.job_types"

log = logging.getLogger(__name__)


def builtin_job_types() -> list[JobType]:
    """A fresh instance of every built-in job type."""
    return [
        SleepJobType(),
        ExecCommandJobType(),
        BlenderRenderJobType(),
        BlenderVideoChunksJobType(),
        BlenderRenderProgressiveJobType(),
        CustomJobType(),
    ]


class JobTypeRegistry:
    """Job types by name."""

    def __init__(self, job_types: Iterable[JobType] = ()) -> None:
        self._types: dict[str, JobType] = {}
        for job_type in job_types:
            self.register(job_type)

    @classmethod
    def with_builtins(cls) -> JobTypeRegistry:
        """A registry holding the built-in job types only."""
        return cls(builtin_job_types())

    @classmethod
    def load(cls, modules: Iterable[str] = (), *, entry_points: bool = True) -> JobTypeRegistry:
        """The built-ins, then the entry-point plug-ins, then the ``modules`` plug-ins."""
        registry = cls.with_builtins()
        if entry_points:
            registry.load_entry_points()
        for module in modules:
            registry.load_module(module)
        return registry

    def register(self, job_type: Any, *, replace: bool = False) -> None:
        """Add a job type (an object, or a class called without arguments).

        Raises :class:`JobTypeLoadError` if it is not a job type, or if its name is taken and
        ``replace`` is false.
        """
        if isinstance(job_type, type):
            try:
                job_type = job_type()
            except Exception as error:
                raise JobTypeLoadError(f"cannot create job type {job_type!r}: {error}") from error
        if not isinstance(job_type, JobType):
            raise JobTypeLoadError(
                f"{job_type!r} is not a job type: it needs name, description, "
                "settings_schema(), validate() and compile()"
            )
        name = job_type.name
        if not isinstance(name, str) or not name:
            raise JobTypeLoadError(f"job type {job_type!r} has no name")
        if name in self._types and not replace:
            raise JobTypeLoadError(
                f"job type {name!r} is already registered; pass replace=True to override it"
            )
        self._types[name] = job_type

    def get(self, name: str) -> JobType:
        """The job type called ``name``; :class:`UnknownJobType` listing the known ones."""
        try:
            return self._types[name]
        except (KeyError, TypeError):
            raise UnknownJobType(str(name), self._types) from None

    def names(self) -> list[str]:
        """The names of the registered job types, sorted."""
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def settings_schemas(self) -> dict[str, dict[str, Any]]:
        """Every job type's settings schema by name, for the OpenAPI document and the docs."""
        return {name: self._types[name].settings_schema() for name in self.names()}

    def validate(
        self, job_type: str, settings: Any, *, waiting_for_files: bool = False
    ) -> dict[str, Any]:
        """Validated settings for ``job_type`` (raises UnknownJobType, JobSettingsError)."""
        return self.get(job_type).validate(settings, waiting_for_files=waiting_for_files)

    def compile(self, job_type: str, settings: Any, context: CompileContext) -> list[TaskSpec]:
        """The tasks of a job; what a plug-in gets wrong becomes a :class:`JobCompileError`.

        :class:`UnknownJobType` and :class:`JobSettingsError` pass through: they are the job's
        fault. Any other exception, or tasks that are not a valid list of :class:`TaskSpec`, is
        the job type's fault.
        """
        compiler = self.get(job_type)
        try:
            tasks = compiler.compile(settings, context)
        except JobSettingsError:
            raise
        except Exception as error:
            log.exception("job type %s failed to compile", job_type)
            raise JobCompileError(f"job type {job_type!r} failed: {error!r}") from error
        _check_tasks(job_type, tasks)
        return list(tasks)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register the job types of every entry point in ``group``."""
        for entry_point in importlib.metadata.entry_points(group=group):
            try:
                loaded = entry_point.load()
            except Exception as error:
                raise JobTypeLoadError(
                    f"cannot load job type entry point {entry_point.name!r} "
                    f"({entry_point.value}): {error}"
                ) from error
            self._register_loaded(loaded, f"entry point {entry_point.name!r}")

    def load_module(self, module_name: str) -> None:
        """Import ``module_name`` and register its job types (``register`` or ``JOB_TYPES``)."""
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise JobTypeLoadError(
                f"cannot import job type module {module_name!r}: {error}"
            ) from error
        register = getattr(module, "register", None)
        if callable(register):
            self._call_register(register, f"module {module_name!r}")
            return
        job_types = getattr(module, "JOB_TYPES", None)
        if job_types is None or isinstance(job_types, str | bytes | Mapping):
            raise JobTypeLoadError(
                f"job type module {module_name!r} has neither register(registry) nor a "
                "JOB_TYPES sequence"
            )
        for job_type in job_types:
            self.register(job_type)

    def _register_loaded(self, loaded: Any, origin: str) -> None:
        if isinstance(loaded, type | JobType):
            self.register(loaded)
        elif callable(loaded):
            self._call_register(loaded, origin)
        else:
            raise JobTypeLoadError(f"{origin} is neither a job type nor a register function")

    def _call_register(self, register: Any, origin: str) -> None:
        try:
            register(self)
        except JobTypeLoadError:
            raise
        except Exception as error:
            raise JobTypeLoadError(f"register() of {origin} failed: {error}") from error


def _check_tasks(job_type: str, tasks: Any) -> None:
    if not isinstance(tasks, list):
        raise JobCompileError(f"job type {job_type!r} returned {type(tasks).__name__}, not a list")
    if len(tasks) > MAX_TASKS:
        raise JobCompileError(f"job type {job_type!r} made {len(tasks)} tasks (max {MAX_TASKS})")
    for index, task in enumerate(tasks):
        if not isinstance(task, TaskSpec):
            raise JobCompileError(f"job type {job_type!r}: task {index} is not a TaskSpec")
        if any(not 0 <= parent < index for parent in task.parents):
            raise JobCompileError(
                f"job type {job_type!r}: task {index} ({task.name!r}) has a parent that is not "
                "an earlier task"
            )
