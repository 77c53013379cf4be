"""Built-in job types compile into the Server's tasks (spec/jobs.md §2), field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from flamenco_manager.job_types import (
    BlenderRenderProgressiveJobType,
    CompileContext,
    JobSettingsError,
    JobTypeRegistry,
)
from flamenco_manager.services.jobs import TaskSpec

REGISTRY = JobTypeRegistry.with_builtins()
CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
VIDEO_FARM = frozenset({"blender-render", "file-management", "video-encoding"})
INTERMEDIATE = "/render/shot__intermediate-2024-05-01_120000"
BLEND = "/shared/proj/shot.flamenco.blend"
SHOT = {
    "filepath": BLEND,
    "render_output": "/render/shot/frames-######",
    "format": "PNG",
    "frames": "1-10",
    "chunk_size": 3,
}


def compile_job(
    job_type: str, settings: dict[str, Any], task_types: frozenset[str] = frozenset(), **kw: Any
) -> list[TaskSpec]:
    context = CompileContext(created=CREATED, worker_task_types=task_types, **kw)
    return REGISTRY.compile(job_type, settings, context)


def render(frames: str, **overrides: Any) -> dict[str, Any]:
    settings = {
        "blender_cmd": "{blender}",
        "filepath": BLEND,
        "format": "PNG",
        "render_output": f"{INTERMEDIATE}/frames-######",
        "frames": frames,
    }
    settings.update(overrides)
    return {"name": "blender_render", "settings": settings}


def test_blender_render_worked_example() -> None:
    tasks = compile_job("blender-render", SHOT)

    assert [t.name for t in tasks] == [
        "blender-render-1-3",
        "blender-render-4-6",
        "blender-render-7-9",
        "blender-render-10",
        "move-to-final",
    ]
    assert [t.task_type for t in tasks] == ["blender-render"] * 4 + ["file-management"]
    assert [t.priority for t in tasks] == [50] * 5
    assert [t.parents for t in tasks] == [(), (), (), (), (0, 1, 2, 3)]
    assert tasks[0].commands == [render("1..3")]
    assert tasks[1].commands == [render("4..6")]
    assert tasks[2].commands == [render("7..9")]
    assert tasks[3].commands == [render("10")]
    assert tasks[4].commands == [
        {"name": "move_to_final", "settings": {"src": INTERMEDIATE, "dest": "/render/shot"}}
    ]


def test_blender_render_chunk_size_two_never_writes_a_two_frame_range() -> None:
    tasks = compile_job("blender-render", {**SHOT, "chunk_size": 2})
    assert [t.name for t in tasks[:5]] == [
        "blender-render-1,2",
        "blender-render-3,4",
        "blender-render-5,6",
        "blender-render-7,8",
        "blender-render-9,10",
    ]
    assert tasks[4].commands[0]["settings"]["frames"] == "9,10"


def test_blender_render_without_format_sends_null_format() -> None:
    settings = {key: value for key, value in SHOT.items() if key != "format"}
    tasks = compile_job("blender-render", settings)
    assert tasks[0].commands[0]["settings"]["format"] is None
    assert "format" in tasks[0].commands[0]["settings"]


VIDEO = {**SHOT, "images_or_video": "images", "fps": 24, "output_file_extension": ".png"}


def test_blender_render_format_reaches_blender_in_upper_case() -> None:
    # Blender's -F is case-sensitive: 'png' typed by hand rendered the blend file's own format,
    # and 'open_exr' was taken for a format FFmpeg reads, making a video task that failed.
    tasks = compile_job("blender-render", {**SHOT, "format": "png"})
    assert {task.commands[0]["settings"]["format"] for task in tasks[:-1]} == {"PNG"}
    tasks = compile_job("blender-render", {**VIDEO, "format": "open_exr"}, VIDEO_FARM)
    assert "create-video" not in [t.name for t in tasks]


def test_blender_render_video_variant() -> None:
    tasks = compile_job("blender-render", VIDEO, VIDEO_FARM)

    assert [t.name for t in tasks][4:] == ["create-video", "move-to-final"]
    video, final = tasks[4], tasks[5]
    assert video.task_type == "video-encoding"
    assert video.parents == (0, 1, 2, 3)
    assert video.priority == 50
    assert video.commands == [
        {
            "name": "create_video",
            "settings": {
                "input_files": f"{INTERMEDIATE}/*.png",
                "output_file": f"{INTERMEDIATE}/shot-1-10.mkv",
                "fps": 24,
                "ffmpeg_cmd": "{ffmpeg}",
            },
        }
    ]
    assert final.parents == (4,)


@pytest.mark.parametrize(
    ("change", "task_types"),
    [
        ({}, frozenset({"blender-render", "file-management"})),
        ({"images_or_video": "video"}, VIDEO_FARM),
        ({"frames": "7", "chunk_size": 3}, VIDEO_FARM),
        ({"format": "OPEN_EXR"}, VIDEO_FARM),
        ({"format": "OPEN_EXR_MULTILAYER"}, VIDEO_FARM),
        ({"fps": None}, VIDEO_FARM),
        ({"output_file_extension": None}, VIDEO_FARM),
    ],
)
def test_blender_render_makes_no_video_unless_every_condition_holds(
    change: dict[str, Any], task_types: frozenset[str]
) -> None:
    settings = {**VIDEO, **change}
    settings = {key: value for key, value in settings.items() if value is not None}
    tasks = compile_job("blender-render", settings, task_types)
    assert "create-video" not in [t.name for t in tasks]
    final = tasks[-1]
    assert final.name == "move-to-final"
    assert final.parents == tuple(range(len(tasks) - 1))


def test_blender_render_rna_overrides_variant() -> None:
    overrides = ["bpy.context.scene.render.use_stamp = True", "x = 1"]
    tasks = compile_job("blender-render", {**SHOT, "rna_overrides": overrides})

    first = tasks[0]
    assert first.name == "rna-overrides"
    assert first.task_type == "file-management"
    assert first.parents == ()
    assert first.priority == 50
    [cmd] = first.commands
    assert cmd["name"] == "create_python_file"
    assert cmd["settings"]["filepath"] == "/shared/proj/shot.flamenco-overrides.py"
    contents = cmd["settings"]["contents"]
    assert contents.startswith("# RNA OVERRIDES\n")
    assert contents.endswith("import bpy\n\nbpy.context.scene.render.use_stamp = True\nx = 1\n")
    assert [t.parents for t in tasks[1:5]] == [(0,)] * 4
    assert tasks[5].parents == (1, 2, 3, 4)


def test_rna_overrides_path_cuts_at_the_last_blend_case_insensitively() -> None:
    settings = {**SHOT, "filepath": "/x/a.blend.d/Shot.BLEND", "rna_overrides": ["y = 2"]}
    tasks = compile_job("blender-render", settings)
    assert tasks[0].commands[0]["settings"]["filepath"] == "/x/a.blend.d/Shot-overrides.py"


def test_intermediate_directory_uses_the_creation_time_in_utc() -> None:
    created = datetime(2024, 5, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    tasks = REGISTRY.compile("blender-render", SHOT, CompileContext(created=created))
    assert tasks[-1].commands[0]["settings"]["src"] == INTERMEDIATE


def test_placeholders_pass_through_and_paths_are_made_portable() -> None:
    settings = {
        **SHOT,
        "filepath": "{shaman}/job/file.blend",
        "render_output": "/mnt/render/out/there-######.png",
    }

    def to_variables(path: str) -> str:
        return path.replace("/mnt/render", "{render}", 1)

    tasks = compile_job("blender-render", settings, to_variables=to_variables)
    command = tasks[0].commands[0]["settings"]
    assert command["filepath"] == "{shaman}/job/file.blend"
    assert command["render_output"] == (
        "{render}/out__intermediate-2024-05-01_120000/there-######.png"
    )
    assert tasks[-1].commands[0]["settings"]["dest"] == "{render}/out"


def test_windows_paths_keep_their_directories() -> None:
    settings = {**SHOT, "render_output": "R:\\render\\shot\\frames-######"}
    tasks = compile_job("blender-render", settings)
    assert tasks[-1].commands[0]["settings"] == {
        "src": "R:\\render\\shot__intermediate-2024-05-01_120000",
        "dest": "R:\\render\\shot",
    }


@pytest.mark.parametrize("job_type", ["blender-render", "blender-video-chunks"])
def test_windows_paths_made_portable_use_forward_slashes(job_type: str) -> None:
    # R:\shot\f-### became {render}\shot\f-###, which a Linux worker expands to
    # /shared/render\shot\... : one odd file name in /shared instead of a directory tree.
    settings = {
        **(SHOT if job_type == "blender-render" else CHUNKS),
        "filepath": "R:\\proj\\shot.flamenco.blend",
        "render_output": "R:\\shot\\frames-######",
        "rna_overrides": ["a = 1"],
    }

    def to_variables(path: str) -> str:
        return "{render}" + path[2:] if path.startswith("R:") else path

    tasks = compile_job(job_type, settings, to_variables=to_variables)
    paths = [
        value
        for task in tasks
        for cmd in task.commands
        for key, value in cmd["settings"].items()
        if key in {"filepath", "render_output", "src", "dest", "input_files", "output_file"}
    ]
    assert "{render}/proj/shot.flamenco-overrides.py" in paths
    assert all(path.startswith("{render}/") and "\\" not in path for path in paths), paths
    # Without a variable, a Windows path stays as it was (only Windows workers can use it).
    unmapped = compile_job(job_type, settings)
    render = next(t for t in unmapped if t.task_type == "blender-render")
    assert render.commands[0]["settings"]["filepath"] == "R:\\proj\\shot.flamenco.blend"


def test_sleep() -> None:
    tasks = compile_job(
        "sleep", {"frames": "1-13,27-30,40-44", "chunk_size": 13, "time_in_seconds": 2.5}
    )
    assert [t.name for t in tasks] == ["sleep-1-13", "sleep-27-30,40-44"]
    for task in tasks:
        assert task.task_type == "sleep"
        assert task.parents == ()
        assert task.priority == 50
        assert task.commands == [
            {"name": "echo", "settings": {"message": "Preparing to sleep"}},
            {"name": "sleep", "settings": {"time_in_seconds": 2.5}},
        ]


def test_exec_command_is_one_debug_task_with_a_normalised_command_line() -> None:
    tasks = compile_job("exec-command", {"cmd": "echo   'hello world'  \"it's\""})
    assert tasks == [
        TaskSpec(
            name="exec-command",
            task_type="debug",
            commands=[{"name": "exec", "settings": {"cmd": "echo 'hello world' 'it'\"'\"'s'"}}],
        )
    ]


def test_exec_command_leaves_a_whole_variable_word_for_the_worker_to_split() -> None:
    # A one-way variable holds a command line the worker splits itself, e.g. on Windows
    # '"C:/Program Files/Blender/blender.exe"'; quoted here, it reached the worker's exec as one
    # word with literal quotes ("No such file or directory"), unlike blender_cmd's '{blender}'.
    [task] = compile_job("exec-command", {"cmd": "{blender} --version '{render}/a b' {}"})
    assert task.commands == [
        {"name": "exec", "settings": {"cmd": "{blender} --version '{render}/a b' '{}'"}}
    ]


def test_exec_command_task_type_extension() -> None:
    [task] = compile_job("exec-command", {"cmd": "true", "task_type": "sleep"})
    assert task.task_type == "sleep"


CHUNKS = {
    "filepath": "/proj/edit.flamenco.blend",
    "render_output": "/render/edit/video",
    "frames": "1-5",
    "chunk_size": 3,
    "output_file_extension": ".mkv",
    "images_or_video": "video",
    "fps": 24,
    "extract_audio": True,
}
FR = "/render/edit/frames"


def test_blender_video_chunks_with_audio() -> None:
    tasks = compile_job("blender-video-chunks", CHUNKS)

    table = [(t.name, t.task_type, t.parents, t.priority) for t in tasks]
    assert table == [
        ("move-out-of-way", "file-management", (), 50),
        ("frame-chunk-1-3", "blender-render", (0,), 50),
        ("video-chunk-1-3", "video-encoding", (1,), 50),
        ("frame-chunk-4,5", "blender-render", (0,), 50),
        ("video-chunk-4,5", "video-encoding", (3,), 50),
        ("render-audio", "blender-render", (0,), 50),
        ("encode-audio", "video-encoding", (5,), 50),
        ("concatenate-videos", "video-encoding", (2, 4), 50),
        ("mux-audio-video", "video-encoding", (6, 7), 50),
        ("move-with-counter", "file-management", (8,), 50),
    ]
    commands = [t.commands for t in tasks]
    assert commands[0] == [{"name": "move_out_of_way", "settings": {"src": FR}}]
    assert commands[3] == [
        {
            "name": "blender_render",
            "settings": {
                "blender_cmd": "{blender}",
                "filepath": "/proj/edit.flamenco.blend",
                "format": "JPEG",
                "render_output": f"{FR}/chunk-00004-00005/######.jpg",
                "frames": "4,5",
            },
        }
    ]
    assert commands[4] == [
        {
            "name": "create_video",
            "settings": {
                "input_files": f"{FR}/chunk-00004-00005/*.jpg",
                "output_file": f"{FR}/chunk-00004-00005.mkv",
                "fps": 24,
                "ffmpeg_cmd": "{ffmpeg}",
            },
        }
    ]
    assert commands[5] == [
        {
            "name": "blender_render_audio",
            "settings": {
                "blender_cmd": "{blender}",
                "filepath": "/proj/edit.flamenco.blend",
                "render_output": f"{FR}/audio.flac",
                "frame_start": 1,
                "frame_end": 5,
            },
        }
    ]
    assert commands[6] == [
        {
            "name": "encode_audio",
            "settings": {
                "input_file": f"{FR}/audio.flac",
                "codec": "aac",
                "bitrate": "192k",
                "output_file": f"{FR}/audio.aac",
                "ffmpeg_cmd": "{ffmpeg}",
            },
        }
    ]
    assert commands[7] == [
        {
            "name": "concatenate_videos",
            "settings": {
                "input_files": f"{FR}/chunk-*.mkv",
                "output_file": f"{FR}/video.mkv",
                "ffmpeg_cmd": "{ffmpeg}",
                "counter_in_output_name": False,
            },
        }
    ]
    assert commands[8] == [
        {
            "name": "mux_audio",
            "settings": {
                "audio_file": f"{FR}/audio.aac",
                "video_file": f"{FR}/video.mkv",
                "output_file": f"{FR}/muxed.mkv",
                "ffmpeg_cmd": "{ffmpeg}",
            },
        }
    ]
    day = CREATED.astimezone().strftime("%Y_%m_%d")
    assert commands[9] == [
        {
            "name": "move_with_counter",
            "settings": {"src": f"{FR}/muxed.mkv", "dest": f"/render/edit/{day}-edit.mkv"},
        }
    ]


def test_blender_video_chunks_without_audio_moves_the_video_that_exists() -> None:
    tasks = compile_job(
        "blender-video-chunks", {**CHUNKS, "extract_audio": False, "rna_overrides": ["a = 1"]}
    )
    assert [(t.name, t.parents) for t in tasks] == [
        ("move-out-of-way", ()),
        ("rna-overrides", (0,)),
        ("frame-chunk-1-3", (1,)),
        ("video-chunk-1-3", (2,)),
        ("frame-chunk-4,5", (1,)),
        ("video-chunk-4,5", (4,)),
        ("concatenate-videos", (3, 5)),
        ("move-with-counter", (6,)),
    ]
    # Upstream moved muxed.mkv here, which nothing makes (spec/jobs.md §2.5).
    assert tasks[-1].commands[0]["settings"]["src"] == f"{FR}/video.mkv"


P = "/render/out__intermediate-2018-07-06_115233"
PROGRESSIVE = {
    "frames": "1-5",
    "chunk_size": 3,
    "render_output": "/render/out/frames-######",
    "fps": 5.3,
    "format": "OPEN_EXR",
    "filepath": "/agent327/scenes/someshot/somefile.blend",
    "blender_cmd": "/path/to/blender --enable-new-depsgraph",
    "cycles_sample_count": 30,
    "cycles_sample_cap": 30,
}


def progressive_render(first: int, last: int, frames: str) -> dict[str, Any]:
    return {
        "name": "blender_render_progressive",
        "settings": {
            "blender_cmd": "/path/to/blender --enable-new-depsgraph",
            "filepath": "/agent327/scenes/someshot/somefile.blend",
            "format": "OPEN_EXR",
            "render_output": f"{P}/render-smpl-{first:04d}-{last:04d}-######",
            "frames": frames,
            "cycles_num_chunks": 30,
            "cycles_chunk_start": first,
            "cycles_chunk_end": last,
        },
    }


def previews(glob: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "exr_sequence_to_jpeg",
            "settings": {
                "blender_cmd": "/path/to/blender --enable-new-depsgraph",
                "filepath": "/agent327/scenes/someshot/somefile.blend",
                "exr_glob": f"{P}/{glob}",
                "output_pattern": "preview-######",
            },
        }
    ]


PREVIEW_VIDEO = [
    {
        "name": "create_video",
        "settings": {
            "input_files": f"{P}/preview-*.jpg",
            "output_file": f"{P}/preview.mkv",
            "fps": 5.3,
            "ffmpeg_cmd": "{ffmpeg}",
        },
    }
]


def merge(input1: str, input2: str, output: str, weights: tuple[int, int]) -> list[Any]:
    return [
        {
            "name": "merge_progressive_render_sequence",
            "settings": {
                "input1": f"{P}/{input1}",
                "input2": f"{P}/{input2}",
                "output": f"{P}/{output}",
                "weight1": weights[0],
                "weight2": weights[1],
                "blender_cmd": "/path/to/blender --enable-new-depsgraph",
                "frame_start": 1,
                "frame_end": 5,
            },
        }
    ]


def test_blender_render_progressive_graph() -> None:
    """The Server's own test case: 30 samples, 3 uncapped chunks, frames 1-5 in chunks of 3."""
    registry = JobTypeRegistry([BlenderRenderProgressiveJobType(uncapped_chunks=3)])
    created = datetime(2018, 7, 6, 11, 52, 33, tzinfo=UTC)
    tasks = registry.compile(
        "blender-render-progressive", PROGRESSIVE, CompileContext(created=created)
    )

    table = [(t.name, t.task_type, t.parents, t.priority) for t in tasks]
    assert table == [
        ("destroy-preexisting-intermediate", "file-management", (), 50),
        ("render-s_1-1-f_1-5", "blender-render", (0,), 0),
        ("create-preview-images", "blender-render", (1,), 1),
        ("create-preview-video", "video-encoding", (2,), 1),
        ("render-s_2-10-f_1-5", "blender-render", (0,), -10),
        ("merge-to-s_10-f_1-5", "exr-merge", (1, 4), 1),
        ("create-preview-images", "blender-render", (2, 5), 1),
        ("create-preview-video", "video-encoding", (3, 6), 1),
        ("render-s_11-30-f_1-3", "blender-render", (0,), -20),
        ("render-s_11-30-f_4,5", "blender-render", (0,), -20),
        ("merge-to-s_30-f_1-5", "exr-merge", (5, 8, 9), 1),
        ("create-preview-images", "blender-render", (6, 10), 1),
        ("create-preview-video", "video-encoding", (7, 11), 1),
        ("move-outdir-out-of-way", "file-management", (10,), 1),
        ("publish-exr-to-output", "file-management", (13,), 1),
        ("publish-jpeg-to-output", "file-management", (11, 13), 1),
        ("publish-video-to-output", "file-management", (12, 13), 1),
    ]
    commands = [t.commands for t in tasks]
    assert commands[0] == [{"name": "remove_tree", "settings": {"path": P}}]
    assert commands[1] == [progressive_render(1, 1, "1..5")]
    assert commands[2] == previews("render-smpl-0001-0001-*.exr")
    assert commands[3] == PREVIEW_VIDEO
    assert commands[4] == [progressive_render(2, 10, "1..5")]
    assert commands[5] == merge(
        "render-smpl-0001-0001-000001.exr",
        "render-smpl-0002-0010-000001.exr",
        "merge-smpl-0010-######",
        (1, 9),
    )
    assert commands[6] == previews("merge-smpl-0010-*.exr")
    assert commands[8] == [progressive_render(11, 30, "1..3")]
    assert commands[9] == [progressive_render(11, 30, "4,5")]
    assert commands[10] == merge(
        "merge-smpl-0010-000001.exr",
        "render-smpl-0011-0030-000001.exr",
        "merge-smpl-0030-######",
        (10, 20),
    )
    assert commands[11] == previews("merge-smpl-0030-*.exr")
    assert commands[13] == [{"name": "move_out_of_way", "settings": {"src": "/render/out"}}]
    assert commands[14] == [
        {
            "name": "copy_file",
            "settings": {
                "src": f"{P}/merge-smpl-0030-{frame:06d}.exr",
                "dest": f"/render/out/frames-{frame:06d}.exr",
            },
        }
        for frame in range(1, 6)
    ]
    assert commands[15] == [
        {
            "name": "copy_file",
            "settings": {
                "src": f"{P}/preview-{frame:06d}.jpg",
                "dest": f"/render/out/frames-{frame:06d}.jpg",
            },
        }
        for frame in range(1, 6)
    ]
    assert commands[16] == [
        {
            "name": "copy_file",
            "settings": {"src": f"{P}/preview.mkv", "dest": "/render/out/preview.mkv"},
        }
    ]


