"""The registry: built-ins, plug-ins from modules and entry points, schemas, compile guards."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flamenco_manager.job_types as job_types
from flamenco_manager.job_types import (
    CompileContext,
    JobCompileError,
    JobSettingsError,
    JobType,
    JobTypeLoadError,
    JobTypeRegistry,
    SleepJobType,
)
from flamenco_manager.services.jobs import TaskSpec

BUILTINS = [
    "blender-render",
    "blender-render-progressive",
    "blender-video-chunks",
    "custom",
    "exec-command",
    "sleep",
]

PLUGIN_WITH_JOB_TYPES = """
from flamenco_manager.job_types import (
    Kind, SchemaJobType, Setting, SettingsSchema, TaskListBuilder, command,
)


class Greet(SchemaJobType):
    name = "greet"
    description = "Says hello."
    schema = SettingsSchema(
        (Setting(name="who", kind=Kind.STRING, required=True, doc="whom to greet"),)
    )

    def build(self, settings, context):
        tasks = TaskListBuilder()
        tasks.add("greet", "sleep", [command("echo", message=f"hello {settings['who']}")])
        return tasks.tasks


JOB_TYPES = [Greet]
"""

PLUGIN_WITH_REGISTER = """
from flamenco_manager.job_types import SleepJobType


class QuickSleep(SleepJobType):
    name = "quick-sleep"


def register(registry):
    registry.register(QuickSleep())
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith("studio_")]:
            del sys.modules[name]


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_builtins() -> None:
    registry = JobTypeRegistry.with_builtins()
    assert registry.names() == BUILTINS
    assert all(isinstance(registry.get(name), JobType) for name in BUILTINS)
    assert "sleep" in registry


def test_public_names_are_exported() -> None:
    for name in job_types.__all__:
        assert hasattr(job_types, name), name


def test_module_with_job_types(plugin_dir: Path) -> None:
    write_module(plugin_dir, "studio_greet", PLUGIN_WITH_JOB_TYPES)
    registry = JobTypeRegistry.load(["studio_greet"], entry_points=False)
    assert registry.names() == sorted([*BUILTINS, "greet"])
    tasks = registry.compile("greet", {"who": "world"}, CompileContext())
    assert tasks == [
        TaskSpec(
            name="greet",
            task_type="sleep",
            commands=[{"name": "echo", "settings": {"message": "hello world"}}],
        )
    ]
    with pytest.raises(JobSettingsError, match="who: is required"):
        registry.validate("greet", {})


def test_module_with_register_function(plugin_dir: Path) -> None:
    write_module(plugin_dir, "studio_sleep", PLUGIN_WITH_REGISTER)
    registry = JobTypeRegistry.load(["studio_sleep"], entry_points=False)
    assert "quick-sleep" in registry.names()


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("X = 1\n", "neither register(registry) nor a JOB_TYPES"),
        ("JOB_TYPES = [object()]\n", "is not a job type"),
        ("raise RuntimeError('boom')\n", "cannot import job type module 'studio_bad': boom"),
        (
            "from flamenco_manager.job_types import SleepJobType\nJOB_TYPES = [SleepJobType]\n",
            "'sleep' is already registered",
        ),
        ("def register(registry):\n    raise KeyError('x')\n", "register() of module"),
    ],
)
def test_bad_plugin_modules_stop_loading_with_a_named_error(
    plugin_dir: Path, source: str, fragment: str
) -> None:
    write_module(plugin_dir, "studio_bad", source)
    with pytest.raises(JobTypeLoadError) as caught:
        JobTypeRegistry.load(["studio_bad"], entry_points=False)
    assert fragment in str(caught.value)


def test_missing_module_is_named() -> None:
    with pytest.raises(JobTypeLoadError, match="studio_missing"):
        JobTypeRegistry.load(["studio_missing"], entry_points=False)


def test_replace_is_explicit() -> None:
    registry = JobTypeRegistry.with_builtins()
    replacement = SleepJobType()
    registry.register(replacement, replace=True)
    assert registry.get("sleep") is replacement


class _EntryPoint:
    def __init__(self, name: str, value: str, loaded: Any) -> None:
        self.name, self.value, self._loaded = name, value, loaded

    def load(self) -> Any:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_entry_points(monkeypatch: pytest.MonkeyPatch, plugin_dir: Path) -> None:
    write_module(plugin_dir, "studio_ep", PLUGIN_WITH_JOB_TYPES + PLUGIN_WITH_REGISTER)
    import studio_ep  # type: ignore[import-not-found]

    seen: list[str] = []

    def entry_points(*, group: str) -> list[_EntryPoint]:
        seen.append(group)
        return [
            _EntryPoint("greet", "studio_ep:Greet", studio_ep.Greet),
            _EntryPoint("quick", "studio_ep:register", studio_ep.register),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry = JobTypeRegistry.load()
    assert seen == ["flamenco_manager.job_types"]
    assert {"greet", "quick-sleep"} <= set(registry.names())


def test_broken_entry_point_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda *, group: [_EntryPoint("bad", "x:y", ImportError("no x"))],
    )
    with pytest.raises(JobTypeLoadError, match="entry point 'bad' \\(x:y\\): no x"):
        JobTypeRegistry.load()


class _Broken:
    name = "broken"
    description = "raises"

    def __init__(self, result: Any) -> None:
        self.result = result

    def settings_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def validate(self, settings: Any, *, waiting_for_files: bool = False) -> dict[str, Any]:
        return dict(settings)

    def compile(self, settings: Any, context: CompileContext) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    "result",
    [
        ZeroDivisionError("oops"),
        "not a list",
        [{"name": "x"}],
        [TaskSpec(name="a", task_type="t", commands=[], parents=(0,))],
    ],
)
def test_a_plugin_that_breaks_while_compiling_gives_job_compile_error(result: Any) -> None:
    registry = JobTypeRegistry([_Broken(result)])
    with pytest.raises(JobCompileError, match="broken"):
        registry.compile("broken", {}, CompileContext())


def test_settings_schemas_are_json_schema_objects() -> None:
    schemas = JobTypeRegistry.with_builtins().settings_schemas()
    assert sorted(schemas) == BUILTINS
    render = schemas["blender-render"]
    assert render["type"] == "object"
    assert render["additionalProperties"] is False
    assert render["required"] == ["filepath", "render_output", "frames", "chunk_size"]
    assert render["properties"]["chunk_size"] == {
        "type": "integer",
        "description": "most frames per task",
        "minimum": 1,
    }
    assert render["properties"]["blender_cmd"]["default"] == "{blender}"
    assert render["properties"]["images_or_video"]["enum"] == ["images", "video"]
    assert render["properties"]["rna_overrides"]["items"] == {"type": "string"}
    custom = schemas["custom"]["properties"]["tasks"]
    assert custom["items"]["required"] == ["name", "task_type", "commands"]
    for schema in schemas.values():
        for prop in schema["properties"].values():
            assert prop["description"]


def test_schema_validates_against_its_own_examples() -> None:
    """A document valid for the settings schema (types, required) is accepted by validate()."""
    registry = JobTypeRegistry.with_builtins()
    example = {"frames": "1-3", "chunk_size": 1, "time_in_seconds": 0}
    schema = registry.get("sleep").settings_schema()
    assert set(schema["required"]) == set(example)
    assert registry.validate("sleep", example) == example
