"""Settings validation: one error naming every bad setting; fuzzing finds no other exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flamenco_manager.job_types import (
    CompileContext,
    JobSettingsError,
    JobTypeRegistry,
    UnknownJobType,
)
from flamenco_manager.services.errors import Invalid

REGISTRY = JobTypeRegistry.with_builtins()
SHOT = {
    "filepath": "/p/shot.blend",
    "render_output": "/render/shot/frames-######",
    "frames": "1-10",
    "chunk_size": 3,
}


def problems(job_type: str, settings: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(JobSettingsError) as caught:
        REGISTRY.validate(job_type, settings, **kw)
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, Invalid)
    assert error.job_type == job_type
    return {problem.setting: problem.message for problem in error.problems}


def test_every_bad_setting_is_named_in_one_error() -> None:
    found = problems(
        "blender-render",
        {
            "filepath": "/p/shot.txt",
            "frames": "1-10,x",
            "chunk_size": 0,
            "fps": "24",
            "rna_overrides": ["ok", 3],
            "colour": "blue",
        },
    )
    assert set(found) == {
        "filepath",
        "frames",
        "chunk_size",
        "fps",
        "rna_overrides",
        "colour",
        "render_output",
    }
    assert "should end in .blend" in found["filepath"]
    assert "'x'" in found["frames"]
    assert found["chunk_size"] == "must be at least 1, not 0"
    assert found["fps"] == "must be a number, not '24'"
    assert found["rna_overrides"].startswith("must be a list of strings")
    assert found["colour"].startswith("unknown setting; known settings: filepath, render_output")
    assert found["render_output"] == "is required but missing"


def test_message_lists_the_problems() -> None:
    with pytest.raises(JobSettingsError) as caught:
        REGISTRY.validate("sleep", {"frames": "1-3", "chunk_size": True})
    message = str(caught.value)
    assert message.startswith("invalid settings for job type 'sleep': ")
    assert "chunk_size: must be an integer, not True" in message
    assert "time_in_seconds: is required but missing" in message
    assert caught.value.to_json()["problems"][0] == {
        "setting": "chunk_size",
        "message": "must be an integer, not True",
    }


@pytest.mark.parametrize(
    ("job_type", "settings", "setting", "fragment"),
    [
        ("sleep", {"frames": "5-1", "chunk_size": 1, "time_in_seconds": 1}, "frames", "before"),
        ("sleep", {"frames": "", "chunk_size": 1, "time_in_seconds": 1}, "frames", "no frames"),
        ("sleep", {"frames": "1", "chunk_size": 1, "time_in_seconds": -1}, "time_in_seconds", ""),
        (
            "sleep",
            {"frames": "1", "chunk_size": 1, "time_in_seconds": float("nan")},
            "time_in_seconds",
            "number",
        ),
        (
            "sleep",
            {"frames": "0-999999", "chunk_size": 1, "time_in_seconds": 1},
            "chunk_size",
            "tasks",
        ),
        ("exec-command", {"cmd": "echo 'unclosed"}, "cmd", "shell"),
        ("exec-command", {"cmd": "   "}, "cmd", "empty"),
        ("exec-command", {"cmd": "x", "task_type": ""}, "task_type", "empty"),
        ("blender-render", {**SHOT, "render_output": "frames-####"}, "render_output", "inside"),
        ("blender-render", {**SHOT, "render_output": "/f-####"}, "render_output", "inside"),
        ("blender-render", {**SHOT, "images_or_video": "gif"}, "images_or_video", "one of"),
        ("blender-render", {**SHOT, "blender_cmd": ""}, "blender_cmd", "empty"),
        ("blender-render", {**SHOT, "images_or_video": "images"}, "format", "required"),
        (
            "blender-video-chunks",
            {
                **SHOT,
                "output_file_extension": ".mkv",
                "images_or_video": "images",
                "fps": 24,
                "extract_audio": True,
            },
            "images_or_video",
            "'video'",
        ),
        (
            "blender-video-chunks",
            {
                **SHOT,
                "output_file_extension": ".mkv",
                "images_or_video": "video",
                "fps": 24,
                "extract_audio": "yes",
            },
            "extract_audio",
            "true or false",
        ),
        (
            "blender-render-progressive",
            {**SHOT, "format": "PNG"},
            "format",
            "OPEN_EXR",
        ),
        (
            "blender-render-progressive",
            {**SHOT, "render_output": "/r/s/f-#######"},
            "render_output",
            "exactly six",
        ),
        (
            "blender-render-progressive",
            {**SHOT, "cycles_num_chunks": 4},
            "cycles_num_chunks",
            "outdated",
        ),
    ],
)
def test_specific_refusals(
    job_type: str, settings: dict[str, Any], setting: str, fragment: str
) -> None:
    found = problems(job_type, settings)
    assert setting in found, found
    assert fragment in found[setting]


def test_settings_must_be_an_object() -> None:
    assert problems("sleep", ["frames"]) == {"settings": "must be an object, not ['frames']"}


def test_filepath_may_wait_for_files_but_compiling_needs_it() -> None:
    settings = {k: v for k, v in SHOT.items() if k != "filepath"}
    assert REGISTRY.validate("blender-render", settings, waiting_for_files=True) == {
        **settings,
        "blender_cmd": "{blender}",
    }
    with pytest.raises(JobSettingsError, match="filepath: is required"):
        REGISTRY.compile("blender-render", settings, CompileContext())


def test_defaults_are_filled_in() -> None:
    assert REGISTRY.validate("exec-command", {"cmd": "ls"}) == {"cmd": "ls", "task_type": "debug"}


def test_unknown_job_type_lists_the_known_ones() -> None:
    with pytest.raises(UnknownJobType) as caught:
        REGISTRY.get("render-everything")
    assert isinstance(caught.value, Invalid)
    assert str(caught.value) == (
        "unknown job type 'render-everything'; known types: blender-render, "
        "blender-render-progressive, blender-video-chunks, custom, exec-command, sleep"
    )


def task(name: str, parents: Any = None, **fields: Any) -> dict[str, Any]:
    item = {
        "name": name,
        "task_type": "debug",
        "commands": [{"name": "exec", "settings": {"cmd": "true"}}],
        **fields,
    }
    if parents is not None:
        item["parents"] = parents
    return item


@pytest.mark.parametrize(
    ("tasks", "setting", "fragment"),
    [
        ([], "tasks", "at least one"),
        ([task("a"), task("a")], "tasks[1].name", "already the name of tasks[0]"),
        ([task("a", ["b"]), task("b")], "tasks[0].parents[0]", "no earlier task"),
        ([task("a", ["a"])], "tasks[0].parents[0]", "itself"),
        ([task("a"), task("b", ["a", "a"])], "tasks[1].parents[1]", "twice"),
        ([task("a", "b")], "tasks[0].parents", "list of strings"),
        ([task("")], "tasks[0].name", "empty"),
        ([task("x" * 201)], "tasks[0].name", "too long"),
        ([task("a", task_type=3)], "tasks[0].task_type", "string"),
        ([task("a", commands=[])], "tasks[0].commands", "non-empty"),
        ([task("a", commands=[{"name": "", "settings": {}}])], "tasks[0].commands[0].name", ""),
        (
            [task("a", commands=[{"name": "x", "settings": []}])],
            "tasks[0].commands[0].settings",
            "",
        ),
        ([task("a", commands=[{"name": "x"}])], "tasks[0].commands[0].settings", "missing"),
        ([task("a", commands=["exec"])], "tasks[0].commands[0]", "object"),
        (
            [task("a", commands=[{"name": "x", "settings": {}, "extra": 1}])],
            "tasks[0].commands[0].extra",
            "unknown field",
        ),
        ([task("a", priority=5000)], "tasks[0].priority", "between"),
        ([task("a", priority=True)], "tasks[0].priority", "integer"),
        ([task("a", colour="red")], "tasks[0].colour", "known fields: name, task_type"),
        (["a"], "tasks[0]", "object"),
        (
            [task("a", commands=[{"name": "x", "settings": {"blob": "x" * 70_000}}])],
            "tasks[0].commands[0].settings",
            "too large",
        ),
        ([task(str(i)) for i in range(1001)], "tasks", "too long"),
    ],
)
def test_custom_refusals_name_the_task_and_field(
    tasks: list[Any], setting: str, fragment: str
) -> None:
    found = problems("custom", {"tasks": tasks})
    assert setting in found, found
    assert fragment in found[setting]


# --- fuzzing -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)
frame_texts = st.one_of(
    st.text(alphabet="0123456789-, x.", max_size=12),
    st.builds("{}-{}".format, st.integers(0, 300), st.integers(0, 300)),
)
# Values that are often valid for some setting, so fuzzing gets past the type checks.
plausible = st.one_of(
    json_values,
    frame_texts,
    st.integers(-2, 400),
    st.sampled_from(
        [
            "/p/shot.flamenco.blend",
            "/render/shot/frames-######",
            "{render}/x/y-######",
            "OPEN_EXR",
            "PNG",
            "images",
            "video",
            ".png",
            "echo hi",
            True,
            False,
            24,
            ["bpy.context.scene.frame_start = 1"],
        ]
    ),
)
SETTING_NAMES = sorted(
    {name for schema in REGISTRY.settings_schemas().values() for name in schema["properties"]}
    | {"cycles_num_chunks", "bogus"}
)
settings_dicts = st.dictionaries(st.sampled_from(SETTING_NAMES), plausible, max_size=12)
contexts = st.builds(
    CompileContext,
    worker_task_types=st.frozensets(st.sampled_from(["video-encoding", "blender-render"])),
)


def compile_or_refuse(job_type: str, settings: Any, context: CompileContext) -> None:
    try:
        validated = REGISTRY.validate(job_type, settings)
    except JobSettingsError:
        validated = None
    try:
        tasks = REGISTRY.compile(job_type, settings, context)
    except JobSettingsError:
        assert validated is None, "compile refused settings that validated"
        return
    assert validated is not None
    json.dumps([t.commands for t in tasks], allow_nan=False)
    for index, spec in enumerate(tasks):
        assert all(0 <= parent < index for parent in spec.parents)
        assert spec.name
        assert spec.task_type


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REGISTRY.names()), settings_dicts | json_values, contexts)
def test_fuzz_settings_validate_and_compile_or_raise_job_settings_error(
    job_type: str, settings: Any, context: CompileContext
) -> None:
    compile_or_refuse(job_type, settings, context)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 2000),
    st.integers(1, 500),
    st.builds("{}-{}".format, st.integers(0, 30), st.integers(0, 40)) | frame_texts,
    st.integers(1, 10),
)
def test_fuzz_progressive_sample_chunking(count: int, cap: int, frames: str, chunk: int) -> None:
    settings = {
        "filepath": "/p/shot.blend",
        "blender_cmd": "{blender}",
        "render_output": "/r/s/f-######",
        "frames": frames,
        "chunk_size": chunk,
        "format": "OPEN_EXR",
        "cycles_sample_count": count,
        "cycles_sample_cap": cap,
        "fps": 24,
    }
    compile_or_refuse("blender-render-progressive", settings, CompileContext())


custom_tasks = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "c", "", 1]),
            "task_type": st.sampled_from(["debug", "", None]),
            "commands": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["exec", "", 3]), "settings": json_values}
                ),
                max_size=3,
            ),
        },
        optional={
            "parents": st.lists(st.sampled_from(["a", "b", "c", 2]), max_size=3) | json_values,
            "priority": st.integers(-2000, 2000) | json_values,
            "junk": json_values,
        },
    )
    | json_values,
    max_size=5,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(custom_tasks)
def test_fuzz_custom_tasks(tasks: Any) -> None:
    compile_or_refuse("custom", {"tasks": tasks}, CompileContext())


VIDEO_EDIT = {
    **SHOT,
    "render_output": "/render/edit/video",
    "output_file_extension": ".mkv",
    "images_or_video": "video",
    "fps": 24,
    "extract_audio": False,
}
PROGRESSIVE_SHOT = {
    **SHOT,
    "blender_cmd": "{blender}",
    "format": "OPEN_EXR",
    "cycles_sample_count": 400,
    "cycles_sample_cap": 100,
    "fps": 24,
}


@pytest.mark.parametrize(
    "job_type",
    ["sleep", "blender-render", "blender-video-chunks", "blender-render-progressive"],
)
def test_more_frames_than_allowed_are_refused_before_compiling(job_type: str) -> None:
    # Validation used to pass them and compiling failed, storing a construction-failed job.
    settings = {
        "sleep": {"time_in_seconds": 1},
        "blender-render": SHOT,
        "blender-video-chunks": VIDEO_EDIT,
        "blender-render-progressive": PROGRESSIVE_SHOT,
    }[job_type]
    too_many = {**settings, "frames": "1-2000000", "chunk_size": 1000}
    found = problems(job_type, too_many)
    assert "2000000 frames" in found["frames"]
    with pytest.raises(JobSettingsError):
        REGISTRY.compile(job_type, too_many, CompileContext())


@pytest.mark.parametrize(
    "render_output",
    ["/render/shot/", "/render/shot/.", "/render/shot/..", "R:\\render\\shot\\", "/r/f-###/"],
)
@pytest.mark.parametrize("job_type", ["blender-render", "blender-video-chunks"])
def test_render_output_must_end_in_a_file_name(job_type: str, render_output: str) -> None:
    # '/render/shot/' made '/render' the output directory: move-to-final moved it all aside.
    settings = SHOT if job_type == "blender-render" else VIDEO_EDIT
    found = problems(job_type, {**settings, "render_output": render_output})
    assert "file name" in found["render_output"]


@pytest.mark.parametrize("render_output", ["video", "/video"])
def test_video_chunks_render_output_needs_a_directory(render_output: str) -> None:
    # 'video' put the frames in 'frames/', relative to wherever the worker runs.
    found = problems("blender-video-chunks", {**VIDEO_EDIT, "render_output": render_output})
    assert "inside a directory" in found["render_output"]


@pytest.mark.parametrize("extension", ["mkv", ".", "/x.mkv", ".m kv", ".mkv*", ""])
def test_video_chunks_extension_needs_its_dot(extension: str) -> None:
    # 'mkv' made frames/videomkv, a name from which FFmpeg cannot pick a container.
    found = problems("blender-video-chunks", {**VIDEO_EDIT, "output_file_extension": extension})
    assert "'.mkv'" in found["output_file_extension"]


@pytest.mark.parametrize("extension", ["", "png", "/x.png", ".p*g"])
def test_blender_render_extension_needs_its_dot(extension: str) -> None:
    # '' made create-video read <intermediate>/*, the video it writes included.
    settings = {**SHOT, "images_or_video": "images", "format": "PNG", "fps": 24}
    found = problems("blender-render", {**settings, "output_file_extension": extension})
    assert "'.mkv'" in found["output_file_extension"]
    REGISTRY.validate("blender-render", {**settings, "output_file_extension": ".png"})


@pytest.mark.parametrize(
    ("job_type", "settings"),
    [
        ("blender-render", SHOT),
        ("blender-video-chunks", VIDEO_EDIT),
        ("blender-render-progressive", PROGRESSIVE_SHOT),
    ],
)
def test_blender_cmd_must_split_like_a_shell(job_type: str, settings: dict[str, Any]) -> None:
    # The worker's shlex.split raised on it: an uncaught exception instead of a clear refusal.
    found = problems(job_type, {**settings, "blender_cmd": '"/opt/blender/blender'})
    assert "shell" in found["blender_cmd"]
    quoted = "'/opt/my blender/blender' --factory-startup"
    assert REGISTRY.validate(job_type, {**settings, "blender_cmd": quoted})["blender_cmd"] == quoted


def test_progressive_refuses_more_frames_than_one_publish_task_can_copy() -> None:
    # 1-1000000 compiled for a minute into publish tasks of a million copy_file commands.
    found = problems("blender-render-progressive", {**PROGRESSIVE_SHOT, "frames": "1-10001"})
    assert "10001 frames" in found["frames"]
    REGISTRY.validate("blender-render-progressive", {**PROGRESSIVE_SHOT, "frames": "1-10000"})


VIDEO_SHOT = {
    **SHOT,
    "format": "PNG",
    "images_or_video": "images",
    "fps": 24,
    "output_file_extension": ".png",
}


@pytest.mark.parametrize(
    ("job_type", "settings"),
    [
        ("blender-render", VIDEO_SHOT),
        ("blender-video-chunks", VIDEO_EDIT),
        ("blender-render-progressive", PROGRESSIVE_SHOT),
    ],
)
@pytest.mark.parametrize("directory", ["/render/shot[v2]", "/render/take*", "/r?/shot"])
def test_video_tasks_need_a_directory_ffmpeg_can_glob(
    job_type: str, settings: dict[str, Any], directory: str
) -> None:
    # create_video gives FFmpeg '<dir>/*.png' with -pattern_type glob: a real worker rendered
    # every frame of /render/shot[v2]/f-#### and then failed create-video ("No such file").
    render_output = f"{directory}/f-######"
    found = problems(job_type, {**settings, "render_output": render_output})
    assert "wildcards" in found["render_output"]
    assert directory in found["render_output"]


def test_glob_characters_are_fine_when_no_video_is_made() -> None:
    output = "/render/shot[v2]/f-######"
    REGISTRY.validate("blender-render", {**SHOT, "render_output": output})
    REGISTRY.validate("blender-render", {**VIDEO_SHOT, "render_output": output, "frames": "1"})
    REGISTRY.validate(
        "blender-render", {**VIDEO_SHOT, "render_output": output, "format": "OPEN_EXR"}
    )
    REGISTRY.validate(
        "blender-render-progressive", {**PROGRESSIVE_SHOT, "render_output": output, "frames": "1"}
    )


def test_progressive_render_output_without_double_quotes() -> None:
    # The worker's EXR merge refuses paths with '"': every merge task would fail.
    found = problems(
        "blender-render-progressive", {**PROGRESSIVE_SHOT, "render_output": '/r/"s"/f-######'}
    )
    assert "double quotes" in found["render_output"]


@pytest.mark.parametrize(
    ("job_type", "settings", "setting"),
    [
        ("exec-command", {"cmd": "echo \x00"}, "cmd"),
        ("blender-render", {**SHOT, "filepath": "/p/s\x00.blend"}, "filepath"),
        ("blender-render", {**SHOT, "rna_overrides": ["a = 1", "b\x00"]}, "rna_overrides"),
    ],
)
def test_strings_with_nul_are_refused(
    job_type: str, settings: dict[str, Any], setting: str
) -> None:
    assert "NUL" in problems(job_type, settings)[setting]
