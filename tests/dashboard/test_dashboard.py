"""The dashboard in a real browser (testing ladder level 4): Debian's chromium, driven by
Playwright, against the manager under uvicorn on 127.0.0.1, with simulated workers.

Every test opens the page once and never reloads it: what changes on the farm must reach the
page over the event stream. ``no_reload`` checks that with a marker set on ``window``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from tests.manager.harness import BACKENDS

from .conftest import Browser
from .farm import ServedManager, SimulatedWorker, wait_for

pytestmark = pytest.mark.slow


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def log_in(browser: Browser, served: ServedManager, fragment: str = "") -> Any:
    """Open the token link ``serve`` prints, then the view in ``fragment``; the page."""
    page = browser.page
    page.goto(served.login_url)
    expect()(page.locator("#live")).to_have_attribute("data-live", "live")
    if fragment:
        page.evaluate("fragment => { window.location.hash = fragment; }", fragment)
    page.evaluate("window.__notReloaded = true")
    return page


def no_reload(page: Any) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def task_row(page: Any, name: str) -> Any:
    return page.locator("#tasks-table tbody tr", has=page.locator("td.name", has_text=name))


def test_logging_in_on_the_login_page_goes_on_to_the_view_asked_for(
    browser: Browser, served: ServedManager
) -> None:
    # A token expired on a worker's page: after a new one is pasted, that view, not the jobs.
    page = browser.page
    page.goto(served.url + "/#/workers")
    page.get_by_label("Token").fill(served.login_url.partition("token=")[2])
    page.get_by_role("button", name="Log in").click()
    expect()(page.get_by_role("link", name="Workers")).to_have_attribute("aria-current", "page")
    assert page.url == served.url + "/#/workers"


def test_log_in_through_the_token_link_and_out(browser: Browser, served: ServedManager) -> None:
    page = browser.page
    page.goto(served.url + "/")
    expect()(page.get_by_role("heading", name="Flamenco Manager")).to_be_visible()
    expect()(page.get_by_label("Token")).to_be_visible()
    browser.screenshot("login")

    page.goto(served.login_url)
    # The token does not stay in the address bar, and the page knows who logged in.
    assert page.url == served.url + "/"
    expect()(page.locator(".user")).to_have_text("operator")
    expect()(page.get_by_role("link", name="Jobs")).to_have_attribute("aria-current", "page")
    expect()(page.locator("#jobs-table")).to_be_visible()
    expect()(page.locator(".farm-state")).to_have_text("Farm inoperative")

    page.get_by_role("button", name="Log out").click()
    expect()(page.get_by_label("Token")).to_be_visible()
    # Logging in again with the form works too.
    page.get_by_label("Token").fill(served.token)
    page.get_by_role("button", name="Log in").click()
    expect()(page.locator(".user")).to_have_text("operator")


# The live view on PostgreSQL too: its events pass the relay to other processes as well.
@pytest.mark.parametrize("served", BACKENDS, indirect=True)
def test_a_submitted_job_appears_and_progresses_live(
    browser: Browser, served: ServedManager
) -> None:
    worker = SimulatedWorker(served.url, "render-01")
    page = log_in(browser, served)
    jobs = page.locator("#jobs-table tbody tr")
    expect()(jobs).to_have_count(0)

    job = served.submit_sleep_job("Spring shot 010", frames="1-3")
    row = jobs.filter(has_text="Spring shot 010")
    expect()(row).to_be_visible()
    expect()(row.locator(".badge")).to_have_text("queued")

    row.get_by_role("link", name="Spring shot 010").click()
    expect()(page.locator("#job-title")).to_have_text("Spring shot 010")
    expect()(page.locator("#tasks-table tbody tr")).to_have_count(3)

    first = worker.fetch_task()
    worker.update(
        first["_id"],
        task_status="active",
        activity="Rendering frame 1",
        task_progress_percentage=50,
        log="frame 1: sample 50/100\n",
    )
    running = task_row(page, first["name"])
    expect()(running.locator(".badge")).to_have_text("active")
    expect()(running).to_contain_text("render-01")
    expect()(running).to_contain_text("Rendering frame 1")
    expect()(running.locator("progress")).to_have_attribute("value", "50")
    expect()(page.locator("#job-detail .badge").first).to_have_text("active")
    expect()(page.locator(".farm-state")).to_have_text("Farm active")
    browser.screenshot("jobs-running")

    for _ in range(3):
        task = first if first is not None else worker.fetch_task()
        first = None
        worker.update(
            task["_id"],
            task_status="completed",
            task_progress_percentage=100,
            metrics={"timing": {"sleep": 74.0, "total": 75.0}},
        )
    expect()(page.locator("#job-detail .badge").first).to_have_text("completed")
    expect()(page.locator("#job-progress-text")).to_have_text("3 of 3 tasks completed (100%)")
    expect()(row.locator(".badge")).to_have_text("completed")
    expect()(page.locator("#tasks-table .badge", has_text="completed")).to_have_count(3)
    expect()(task_row(page, "sleep-1").locator("td").last).to_have_text("1 min 15 s")
    expect()(page.locator(".farm-state")).to_have_text("Farm idle")
    assert served.api.get(f"/api/jobs/{job['_id']}").json()["status"] == "completed"
    browser.screenshot("jobs-completed")
    no_reload(page)


def test_cancel_a_job_from_the_page(browser: Browser, served: ServedManager) -> None:
    worker = SimulatedWorker(served.url, "render-01")
    job = served.submit_sleep_job("Too long", frames="1-4")
    page = log_in(browser, served)
    running = worker.fetch_task()
    worker.update(running["_id"], task_status="active", activity="Rendering")

    # With the keyboard: the job's link, then Enter.
    page.get_by_role("link", name="Too long").focus()
    page.keyboard.press("Enter")
    expect()(page.locator("#tasks-table tbody tr")).to_have_count(4)
    expect()(task_row(page, running["name"]).locator(".badge")).to_have_text("active")

    cancel = page.locator("#job-detail").get_by_role("button", name="Cancel", exact=True)
    # Escape keeps the job; the dialog's focus starts on the harmless choice.
    cancel.click()
    dialog = page.get_by_role("dialog")
    expect()(dialog).to_be_visible()
    expect()(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    page.keyboard.press("Escape")
    expect()(dialog).to_be_hidden()
    expect()(cancel).to_be_focused()
    assert served.api.get(f"/api/jobs/{job['_id']}").json()["status"] == "active"

    cancel.click()
    browser.screenshot("job-cancel-confirm")
    dialog.get_by_role("button", name="Cancel job").click()
    badges = page.locator("#tasks-table .badge")
    expect()(badges.filter(has_text=re.compile(r"^canceled$"))).to_have_count(3)
    expect()(task_row(page, running["name"]).locator(".badge")).to_have_text("cancel-requested")
    expect()(page.locator("#job-detail .badge").first).to_have_text("cancel-requested")

    # The worker hears it may not go on, and says it stopped.
    assert worker.may_i_run(running["_id"]) is False
    worker.update(running["_id"], task_status="canceled", activity="Canceled")
    expect()(task_row(page, running["name"]).locator(".badge")).to_have_text("canceled")
    expect()(page.locator("#job-detail .badge").first).to_have_text("canceled")
    expect()(page.get_by_role("button", name="Requeue", exact=True)).to_be_enabled()
    expect()(cancel).to_be_disabled()
    # The keyboard focus was on Cancel; now disabled, it hands the focus to the job's heading.
    expect()(page.locator("#job-title")).to_be_focused()
    browser.screenshot("job-canceled")

    # Filter and search the job list.
    served.submit_sleep_job("Another one", frames="1")
    jobs = page.locator("#jobs-table tbody tr")
    expect()(jobs).to_have_count(2)
    page.get_by_label("Search", exact=True).fill("too")
    expect()(jobs).to_have_count(1)
    expect()(jobs.first).to_contain_text("Too long")
    page.get_by_label("Status", exact=True).select_option(label="Completed")
    expect()(jobs).to_have_count(0)
    expect()(page.get_by_text("No jobs match.")).to_be_visible()
    page.get_by_label("Search", exact=True).fill("")
    page.get_by_label("Status", exact=True).select_option(label="Canceled")
    expect()(jobs).to_have_count(1)
    page.get_by_label("Status", exact=True).select_option(label="All statuses")
    expect()(jobs).to_have_count(2)
    no_reload(page)


def test_send_a_worker_to_sleep_and_wake_it(browser: Browser, served: ServedManager) -> None:
    worker = SimulatedWorker(served.url, "render-02")
    SimulatedWorker(served.url, "render-03")
    requested: list[str] = []
    browser.page.on("request", lambda request: requested.append(request.url))
    page = log_in(browser, served, "#/workers")
    # A worker that asked for work is awake.
    job = served.submit_sleep_job("Keeps it busy", frames="1")
    task = worker.fetch_task()
    row = page.locator("#workers-table tbody tr", has_text="render-02")
    expect()(row.locator(".badge")).to_have_text("awake")
    # Its task by name, from the list of workers itself: no request per task.
    link = row.get_by_role("link", name="sleep-1")
    expect()(link).to_have_attribute("href", f"#/jobs/{job['_id']}/tasks/{task['_id']}")
    assert not [url for url in requested if "/api/tasks/" in url], requested
    row.get_by_role("link", name="render-02").click()
    detail = page.locator("#worker-detail")
    expect()(detail.locator("#worker-title")).to_have_text("render-02")

    detail.get_by_role("button", name="Sleep").click()
    expect()(row.locator(".requested")).to_have_text("→ asleep")
    assert worker.follow_status_change() == "asleep"
    expect()(row.locator(".badge")).to_have_text("asleep")
    expect()(row.locator(".requested")).to_have_text("")
    expect()(detail.get_by_role("button", name="Sleep")).to_be_disabled()
    browser.screenshot("worker-asleep")

    detail.get_by_label("After the current task").check()
    detail.get_by_role("button", name="Wake up").click()
    expect()(row.locator(".requested")).to_have_text("→ awake (after task)")
    assert worker.follow_status_change() == "awake"
    expect()(row.locator(".badge")).to_have_text("awake")

    # The sleep schedule form stores what it shows.
    detail.get_by_label("Sleep on a schedule").check()
    detail.get_by_label("Mon").check()
    detail.get_by_label("Fri").check()
    detail.get_by_label("Asleep from").fill("22:00")
    detail.get_by_label("until").fill("06:30")
    detail.get_by_role("button", name="Save schedule").click()
    expect()(page.locator(".toast", has_text="Sleep schedule saved")).to_be_visible()
    schedule = wait_for(
        "the schedule to be stored",
        lambda: (
            served.worker(worker.id)["sleep_schedule"].get("time_end")
            and served.worker(worker.id)["sleep_schedule"]
        ),
    )
    assert schedule["schedule_active"] is True
    assert schedule["days_of_week"] == "mo fr"
    assert schedule["time_start"] == "22:00"
    assert schedule["time_end"] == "06:30"
    browser.screenshot("workers")
    no_reload(page)


def test_open_a_task_log_and_follow_it(browser: Browser, served: ServedManager) -> None:
    worker = SimulatedWorker(served.url, "render-01")
    job = served.submit_sleep_job("Logged", frames="1-2")
    task = worker.fetch_task()
    worker.update(task["_id"], task_status="active", log="line 1 of the render\n")
    page = log_in(browser, served, f"#/jobs/{job['_id']}")
    task_row(page, task["name"]).get_by_role("link", name=task["name"]).click()
    log = page.locator("#task-log")
    expect()(log).to_contain_text("line 1 of the render")
    expect()(page.get_by_label("Follow live")).to_be_checked()

    # Lines the worker sends later arrive by themselves, and the view stays at the bottom.
    # Long ones: over 15 KiB, a log /logfile trims for a browser unless asked for it whole.
    padding = "." * 150
    worker.update(task["_id"], log="".join(f"sample {n}/120 {padding}\n" for n in range(1, 121)))
    expect()(log).to_contain_text("sample 120/120")
    wait_for(
        "the log to scroll to its end",
        lambda: page.evaluate(
            "e => e.scrollTop + e.clientHeight >= e.scrollHeight - 2", log.element_handle()
        ),
        timeout=5,
    )
    browser.screenshot("task-log")

    # The whole log, as a file.
    download_link = page.get_by_role("link", name="Download full log")
    expect()(download_link).to_have_attribute(
        "href", f"/logfile/{job['_id']}/{task['_id']}?download=1"
    )
    with page.expect_download() as download_info:
        download_link.click()
    whole = download_info.value.path().read_text()
    assert "line 1 of the render" in whole
    assert "Skipped" not in whole
    assert all(f"sample {n}/120 " in whole for n in range(1, 121))

    # Task actions: cancel this one task; the job goes on.
    page.locator("#task-detail").get_by_role("button", name="Cancel task").click()
    expect()(page.locator("#task-detail .badge").first).to_have_text("cancel-requested")
    no_reload(page)


def test_delete_the_open_job_and_leave_its_page_quietly(
    browser: Browser, served: ServedManager
) -> None:
    job = served.submit_sleep_job("Unwanted", frames="1-2")
    task = served.tasks(job["_id"])[0]
    page = log_in(browser, served, f"#/jobs/{job['_id']}/tasks/{task['_id']}")
    expect()(page.locator("#task-title")).to_have_text(task["name"])

    page.locator("#job-detail").get_by_role("button", name="Delete job").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete job").click()
    expect()(page.locator(".toast", has_text="Job deleted.")).to_be_visible()
    expect()(page.locator("#task-detail")).to_be_hidden()
    assert page.evaluate("window.location.hash") == "#/jobs"
    expect()(page.locator("#jobs-table tbody tr")).to_have_count(0)
    # Whatever was reloading the job or its task settles, and says nothing (the console is
    # checked by the fixture: no 404s either).
    page.wait_for_timeout(1500)
    expect()(page.locator(".toast.error")).to_have_count(0)

    # Deleted by someone else while its page is open: the page leaves it, without an error.
    other = served.submit_sleep_job("Also unwanted", frames="1")
    page.evaluate("fragment => { window.location.hash = fragment; }", f"#/jobs/{other['_id']}")
    expect()(page.locator("#tasks-table tbody tr")).to_have_count(1)
    assert served.api.delete(f"/api/jobs/{other['_id']}").status_code == 204
    wait_for("the page to leave the job", lambda: page.evaluate("window.location.hash") == "#/jobs")
    page.wait_for_timeout(1500)
    expect()(page.locator(".toast.error")).to_have_count(0)
    no_reload(page)


def test_latest_image_tablet_layout_and_labels(browser: Browser, served: ServedManager) -> None:
    from PIL import Image

    page = log_in(browser, served, "#/image")
    expect()(page.get_by_text("Nothing has been rendered yet.")).to_be_visible()

    image_path = served.manager.latest_image.output_path
    image_path.parent.mkdir(parents=True, exist_ok=True)
    gradient = Image.linear_gradient("L").resize((640, 360)).convert("RGB")
    gradient.save(image_path, "JPEG")
    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name="Latest image").click()
    image = page.get_by_role("img", name="The latest rendered image")
    expect()(image).to_be_visible()
    wait_for(
        "the image to load",
        lambda: page.evaluate("e => e.naturalWidth", image.element_handle()) == 640,
    )
    browser.screenshot("latest-image")

    # A tablet in portrait: one column, the job's detail below the list.
    SimulatedWorker(served.url, "render-01")
    job = served.submit_sleep_job("Tablet check", frames="1-3")
    page.set_viewport_size({"width": 820, "height": 1180})
    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name="Tablet check").click()
    expect()(page.locator("#tasks-table tbody tr")).to_have_count(3)
    list_box = page.locator(".jobs-list").bounding_box()
    detail_box = page.locator("#job-detail").bounding_box()
    assert detail_box["y"] > list_box["y"] + list_box["height"] - 1
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot("tablet-jobs", full_page=True)
    assert served.api.get(f"/api/jobs/{job['_id']}").status_code == 200

    # Every control in every view has a name a screen reader can say.
    for fragment in ("#/jobs", f"#/jobs/{job['_id']}", "#/workers"):
        page.evaluate("fragment => { window.location.hash = fragment; }", fragment)
        page.wait_for_timeout(200)
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('input, select, button, a[href], textarea')]
                .filter(e => e.offsetParent !== null)
                .filter(e => {
                  const text = (e.getAttribute('aria-label') || e.textContent || '').trim();
                  const labelled = e.labels && e.labels.length > 0;
                  return !(text || labelled || e.getAttribute('aria-labelledby'));
                })
                .map(e => e.outerHTML.slice(0, 120))"""
        )
        assert unnamed == [], f"controls without a name in {fragment}: {unnamed}"
    no_reload(page)


