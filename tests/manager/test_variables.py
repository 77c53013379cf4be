"""Variables: configuration, defaults, replacement in tasks and the two-way reverse mapping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamenco_manager.services.variables import (
    Audience,
    Direction,
    Variables,
    VariablesConfigError,
    local_platform,
)
from flamenco_protocol.documents import Command, Task

# The Go unit-test configuration (spec §16), as version 1 tables.
GO_TEST_VARIABLES = Variables.from_legacy(
    variables={
        "blender": {
            "linux": "/opt/myblenderbuild/blender",
            "darwin": "/opt/myblenderbuild/blender",
            "windows": "c:/temp/blender.exe",
        }
    },
    path_replacement={
        name: {
            "linux": "/shared/flamenco/jobs",
            "windows": "s:/flamenco/jobs",
            "darwin": "/Volume/shared/flamenco/jobs",
            "autumn": "hey",
        }
        for name in ("render", "render_long", "job_storage")
    },
)

SETTINGS: dict[str, Any] = {
    "filepath": "{job_storage}/_flamenco/storage/jobs/{render}/x.blend",
    "blender_cmd": "{blender} --enable-new-depsgraph",
    "render_output": "{render_long}/output/{hey}",
    "{render}": "keys stay",
    "frames": 47,
    "nested": {"path": "{render}"},
    "listed": ["{render}"],
}


def test_every_occurrence_is_replaced() -> None:
    # VR-01
    result = GO_TEST_VARIABLES.replace_in_settings(SETTINGS, "linux")
    jobs = "/shared/flamenco/jobs"
    assert result["filepath"] == f"{jobs}/_flamenco/storage/jobs/{jobs}/x.blend"


def test_keys_and_non_strings_are_untouched() -> None:
    # VR-02
    result = GO_TEST_VARIABLES.replace_in_settings(SETTINGS, "linux")
    assert result["{render}"] == "keys stay"
    assert result["frames"] == 47
    assert result["nested"] == {"path": "{render}"}
    assert result["listed"] == ["{render}"]
    assert set(result) == set(SETTINGS)


@pytest.mark.parametrize(
    ("platform", "blender", "storage"),
    [
        ("linux", "/opt/myblenderbuild/blender", "/shared/flamenco/jobs"),
        ("windows", "c:/temp/blender.exe", "s:/flamenco/jobs"),
        ("darwin", "/opt/myblenderbuild/blender", "/Volume/shared/flamenco/jobs"),
    ],
)
def test_per_platform_values(platform: str, blender: str, storage: str) -> None:
    # VR-03
    result = GO_TEST_VARIABLES.replace_in_settings(SETTINGS, platform)
    assert result["blender_cmd"] == f"{blender} --enable-new-depsgraph"
    assert result["render_output"] == f"{storage}/output/{{hey}}"


def test_unknown_platform_gets_only_its_own_variables() -> None:
    # VR-04
    result = GO_TEST_VARIABLES.replace_in_settings(SETTINGS, "autumn")
    assert result["filepath"] == "hey/_flamenco/storage/jobs/hey/x.blend"
    assert result["blender_cmd"] == "{blender} --enable-new-depsgraph"
    assert GO_TEST_VARIABLES.replace_in_settings(SETTINGS, "plan9") == SETTINGS


def test_local_replacement_uses_the_managers_platform() -> None:
    # VR-05
    variables = GO_TEST_VARIABLES
    assert variables.replace_local("") == ""
    assert variables.replace_local("plain") == "plain"
    assert variables.replace_local("{unknown}") == "{unknown}"
    expected = variables.lookup("job_storage", local_platform())
    assert variables.replace_local("{job_storage}/x") == f"{expected}/x"


def test_replacement_is_one_pass_and_deterministic() -> None:
    # §19.2 item 32: a value holding another placeholder is not expanded again.
    variables = Variables.from_config(
        {
            "a": {"direction": "oneway", "values": [{"platform": "linux", "value": "{b}"}]},
            "b": {"direction": "oneway", "values": [{"platform": "linux", "value": "B"}]},
        }
    )
    assert variables.replace("{a} {b}", "linux") == "{b} B"


def test_task_replacement_returns_a_new_task() -> None:
    task = Task(
        name="render",
        commands=(
            Command(name="blender_render", settings={"blender_cmd": "{blender}", "n": 1}),
            Command(name="echo", settings={"message": "{job_storage}"}),
        ),
    )
    sent = GO_TEST_VARIABLES.replace_in_task(task, "windows")
    assert [cmd.settings for cmd in sent.commands] == [
        {"blender_cmd": "c:/temp/blender.exe", "n": 1},
        {"message": "s:/flamenco/jobs"},
    ]
    assert sent.name == "render"
    assert task.commands[0].settings["blender_cmd"] == "{blender}"


def test_a_task_without_placeholders_is_sent_as_it_is_and_a_mixed_one_in_part() -> None:
    plain = Command(name="echo", settings={"message": "no placeholder", "n": 1})
    task = Task(name="plain", commands=(plain,))
    assert GO_TEST_VARIABLES.replace_in_task(task, "windows") is task

    placeholder = Command(name="echo", settings={"message": "{job_storage}"})
    mixed = GO_TEST_VARIABLES.replace_in_task(
        Task(name="mixed", commands=(plain, placeholder)), "windows"
    )
    assert mixed.commands[0] is plain
    assert mixed.commands[1].settings == {"message": "s:/flamenco/jobs"}
    assert placeholder.settings == {"message": "{job_storage}"}


def test_defaults() -> None:
    # CFG-01
    variables = Variables.defaults()
    assert {"blender", "ffmpeg", "shaman", "render", "job_storage"} == set(variables.variables)
    ffmpeg = variables.variables["ffmpeg"]
    assert ffmpeg.direction is Direction.ONEWAY
    assert (ffmpeg.values[0].platform, ffmpeg.values[0].value) == ("linux", "/usr/bin/ffmpeg")
    assert variables.lookup("job_storage", "linux", "workers") == "/shared/flamenco/jobs"
    assert variables.lookup("job_storage", "windows", "users") == "S:/flamenco/jobs"
    assert variables.lookup("blender", "linux", "users") == "/linux/path/to/blender"
    assert variables.lookup("blender", "linux", "workers") == "/farm/path/to/blender"


def test_a_value_without_platform_is_an_error_naming_the_variable() -> None:
    # CFG-02
    config = {
        "blender": {
            "direction": "oneway",
            "values": [
                {"value": "/path/to/blender"},
                {"platform": "linux", "value": "/valid/path/blender"},
            ],
        }
    }
    with pytest.raises(VariablesConfigError) as caught:
        Variables.from_config(config)
    assert "variable 'blender'" in str(caught.value)
    assert "value 1" in str(caught.value)
    assert "no platform" in str(caught.value)

    lenient = Variables.from_config(config, strict=False)
    assert [str(problem) for problem in lenient.problems if problem.is_error]
    assert lenient.lookup("blender", "linux") == "/valid/path/blender"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"direction": "sideways", "values": []}, "direction must be 'oneway' or 'twoway'"),
        ({"values": []}, "direction must be"),
        ("just a string", "must be a table"),
        ({"direction": "oneway", "values": "x"}, "values must be a list"),
        ({"direction": "oneway", "values": ["x"]}, "value 1 must be a table"),
        (
            {"direction": "oneway", "values": [{"platform": "linux", "audience": "cats"}]},
            "audience must be all, workers or users",
        ),
        ({"direction": "oneway", "values": [{"platform": 3, "value": "v"}]}, "platform must be"),
        ({"direction": "oneway", "values": [{"platforms": "linux"}]}, "platforms must be a list"),
        ({"direction": "oneway", "values": [{"platform": "linux", "value": 3}]}, "must be a str"),
    ],
)
def test_configuration_errors_are_clear(spec: Any, message: str) -> None:
    with pytest.raises(VariablesConfigError) as caught:
        Variables.from_config({"thing": spec})
    assert "variable 'thing'" in str(caught.value)
    assert message in str(caught.value)


def test_platforms_audiences_and_warnings() -> None:
    variables = Variables.from_config(
        {
            "render": {
                "direction": "twoway",
                "values": [
                    {"platforms": ["linux", "darwin"], "value": "/render/"},
                    {"platform": "windows", "audience": "users", "value": "R:\\render"},
                    {"platform": "linux", "platforms": ["freebsd"], "value": "/srv/render//"},
                ],
            }
        }
    )
    assert variables.lookup("render", "darwin") == "/render"
    assert variables.lookup("render", "linux") == "/srv/render"  # later entries win
    assert variables.lookup("render", "freebsd") == "/srv/render"
    assert variables.lookup("render", "windows", Audience.USERS) == "R:\\render"
    assert variables.lookup("render", "windows", Audience.WORKERS) is None
    warnings = [str(problem) for problem in variables.problems if not problem.is_error]
    assert any("forward slashes" in warning for warning in warnings)
    assert any("both platform and platforms" in warning for warning in warnings)


def test_oneway_values_keep_their_trailing_slash() -> None:
    variables = Variables.from_config(
        {"tools": {"direction": "oneway", "values": [{"platform": "linux", "value": "/opt/"}]}}
    )
    assert variables.lookup("tools", "linux") == "/opt/"


def test_to_variables_prefers_the_longest_value_at_a_component_boundary() -> None:
    variables = Variables.from_config(
        {
            "storage": {
                "direction": "twoway",
                "values": [{"platform": "linux", "value": "/shared"}],
            },
            "render": {
                "direction": "twoway",
                "values": [
                    {"platform": "linux", "value": "/shared/render"},
                    {"platform": "windows", "value": "R:/render"},
                ],
            },
            "tools": {"direction": "oneway", "values": [{"platform": "linux", "value": "/opt"}]},
        }
    )
    assert variables.to_variables("/shared/render/shot/0001.exr", "linux") == (
        "{render}/shot/0001.exr"
    )
    assert variables.to_variables("/shared/render", "linux") == "{render}"
    assert variables.to_variables("/shared/renders/x", "linux") == "{storage}/renders/x"
    assert variables.to_variables("/sharedstuff", "linux") == "/sharedstuff"
    assert variables.to_variables("/shared\\x", "linux") == "/shared\\x"  # "\\" is a name char
    assert variables.to_variables("/opt/blender", "linux") == "/opt/blender"  # one-way
    assert variables.to_variables("r:\\render\\x.png", "windows") == "{render}\\x.png"
    assert variables.to_variables("/shared/render/x", "darwin") == "/shared/render/x"


def test_legacy_configuration() -> None:
    variables = GO_TEST_VARIABLES
    assert variables.variables["blender"].direction is Direction.ONEWAY
    assert variables.variables["render"].direction is Direction.TWOWAY
    assert variables.lookup("render", "autumn", Audience.USERS) == "hey"
    skipped = Variables.from_legacy(variables={"empty": {"linux": ""}})
    assert skipped.variables["empty"].values == ()


_NAMES = ["a", "b", "a_b", "", "unknown"]
_PIECES = st.one_of(
    st.text(alphabet="ab/_ {", max_size=6),  # literal text, maybe a stray "{"
    st.sampled_from(_NAMES).map(lambda name: "{" + name + "}"),
)
_VALUE = st.text(alphabet="abc/:_ ", max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=8), values=st.dictionaries(st.sampled_from(_NAMES), _VALUE)
)
def test_replacement_is_idempotent_for_values_without_braces(
    pieces: list[str], values: dict[str, str]
) -> None:
    text = "".join(pieces)
    variables = Variables.from_config(
        {
            name: {"direction": "oneway", "values": [{"platform": "linux", "value": value}]}
            for name, value in values.items()
        }
    )
    once = variables.replace(text, "linux")
    assert variables.replace(once, "linux") == once
    if "{{" not in text:
        for name in values:
            assert "{" + name + "}" not in once
