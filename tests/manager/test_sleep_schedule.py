"""Sleep schedules: desired status, next check, refresh sequence, windows across midnight, DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamenco_manager.services.sleep_schedule import (
    clean_days_of_week,
    desired_status,
    is_due,
    next_check,
    on_date,
    refresh,
)
from flamenco_protocol.documents import ScheduleInfo, TimeOfDay
from flamenco_protocol.statuses import WorkerStatus

AMS = ZoneInfo("Europe/Amsterdam")
AWAKE, ASLEEP = WorkerStatus.AWAKE, WorkerStatus.ASLEEP
WEDNESDAY = dt.date(2024, 6, 5)
THURSDAY = dt.date(2024, 6, 6)
FRIDAY = dt.date(2024, 6, 7)


def at(day: dt.date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=AMS)


def schedule(days: str = "", start: str | None = None, end: str | None = None) -> ScheduleInfo:
    return ScheduleInfo(
        schedule_active=True,
        days_of_week=days,
        time_start=TimeOfDay.parse(start) if start else None,
        time_end=TimeOfDay.parse(end) if end else None,
    )


WORKING_DAY = schedule(start="08:00", end="17:00")


# Desired status


def test_no_schedule_or_an_inactive_one_has_no_opinion() -> None:
    # SL-01
    now = at(WEDNESDAY, 12)
    assert desired_status(None, now, AWAKE) is None
    inactive = ScheduleInfo(schedule_active=False, time_start=TimeOfDay(0, 0))
    assert desired_status(inactive, now, AWAKE) is None


def test_unlisted_days_have_no_opinion() -> None:
    # SL-02: not even "awake".
    assert desired_status(schedule("mo tu we"), at(THURSDAY, 12), ASLEEP) is None


def test_a_listed_day_without_times_sleeps_all_day() -> None:
    # SL-03
    assert desired_status(schedule("we"), at(WEDNESDAY, 0), AWAKE) is ASLEEP
    assert desired_status(schedule("we"), at(WEDNESDAY, 23, 59), AWAKE) is ASLEEP


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(WEDNESDAY, 7, 5), AWAKE),
        (at(WEDNESDAY, 8), ASLEEP),
        (at(WEDNESDAY, 8, 0, 43), ASLEEP),
        (at(WEDNESDAY, 17), AWAKE),
        (at(WEDNESDAY, 23, 5), AWAKE),
    ],
)
def test_working_day_window(moment: dt.datetime, expected: WorkerStatus) -> None:
    # SL-04
    other = ASLEEP if expected is AWAKE else AWAKE
    assert desired_status(WORKING_DAY, moment, other) is expected
    assert desired_status(WORKING_DAY, moment, expected) is None


def test_a_window_across_midnight_sleeps_until_the_next_morning() -> None:
    night = schedule("we", start="22:00", end="06:00")
    assert desired_status(night, at(WEDNESDAY, 21, 59), ASLEEP) is AWAKE
    assert desired_status(night, at(WEDNESDAY, 22), AWAKE) is ASLEEP
    assert desired_status(night, at(THURSDAY, 3), AWAKE) is ASLEEP  # Thursday is not listed.
    assert desired_status(night, at(THURSDAY, 6), ASLEEP) is AWAKE
    assert desired_status(night, at(THURSDAY, 12), ASLEEP) is AWAKE
    assert desired_status(night, at(FRIDAY, 3), AWAKE) is None  # No window started Thursday.


def test_a_window_to_midnight_does_not_reach_into_an_unlisted_day() -> None:
    evening = schedule("we", start="20:00")
    assert desired_status(evening, at(WEDNESDAY, 23), AWAKE) is ASLEEP
    assert desired_status(evening, at(THURSDAY, 0), ASLEEP) is None


def test_an_empty_window_keeps_the_worker_awake() -> None:
    assert desired_status(schedule(start="09:00", end="09:00"), at(WEDNESDAY, 9), ASLEEP) is AWAKE


def test_time_is_wall_clock_across_dst() -> None:
    spring = dt.date(2024, 3, 31)  # Clocks jump from 02:00 to 03:00.
    assert desired_status(WORKING_DAY, at(spring, 7, 59), ASLEEP) is AWAKE
    assert desired_status(WORKING_DAY, at(spring, 8), AWAKE) is ASLEEP
    check = next_check(WORKING_DAY, at(spring, 7))
    assert check.astimezone(dt.UTC) == dt.datetime(2024, 3, 31, 6, tzinfo=dt.UTC)

    autumn = dt.date(2024, 10, 27)  # 02:00 to 03:00 happens twice.
    early = schedule(start="01:00", end="02:30")
    first = dt.datetime(2024, 10, 27, 2, 10, tzinfo=AMS)
    second = first.replace(fold=1)
    assert desired_status(early, first, AWAKE) is ASLEEP
    # The window ended at the first 02:30; the second 02:10 is an hour later.
    assert desired_status(early, second, ASLEEP) is AWAKE
    assert next_check(early, at(autumn, 1, 30)) == dt.datetime(2024, 10, 27, 2, 30, tzinfo=AMS)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        desired_status(WORKING_DAY, dt.datetime(2024, 6, 5, 12), AWAKE)


# Next check


@pytest.mark.parametrize(
    ("info", "now", "expected"),
    [
        (WORKING_DAY, at(WEDNESDAY, 7), at(WEDNESDAY, 8)),
        (WORKING_DAY, at(WEDNESDAY, 12), at(WEDNESDAY, 17)),
        (WORKING_DAY, at(WEDNESDAY, 18), at(THURSDAY, 0)),
        (schedule(end="17:00"), at(WEDNESDAY, 12), at(WEDNESDAY, 17)),
        (schedule(), at(WEDNESDAY, 12), at(THURSDAY, 0)),
        (schedule(start="08:00"), at(WEDNESDAY, 12), at(THURSDAY, 0)),
        (schedule(start="22:00", end="06:00"), at(WEDNESDAY, 23), at(THURSDAY, 0)),
        (schedule(start="22:00", end="06:00"), at(THURSDAY, 0), at(THURSDAY, 6)),
        (schedule(start="22:00", end="06:00"), at(THURSDAY, 6), at(THURSDAY, 22)),
    ],
)
def test_next_check(info: ScheduleInfo, now: dt.datetime, expected: dt.datetime) -> None:
    # SL-05, plus windows across midnight.
    assert next_check(info, now) == expected


# Refresh


def test_refresh_sequence() -> None:
    # SL-06: the loop refreshes a schedule only when its check is due.
    info = schedule("mo tu we th fr", start="09:00", end="18:00")
    status, request = AWAKE, ""

    def tick(now: dt.datetime) -> None:
        nonlocal info, request
        if is_due(info, now):
            decision = refresh(info, now, status, request)
            info = decision.schedule
            if decision.request is not None:
                request = decision.request

    tick(at(WEDNESDAY, 8, 0, 43))
    assert (request, info.next_check) == ("", at(WEDNESDAY, 9))

    tick(at(WEDNESDAY, 9, 0, 0, 1))
    assert (status, request, info.next_check) == (AWAKE, ASLEEP, at(WEDNESDAY, 18))

    status, request = AWAKE, ""  # Manual wake-up from the dashboard, acknowledged.
    tick(at(WEDNESDAY, 10))
    assert (status, request) == (AWAKE, "")

    status = ASLEEP  # Manual sleep.
    tick(at(WEDNESDAY, 11))
    assert (status, request) == (ASLEEP, "")

    tick(at(WEDNESDAY, 20))
    assert (request, info.next_check) == (AWAKE, at(THURSDAY, 0))


def test_refresh_leaves_an_existing_request_alone() -> None:
    decision = refresh(WORKING_DAY, at(WEDNESDAY, 12), AWAKE, ASLEEP)
    assert decision.request is None
    assert decision.schedule.next_check == at(WEDNESDAY, 17)


def test_refresh_cleans_the_days_without_failing() -> None:
    decision = refresh(schedule(" Mo  x WE\u00a0friday "), at(WEDNESDAY, 12), AWAKE)
    assert decision.schedule.days_of_week == "mo we fr"
    assert decision.request is ASLEEP


def test_is_due() -> None:
    now = at(WEDNESDAY, 12)
    assert is_due(WORKING_DAY, now)
    assert not is_due(ScheduleInfo(schedule_active=False), now)
    later = ScheduleInfo(schedule_active=True, next_check=at(WEDNESDAY, 13))
    assert not is_due(later, now)
    assert is_due(later, at(WEDNESDAY, 13))


# Days of week and TimeOfDay


def test_clean_days_of_week() -> None:
    # DB-04
    assert clean_days_of_week(" Mo   TU we\u00a0friday\n") == "mo tu we fr"
    assert clean_days_of_week("") == ""


@pytest.mark.parametrize("word", ["m", "x", "xyz", "12"])
def test_words_that_are_not_days_are_refused(word: str) -> None:
    # §19.2 item 22: a one-letter word crashed the Go manager.
    with pytest.raises(ValueError, match=repr(word)):
        clean_days_of_week(f"mo {word} tu")


def test_time_of_day_comparisons_are_strict() -> None:
    # SL-07
    assert TimeOfDay(8, 0) < TimeOfDay(8, 1)
    assert not TimeOfDay(8, 1) < TimeOfDay(8, 1)
    assert TimeOfDay(9, 0) > TimeOfDay(8, 59)
    assert not TimeOfDay(8, 59) > TimeOfDay(8, 59)


def test_on_date() -> None:
    # SL-08
    assert on_date(TimeOfDay(16, 4), WEDNESDAY, AMS) == at(WEDNESDAY, 16, 4)
    assert on_date(TimeOfDay(24, 0), WEDNESDAY, AMS) == at(THURSDAY, 0)


def test_time_of_day_text() -> None:
    # SL-09 (the JSON codec uses these two)
    assert str(TimeOfDay(6, 5)) == "06:05"
    assert TimeOfDay.parse("16:4") == TimeOfDay(16, 4)
    assert TimeOfDay.parse("16:34:44") == TimeOfDay(16, 34)
    for bad in ("16:", "je moeder"):
        with pytest.raises(ValueError, match="time of day"):
            TimeOfDay.parse(bad)


# Properties

ZONES = [ZoneInfo(name) for name in ("Europe/Amsterdam", "America/Santiago", "Australia/Lord_Howe")]
ZONES.append(ZoneInfo("Asia/Kolkata"))
_TIMES = st.none() | st.builds(TimeOfDay, st.integers(0, 23), st.integers(0, 59))
_SCHEDULES = st.builds(
    ScheduleInfo,
    schedule_active=st.just(True),
    days_of_week=st.lists(st.sampled_from(["mo", "tu", "we", "th", "fr", "sa", "su"])).map(
        " ".join
    ),
    time_start=_TIMES,
    time_end=_TIMES,
)
_MOMENTS = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC)
)


@settings(max_examples=300, deadline=None)
@given(info=_SCHEDULES, moment=_MOMENTS, zone=st.sampled_from(ZONES))
def test_next_check_is_in_the_future_and_the_opinion_holds_until_then(
    info: ScheduleInfo, moment: dt.datetime, zone: ZoneInfo
) -> None:
    now = moment.astimezone(zone)
    check = next_check(info, now)
    assert now < check <= now + dt.timedelta(hours=26)
    just_before = (check.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).astimezone(zone)
    assert desired_status(info, now, "") == desired_status(info, just_before, "")