def test_a_busy_jobs_page_fetches_only_the_tasks_that_changed(
    browser: Browser, served: ServedManager
) -> None:
    worker = SimulatedWorker(served.url, "render-02")
    job = served.submit_sleep_job("Busy shot 020", frames="1-6")
    page = browser.page
    listed: list[str] = []
    page.on("request", lambda request: listed.append(request.url))
    page = log_in(browser, served, f"#/jobs/{job['_id']}")
    expect()(page.locator("#tasks-table tbody tr")).to_have_count(6)

    task = worker.fetch_task()
    running = task_row(page, task["name"])
    for percent in (10, 40, 70):
        worker.update(
            task["_id"],
            task_status="active",
            activity=f"Sample {percent}/100",
            task_progress_percentage=percent,
        )
        # Each change reaches the page before the next is sent: none is merged with another.
        expect()(running).to_contain_text(f"Sample {percent}/100")
        expect()(running.locator("progress")).to_have_attribute("value", str(percent))
    worker.update(task["_id"], task_status="completed", metrics={"timing": {"total": 75.0}})
    expect()(running.locator(".badge")).to_have_text("completed")
    expect()(running.locator("td").last).to_have_text("1 min 15 s")
    expect()(page.locator("#job-progress-text")).to_have_text("1 of 6 tasks completed (17%)")
    expect()(page.locator("#job-detail .badge").first).to_have_text("active")

    tasks_path = f"/api/jobs/{job['_id']}/tasks"
    whole = [url for url in listed if tasks_path + "?limit=" in url]
    by_id = [url for url in listed if tasks_path + "?id=" in url]
    # The whole page of tasks: when the page opened the job, and perhaps once more when its
    # event stream connected; each change of the task fetched that task alone. The four
    # changes after the claim each waited for the page to show the one before, so each took a
    # fetch of its own, by ID or (one of them, once seen on a busy machine) the job's whole list.
    assert len(whole) <= 2, whole
    assert len(whole) - 1 + len(by_id) >= 4, listed
    assert len(by_id) >= 3, listed
    assert all(url.endswith(f"{tasks_path}?id={task['_id']}") for url in by_id), by_id
    no_reload(page)