def test_blender_render_progressive_single_frame_has_no_videos() -> None:
    registry = JobTypeRegistry([BlenderRenderProgressiveJobType(uncapped_chunks=3)])
    tasks = registry.compile(
        "blender-render-progressive", {**PROGRESSIVE, "frames": "5"}, CompileContext()
    )
    names = [t.name for t in tasks]
    assert "create-preview-video" not in names
    assert "publish-video-to-output" not in names
    assert names[1] == "render-s_1-1-f_5"


@pytest.mark.parametrize(("submitted", "sent"), [("open_exr", "OPEN_EXR"), ("Exr", "EXR")])
def test_progressive_format_reaches_blender_in_upper_case(submitted: str, sent: str) -> None:
    # The format is accepted in any case, but Blender's -F is case-sensitive: with 'exr' a real
    # worker rendered the blend file's own format (PNG), and every merge found no input EXR.
    tasks = compile_job("blender-render-progressive", {**PROGRESSIVE, "format": submitted})
    formats = {
        command["settings"]["format"]
        for task in tasks
        for command in task.commands
        if command["name"] == "blender_render_progressive"
    }
    assert formats == {sent}


@pytest.mark.parametrize(
    ("count", "cap", "chunks"),
    [
        (400, 100, [(1, 10), (11, 72), (73, 154), (155, 236), (237, 318), (319, 400)]),
        (30, 30, [(1, 1), (2, 5), (6, 16), (17, 30)]),
    ],
)
def test_sample_chunks_match_the_server(
    count: int, cap: int, chunks: list[tuple[int, int]]
) -> None:
    from flamenco_manager.job_types.progressive import sample_chunks

    assert sample_chunks(count, cap) == chunks


