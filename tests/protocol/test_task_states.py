"""The task state machine and the decisions built on it."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_protocol.errors import InvalidTransition
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import SCHEDULABLE_TASK_STATUSES, TaskStatus
from flamenco_protocol.task_states import (
    TASK_TRANSITIONS,
    TaskEvent,
    UpdateVerdict,
    can_happen,
    decide_failure,
    decide_task_update,
    next_task_status,
    schedulable,
    should_blocklist,
)

S = TaskStatus
E = TaskEvent
ME = ObjectId("5f1e0c0a2b3c4d5e6f700001")
OTHER = ObjectId("5f1e0c0a2b3c4d5e6f700002")
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELED)


def test_every_status_is_reachable_from_construction() -> None:
    seen = {S.UNDER_CONSTRUCTION}
    todo = deque(seen)
    while todo:
        for target in TASK_TRANSITIONS[todo.popleft()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(TaskStatus)


def test_finished_tasks_leave_only_when_a_user_requeues_them() -> None:
    for status in FINISHED:
        assert dict(TASK_TRANSITIONS[status]) == {E.REQUEUED: S.QUEUED}


def test_only_schedulable_tasks_can_be_assigned() -> None:
    assignable = {status for status, row in TASK_TRANSITIONS.items() if E.ASSIGNED in row}
    assert assignable == SCHEDULABLE_TASK_STATUSES
    assert all(schedulable(status) for status in assignable)
    assert not schedulable(S.ACTIVE)


def test_only_running_tasks_take_worker_reports() -> None:
    worker_events = {
        E.WORKER_REPORTED_ACTIVE,
        E.WORKER_REPORTED_COMPLETED,
        E.WORKER_REPORTED_CANCELED,
        E.SOFT_FAILED,
        E.HARD_FAILED,
        E.WORKER_STOPPED,
        E.PING_TIMEOUT,
    }
    for status, row in TASK_TRANSITIONS.items():
        if set(row) & worker_events:
            assert status in (S.ACTIVE, S.CANCEL_REQUESTED), status


def test_a_missing_transition_names_the_machine_status_and_event() -> None:
    with pytest.raises(
        InvalidTransition, match="task: 'assigned' is not allowed in state 'active'"
    ):
        next_task_status(S.ACTIVE, E.ASSIGNED)
    with pytest.raises(InvalidTransition):
        next_task_status("exploded", E.ASSIGNED)
    assert not can_happen("exploded", E.ASSIGNED)


# --- worker updates ----------------------------------------------------------------------------

statuses = st.sampled_from(list(TaskStatus)) | st.sampled_from(["", "exploded"])


@given(statuses, statuses, st.sampled_from([None, ME, OTHER]))
def test_update_decisions_agree_with_the_table(
    task_status: str, reported: str, holder: ObjectId | None
) -> None:
    outcome = decide_task_update(
        task_status=task_status, task_worker=holder, sender=ME, reported_status=reported
    )
    if holder == OTHER:
        assert outcome.verdict is UpdateVerdict.CONFLICT
        return
    if outcome.verdict is UpdateVerdict.UNKNOWN_STATUS:
        assert reported not in ("", S.ACTIVE, S.COMPLETED, S.CANCELED, S.FAILED)
        return
    assert outcome.claims_task == (holder is None)
    assert outcome.keep_activity == (task_status == S.ACTIVE)
    if outcome.failed_from is not None:
        for hard in (False, True):
            decided = outcome.with_failure(hard)
            assert decided.event is not None
            assert decided.new_status == next_task_status(task_status, decided.event)
    elif outcome.event is not None:
        assert outcome.new_status == next_task_status(task_status, outcome.event)
    if task_status not in (S.ACTIVE, S.CANCEL_REQUESTED):
        # Status dropped, update otherwise taken (log, metrics), as the Go manager does.
        assert outcome.verdict is UpdateVerdict.APPLY
        assert outcome.new_status is None
        assert outcome.failed_from is None


def test_an_update_for_another_workers_task_is_a_conflict() -> None:
    outcome = decide_task_update(
        task_status=S.ACTIVE, task_worker=OTHER, sender=ME, reported_status=S.COMPLETED
    )
    assert outcome.verdict is UpdateVerdict.CONFLICT


def test_an_update_claims_an_unassigned_task() -> None:
    outcome = decide_task_update(
        task_status=S.ACTIVE, task_worker=None, sender=ME, reported_status=S.COMPLETED
    )
    assert outcome.claims_task
    assert outcome.new_status is S.COMPLETED


def test_a_completed_report_for_a_stopped_task_is_dropped() -> None:
    outcome = decide_task_update(
        task_status=S.CLAIMED_BY_MANAGER, task_worker=ME, sender=ME, reported_status=S.COMPLETED
    )
    assert outcome.verdict is UpdateVerdict.APPLY
    assert outcome.new_status is None
    assert not outcome.keep_activity


@pytest.mark.parametrize("reported", ["queued", "claimed-by-manager", "soft-failed", "exploded"])
def test_statuses_a_worker_may_not_report_are_refused(reported: str) -> None:
    outcome = decide_task_update(
        task_status=S.ACTIVE, task_worker=ME, sender=ME, reported_status=reported
    )
    assert outcome.verdict is UpdateVerdict.UNKNOWN_STATUS


@pytest.mark.parametrize(
    ("reported", "expected"),
    [(S.COMPLETED, S.COMPLETED), (S.CANCELED, S.CANCELED), (S.ACTIVE, None)],
)
def test_a_canceling_task_takes_only_final_reports(reported: str, expected: S | None) -> None:
    outcome = decide_task_update(
        task_status=S.CANCEL_REQUESTED, task_worker=ME, sender=ME, reported_status=reported
    )
    assert outcome.new_status == expected


def test_a_failure_while_canceling_is_a_failure() -> None:
    outcome = decide_task_update(
        task_status=S.CANCEL_REQUESTED, task_worker=ME, sender=ME, reported_status=S.FAILED
    )
    assert outcome.with_failure(hard=False).new_status is S.FAILED


def test_with_failure_needs_a_reported_failure() -> None:
    outcome = decide_task_update(
        task_status=S.ACTIVE, task_worker=ME, sender=ME, reported_status=S.COMPLETED
    )
    with pytest.raises(ValueError, match="failure"):
        outcome.with_failure(hard=True)


# --- failure policy (spec/manager-behaviour.md §10) --------------------------------------------

A, B, C, D = (ObjectId(f"5f1e0c0a2b3c4d5e6f70000{n}") for n in range(1, 5))


def test_soft_then_hard_with_two_workers() -> None:
    capable = frozenset({A, B})
    assert (
        decide_failure(failed_by=frozenset({A}), capable_workers=capable, softfail_limit=3) is False
    )
    assert decide_failure(failed_by=frozenset({A, B}), capable_workers=capable, softfail_limit=3)


def test_the_third_failure_is_hard_with_four_workers() -> None:
    capable = frozenset({A, B, C, D})
    assert not decide_failure(failed_by=frozenset({A}), capable_workers=capable, softfail_limit=3)
    assert not decide_failure(
        failed_by=frozenset({A, B}), capable_workers=capable, softfail_limit=3
    )
    assert decide_failure(failed_by=frozenset({A, B, C}), capable_workers=capable, softfail_limit=3)


def test_worked_example_of_the_blocklist() -> None:
    # Threshold 3, workers A and B; A fails t0, t1, t2; then B fails them.
    assert not should_blocklist(2, threshold=3)
    assert should_blocklist(3, threshold=3)
    # After A's third failure A is blocklisted: the capable workers are B alone.
    after_a = frozenset({B})
    assert not decide_failure(failed_by=frozenset({A}), capable_workers=after_a, softfail_limit=3)
    # B fails t0: nobody left who has not failed it.
    assert decide_failure(failed_by=frozenset({A, B}), capable_workers=after_a, softfail_limit=3)


@given(
    st.frozensets(st.sampled_from([A, B, C, D]), min_size=1),
    st.frozensets(st.sampled_from([A, B, C, D])),
    st.integers(1, 5),
)
def test_a_failure_is_soft_only_while_someone_else_can_retry(
    failed_by: frozenset[ObjectId], capable: frozenset[ObjectId], limit: int
) -> None:
    hard = decide_failure(failed_by=failed_by, capable_workers=capable, softfail_limit=limit)
    assert hard == (len(failed_by) >= limit or not capable - failed_by)