def test_a_big_jobs_tasks_are_shown_a_page_at_a_time(
    browser: Browser, served: ServedManager
) -> None:
    # All of a job of 100,000 tasks in one table was 49 MB of JSON, 16 s to show and, once its
    # tasks changed, a page that answered nothing for minutes.
    job = served.submit_sleep_job("Long shot 030", frames="1-1234")
    canceled = served.tasks(job["_id"])[700]
    served.api.post(f"/api/tasks/{canceled['_id']}/cancel", json={}).raise_for_status()
    page = log_in(browser, served, f"#/jobs/{job['_id']}")
    rows = page.locator("#tasks-table tbody tr")
    expect()(page.locator("#task-range")).to_have_text("1\N{EN DASH}500 of 1234")
    expect()(rows).to_have_count(500)
    expect()(rows.first).to_contain_text("sleep-1")
    previous = page.get_by_role("button", name="Previous tasks")
    following = page.get_by_role("button", name="Next tasks")
    expect()(previous).to_be_disabled()

    following.click()
    expect()(page.locator("#task-range")).to_have_text("501\N{EN DASH}1000 of 1234")
    expect()(rows.first).to_contain_text("sleep-501")
    following.click()
    expect()(page.locator("#task-range")).to_have_text("1001\N{EN DASH}1234 of 1234")
    expect()(rows).to_have_count(234)
    expect()(following).to_be_disabled()

    # The filter finds a task wherever it is, and a task that joins it appears live.
    page.get_by_label("Task status").select_option(label="Canceled")
    expect()(page.locator("#task-range")).to_have_text("1 shown")
    expect()(rows).to_have_count(1)
    expect()(rows.first).to_contain_text(canceled["name"])
    page.get_by_label("Task status").select_option(label="Running")
    expect()(rows).to_have_count(0)
    worker = SimulatedWorker(served.url, "render-03")
    task = worker.fetch_task()
    expect()(rows).to_have_count(1)
    worker.update(task["_id"], task_status="active", activity="Sample 1/10")
    expect()(rows.first).to_contain_text("Sample 1/10")
    no_reload(page)


