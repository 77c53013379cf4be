"""The worker state machine and status requests (spec/manager-behaviour.md §4.7, §6.3-§6.5)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_protocol.documents import MayKeepRunningResponse
from flamenco_protocol.errors import InvalidTransition
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TIMEOUT_PRONE_WORKER_STATUSES, TaskStatus, WorkerStatus
from flamenco_protocol.worker_states import (
    WORKER_TRANSITIONS,
    FetchVerdict,
    StatusRequest,
    WorkerEvent,
    decide_ack,
    decide_fetch,
    decide_may_keep_running,
    decide_sign_off,
    next_worker_status,
    validate_request,
)

W = WorkerStatus
E = WorkerEvent
TASK = ObjectId("5f1e0c0a2b3c4d5e6f70a101")
ME = ObjectId("5f1e0c0a2b3c4d5e6f700001")
OTHER = ObjectId("5f1e0c0a2b3c4d5e6f700002")


def test_every_status_but_shutdown_is_reachable_from_registration() -> None:
    seen = {W.NEW}
    todo = deque(seen)
    while todo:
        for target in WORKER_TRANSITIONS[todo.popleft()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    # Shutdown is only ever requested; the worker signs off instead of taking it.
    assert seen == set(WorkerStatus) - {W.SHUTDOWN}


def test_only_awake_workers_time_out() -> None:
    timing_out = {status for status, row in WORKER_TRANSITIONS.items() if E.TIMED_OUT in row}
    assert timing_out == TIMEOUT_PRONE_WORKER_STATUSES == {W.AWAKE}


@pytest.mark.parametrize("status", list(WorkerStatus))
def test_asking_for_work_wakes_every_worker_but_a_testing_one(status: WorkerStatus) -> None:
    expected = W.TESTING if status is W.TESTING else W.AWAKE
    assert next_worker_status(status, E.ASKED_FOR_WORK) is expected


def test_unknown_stored_statuses_are_treated_as_new() -> None:
    assert next_worker_status("dozing", E.SIGNED_ON) is W.STARTING


def test_only_timed_out_workers_can_have_their_timeout_acknowledged() -> None:
    assert next_worker_status(W.TIMEOUT, E.TIMEOUT_ACKNOWLEDGED) is W.OFFLINE
    with pytest.raises(InvalidTransition, match="timeout-acknowledged"):
        next_worker_status(W.AWAKE, E.TIMEOUT_ACKNOWLEDGED)


# --- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["asleep", "awake", "shutdown"])
def test_users_may_request_asleep_awake_and_shutdown(status: str) -> None:
    assert validate_request(status, lazy=True) == StatusRequest(WorkerStatus(status), True)


@pytest.mark.parametrize("status", ["offline", "timeout", "testing", "", "nap"])
def test_other_requests_are_refused(status: str) -> None:
    with pytest.raises(InvalidTransition, match="request status"):
        validate_request(status)


def test_a_pending_request_beats_missing_task_types() -> None:
    request = StatusRequest(W.ASLEEP, lazy=True)
    assert decide_fetch(request, ()) is FetchVerdict.STATUS_CHANGE
    assert decide_fetch(None, ()) is FetchVerdict.NO_TASK_TYPES
    assert decide_fetch(None, ("sleep",)) is FetchVerdict.SCHEDULE


def _may(
    task_status: TaskStatus | None = TaskStatus.ACTIVE,
    holder: ObjectId | None = ME,
    request: StatusRequest | None = None,
) -> MayKeepRunningResponse:
    return decide_may_keep_running(
        task_id=TASK, task_status=task_status, task_worker=holder, worker=ME, request=request
    )


def test_may_keep_running_when_all_is_well() -> None:
    assert _may() == MayKeepRunningResponse(may_keep_running=True)
    assert _may(holder=None).may_keep_running


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"task_status": None}, f"unable to find task {TASK}"),
        ({"holder": OTHER}, f"task {TASK} reassigned to another worker"),
        (
            {"task_status": TaskStatus.CANCEL_REQUESTED},
            f"task {TASK} in non-runnable status cancel-requested",
        ),
        (
            {"request": StatusRequest(W.ASLEEP)},
            "worker status change to asleep requested",
        ),
        (
            {"request": StatusRequest(W.SHUTDOWN)},
            "worker status change to shutdown requested",
        ),
    ],
)
def test_may_not_keep_running_gives_the_first_failing_reason(
    kwargs: dict[str, object], reason: str
) -> None:
    answer = _may(**kwargs)  # type: ignore[arg-type]
    assert not answer.may_keep_running
    assert answer.reason == reason


def test_lazy_requests_let_the_task_finish_but_are_told() -> None:
    answer = _may(request=StatusRequest(W.ASLEEP, lazy=True))
    assert answer == MayKeepRunningResponse(may_keep_running=True, status_requested=W.ASLEEP)


def test_an_immediate_awake_request_keeps_the_task_running() -> None:
    answer = _may(request=StatusRequest(W.AWAKE))
    assert answer == MayKeepRunningResponse(may_keep_running=True, status_requested=W.AWAKE)


# --- acks and sign-off -------------------------------------------------------------------------


def test_acks_set_the_status_and_clear_the_request() -> None:
    decision = decide_ack(W.AWAKE, StatusRequest(W.ASLEEP), "asleep")
    assert decision.status is W.ASLEEP
    assert decision.clears_request
    assert decision.matches_request


def test_an_ack_of_something_else_still_counts_but_does_not_match() -> None:
    decision = decide_ack(W.AWAKE, StatusRequest(W.ASLEEP), "awake")
    assert decision.status is W.AWAKE
    assert decision.clears_request
    assert not decision.matches_request


@pytest.mark.parametrize("acked", ["shutdown", "offline", "timeout", "starting", "", "dozing"])
def test_acks_of_statuses_a_worker_cannot_take_change_nothing(acked: str) -> None:
    decision = decide_ack(W.AWAKE, StatusRequest(W.SHUTDOWN), acked)
    assert decision.status is None
    assert not decision.clears_request


@given(
    st.sampled_from(list(WorkerStatus)),
    st.none() | st.builds(StatusRequest, st.sampled_from([W.ASLEEP, W.AWAKE, W.SHUTDOWN])),
    st.sampled_from(list(WorkerStatus)) | st.text(max_size=8),
)
def test_ack_decisions_agree_with_the_table(
    current: WorkerStatus, request: StatusRequest | None, acked: str
) -> None:
    decision = decide_ack(current, request, acked)
    if decision.status is not None:
        event = {
            W.AWAKE: E.ACKED_AWAKE,
            W.ASLEEP: E.ACKED_ASLEEP,
            W.ERROR: E.ACKED_ERROR,
            W.TESTING: E.ACKED_TESTING,
        }[WorkerStatus(acked)]
        assert decision.status is next_worker_status(current, event)


@pytest.mark.parametrize(
    ("status", "request_before", "request_after"),
    [
        (W.ASLEEP, None, StatusRequest(W.ASLEEP)),
        (W.ASLEEP, StatusRequest(W.SHUTDOWN, lazy=True), StatusRequest(W.ASLEEP)),
        (W.ASLEEP, StatusRequest(W.AWAKE), None),
        (W.AWAKE, StatusRequest(W.ASLEEP), None),
        (W.AWAKE, None, None),
    ],
)
def test_a_sleeping_worker_stays_asleep_after_signing_off(
    status: WorkerStatus, request_before: StatusRequest | None, request_after: StatusRequest | None
) -> None:
    assert decide_sign_off(status, request_before) == request_after
    assert next_worker_status(status, E.SIGNED_OFF) is W.OFFLINE
