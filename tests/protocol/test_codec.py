"""The JSON codec: round trips, Go's leniency and strictness, the Go manager's encoding."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamenco_protocol import codec
from flamenco_protocol import documents as d
from flamenco_protocol.errors import DecodeError, ProtocolError
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TaskStatus, WorkerStatus

from .strategies import ALL_DOCUMENTS, documents

TASK_ID = "5f1e0c0a2b3c4d5e6f70a101"


@pytest.mark.parametrize("cls", ALL_DOCUMENTS, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encode_then_decode_is_the_identity(cls: type[Any], data: st.DataObject) -> None:
    document = data.draw(documents(cls))
    assert codec.loads(cls, codec.dumps(document)) == document


@pytest.mark.parametrize("cls", ALL_DOCUMENTS, ids=lambda cls: cls.__name__)
def test_every_document_is_frozen_slotted_and_documented(cls: type[Any]) -> None:
    assert cls.__doc__
    assert "__slots__" in cls.__dict__
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cls().__setattr__(attrs.fields(cls)[0].name, None)


@pytest.mark.parametrize("cls", ALL_DOCUMENTS, ids=lambda cls: cls.__name__)
def test_an_empty_object_decodes_to_the_zero_document(cls: type[Any]) -> None:
    assert codec.loads(cls, b"{}") == cls()


# --- what the real worker sends (spec/worker.md §3, §4, §10) -----------------------------------


def test_registration_body_of_the_real_worker() -> None:
    body = json.dumps(
        {
            "secret": "A" * 64,
            "platform": "linux",
            "supported_task_types": ["sleep", "file-management", "debug"],
            "nickname": "vm",
        }
    )
    registration = codec.loads(d.WorkerRegistration, body)
    assert registration.secret == "A" * 64
    assert registration.supported_task_types == ("sleep", "file-management", "debug")


def test_sign_on_body_of_the_real_worker() -> None:
    body = b'{"supported_task_types": ["sleep", "debug"], "nickname": "vm"}'
    assert codec.loads(d.WorkerSignonDoc, body) == d.WorkerSignonDoc(
        supported_task_types=("sleep", "debug"), nickname="vm"
    )


@pytest.mark.parametrize(
    "body",
    [
        # First update of a task.
        {
            "activity": "",
            "current_command_idx": 0,
            "task_progress_percentage": 0,
            "command_progress_percentage": 0,
            "metrics": {"timing": {}},
            "task_status": "active",
        },
        # Final update with the log and timing.
        {
            "activity": "Task completed",
            "current_command_idx": 2,
            "task_progress_percentage": 0,
            "command_progress_percentage": 100,
            "metrics": {"timing": {"total": 7.0, "echo": 0}},
            "task_status": "completed",
            "log": "2020-07-27T10:00:00.000000+00:00: echo: Starting\n"
            "2020-07-27T10:00:00.000100+00:00: echo: Finished",
        },
        # Failure.
        {
            "activity": "exec.(task_id=5f1e, command_idx=0): Error executing: status 1",
            "current_command_idx": 0,
            "task_progress_percentage": 0,
            "command_progress_percentage": 0,
            "metrics": {"timing": {"total": 0.01}},
            "task_status": "failed",
        },
        # Log only, after may-i-run said no.
        {"log": "Worker 5f1e (vm) stopped running this task, no longer allowed to run"},
        # Canceled because the worker went to sleep on its own.
        {"task_status": "canceled", "activity": "Task was canceled", "metrics": {}},
    ],
)
def test_task_update_bodies_of_the_real_worker(body: dict[str, Any]) -> None:
    update = codec.loads(d.TaskUpdate, json.dumps(body).encode())
    assert update.task_status == body.get("task_status", "")
    assert update.log == body.get("log", "")
    assert update.activity == body.get("activity", "")
    timing = body.get("metrics", {}).get("timing")
    if timing is None:
        assert update.metrics in (None, d.TaskMetrics())
    else:
        assert update.metrics is not None
        assert update.metrics.timing == {key: float(value) for key, value in timing.items()}


def test_output_produced_body_of_the_real_worker() -> None:
    body = b'{"paths": ["/srv/farm/run/e3/data/out/copied.txt"]}'
    assert codec.loads(d.FileProduced, body).paths == ("/srv/farm/run/e3/data/out/copied.txt",)


# --- what the real worker reads (spec/worker.md §3) --------------------------------------------


def test_task_response_has_the_keys_the_worker_reads() -> None:
    task = d.Task(
        id=ObjectId(TASK_ID),
        job=ObjectId("5f1e0c0a2b3c4d5e6f70b002"),
        name="example-1-echo-sleep-exec",
        status=TaskStatus.ACTIVE,
        priority=50,
        job_priority=50,
        job_type="interop-test",
        task_type="sleep",
        commands=(
            d.Command(name="echo", settings={"message": "Hello"}),
            d.Command(name="sleep", settings={"time_in_seconds": 2}),
        ),
    )
    encoded = json.loads(codec.dumps(task))
    assert encoded["_id"] == TASK_ID
    assert encoded["commands"] == [
        {"name": "echo", "settings": {"message": "Hello"}},
        {"name": "sleep", "settings": {"time_in_seconds": 2}},
    ]
    # Go's Task keys without omitempty are always there, even when empty.
    for key in ("job", "manager", "project", "user", "name", "status", "priority"):
        assert key in encoded
    assert encoded["manager"] == ""
    # omitempty keys are left out when empty.
    for key in ("_etag", "log", "activity", "parents", "worker", "failed_by_workers", "metrics"):
        assert key not in encoded


def test_go_shaped_task_from_the_spec_decodes() -> None:
    body = {
        "_id": "5f1e0c0a2b3c4d5e6f70a101",
        "job": "5f1e0c0a2b3c4d5e6f70b002",
        "manager": "5f1e0c0a2b3c4d5e6f70c001",
        "project": "5f1e0c0a2b3c4d5e6f70d001",
        "user": "5f1e0c0a2b3c4d5e6f70e001",
        "name": "example-1-echo-sleep-exec",
        "status": "queued",
        "priority": 50,
        "job_priority": 50,
        "job_type": "interop-test",
        "task_type": "sleep",
        "commands": [
            {"name": "echo", "settings": {"message": "Hello from the interop test"}},
            {"name": "exec", "settings": {"cmd": "/bin/sh -c 'echo line one; echo line two'"}},
        ],
    }
    task = codec.decode(d.Task, body)
    assert task.id == "5f1e0c0a2b3c4d5e6f70a101"
    assert task.status is TaskStatus.QUEUED
    assert task.commands[1].settings["cmd"].startswith("/bin/sh")
    assert codec.encode(task) == body


def test_registration_answer_is_the_go_managers() -> None:
    worker = d.Worker(
        id=ObjectId("5f1e0c0a2b3c4d5e6f708192"),
        nickname="n",
        address="10.0.0.5:53211",
        platform="linux",
        supported_task_types=("sleep",),
    )
    # Key for key and value for value the Go manager's registration answer (spec §2.9).
    assert codec.dumps(worker) == (
        b'{"_id":"5f1e0c0a2b3c4d5e6f708192","nickname":"n","address":"10.0.0.5:53211",'
        b'"status":"","platform":"linux","time_cost":0,"supported_task_types":["sleep"],'
        b'"software":"","status_requested":"","lazy_status_request":false,'
        b'"sleep_schedule":{"schedule_active":false}}'
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (d.MayKeepRunningResponse(may_keep_running=True), {"may_keep_running": True}),
        (
            d.MayKeepRunningResponse(
                may_keep_running=False, reason="no", status_requested=WorkerStatus.ASLEEP
            ),
            {"may_keep_running": False, "reason": "no", "status_requested": "asleep"},
        ),
        (
            d.WorkerStatusRequest(status_requested=WorkerStatus.SHUTDOWN),
            {"status_requested": "shutdown"},
        ),
    ],
)
def test_answers_carry_exactly_the_keys_the_worker_expects(
    response: Any, expected: dict[str, Any]
) -> None:
    assert json.loads(codec.dumps(response)) == expected


# --- Go's leniency -----------------------------------------------------------------------------


def test_unknown_keys_are_ignored() -> None:
    update = codec.loads(d.TaskUpdate, b'{"task_status": "active", "colour": "blue"}')
    assert update == d.TaskUpdate(task_status=TaskStatus.ACTIVE)


@d.strict_keys
@attrs.frozen(kw_only=True)
class _Strict:
    name: str = d.wire_field("")
    inner: d.TaskUpdate = d.wire_field(factory=d.TaskUpdate)


def test_a_strict_document_refuses_keys_it_does_not_know_wherever_they_are() -> None:
    assert d.has_strict_keys(_Strict)
    assert not d.has_strict_keys(d.TaskUpdate)
    assert codec.loads(_Strict, b'{"NAME": "a"}') == _Strict(name="a")  # case still folds
    with pytest.raises(DecodeError, match=r"\$: unknown keys \['nmae'\] \(known: inner, name\)"):
        codec.loads(_Strict, b'{"nmae": "a"}')
    # Its lenient parts stay lenient: the worker protocol's documents ignore unknown keys.
    assert codec.loads(_Strict, b'{"inner": {"colour": "blue"}}') == _Strict()


def test_keys_match_case_insensitively() -> None:
    update = codec.loads(d.TaskUpdate, b'{"Activity": "rendering", "TASK_STATUS": "active"}')
    assert update.activity == "rendering"
    assert update.task_status is TaskStatus.ACTIVE


def test_the_later_of_two_keys_for_one_field_wins_as_in_go() -> None:
    assert codec.loads(d.TaskUpdate, b'{"activity": "a", "Activity": "b"}').activity == "b"
    assert codec.loads(d.TaskUpdate, b'{"Activity": "a", "activity": "b"}').activity == "b"


@pytest.mark.parametrize("empty", ["null", '""'])
def test_null_and_empty_string_are_an_empty_id(empty: str) -> None:
    assert codec.loads(d.Task, f'{{"job": {empty}}}'.encode()).job is None


def test_extended_json_object_id_is_accepted() -> None:
    body = b'{"job": {"$oid": "5F1E0C0A2B3C4D5E6F70B002"}}'
    assert codec.loads(d.Task, body).job == "5f1e0c0a2b3c4d5e6f70b002"


def test_null_lists_and_objects_are_empty() -> None:
    task = codec.loads(d.Task, b'{"commands": null, "parents": null, "metrics": null}')
    assert task.commands == ()
    assert task.parents == ()
    assert task.metrics is None
    worker = codec.loads(d.Worker, b'{"sleep_schedule": null}')
    assert worker.sleep_schedule == d.ScheduleInfo()


def test_unknown_statuses_stay_representable() -> None:
    update = codec.loads(d.TaskUpdate, b'{"task_status": "exploded"}')
    assert update.task_status == "exploded"
    assert json.loads(codec.dumps(update))["task_status"] == "exploded"


def test_time_of_day_is_read_as_go_scans_it() -> None:
    schedule = codec.loads(
        d.ScheduleInfo,
        b'{"schedule_active": true, "time_start": "16:4", "time_end": "16:34:44"}',
    )
    assert schedule.time_start == d.TimeOfDay(16, 4)
    assert schedule.time_end == d.TimeOfDay(16, 34)
    assert json.loads(codec.dumps(schedule))["time_start"] == "16:04"


@pytest.mark.parametrize("bad", ["16:", "sixteen", "25:00", "12:60", "24:01"])
def test_bad_times_of_day_are_refused(bad: str) -> None:
    with pytest.raises(DecodeError, match=r"\$\.time_start"):
        codec.loads(d.ScheduleInfo, json.dumps({"time_start": bad}))


# --- Go's strictness, and errors naming every bad path -----------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"task_progress_percentage": 1.5}, "$.task_progress_percentage"),
        ({"task_progress_percentage": "5"}, "$.task_progress_percentage"),
        ({"task_progress_percentage": True}, "$.task_progress_percentage"),
        ({"task_progress_percentage": 2**63}, "$.task_progress_percentage"),
        ({"activity": 5}, "$.activity"),
        ({"log": ["a"]}, "$.log"),
        ({"task_status": 3}, "$.task_status"),
        ({"_id": "xyz"}, "$._id"),
        ({"task_id": 12}, "$.task_id"),
        ({"metrics": []}, "$.metrics"),
        ({"metrics": {"timing": {"a": "b"}}}, "$.metrics.timing"),
        ({"received_on_manager": "yesterday"}, "$.received_on_manager"),
        ({"failed_by_workers": [{"id": "nope"}]}, "$.failed_by_workers[0].id"),
        ({"failed_by_workers": "all"}, "$.failed_by_workers"),
    ],
)
def test_wrong_types_are_errors_naming_the_field(body: dict[str, Any], path: str) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.loads(d.TaskUpdate, json.dumps(body))
    assert [error.split(":")[0] for error in caught.value.errors] == [path]
    assert path in str(caught.value)


def test_every_bad_field_is_named_in_one_error() -> None:
    body = {
        "_id": "xyz",
        "priority": 1.5,
        "commands": [{"name": 5}, {"name": "echo", "settings": 3}],
        "parents": ["5f1e0c0a2b3c4d5e6f70a101", "zz"],
    }
    with pytest.raises(DecodeError) as caught:
        codec.loads(d.Task, json.dumps(body))
    paths = {error.split(":")[0] for error in caught.value.errors}
    assert paths == {
        "$._id",
        "$.priority",
        "$.commands[0].name",
        "$.commands[1].settings",
        "$.parents[1]",
    }
    assert isinstance(caught.value, ProtocolError)
    assert caught.value.status_hint == 400


def test_a_null_document_is_the_zero_document_as_in_go() -> None:
    assert codec.loads(d.TaskUpdate, b"null") == d.TaskUpdate()


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1, 2]", b'"text"', b"12"])
def test_non_objects_and_broken_json_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid TaskUpdate"):
        codec.loads(d.TaskUpdate, raw)


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.loads(d.TaskUpdate, raw)


@given(documents(d.Task).map(codec.encode), st.data())
@settings(max_examples=100, deadline=None)
def test_any_value_in_any_field_decodes_or_raises_decode_error(
    encoded: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(encoded)))
    encoded[key] = data.draw(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.lists(st.none())
    )
    errors: tuple[str, ...] = ()
    try:
        codec.decode(d.Task, encoded)
    except DecodeError as error:
        errors = error.errors
    assert all(line.startswith(f"$.{key}") for line in errors)


# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-11-12T13:50:11Z", datetime(2019, 11, 12, 13, 50, 11, tzinfo=UTC)),
        ("2019-11-12T13:50:11.123456789Z", datetime(2019, 11, 12, 13, 50, 11, 123456, tzinfo=UTC)),
        ("2019-11-12T14:50:11.5+01:00", datetime(2019, 11, 12, 13, 50, 11, 500000, tzinfo=UTC)),
        ("2019-11-12T08:20:11-05:30", datetime(2019, 11, 12, 13, 50, 11, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_as_utc(text: str, expected: datetime) -> None:
    assert codec.parse_time(text) == expected


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2019, 11, 12, 13, 50, 11, tzinfo=UTC), "2019-11-12T13:50:11Z"),
        (datetime(2019, 11, 12, 13, 50, 11, 120000, tzinfo=UTC), "2019-11-12T13:50:11.12Z"),
        (
            datetime(2019, 11, 12, 14, 50, 11, 1, tzinfo=timezone(timedelta(hours=1))),
            "2019-11-12T13:50:11.000001Z",
        ),
    ],
)
def test_times_are_written_as_go_writes_them(moment: datetime, text: str) -> None:
    assert codec.format_time(moment) == text


def test_unset_non_pointer_times_are_go_zero_times() -> None:
    assert codec.encode(d.TaskUpdate())["received_on_manager"] == "0001-01-01T00:00:00Z"
    assert codec.loads(d.TaskUpdate, b'{"received_on_manager": "0001-01-01T00:00:00Z"}') == (
        d.TaskUpdate()
    )


# --- your own documents ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Pipeline:
    name: str = d.wire_field("", key="Name")
    shots: tuple[str, ...] = d.wire_field(factory=tuple, omitempty=True, converter=tuple)


def test_user_documents_follow_the_same_rules() -> None:
    assert codec.loads(_Pipeline, b'{"NAME": "x"}') == _Pipeline(name="x")
    assert codec.encode(_Pipeline(name="x")) == {"Name": "x"}
    with pytest.raises(DecodeError, match=r"\$\.Name"):
        codec.loads(_Pipeline, b'{"name": 1}')


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ('{"nickname": "render\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udc80": 1}', "lone UTF-16 surrogate"),
        ('{"metrics": ' + "[" * codec.MAX_NESTING + "]" * codec.MAX_NESTING + "}", "nested"),
        ("[" * 5000 + "]" * 5000, "nested"),
        ("[" * 5000, "nested"),
    ],
)
def test_text_no_document_may_be_is_refused_saying_why(text: str, wrong: str) -> None:
    # A lone surrogate cannot be stored or sent as UTF-8, and deep nesting would overflow
    # Python's stack further on: both are bad input, not a server's failure.
    with pytest.raises(DecodeError, match=f"not valid JSON.*{wrong}"):
        codec.loads(d.WorkerSignonDoc, text)


def test_nesting_up_to_the_limit_and_surrogate_pairs_are_accepted() -> None:
    deepest = "[" * (codec.MAX_NESTING - 1) + "]" * (codec.MAX_NESTING - 1)
    assert codec.parse_json('{"a": ' + deepest + "}") == {"a": json.loads(deepest)}
    assert codec.loads(d.WorkerSignonDoc, '{"nickname": "\\ud83d\\ude00"}').nickname == "😀"