def test_a_worker_with_a_long_name_leaves_the_other_columns_in_view(
    browser: Browser, served: ServedManager
) -> None:
    long_name = "render-" + "x" * 300
    SimulatedWorker(served.url, long_name)
    SimulatedWorker(served.url, "render-04")
    page = log_in(browser, served, "#/workers")
    row = page.locator("#workers-table tbody tr", has_text="render-04")
    expect()(row.locator(".badge")).to_be_visible()
    wrap = page.locator("#workers-table").locator("xpath=..").bounding_box()
    badge = row.locator(".badge").bounding_box()
    assert wrap is not None
    assert badge is not None
    # The name is cut, whole in its title; the status is in view without scrolling sideways.
    assert badge["x"] + badge["width"] <= wrap["x"] + wrap["width"], (badge, wrap)
    cell = page.locator("#workers-table td.name", has_text="render-xxx")
    expect()(cell).to_have_attribute("title", long_name)
    no_reload(page)


def test_a_quiet_page_whose_token_expires_asks_for_a_new_one(
    browser: Browser, served: ServedManager
) -> None:
    # Nothing happens on the farm, so no event makes the page read the API: it said "live"
    # with an expired token for as long as it stayed open.
    token = served.manager.mint_user_token("operator", timedelta(seconds=3))
    page = browser.page
    page.goto(f"{served.url}/login?token={token}")
    expect()(page.locator("#live")).to_have_attribute("data-live", "live")
    expect()(page.get_by_text("Your token has expired.")).to_be_visible(timeout=25_000)
    expect()(page.get_by_label("Token")).to_be_visible()
    # The 498 that told the page so is what the browser logs for it, not a fault of the page.
    browser.problems[:] = [problem for problem in browser.problems if "498" not in problem]


