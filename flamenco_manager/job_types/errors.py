"""What job types raise.

::

    ServiceError (flamenco_manager.services.errors)
    └── Invalid                     the web layer answers 400
        ├── JobSettingsError        settings a job type refuses; lists every bad setting
        └── UnknownJobType          no job type of that name (also a LookupError)
    JobTypeLoadError                a plug-in could not be loaded (configuration problem)
    JobCompileError                 a job type broke while compiling valid settings (a bug)

A :class:`JobSettingsError` is also a :class:`ValueError`, so code outside the manager can catch
it without knowing the service errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from flamenco_manager.services.errors import Invalid

__all__ = [
    "JobCompileError",
    "JobSettingsError",
    "JobTypeLoadError",
    "SettingProblem",
    "UnknownJobType",
]


@attrs.frozen
class SettingProblem:
    """One bad setting: its name (a path such as ``tasks[2].commands[0].name``) and why."""

    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class JobSettingsError(Invalid, ValueError):
    """The settings of a job are not acceptable to its job type.

    ``problems`` names every bad setting, so one answer can list all mistakes; the message joins
    them.
    """

    def __init__(self, job_type: str, problems: Iterable[SettingProblem]) -> None:
        self.job_type = job_type
        self.problems = tuple(problems)
        details = "; ".join(str(problem) for problem in self.problems)
        super().__init__(f"invalid settings for job type {job_type!r}: {details}")

    def to_json(self) -> dict[str, Any]:
        """The error as a JSON-ready object, for an HTTP answer."""
        return {
            "message": self.message,
            "job_type": self.job_type,
            "problems": [{"setting": p.setting, "message": p.message} for p in self.problems],
        }


class UnknownJobType(Invalid, LookupError):
    """No job type has this name; the message lists the known ones."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"unknown job type {name!r}; known types: {', '.join(self.known)}")

    def __str__(self) -> str:
        # LookupError (via KeyError-like formatting) would quote the message otherwise.
        return self.message


class JobTypeLoadError(Exception):
    """A job type plug-in (module or entry point) could not be loaded or registered."""


class JobCompileError(Exception):
    """A job type failed on settings it had accepted: a bug in the job type, not in the job.

    The manager marks the job ``construction-failed`` with this message as its reason.
    """
