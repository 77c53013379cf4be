"""Sleep schedules: when a worker should sleep, and when to look at it again (spec §11.2).

A schedule is a sleep window, ``time_start`` up to (not including) ``time_end``, on the days in
``days_of_week``:

* no start means from midnight, no end means until the next midnight, no times means all day;
* a window whose start is after its end crosses midnight: it starts on a listed day and ends on
  the next day, whether or not that day is listed (the Go manager never slept in such a window);
* a start equal to the end is an empty window;
* on a day the schedule does not touch (not listed, and not the end of a window that crossed
  midnight into it) the schedule has no opinion: a manual status holds.

Times are wall-clock times in the manager's time zone: the caller passes ``now`` as an aware
datetime in that zone, and every instant computed here is in the same zone. Across a DST change a
window keeps its wall-clock times; a time the change skips (02:30 when clocks jump from 02:00 to
03:00) is taken as the same wall-clock offset after the jump (03:30), and a time that happens
twice as its first occurrence: Python's ``fold=0`` rule.

Everything here is a pure function of its arguments; the manager's loop stores the results.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs

from flamenco_protocol.documents import ScheduleInfo, TimeOfDay
from flamenco_protocol.statuses import WorkerStatus

__all__ = [
    "DAY_NAMES",
    "ScheduleDecision",
    "clean_days_of_week",
    "desired_status",
    "is_due",
    "next_check",
    "on_date",
    "refresh",
]

DAY_NAMES: Final = ("mo", "tu", "we", "th", "fr", "sa", "su")
"""Two-letter day names, Monday first, as ``date.weekday()`` numbers them."""

_MIDNIGHT: Final = TimeOfDay(0, 0)
_END_OF_DAY: Final = TimeOfDay(24, 0)


@attrs.frozen
class ScheduleDecision:
    """What applying a schedule decided: the schedule to store, and the status to request."""

    schedule: ScheduleInfo
    """The schedule with cleaned days and its new ``next_check``."""
    request: WorkerStatus | None
    """Request this status from the worker, immediately, overriding any other request."""


def clean_days_of_week(text: str) -> str:
    """Normalise a typed list of days: ``" Mo   TU we\\u00a0friday\\n"`` gives ``"mo tu we fr"``.

    Words are split on any whitespace and cut to their first two letters, lower-cased. A word
    that does not start with a day name (``"m"``, ``"xyz"``) raises :class:`ValueError` naming
    it, where the Go manager crashed or stored a day that never matches.
    """
    days = []
    for word in text.split():
        day = word[:2].lower()
        if day not in DAY_NAMES:
            raise ValueError(
                f"{word!r} is not a day of the week; use two or more letters of an English day "
                f"name ({' '.join(DAY_NAMES)})"
            )
        days.append(day)
    return " ".join(days)


def on_date(time: TimeOfDay, date: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """``time`` on ``date`` in the zone ``tz`` (24:00 is the next day's midnight)."""
    if time.hour == 24:
        date += dt.timedelta(days=1)
        return dt.datetime(date.year, date.month, date.day, tzinfo=tz)
    return dt.datetime(date.year, date.month, date.day, time.hour, time.minute, tzinfo=tz)


def desired_status(
    schedule: ScheduleInfo | None, now: dt.datetime, current_status: str
) -> WorkerStatus | None:
    """The status the schedule wants at ``now``, or ``None`` when it has no opinion.

    No opinion either when the worker already has that status (spec SL-01..SL-04).
    """
    tz = _zone(now)
    if schedule is None or not schedule.schedule_active:
        return None
    days = _days(schedule)
    today = now.date()
    has_opinion = False
    for start_day in (today - dt.timedelta(days=1), today):
        if days and DAY_NAMES[start_day.weekday()] not in days:
            continue
        start, end, crosses_midnight = _window(schedule, start_day, tz)
        if start_day == today or crosses_midnight:
            has_opinion = True
        if _instant(start) <= _instant(now) < _instant(end):
            return None if current_status == WorkerStatus.ASLEEP else WorkerStatus.ASLEEP
    if not has_opinion:
        return None
    return None if current_status == WorkerStatus.AWAKE else WorkerStatus.AWAKE


def next_check(schedule: ScheduleInfo, now: dt.datetime) -> dt.datetime:
    """When the schedule's opinion may next change: always after ``now`` (spec SL-05).

    That is the earliest start, end or midnight after ``now``, whatever the days of the week.
    """
    tz = _zone(now)
    today = now.date()
    candidates = []
    for offset in (0, 1):
        day = today + dt.timedelta(days=offset)
        candidates.append(on_date(_END_OF_DAY, day, tz))
        for time in (schedule.time_start, schedule.time_end):
            if time is not None:
                candidates.append(on_date(time, day, tz))
    return min((c for c in candidates if _instant(c) > _instant(now)), key=_instant)


def is_due(schedule: ScheduleInfo, now: dt.datetime) -> bool:
    """Whether the sleep scheduler should apply an active schedule now (no check time: yes)."""
    if not schedule.schedule_active:
        return False
    return schedule.next_check is None or _instant(schedule.next_check) <= _instant(now)


def refresh(
    schedule: ScheduleInfo,
    now: dt.datetime,
    current_status: str,
    current_request: str = "",
) -> ScheduleDecision:
    """Apply a schedule, as the sleep scheduler does when it is due (spec SL-06).

    The days are cleaned (words that are not days dropped, since a stored schedule must not
    stop the loop), ``next_check`` recomputed, and a status requested unless the schedule has no
    opinion or that status is already requested.
    """
    days = " ".join(day for day in _words(schedule.days_of_week) if day in DAY_NAMES)
    cleaned = attrs.evolve(schedule, days_of_week=days, next_check=next_check(schedule, now))
    wanted = desired_status(cleaned, now, current_status)
    if wanted is None or current_request == wanted:
        return ScheduleDecision(cleaned, None)
    return ScheduleDecision(cleaned, wanted)


def _zone(now: dt.datetime) -> dt.tzinfo:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime in the manager's time zone")
    return now.tzinfo


def _words(days_of_week: str) -> list[str]:
    return [word[:2].lower() for word in days_of_week.split()]


def _days(schedule: ScheduleInfo) -> set[str]:
    return set(_words(schedule.days_of_week))


def _window(
    schedule: ScheduleInfo, start_day: dt.date, tz: dt.tzinfo
) -> tuple[dt.datetime, dt.datetime, bool]:
    """The sleep window starting on ``start_day``, and whether it crosses midnight."""
    start_time = schedule.time_start or _MIDNIGHT
    end_time = schedule.time_end or _END_OF_DAY
    crosses = start_time > end_time
    end_day = start_day + dt.timedelta(days=1) if crosses else start_day
    return on_date(start_time, start_day, tz), on_date(end_time, end_day, tz), crosses


def _instant(moment: dt.datetime) -> dt.datetime:
    # Aware datetimes sharing a tzinfo compare by wall clock; across DST only UTC is right.
    return moment.astimezone(dt.UTC)