def test_the_job_list_says_when_it_shows_all_it_may(
    browser: Browser, served: ServedManager
) -> None:
    # At 500 jobs, "Show more jobs" stayed, and a click on it did nothing.
    for number in range(501):
        served.submit_sleep_job(f"Shot {number:03d}", frames="1")
    page = log_in(browser, served)
    rows = page.locator("#jobs-table tbody tr")
    more = page.get_by_role("button", name="Show more jobs")
    for shown in range(100, 550, 50):
        more.click()
        expect()(rows).to_have_count(shown)
    expect()(more).to_be_hidden()
    expect()(page.locator("#jobs-capped")).to_have_text(
        "The newest 500 jobs are shown: filter or search to find older ones."
    )
    page.get_by_label("Search", exact=True).fill("Shot 000")
    expect()(rows).to_have_count(1)
    expect()(page.locator("#jobs-capped")).to_be_hidden()
    no_reload(page)


def test_the_workers_page_fetches_only_the_workers_that_changed(
    browser: Browser, served: ServedManager
) -> None:
    workers = [SimulatedWorker(served.url, f"render-1{number}") for number in range(3)]
    job = served.submit_sleep_job("Three frames", frames="1-3")
    listed: list[str] = []
    browser.page.on("request", lambda request: listed.append(request.url))
    page = log_in(browser, served, "#/workers")
    expect()(page.locator("#workers-table tbody tr")).to_have_count(3)

    for worker in workers:
        task = worker.fetch_task()
        row = page.locator("#workers-table tbody tr", has_text=worker.nickname)
        # The worker's row follows its task: found by name, linked to its job.
        link = row.get_by_role("link", name=task["name"])
        expect()(link).to_have_attribute("href", f"#/jobs/{job['_id']}/tasks/{task['_id']}")
        expect()(row.locator(".badge")).to_have_text("awake")
        for percent in (20, 60):
            worker.update(task["_id"], task_status="active", task_progress_percentage=percent)

    whole = [url for url in listed if url.endswith("/api/workers")]
    by_id = [url for url in listed if "/api/workers?id=" in url]
    # The whole list when the page opened (and when its event stream connected, if that came
    # while the first was on its way); each change fetched the workers it named.
    assert len(whole) <= 2, whole
    assert by_id, listed
    ids = {worker.id for worker in workers}
    assert all(set(url.split("?id=")[1].split(",")) <= ids for url in by_id), by_id
    no_reload(page)
