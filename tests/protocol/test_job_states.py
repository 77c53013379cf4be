"""The job state machine: user actions, and the job status that follows from its tasks."""

from __future__ import annotations

from collections import Counter, deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_protocol.errors import InvalidTransition
from flamenco_protocol.job_states import (
    JOB_TRANSITIONS,
    USER_ACTIONS,
    JobEvent,
    derive_job_status,
    needs_runnable,
    next_job_status,
    plan_job_action,
)
from flamenco_protocol.statuses import JobStatus, TaskStatus
from flamenco_protocol.task_states import TASK_TRANSITIONS, TaskEvent

J = JobStatus
T = TaskStatus
FINISHED_JOBS = (J.COMPLETED, J.CANCELED, J.FAILED)
NOT_RUN_BY_US = {J.WAITING_FOR_FILES, J.FAIL_REQUESTED, J.ARCHIVING, J.ARCHIVED, J.REQUEUED}


def test_every_status_we_use_is_reachable_from_construction() -> None:
    seen = {J.UNDER_CONSTRUCTION}
    todo = deque(seen)
    while todo:
        for target in JOB_TRANSITIONS[todo.popleft()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    # Waiting-for-files, archiving and fail-requested belong to the Flamenco 2 server's flows;
    # the enum keeps them so that documents using them decode.
    assert seen == set(JobStatus) - NOT_RUN_BY_US


@pytest.mark.parametrize(
    ("status", "requested", "expected", "task_event"),
    [
        (J.ACTIVE, J.CANCEL_REQUESTED, J.CANCEL_REQUESTED, TaskEvent.JOB_CANCELED),
        (J.QUEUED, J.PAUSED, J.PAUSED, TaskEvent.JOB_PAUSED),
        (J.PAUSED, J.QUEUED, J.QUEUED, TaskEvent.JOB_RESUMED),
        (J.FAILED, J.REQUEUED, J.QUEUED, TaskEvent.REQUEUED),
        (J.COMPLETED, J.REQUEUED, J.QUEUED, TaskEvent.REQUEUED),
        (J.PAUSED, J.CANCEL_REQUESTED, J.CANCEL_REQUESTED, TaskEvent.JOB_CANCELED),
    ],
)
def test_user_actions(status: J, requested: J, expected: J, task_event: TaskEvent) -> None:
    change = plan_job_action(status, requested)
    assert change.status is expected
    assert change.task_event is task_event
    assert change.requeue_completed == (status is J.COMPLETED)


@pytest.mark.parametrize(
    ("status", "requested"),
    [
        (J.COMPLETED, J.CANCEL_REQUESTED),
        (J.CANCELED, J.PAUSED),
        (J.ACTIVE, J.QUEUED),
        (J.ACTIVE, J.REQUEUED),
        (J.ACTIVE, J.COMPLETED),
        (J.ACTIVE, "nonsense"),
    ],
)
def test_actions_the_table_does_not_allow_are_refused(status: J, requested: str) -> None:
    with pytest.raises(InvalidTransition, match="job"):
        plan_job_action(status, requested)


def test_user_action_events_are_in_the_table() -> None:
    for event in USER_ACTIONS.values():
        assert any(event in row for row in JOB_TRANSITIONS.values())


def test_the_first_running_task_makes_the_job_active() -> None:
    change = derive_job_status(J.QUEUED, {T.ACTIVE: 1, T.QUEUED: 3})
    assert change is not None
    assert change.status is J.ACTIVE


def test_the_last_completed_task_completes_the_job() -> None:
    change = derive_job_status(J.ACTIVE, {T.COMPLETED: 4})
    assert change is not None
    assert change.status is J.COMPLETED


def test_a_job_without_tasks_completes_at_once() -> None:
    change = derive_job_status(J.QUEUED, {})
    assert change is not None
    assert change.status is J.COMPLETED


def test_one_failure_in_four_fails_the_job_and_cancels_the_rest() -> None:
    change = derive_job_status(J.ACTIVE, {T.FAILED: 1, T.QUEUED: 2, T.ACTIVE: 1})
    assert change is not None
    assert change.status is J.FAILED
    assert change.task_event is TaskEvent.JOB_CANCELED
    assert change.reason == "1 of its 4 tasks (25%) failed"


def test_a_job_whose_waiting_tasks_can_never_start_fails_once_nothing_runs() -> None:
    # 1 failed of 30 is under the limit, but the one waiting task is its child.
    counts = {T.COMPLETED: 28, T.FAILED: 1, T.QUEUED: 1}
    assert derive_job_status(J.ACTIVE, counts) is None  # were it runnable, it would wait
    change = derive_job_status(J.ACTIVE, counts, any_runnable=False)
    assert change is not None
    assert change.status is J.FAILED
    assert change.task_event is TaskEvent.JOB_CANCELED
    assert change.reason == "1 of its tasks wait for a parent that failed or was canceled"
    # While a task runs, the job goes on: what runs finishes first.
    running = {T.COMPLETED: 27, T.FAILED: 1, T.QUEUED: 1, T.ACTIVE: 1}
    assert derive_job_status(J.ACTIVE, running, any_runnable=False) is None
    # A paused job holds its tasks; a canceling one waits for its running tasks.
    assert derive_job_status(J.PAUSED, {T.CANCELED: 1, T.PAUSED: 2}, any_runnable=False) is None


def test_whether_a_job_may_be_blocked_is_asked_only_when_nothing_runs_and_some_wait() -> None:
    assert needs_runnable({T.COMPLETED: 28, T.FAILED: 1, T.QUEUED: 1})
    assert not needs_runnable({T.QUEUED: 1, T.CANCEL_REQUESTED: 1})
    assert not needs_runnable({T.COMPLETED: 2, T.CANCELED: 1})


def test_nine_failures_in_a_hundred_keep_the_job_active() -> None:
    assert derive_job_status(J.ACTIVE, {T.FAILED: 9, T.QUEUED: 90, T.ACTIVE: 1}) is None
    change = derive_job_status(J.ACTIVE, {T.FAILED: 10, T.QUEUED: 89, T.ACTIVE: 1})
    assert change is not None
    assert change.status is J.FAILED


def test_a_canceling_job_is_canceled_when_nothing_runs() -> None:
    assert derive_job_status(J.CANCEL_REQUESTED, {T.CANCEL_REQUESTED: 1, T.CANCELED: 3}) is None
    # Whatever status the last running task ended in.
    for last in (T.CANCELED, T.COMPLETED, T.FAILED):
        change = derive_job_status(J.CANCEL_REQUESTED, {last: 1, T.CANCELED: 3})
        assert change is not None
        assert change.status is J.CANCELED


def test_a_finished_job_with_canceled_tasks_is_canceled() -> None:
    change = derive_job_status(J.ACTIVE, {T.COMPLETED: 3, T.CANCELED: 1})
    assert change is not None
    assert change.status is J.CANCELED


def test_requeued_tasks_bring_a_finished_job_back() -> None:
    change = derive_job_status(J.COMPLETED, {T.COMPLETED: 3, T.QUEUED: 1})
    assert change is not None
    assert change.status is J.ACTIVE
    change = derive_job_status(J.CANCELED, {T.QUEUED: 4})
    assert change is not None
    assert change.status is J.QUEUED


def test_a_paused_job_stays_paused_while_tasks_wait() -> None:
    assert derive_job_status(J.PAUSED, {T.PAUSED: 3, T.ACTIVE: 1}) is None
    assert derive_job_status(J.PAUSED, {T.PAUSED: 3, T.COMPLETED: 1}) is None


def test_a_paused_job_holds_a_task_that_waits_again() -> None:
    # Its worker returned it, timed out or failed it softly: /task must not hand it out.
    for waiting in (T.CLAIMED_BY_MANAGER, T.SOFT_FAILED, T.QUEUED):
        change = derive_job_status(J.PAUSED, {T.PAUSED: 3, waiting: 1})
        assert change is not None
        assert change.status is J.PAUSED
        assert change.task_event is TaskEvent.JOB_PAUSED


def test_statuses_we_do_not_run_are_left_alone() -> None:
    assert derive_job_status(J.UNDER_CONSTRUCTION, {T.UNDER_CONSTRUCTION: 2}) is None
    assert derive_job_status("mystery", {T.QUEUED: 2}) is None
    with pytest.raises(InvalidTransition):
        next_job_status("mystery", JobEvent.CANCEL)


task_counts = st.dictionaries(st.sampled_from(list(TaskStatus)), st.integers(0, 5))
live_statuses = st.sampled_from([J.QUEUED, J.ACTIVE, J.PAUSED, *FINISHED_JOBS, J.CANCEL_REQUESTED])


@given(live_statuses, task_counts)
def test_derived_changes_follow_the_table(status: J, counts: dict[T, int]) -> None:
    change = derive_job_status(status, counts)
    if change is not None:
        assert change.status is next_job_status(status, change.event)
        # A change moves the job, or holds its tasks (a paused job pausing a returned task).
        assert change.status is not status or change.task_event is not None


@given(live_statuses, task_counts)
def test_finished_jobs_stay_finished_unless_tasks_wait_again(
    status: J, counts: dict[T, int]
) -> None:
    waiting = counts.get(T.QUEUED, 0) + counts.get(T.CLAIMED_BY_MANAGER, 0)
    waiting += counts.get(T.SOFT_FAILED, 0)
    change = derive_job_status(status, counts)
    total = sum(counts.values())
    if status in FINISHED_JOBS and not waiting and counts.get(T.COMPLETED, 0) != total:
        assert change is None


@given(st.sampled_from([J.QUEUED, J.ACTIVE]), task_counts)
def test_the_job_status_matches_its_tasks(status: J, counts: dict[T, int]) -> None:
    change = derive_job_status(status, counts)
    final = change.status if change else status
    total = sum(counts.values())
    running = counts.get(T.ACTIVE, 0) + counts.get(T.CANCEL_REQUESTED, 0)
    failed = counts.get(T.FAILED, 0)
    if counts.get(T.COMPLETED, 0) == total:
        assert final is J.COMPLETED
    elif failed and failed >= 0.1 * total:
        assert final is J.FAILED
    elif running:
        assert final is J.ACTIVE
    else:
        assert final in (J.QUEUED, J.ACTIVE, J.CANCELED, J.FAILED)


@given(task_counts)
def test_canceling_a_job_stops_every_task_nobody_runs(counts: dict[T, int]) -> None:
    change = plan_job_action(J.ACTIVE, J.CANCEL_REQUESTED)
    assert change.task_event is not None
    after: Counter[T] = Counter()
    for status, count in counts.items():
        after[TASK_TRANSITIONS[status].get(change.task_event, status)] += count
    # No task of a canceled job can be handed out again.
    assert not {T.QUEUED, T.CLAIMED_BY_MANAGER, T.SOFT_FAILED, T.PAUSED} & {
        status for status, count in after.items() if count
    }
    final = derive_job_status(change.status, after)
    if not after[T.ACTIVE] and not after[T.CANCEL_REQUESTED]:
        assert final is not None
        assert final.status is J.CANCELED