def test_progressive_refuses_sample_counts_the_curve_cannot_split() -> None:
    # The Server's curve yields empty chunks here and then divided by zero.
    with pytest.raises(JobSettingsError, match="too few to split"):
        REGISTRY.validate("blender-render-progressive", {**PROGRESSIVE, "cycles_sample_count": 1})


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"frames": "7"},
        {"rna_overrides": ["a = 1"]},
        {"cycles_sample_count": 4000, "cycles_sample_cap": 100, "frames": "1-40", "chunk_size": 1},
        {"cycles_sample_count": 900, "cycles_sample_cap": 70, "frames": "3,8-30", "chunk_size": 4},
    ],
)
def test_progressive_task_limit_counts_every_task(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check left out the fixed tasks (destroy, move, publish...): 4000 samples capped at 100
    # over 2497 frames passed it with "100000 tasks", then made 100004 and construction failed.
    from flamenco_manager.job_types import progressive

    settings = {**PROGRESSIVE, **overrides}
    made = len(compile_job("blender-render-progressive", settings))
    job_type = progressive.BlenderRenderProgressiveJobType()
    monkeypatch.setattr(progressive, "MAX_TASKS", made)
    assert job_type.validate(settings)
    monkeypatch.setattr(progressive, "MAX_TASKS", made - 1)
    with pytest.raises(JobSettingsError, match=f"{made} tasks"):
        job_type.validate(settings)


def test_custom_tasks_compile_with_parent_indices() -> None:
    settings = {
        "tasks": [
            {
                "name": "fetch",
                "task_type": "file-management",
                "commands": [{"name": "copy_file", "settings": {"src": "/a", "dest": "/b"}}],
            },
            {
                "name": "run",
                "task_type": "debug",
                "priority": 70,
                "commands": [
                    {"name": "exec", "settings": {"cmd": "echo one"}},
                    {"name": "echo", "settings": {"message": "two"}},
                ],
                "parents": ["fetch"],
            },
            {
                "name": "report",
                "task_type": "sleep",
                "commands": [{"name": "sleep", "settings": {"time_in_seconds": 1}}],
                "parents": ["fetch", "run"],
            },
        ]
    }
    tasks = compile_job("custom", settings)
    assert tasks == [
        TaskSpec(
            name="fetch",
            task_type="file-management",
            commands=[{"name": "copy_file", "settings": {"src": "/a", "dest": "/b"}}],
        ),
        TaskSpec(
            name="run",
            task_type="debug",
            priority=70,
            commands=[
                {"name": "exec", "settings": {"cmd": "echo one"}},
                {"name": "echo", "settings": {"message": "two"}},
            ],
            parents=(0,),
        ),
        TaskSpec(
            name="report",
            task_type="sleep",
            commands=[{"name": "sleep", "settings": {"time_in_seconds": 1}}],
            parents=(0, 1),
        ),
    ]
    # The compiled commands do not share objects with the submitted settings.
    tasks[0].commands[0]["settings"]["src"] = "/changed"
    assert settings["tasks"][0]["commands"][0]["settings"]["src"] == "/a"  # type: ignore[index]


def test_blender_render_video_name_leaves_out_blanks_around_the_frames() -> None:
    settings = {**SHOT, "images_or_video": "images", "fps": 24, "output_file_extension": ".png"}
    tasks = compile_job("blender-render", {**settings, "frames": "1-10\n"}, VIDEO_FARM)
    video = next(t for t in tasks if t.name == "create-video").commands[0]["settings"]
    assert video["output_file"] == f"{INTERMEDIATE}/shot-1-10.mkv"


def test_video_chunk_names_sort_in_frame_order_past_99999() -> None:
    # The worker concatenates chunk-*<ext> in name order; five digits put 100000 before 99990.
    tasks = compile_job(
        "blender-video-chunks", {**CHUNKS, "frames": "99990-100009", "chunk_size": 10}
    )
    chunks = [
        t.commands[0]["settings"]["output_file"] for t in tasks if t.name.startswith("video-")
    ]
    assert chunks == [f"{FR}/chunk-099990-099999.mkv", f"{FR}/chunk-100000-100009.mkv"]
    assert chunks == sorted(chunks)
    audio = next(t for t in tasks if t.name == "render-audio").commands[0]["settings"]
    assert (audio["frame_start"], audio["frame_end"]) == (99990, 100009)
    # Below 100000 the names are the Server's.
    small = compile_job("blender-video-chunks", CHUNKS)
    assert small[2].commands[0]["settings"]["output_file"] == f"{FR}/chunk-00001-00003.mkv"
