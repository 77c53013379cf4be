"""Sleep schedules applied to workers: set from the API, and by the scheduler loop (§11.2)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from flamenco_manager.services.errors import Invalid
from flamenco_protocol.documents import ScheduleInfo, TimeOfDay

from .harness import Farm

pytestmark = pytest.mark.anyio


async def test_a_schedule_is_cleaned_stored_and_applied_at_once(farm: Farm) -> None:
    worker = await farm.register()
    await farm.fetch(worker)  # awake
    # A farm whose workers sleep 08:00-17:00 on weekdays (it renders at night).
    schedule = ScheduleInfo(
        schedule_active=True,
        days_of_week=" Mo   TU we\u00a0thursday fr\n",
        time_start=TimeOfDay(8, 0),
        time_end=TimeOfDay(17, 0),
    )
    record = farm.manager.workers.set_sleep_schedule(worker.id, schedule)
    assert record.sleep_schedule is not None
    assert record.sleep_schedule["days_of_week"] == "mo tu we th fr"
    assert record.sleep_next_check is not None
    assert record.sleep_next_check > farm.clock()


async def test_bad_day_names_are_refused(farm: Farm) -> None:
    worker = await farm.register()
    with pytest.raises(Invalid, match="x"):
        farm.manager.workers.set_sleep_schedule(
            worker.id, ScheduleInfo(schedule_active=True, days_of_week="mo x")
        )


async def test_the_loop_puts_a_worker_to_sleep_and_wakes_it(
    tmp_path: object, database_url: str
) -> None:
    from pathlib import Path

    import httpx

    from flamenco_manager.manager import Manager
    from flamenco_manager.web.app import create_app

    from .harness import FakeClock, make_settings

    clock = FakeClock()
    clock.now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)  # a Wednesday
    manager = Manager(
        make_settings(Path(str(tmp_path)), timezone="UTC", database=database_url), clock=clock
    )
    transport = httpx.ASGITransport(app=create_app(manager, run_loops=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        farm = Farm(manager, client, clock)
        worker = await farm.register()
        await farm.fetch(worker)
        manager.workers.set_sleep_schedule(
            worker.id,
            ScheduleInfo(
                schedule_active=True,
                days_of_week="we",
                time_start=TimeOfDay(8, 0),
                time_end=TimeOfDay(17, 0),
            ),
        )
        assert farm.worker(worker).status_requested == ""  # 07:00: awake is right
        clock.advance(hours=1, seconds=1)
        heard = manager.context.events.subscribe(["worker"])
        assert manager.housekeeping.apply_sleep_schedules() == 1
        record = farm.worker(worker)
        assert (record.status_requested, record.lazy_status_request) == ("asleep", False)
        # The dashboard hears of it: it used to learn of the loop's requests only from the ack.
        event = await asyncio.wait_for(heard.get(), 5)
        assert event is not None
        assert (event.id, event.data["status_requested"]) == (worker.id, "asleep")
        response = await farm.fetch(worker)
        assert (response.status_code, response.json()) == (423, {"status_requested": "asleep"})
        await farm.call(worker, "POST", "/ack-status-change/asleep")
        # Nothing is due until 17:00.
        clock.advance(hours=4)
        assert manager.housekeeping.apply_sleep_schedules() == 0
        clock.advance(hours=5)
        manager.housekeeping.apply_sleep_schedules()
        response = await farm.call(worker, "GET", "/status-change")
        assert response.json() == {"status_requested": "awake"}
    manager.close()


async def test_a_request_of_the_schedule_is_logged_as_a_users_is(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await farm.register("w1")
    await farm.fetch(worker)  # awake
    caplog.set_level(logging.INFO, logger="flamenco_manager.farm")
    everything = ScheduleInfo(schedule_active=True, time_start=TimeOfDay(0, 0))
    farm.manager.workers.set_sleep_schedule(worker.id, everything)
    (told,) = [line for line in caplog.records if line.getMessage().startswith("worker asked")]
    assert (told.worker, told.status, told.by) == (worker.id, "asleep", "sleep schedule")  # type: ignore[attr-defined]
