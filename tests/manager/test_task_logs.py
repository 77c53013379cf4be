"""Task logs on disk: layout, appending, rotation, compression and serving (spec §9)."""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamenco_manager.services import task_logs
from flamenco_manager.services.task_logs import (
    HEAD_BYTES,
    MISSING_LOG_TEXT,
    TAIL_BYTES,
    InvalidLogIdError,
    TaskLogError,
    TaskLogStore,
    format_skipped,
    numbered_path_parts,
    trim_log_tail,
)
from tests.support import open_files_under

JOB = "5c0165dc494ba92dc0552a00"
TASK = "5c0165dc494ba92dc0552a01"
FIFTEEN_LINES = (
    "many\nlines\nof\nlogging\nproduced\n"
    "by\nthis\nworker\nso\nmany\n"
    "many\nmany\nlines\nit's\ncrazy.\n"
)


@pytest.fixture(params=[0, 8], ids=["reopened", "kept-open"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TaskLogStore]:
    """A store that opens a log for each append, and one that keeps logs open between them."""
    logs = TaskLogStore(tmp_path / "task-logs", keep_open=request.param)
    yield logs
    logs.close()


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


# Layout and appending


def test_path_follows_the_go_layout(store: TaskLogStore) -> None:
    expected = store.root / "job-5c01" / JOB / f"task-{TASK}.txt"
    assert store.path(JOB, TASK) == expected


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "5c0165dc494ba92dc0552a0", "x" * 24])
def test_ids_that_are_not_object_ids_are_refused(store: TaskLogStore, bad: str) -> None:
    with pytest.raises(InvalidLogIdError):
        store.path(JOB, bad)
    with pytest.raises(InvalidLogIdError):
        store.path(bad, TASK)


def test_trim_log_tail_keeps_ten_lines_with_a_final_newline() -> None:
    # TU-13
    assert trim_log_tail("") == ""
    assert trim_log_tail("one line\ntwo lines") == "one line\ntwo lines\n"
    assert trim_log_tail("one line\ntwo lines\n") == "one line\ntwo lines\n"
    expected = "by\nthis\nworker\nso\nmany\nmany\nmany\nlines\nit's\ncrazy.\n"
    assert trim_log_tail(FIFTEEN_LINES) == expected
    assert trim_log_tail("a\nb\nc", lines=2) == "b\nc\n"
    assert trim_log_tail("a\nb", lines=0) == ""


def test_append_writes_exact_text_and_adds_a_missing_newline(store: TaskLogStore) -> None:
    # TU-11, TU-12
    store.append(JOB, TASK, FIFTEEN_LINES)
    assert store.path(JOB, TASK).read_text() == FIFTEEN_LINES
    store.append(JOB, TASK, "just\nsome\nmore\nlines")
    assert store.path(JOB, TASK).read_text() == FIFTEEN_LINES + "just\nsome\nmore\nlines\n"


def test_append_creates_world_readable_files_and_directories(store: TaskLogStore) -> None:
    old_umask = os.umask(0o077)
    try:
        store.append(JOB, TASK, "hello")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.path(JOB, TASK).stat().st_mode) == 0o644
    assert stat.S_IMODE(store.root.stat().st_mode) & 0o700 == 0o700


def test_append_of_nothing_or_for_an_unknown_job_writes_nothing(store: TaskLogStore) -> None:
    # TU-15: no log file before the first log write.
    store.append(JOB, TASK, "")
    store.append("", TASK, "text for a task of an unknown job")
    assert not store.root.exists()


def test_a_full_disk_is_a_clear_error_and_leaves_no_half_line(
    store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(JOB, TASK, "first line")
    real_write = os.write

    def write_half_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(task_logs.os, "write", write_half_then_fail)
    with pytest.raises(TaskLogError) as caught:
        store.append(JOB, TASK, "second line that does not fit")
    monkeypatch.undo()

    assert caught.value.reason == os.strerror(errno.ENOSPC)
    assert store.path(JOB, TASK).read_text() == "first line\n"


def test_an_unwritable_root_is_a_task_log_error(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"
    root.write_text("")
    with pytest.raises(TaskLogError):
        TaskLogStore(root).append(JOB, TASK, "text")


def test_tail_reads_the_last_lines_from_the_end(store: TaskLogStore) -> None:
    assert store.tail(JOB, TASK) == ""
    store.append(JOB, TASK, "".join(f"line {n}\n" for n in range(20_000)))
    assert store.tail(JOB, TASK, 3) == "line 19997\nline 19998\nline 19999\n"
    assert store.tail(JOB, TASK) == trim_log_tail(store.path(JOB, TASK).read_text())


def test_the_tail_of_a_log_ending_in_a_huge_line_is_its_end(store: TaskLogStore) -> None:
    # FFmpeg progress (lines ending in a lone \r) can make one line of many megabytes. The tail
    # was read 8 KiB at a time, each time copying all it had read: 16 MiB took 5 s, on the
    # event loop of GET /api/tasks/{id}, and the whole line was answered.
    huge = "".join(f"frame={n:07d}\r" for n in range(300_000))  # 4.3 MB, no newline
    store.append(JOB, TASK, "first line\nsecond line\n" + huge)
    tail = store.tail(JOB, TASK)
    assert len(tail.encode()) == task_logs.TAIL_MAX_BYTES
    assert tail.endswith("frame=0299999\r\n")
    assert "second line" not in tail


def test_a_tail_leaves_out_the_lines_that_do_not_fit(store: TaskLogStore) -> None:
    long_line = "x" * (task_logs.TAIL_MAX_BYTES - 100)
    store.append(JOB, TASK, f"first\n{'y' * 200}\n{long_line}\nlast")
    assert store.tail(JOB, TASK) == f"{long_line}\nlast\n"
    assert store.tail(JOB, TASK, 1) == "last\n"
    store.append(JOB, TASK, "z" * (task_logs.TAIL_MAX_BYTES - 6))  # the last two lines just fit
    assert store.tail(JOB, TASK) == f"last\n{'z' * (task_logs.TAIL_MAX_BYTES - 6)}\n"


def test_delete_job_removes_its_logs_only(store: TaskLogStore) -> None:
    other_job = JOB[:-1] + "f"
    store.append(JOB, TASK, "mine")
    store.append(other_job, TASK, "theirs")
    store.delete_job(JOB)
    store.delete_job(JOB)  # Deleting twice is fine.
    assert not store.job_dir(JOB).exists()
    assert store.path(other_job, TASK).read_text() == "theirs\n"
    store.close()  # waits for the removal
    assert _names(store.root) == {f"job-{JOB[:4]}"}
    assert _names(store.root / f"job-{JOB[:4]}") == {other_job}


def test_deleting_a_job_leaves_its_files_to_the_stores_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job of 100,000 tasks has as many files: whoever deletes it must not wait for them.
    store = TaskLogStore(tmp_path, keep_open=8)
    for number in range(50):
        store.start_run(JOB, f"{number:024x}", "assigned")
    release = threading.Event()
    removers: list[str] = []
    real_rmtree = task_logs.shutil.rmtree

    def slow_rmtree(path: str, **options: object) -> None:
        removers.append(threading.current_thread().name)
        assert release.wait(10), "the test never released the removal"
        real_rmtree(path, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(task_logs.shutil, "rmtree", slow_rmtree)
    store.delete_job(JOB)  # returns while the removal waits
    assert not store.job_dir(JOB).exists()
    assert open_files_under(tmp_path) == []
    (waiting,) = (tmp_path / task_logs.DELETED_DIR).iterdir()
    assert len(list(waiting.iterdir())) == 50
    release.set()
    store.close()
    (remover,) = removers
    assert remover != threading.current_thread().name
    assert list(tmp_path.iterdir()) == []


def test_logs_a_stopped_process_left_to_remove_are_removed(tmp_path: Path) -> None:
    from flamenco_manager.config import Settings
    from flamenco_manager.manager import Manager

    settings = Settings(data_dir=tmp_path)
    left = settings.logs_dir / task_logs.DELETED_DIR / f"{JOB}-0badcafe"
    (left / "nested").mkdir(parents=True)
    (left / f"task-{TASK}.txt").write_text("a run\n")
    (left / "nested" / "file").write_text("more\n")
    manager = Manager(settings)
    manager.close()
    assert not (settings.logs_dir / task_logs.DELETED_DIR).exists()


# Logs kept open between appends


def test_kept_open_logs_are_appended_to_without_opening_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskLogStore(tmp_path, keep_open=8)
    store.start_run(JOB, TASK, "assigned")
    opened: list[object] = []
    real_open = task_logs.os.open
    monkeypatch.setattr(task_logs.os, "open", lambda *a: opened.append(a) or real_open(*a))
    for number in range(5):
        store.append(JOB, TASK, f"frame {number}")
    monkeypatch.undo()
    assert opened == []
    assert open_files_under(tmp_path) == [str(store.path(JOB, TASK))]
    assert store.read_whole(JOB, TASK) == b"assigned\n" + b"".join(
        b"frame %d\n" % number for number in range(5)
    )
    store.close()
    assert open_files_under(tmp_path) == []


def test_a_new_run_of_a_kept_open_log_is_written_to_its_own_file(tmp_path: Path) -> None:
    # The kept descriptor follows the previous run's file when rotation renames it.
    store = TaskLogStore(tmp_path, keep_open=8)
    store.start_run(JOB, TASK, "run one")
    store.append(JOB, TASK, "rendering one")
    store.start_run(JOB, TASK, "run two")
    store.append(JOB, TASK, "rendering two")
    store.rotate(JOB, TASK)
    store.append(JOB, TASK, "run three")
    assert store.read_whole(JOB, TASK) == b"run three\n"
    assert store.read_whole(JOB, TASK, 1) == b"run two\nrendering two\n"
    assert store.read_whole(JOB, TASK, 2) == b"run one\nrendering one\n"
    store.close()


def test_deleting_a_job_closes_its_kept_open_logs_only(tmp_path: Path) -> None:
    store = TaskLogStore(tmp_path, keep_open=8)
    other_job = JOB[:-1] + "f"
    store.append(JOB, TASK, "mine")
    store.append(other_job, TASK, "theirs")
    store.delete_job(JOB)
    # The removal thread holds the deleted directory open while it removes it: let it finish
    # (a log left open would still be listed, as a deleted file).
    store.flush()
    assert open_files_under(tmp_path) == [str(store.path(other_job, TASK))]
    store.append(other_job, TASK, "still theirs")
    assert store.path(other_job, TASK).read_text() == "theirs\nstill theirs\n"
    store.close()


def test_at_most_keep_open_logs_stay_open_the_least_recently_used_closing(tmp_path: Path) -> None:
    store = TaskLogStore(tmp_path, keep_open=3)
    tasks = [f"{number:024x}" for number in range(5)]
    for task in tasks:
        store.append(JOB, task, "line")
    store.append(JOB, tasks[2], "line")
    open_now = open_files_under(tmp_path)
    assert open_now == sorted(str(store.path(JOB, task)) for task in tasks[2:])
    assert all(store.path(JOB, task).read_text() == "line\n" for task in tasks[:2])
    store.close()


def test_a_kept_open_log_removed_by_hand_is_written_again_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskLogStore(tmp_path, keep_open=8)
    store.append(JOB, TASK, "before")
    store.path(JOB, TASK).unlink()
    moment = task_logs.time.monotonic()
    monkeypatch.setattr(task_logs.time, "monotonic", lambda: moment + task_logs.REOPEN_SECONDS + 1)
    store.append(JOB, TASK, "after")
    assert store.path(JOB, TASK).read_text() == "after\n"
    assert open_files_under(tmp_path) == [str(store.path(JOB, TASK))]
    store.close()


def test_a_log_rotated_while_appended_to_is_not_kept_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another thread rotates the log while this append writes: the descriptor that wrote follows
    # the renamed file and must not serve the next run's appends.
    store = TaskLogStore(tmp_path, keep_open=8)
    store.start_run(JOB, TASK, "run one")
    real_write = task_logs._write

    def write_then_rotate(fd: int, path: str, data: bytes) -> None:
        real_write(fd, path, data)
        monkeypatch.setattr(task_logs, "_write", real_write)
        store.rotate(JOB, TASK)

    monkeypatch.setattr(task_logs, "_write", write_then_rotate)
    store.append(JOB, TASK, "end of run one")
    store.append(JOB, TASK, "run two")
    assert store.read_whole(JOB, TASK) == b"run two\n"
    assert store.read_whole(JOB, TASK, 1) == b"run one\nend of run one\n"
    store.close()


def test_threads_appending_to_one_kept_open_log_lose_no_line(tmp_path: Path) -> None:
    store = TaskLogStore(tmp_path, keep_open=2)
    tasks = [TASK, TASK[:-1] + "2", TASK[:-1] + "3"]  # one more than stays open

    def append(thread: int) -> None:
        for number in range(300):
            store.append(JOB, tasks[number % 3], f"thread {thread} line {number}")

    threads = [threading.Thread(target=append, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [line for task in tasks for line in store.path(JOB, task).read_text().splitlines()]
    assert sorted(lines) == sorted(
        f"thread {thread} line {number}" for thread in range(4) for number in range(300)
    )
    store.close()
    assert open_files_under(tmp_path) == []


# Rotation


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.1", (1, "a")),
        ("a.-4", (-4, "a")),
        ("a.1.2.3", (3, "a.1.2")),
        ("a.001", (1, "a")),
        ("a.01", (1, "a")),
        ("a.010", (10, "a")),
        ("a.", (-1, "a.")),
        ("a", (-1, "a")),
        ("a.abc", (-1, "a.abc")),
        ("", (-1, "")),
        (" ", (-1, " ")),
        ("x.327.what?", (-1, "x.327.what?")),
        ("/path/üničøde.327/.47", (47, "/path/üničøde.327/")),
    ],
)
def test_numbered_path_parts(path: str, expected: tuple[int, str]) -> None:
    # LR-01
    assert numbered_path_parts(path) == expected


def test_rotating_a_missing_log_does_nothing(store: TaskLogStore) -> None:
    # LR-02
    store.rotate(JOB, TASK)
    assert not store.root.exists()


def test_rotating_one_file(store: TaskLogStore) -> None:
    # LR-03, TU-16
    store.append(JOB, TASK, "first run")
    store.rotate(JOB, TASK)
    store.append(JOB, TASK, "second run")
    assert _names(store.job_dir(JOB)) == {f"task-{TASK}.txt", f"task-{TASK}.txt.1"}
    assert store.read_whole(JOB, TASK) == b"second run\n"
    assert store.read_whole(JOB, TASK, 1) == b"first run\n"


def test_a_first_run_creates_its_log_world_readable_with_its_directories(
    store: TaskLogStore,
) -> None:
    old_umask = os.umask(0o077)
    try:
        store.start_run(JOB, TASK, "assigned")
    finally:
        os.umask(old_umask)
    assert _names(store.job_dir(JOB)) == {f"task-{TASK}.txt"}
    assert store.read_whole(JOB, TASK) == b"assigned\n"
    assert stat.S_IMODE(store.path(JOB, TASK).stat().st_mode) == 0o644


def test_a_new_run_rotates_the_previous_runs_log_first(store: TaskLogStore) -> None:
    # TU-16: the new file holds only the new run.
    store.start_run(JOB, TASK, "assigned once")
    store.append(JOB, TASK, "rendering")
    store.start_run(JOB, TASK, "assigned again\n")
    assert store.read_whole(JOB, TASK) == b"assigned again\n"
    assert store.read_whole(JOB, TASK, 1) == b"assigned once\nrendering\n"
    assert [number for number, _ in store.rotated(JOB, TASK)] == [1]


def test_a_new_run_looks_nothing_up_before_creating_a_first_log(
    store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.start_run(JOB, "5c0165dc494ba92dc0552a02", "another task of the job")
    calls: list[str] = []
    for name in ("open", "stat", "lstat", "listdir", "scandir", "makedirs"):
        real = getattr(task_logs.os, name)

        def counted(*args: object, _real: object = real, _name: str = name, **kw: object) -> object:
            calls.append(_name)
            return _real(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(task_logs.os, name, counted)
    store.start_run(JOB, TASK, "assigned")
    monkeypatch.undo()
    assert calls == ["open"]
    assert store.read_whole(JOB, TASK) == b"assigned\n"


def test_a_run_that_cannot_start_its_log_is_a_task_log_error(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"
    root.write_text("")
    with pytest.raises(TaskLogError):
        TaskLogStore(root).start_run(JOB, TASK, "assigned")


def test_rotation_keeps_gaps_like_go(tmp_path: Path) -> None:
    # LR-04, with compression off to see Go's exact names.
    store = TaskLogStore(tmp_path, compress_rotated=False)
    current = store.path(JOB, TASK)
    current.parent.mkdir(parents=True)
    current.write_text("current")
    for number in (1, 2, 3, 5, 7):
        Path(f"{current}.{number}").write_text(f"was {number}")
    store.rotate(JOB, TASK)
    assert _names(current.parent) == {f"{current.name}.{n}" for n in (1, 2, 3, 4, 6, 8)}
    assert Path(f"{current}.1").read_text() == "current"
    for old in (1, 2, 3, 5, 7):
        assert Path(f"{current}.{old + 1}").read_text() == f"was {old}"


def test_rotation_gzips_runs_older_than_the_previous_one(store: TaskLogStore) -> None:
    for run in range(4):
        store.rotate(JOB, TASK)
        store.append(JOB, TASK, f"run {run}")
    store.flush()
    name = f"task-{TASK}.txt"
    assert _names(store.job_dir(JOB)) == {name, f"{name}.1", f"{name}.2.gz", f"{name}.3.gz"}
    assert [store.read_whole(JOB, TASK, n) for n in range(4)] == [
        b"run 3\n",
        b"run 2\n",
        b"run 1\n",
        b"run 0\n",
    ]


def test_rotation_keeps_at_most_the_configured_number_of_runs(tmp_path: Path) -> None:
    store = TaskLogStore(tmp_path, keep_rotated=2)
    for run in range(5):
        store.rotate(JOB, TASK)
        store.append(JOB, TASK, f"run {run}")
    assert [number for number, _ in store.rotated(JOB, TASK)] == [1, 2]
    assert store.read_whole(JOB, TASK, 2) == b"run 2\n"


@pytest.mark.parametrize("keep", [0, 1, 2, 5])
def test_capped_rotation_keeps_the_newest_runs_in_order(tmp_path: Path, keep: int) -> None:
    store = TaskLogStore(tmp_path, keep_rotated=keep)
    for run in range(12):
        store.rotate(JOB, TASK)
        store.append(JOB, TASK, f"run {run}")
    store.flush()
    name = f"task-{TASK}.txt"
    expected = {name} | {f"{name}.{n}" + (".gz" if n >= 2 else "") for n in range(1, keep + 1)}
    assert _names(store.job_dir(JOB)) == expected
    assert [store.read_whole(JOB, TASK, n) for n in range(keep + 1)] == [
        f"run {11 - n}\n".encode() for n in range(keep + 1)
    ]


def test_capped_rotation_does_not_list_the_job_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job's directory holds every task's logs: listing it on each re-run of a task made
    # claiming cost grow with the size of the job.
    store = TaskLogStore(tmp_path, keep_rotated=3)
    store.append(JOB, TASK, "run 0")
    store.rotate(JOB, TASK)
    store.append(JOB, TASK, "run 1")

    def refuse(*_: object) -> list[str]:
        raise AssertionError("rotation listed a directory")

    monkeypatch.setattr(os, "listdir", refuse)
    monkeypatch.setattr(os, "scandir", refuse)
    store.rotate(JOB, TASK)
    store.append(JOB, TASK, "run 2")
    monkeypatch.undo()
    assert [store.read_whole(JOB, TASK, n) for n in range(3)] == [
        b"run 2\n",
        b"run 1\n",
        b"run 0\n",
    ]


def test_rotation_leaves_no_numbered_gzip_copy_of_the_current_log(store: TaskLogStore) -> None:
    # §19.2 item 19: Go renamed X.gz to X.gz.0 and then X.gz.1.
    store.append(JOB, TASK, "first run")
    store.compress(JOB, TASK)
    store.rotate(JOB, TASK)
    store.rotate(JOB, TASK)
    assert _names(store.job_dir(JOB)) == {f"task-{TASK}.txt.1"}
    # The stale copy of the first run is gone, so /logfile does not serve it as the new run.
    assert store.serve(JOB, TASK) is None


def test_rotation_leaves_foreign_files_alone(store: TaskLogStore) -> None:
    store.append(JOB, TASK, "run")
    current = store.path(JOB, TASK)
    for suffix in (".abc", ".-4", ".1.bak"):
        Path(f"{current}{suffix}").write_text(suffix)
    store.rotate(JOB, TASK)
    assert _names(current.parent) == {f"{current.name}{s}" for s in (".1", ".abc", ".-4", ".1.bak")}


@settings(max_examples=40, deadline=None)
@given(
    numbers=st.lists(st.integers(1, 12), max_size=8),
    padded=st.lists(st.booleans(), min_size=8, max_size=8),
    packed=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_rotation_never_loses_a_file(
    numbers: list[int], padded: list[bool], packed: list[bool]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = TaskLogStore(Path(directory))
        current = store.path(JOB, TASK)
        contents, _ = _write_older_runs(current, numbers, padded, packed)

        store.rotate(JOB, TASK)
        store.close()

        found = {store_read(path) for _, path in store.rotated(JOB, TASK)}
        assert found == contents
        assert not current.exists()
        assert len(store.rotated(JOB, TASK)) == len(contents)


@settings(max_examples=60, deadline=None)
@given(
    numbers=st.lists(st.integers(1, 6), max_size=8),
    padded=st.lists(st.booleans(), min_size=8, max_size=8),
    packed=st.lists(st.booleans(), min_size=8, max_size=8),
    keep=st.integers(1, 5),
)
def test_capped_rotation_loses_only_the_run_past_the_cap(
    numbers: list[int], padded: list[bool], packed: list[bool], keep: int
) -> None:
    # Older runs, with gaps, both forms of one number, and names rotation never makes: only
    # the run that X.1 .. X.<keep> push past the cap goes.
    with tempfile.TemporaryDirectory() as directory:
        store = TaskLogStore(Path(directory), keep_rotated=keep)
        current = store.path(JOB, TASK)
        contents, by_number = _write_older_runs(current, numbers, padded, packed)
        full = all(number in by_number for number in range(1, keep + 1))
        dropped = by_number.get(keep, set()) if full else set()

        store.rotate(JOB, TASK)
        store.close()

        found = {store_read(path) for path in current.parent.iterdir()}
        assert found == contents - dropped


def _write_older_runs(
    current: Path, numbers: list[int], padded: list[bool], packed: list[bool]
) -> tuple[set[str], dict[int, set[str]]]:
    """A current log and older runs named ``X.<n>`` (``X.00<n>`` when padded, ``.gz`` when
    packed); every text written, and the texts of each number rotation knows (not padded)."""
    current.parent.mkdir(parents=True)
    current.write_text("current")
    contents: set[str] = {"current"}
    by_number: dict[int, set[str]] = {}
    for index, number in enumerate(numbers):
        suffix = f".{number:03d}" if padded[index] else f".{number}"
        path = Path(f"{current}{suffix}{'.gz' if packed[index] else ''}")
        if path.exists():
            continue
        text = f"old {index}"
        contents.add(text)
        if packed[index]:
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        if not padded[index]:
            by_number.setdefault(number, set()).add(text)
    return contents, by_number


def store_read(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode()


# Compression


# The gzip header's XFL byte (RFC 1952) says how hard the compressor tried.
_FASTEST, _SMALLEST = 4, 2


def test_rotation_gzips_at_the_fastest_level(store: TaskLogStore) -> None:
    # Level 9 took 160 ms for a 2.7 MB render log, level 1 takes 15 ms: a farm's rotations
    # queue on one thread.
    for run in range(3):
        store.start_run(JOB, TASK, FIFTEEN_LINES * 50 + f"run {run}")
    store.flush()
    [packed] = [path for number, path in store.rotated(JOB, TASK) if number == 2]
    assert packed.name.endswith(".2.gz")
    assert packed.read_bytes()[8] == _FASTEST
    assert gzip.decompress(packed.read_bytes()).decode().endswith("run 0\n")


class _HeldGzip:
    """Replaces the store's gzip: each call waits until the test lets it go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        real = task_logs._gzip_atomically

        def held(source: Path, target: Path, level: int) -> None:
            self.threads.append(threading.current_thread().name)
            self.started.set()
            assert self.release.wait(10), "the test never released the gzip"
            real(source, target, level)

        monkeypatch.setattr(task_logs, "_gzip_atomically", held)


# A run large enough for rotation to gzip it on the store's thread, ending with a line of its own.
_LARGE = "x" * task_logs.BACKGROUND_GZIP_BYTES + "\n"


def _large_run(number: int) -> str:
    return f"{_LARGE}run {number}"


def test_rotation_gzips_a_small_run_at_once(
    store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Handing every small gzip to the thread made 10 workers re-running 100 tasks get 182
    # claims a second instead of 474.
    gzip_run = _HeldGzip(monkeypatch)
    gzip_run.release.set()  # never held: only where it runs matters
    for run in range(3):
        store.start_run(JOB, TASK, "x" * (task_logs.BACKGROUND_GZIP_BYTES - 100) + f"run {run}")
    name = f"task-{TASK}.txt"
    assert _names(store.job_dir(JOB)) == {name, f"{name}.1", f"{name}.2.gz"}
    assert gzip_run.threads == [threading.current_thread().name]


def test_rotation_leaves_a_large_runs_gzip_to_the_stores_thread(
    store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim rotates the log of a re-run task on the event loop: a 10 MB render log took
    # 80 ms to gzip there, during which the manager answered nobody.
    gzip_run = _HeldGzip(monkeypatch)
    for run in range(3):
        store.start_run(JOB, TASK, _large_run(run))  # returns while the gzip waits
    assert gzip_run.started.wait(10)
    name = f"task-{TASK}.txt"
    assert _names(store.job_dir(JOB)) == {name, f"{name}.1", f"{name}.2"}
    assert store.read_whole(JOB, TASK, 2).endswith(b"run 0\n")
    gzip_run.release.set()
    store.flush()
    assert _names(store.job_dir(JOB)) == {name, f"{name}.1", f"{name}.2.gz"}
    assert gzip_run.threads
    assert threading.current_thread().name not in gzip_run.threads


@pytest.mark.parametrize("keep", [None, 3])
def test_a_rotation_waits_for_the_gzip_of_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int | None
) -> None:
    # The gzip reads X.2 and removes it; renaming X.2 to X.3 meanwhile would lose a run.
    store = TaskLogStore(tmp_path, keep_rotated=keep)
    gzip_run = _HeldGzip(monkeypatch)
    for run in range(3):
        store.start_run(JOB, TASK, _large_run(run))
    assert gzip_run.started.wait(10)
    fourth = threading.Thread(target=store.start_run, args=(JOB, TASK, _large_run(3)))
    fourth.start()
    fourth.join(0.3)
    assert fourth.is_alive(), "the next rotation did not wait for the gzip"
    gzip_run.release.set()
    fourth.join(10)
    store.close()
    assert [store.read_whole(JOB, TASK, n) for n in range(4)] == [
        _large_run(number).encode() + b"\n" for number in (3, 2, 1, 0)
    ]
    name = f"task-{TASK}.txt"
    assert _names(store.job_dir(JOB)) == {name, f"{name}.1", f"{name}.2.gz", f"{name}.3.gz"}


def test_a_rotation_never_waits_for_the_removal_of_a_deleted_jobs_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim waits for its task's previous gzip; queued behind the removal of a job of
    # 100,000 logs, it would hold the event loop for as long.
    store = TaskLogStore(tmp_path)
    other_job = "5c0165dc494ba92dc0552aff"
    store.append(other_job, TASK, "a log")
    release = threading.Event()
    real_rmtree = task_logs.shutil.rmtree

    def held_rmtree(path: str, **options: object) -> None:
        assert release.wait(10), "the test never released the removal"
        real_rmtree(path, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(task_logs.shutil, "rmtree", held_rmtree)
    store.delete_job(other_job)
    try:
        runs = threading.Thread(
            target=lambda: [store.start_run(JOB, TASK, _large_run(run)) for run in range(4)]
        )
        runs.start()
        runs.join(10)
        assert not runs.is_alive(), "a rotation waited for the removal"
    finally:
        release.set()
        store.close()
    assert [store.read_whole(JOB, TASK, n)[-6:] for n in range(4)] == [
        f"run {number}\n".encode() for number in (3, 2, 1, 0)
    ]


def test_a_gzip_that_fails_keeps_the_plain_run(
    store: TaskLogStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(source: Path, target: Path, level: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(task_logs, "_gzip_atomically", full)
    for run in range(3):
        store.start_run(JOB, TASK, f"run {run}")
    store.flush()
    assert store.read_whole(JOB, TASK, 2) == b"run 0\n"
    assert "cannot gzip an older run of a task log" in caplog.text
    monkeypatch.undo()
    store.start_run(JOB, TASK, "run 3")  # the next rotation gzips both older runs
    store.flush()
    name = f"task-{TASK}.txt"
    expected = {name, f"{name}.1", f"{name}.2.gz", f"{name}.3.gz"}
    assert _names(store.job_dir(JOB)) == expected
    assert store.read_whole(JOB, TASK, 3) == b"run 0\n"


@pytest.mark.parametrize("run", ["small", "large"])
def test_a_gzip_that_breaks_unexpectedly_fails_no_rotation(
    store: TaskLogStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    run: str,
) -> None:
    def broken(source: Path, target: Path, level: int) -> None:
        raise RuntimeError("a bug in the gzip")

    monkeypatch.setattr(task_logs, "_gzip_atomically", broken)
    text = "run {}" if run == "small" else _LARGE + "run {}"
    for number in range(4):
        store.start_run(JOB, TASK, text.format(number))
    store.flush()
    assert store.read_whole(JOB, TASK, 3).endswith(b"run 0\n")
    assert "a bug in the gzip" in caplog.text


def test_deleting_a_job_while_its_runs_are_gzipped_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskLogStore(tmp_path)
    gzip_run = _HeldGzip(monkeypatch)
    for run in range(3):
        store.start_run(JOB, TASK, _large_run(run))
    assert gzip_run.started.wait(10)
    store.delete_job(JOB)
    gzip_run.release.set()
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_compress_writes_a_gzip_copy(store: TaskLogStore) -> None:
    # LU-01, at Go's level 9
    store.append(JOB, TASK, FIFTEEN_LINES)
    packed = store.compress(JOB, TASK)
    assert packed == store.gzip_path(JOB, TASK)
    assert gzip.decompress(packed.read_bytes()).decode() == FIFTEEN_LINES
    assert packed.read_bytes()[8] == _SMALLEST
    assert store.path(JOB, TASK).exists()


def test_compress_reuses_a_newer_gzip_copy(store: TaskLogStore) -> None:
    # LU-02
    store.append(JOB, TASK, "text")
    packed = store.gzip_path(JOB, TASK)
    packed.write_bytes(b"not recompressed")
    now = store.path(JOB, TASK).stat().st_mtime
    os.utime(packed, (now + 10, now + 10))
    assert store.compress(JOB, TASK).read_bytes() == b"not recompressed"

    os.utime(packed, (now - 10, now - 10))
    assert gzip.decompress(store.compress(JOB, TASK).read_bytes()) == b"text\n"


def test_compress_uses_a_gzip_copy_without_original(store: TaskLogStore) -> None:
    # LU-03
    packed = store.gzip_path(JOB, TASK)
    packed.parent.mkdir(parents=True)
    packed.write_bytes(b"kept as is")
    assert store.compress(JOB, TASK).read_bytes() == b"kept as is"


def test_compress_without_any_log(store: TaskLogStore) -> None:
    # LU-04: compare the decompressed text, not Go's gzip bytes.
    packed = store.compress(JOB, TASK)
    assert gzip.decompress(packed.read_bytes()).decode() == MISSING_LOG_TEXT


# Serving


def _body(store: TaskLogStore, user_agent: str = "Mozilla/5.0") -> bytes:
    view = store.serve(JOB, TASK, user_agent)
    assert view is not None
    body = b"".join(view.iter_bytes(chunk_size=1000))
    assert len(body) == view.content_length
    return body


def test_serving_a_missing_log_gives_nothing(store: TaskLogStore) -> None:
    assert store.serve(JOB, TASK, "") is None


def test_serving_falls_back_on_the_gzip_copy(store: TaskLogStore) -> None:
    store.append(JOB, TASK, "text")
    store.compress(JOB, TASK)
    store.path(JOB, TASK).unlink()
    view = store.serve(JOB, TASK, "")
    assert view is not None
    assert view.gzip
    assert view.whole
    assert view.filename == f"task-{TASK}.txt.gz"
    assert gzip.decompress(b"".join(view.iter_bytes())) == b"text\n"


def test_small_logs_are_served_whole(store: TaskLogStore) -> None:
    store.append(JOB, TASK, "x" * (HEAD_BYTES + TAIL_BYTES - 2))
    view = store.serve(JOB, TASK, "Mozilla/5.0")
    assert view is not None
    assert view.whole
    assert not view.gzip
    assert _body(store) == store.path(JOB, TASK).read_bytes()


@pytest.mark.parametrize("agent", ["Wget/1.21", "curl/8.5.0"])
def test_wget_and_curl_get_the_whole_large_log(store: TaskLogStore, agent: str) -> None:
    store.append(JOB, TASK, "line\n" * 10_000)
    view = store.serve(JOB, TASK, agent)
    assert view is not None
    assert view.whole
    assert _body(store, agent) == store.path(JOB, TASK).read_bytes()


def test_large_logs_are_trimmed_to_head_and_whole_tail_lines(store: TaskLogStore) -> None:
    text = "".join(f"line {n:05d}\n" for n in range(10_000))  # 11 bytes a line
    store.append(JOB, TASK, text)
    data = text.encode()
    size = len(data)
    tail_start = size - TAIL_BYTES
    first_full_line = data.index(b"\n", tail_start) + 1
    assert data[tail_start - 1 : tail_start] != b"\n"

    body = _body(store)

    skipped = format_skipped(tail_start - HEAD_BYTES)
    note = f"...\n\n... Skipped {skipped}, use WGet or Curl to download the entire log ... \n\n"
    assert body == data[:HEAD_BYTES] + note.encode() + data[first_full_line:]
    assert skipped == "92.4 KiB"


def test_a_tail_without_newline_is_kept_whole(store: TaskLogStore) -> None:
    data = b"y" * (HEAD_BYTES + TAIL_BYTES + 100)
    store.append(JOB, TASK, data.decode())  # Adds the final newline only.
    assert _body(store).endswith(b"\n\n" + b"y" * (TAIL_BYTES - 1) + b"\n")


def test_a_tail_starting_on_a_line_boundary_keeps_its_first_line(store: TaskLogStore) -> None:
    data = b"h" * (HEAD_BYTES + 99) + b"\n" + b"t" * (TAIL_BYTES - 1) + b"\n"
    store.append(JOB, TASK, data.decode())
    assert _body(store).endswith(b"\n\n" + b"t" * (TAIL_BYTES - 1) + b"\n")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0.0 B"),
        (1024, "1024.0 B"),
        (1025, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (5 * 1024**5, "5120.0 TiB"),
    ],
)
def test_format_skipped(size: int, text: str) -> None:
    assert format_skipped(size) == text


@settings(max_examples=30, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=400).map(lambda b: b.replace(b"\n", b"")), max_size=120),
    extra=st.integers(0, 3 * TAIL_BYTES),
)
def test_serving_never_loses_head_or_tail_bytes(lines: list[bytes], extra: int) -> None:
    data = b"\n".join(lines) + b"z" * extra + b"\n"
    with tempfile.TemporaryDirectory() as directory:
        store = TaskLogStore(Path(directory))
        path = store.path(JOB, TASK)
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        view = store.serve(JOB, TASK, "")
        assert view is not None
        body = b"".join(view.iter_bytes(chunk_size=777))
        assert len(body) == view.content_length
    if len(data) < HEAD_BYTES + TAIL_BYTES:
        assert body == data
        return
    assert body.startswith(data[:HEAD_BYTES])
    tail_start = len(data) - TAIL_BYTES
    line_start = data.find(b"\n", tail_start - 1) + 1
    expected_tail = data[line_start:] if line_start < len(data) else data[tail_start:]
    assert body.endswith(expected_tail)
    # The tail shows whole lines where it can, and nothing else is cut.
    assert len(body) == HEAD_BYTES + len(view.skipped_text) + len(expected_tail)


def test_taking_back_a_line_leaves_what_came_after_it(store: TaskLogStore) -> None:
    for line in ("first", "second", "third"):
        store.append(JOB, TASK, line)
    store.take_back(JOB, TASK, "second")  # no longer the last line: it stays
    assert store.read_whole(JOB, TASK) == b"first\nsecond\nthird\n"
    store.take_back(JOB, TASK, "third")
    store.append(JOB, TASK, "fourth")
    assert store.read_whole(JOB, TASK) == b"first\nsecond\nfourth\n"
    store.take_back(JOB, "5f1d7a0e9c3b2a1d0e9f8a72", "no log")  # nothing to take back


def test_taking_back_a_run_removes_it_only_while_it_holds_its_first_line(
    store: TaskLogStore,
) -> None:
    store.start_run(JOB, TASK, "run one")
    store.start_run(JOB, TASK, "run two")
    store.take_back_run(JOB, TASK, "run two")
    assert not store.path(JOB, TASK).exists()
    assert store.read_whole(JOB, TASK, run=1) == b"run one\n"
    store.start_run(JOB, TASK, "run two")  # nothing to rotate: run one stays the previous run
    store.append(JOB, TASK, "working")
    store.take_back_run(JOB, TASK, "run two")  # the run went on: it stays
    assert store.read_whole(JOB, TASK) == b"run two\nworking\n"
    assert [number for number, _ in store.rotated(JOB, TASK)] == [1]


@pytest.fixture
def shared_store(tmp_path: Path) -> TaskLogStore:
    """A store that opens its logs for each append, as where other processes write them too."""
    return TaskLogStore(tmp_path / "task-logs")


class _AppendWhileTakingBack:
    """Another manager process (a store of its own on the same logs) appends ``line`` while a
    take-back has read the log's end and not yet cut it: the module's ``open`` hands out files
    whose first read starts that append, and waits a moment for it to land."""

    def __init__(self, root: Path, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.other = TaskLogStore(root)
        self.line = line
        self.appender: threading.Thread | None = None
        monkeypatch.setattr(task_logs, "open", self.open, raising=False)

    def open(self, path: str, mode: str = "r", *args: object) -> object:
        file = open(path, mode, *args)  # noqa: SIM115 - closed by the code under test
        real_read, spy = file.read, self

        def read(*read_args: object) -> bytes:
            data: bytes = real_read(*read_args)
            if spy.appender is None:
                spy.appender = threading.Thread(
                    target=spy.other.append, args=(JOB, TASK, spy.line), daemon=True
                )
                spy.appender.start()
                spy.appender.join(0.5)  # done at once unless the log is locked against it
            return data

        file.read = read
        return file

    def finish(self) -> None:
        assert self.appender is not None, "the take-back never read the log"
        self.appender.join(10)
        assert not self.appender.is_alive()


def test_a_line_appended_by_another_process_during_a_take_back_stays(
    shared_store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for line in ("first", "second"):
        shared_store.append(JOB, TASK, line)
    racer = _AppendWhileTakingBack(shared_store.root, "from elsewhere", monkeypatch)
    shared_store.take_back(JOB, TASK, "second")
    racer.finish()
    assert shared_store.read_whole(JOB, TASK) == b"first\nfrom elsewhere\n"


def test_a_line_appended_by_another_process_during_a_run_take_back_is_kept(
    shared_store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_store.start_run(JOB, TASK, "run one")
    shared_store.start_run(JOB, TASK, "run two")
    racer = _AppendWhileTakingBack(shared_store.root, "from elsewhere", monkeypatch)
    shared_store.take_back_run(JOB, TASK, "run two")
    racer.finish()
    # The run was taken back; the line written meanwhile starts the log again.
    assert shared_store.read_whole(JOB, TASK) == b"from elsewhere\n"
    assert shared_store.read_whole(JOB, TASK, run=1) == b"run one\n"


def test_a_full_disk_never_cuts_a_line_another_process_appended(
    shared_store: TaskLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_store.append(JOB, TASK, "first line")
    other = TaskLogStore(shared_store.root)  # another manager process, on the same logs
    real_write = os.write
    wrote_half = False

    def write_half_then_fail(fd: int, data: bytes) -> int:
        nonlocal wrote_half
        if wrote_half:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        wrote_half = True
        count = real_write(fd, bytes(data[:4]))
        # The other process's append lands after the half line, before the disk fills up.
        monkeypatch.setattr(task_logs.os, "write", real_write)
        appender = threading.Thread(target=other.append, args=(JOB, TASK, "from elsewhere"))
        appender.start()
        appender.join(10)
        monkeypatch.setattr(task_logs.os, "write", write_half_then_fail)
        return count

    monkeypatch.setattr(task_logs.os, "write", write_half_then_fail)
    with pytest.raises(TaskLogError):
        shared_store.append(JOB, TASK, "second line that does not fit")
    monkeypatch.undo()
    # The other line is whole; the half line before it stays, since cutting it would cut that.
    assert shared_store.path(JOB, TASK).read_text() == "first line\nsecofrom elsewhere\n"


@pytest.mark.parametrize("keep_rotated", [None, 20])
def test_a_gzip_overtaken_by_another_process_rotation_loses_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_rotated: int | None
) -> None:
    # Two manager processes (PostgreSQL) each have a store on the same logs. A rotation in
    # process A gzips the run that became X.2 on its own thread; before that gzip is done,
    # process B claims the task again and shifts X.2 to X.3 and X.1 (the next run) to X.2.
    # A's gzip must not then publish its run as X.2.gz, nor remove the run now named X.2.
    first = TaskLogStore(tmp_path, keep_rotated=keep_rotated)
    second = TaskLogStore(tmp_path, keep_rotated=keep_rotated)
    started, release = threading.Event(), threading.Event()
    real_copy = task_logs.shutil.copyfileobj

    def copy_held_once(*args: object, **kwargs: object) -> None:
        if not started.is_set():
            started.set()
            assert release.wait(10)
        real_copy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(task_logs.shutil, "copyfileobj", copy_held_once)
    lines = task_logs.BACKGROUND_GZIP_BYTES // 20 + 1  # runs large enough for the thread

    def run(number: int) -> str:
        return "".join(f"run {number} line {n:09d}\n" for n in range(lines))

    try:
        for number in (1, 2, 3):
            first.start_run(JOB, TASK, run(number))
        assert started.wait(10)  # A's gzip of run 1 (X.2) is under way
        second.start_run(JOB, TASK, run(4))
        second.flush()
    finally:
        release.set()
        first.close()
        second.close()
    assert first.read_whole(JOB, TASK).decode() == run(4)
    assert [first.read_whole(JOB, TASK, n).decode() for n in (1, 2, 3)] == [
        run(3),
        run(2),
        run(1),
    ]
    assert [path.name for path in tmp_path.rglob(".*")] == []  # no temporary file left


@pytest.mark.parametrize("user_agent", ["Mozilla/5.0", "curl/8.5.0"])
def test_a_log_rotated_while_it_is_served_is_sent_as_it_was(
    store: TaskLogStore, user_agent: str
) -> None:
    # The view was read from the file by name when the body was sent: a claim rotating the
    # log in between sent the new run's first bytes with the previous run's sizes (a body
    # shorter than its Content-Length: the connection broke).
    text = "".join(f"line {n:05d} of the first run\n" for n in range(2000))
    store.start_run(JOB, TASK, text)
    view = store.serve(JOB, TASK, user_agent)
    assert view is not None
    store.start_run(JOB, TASK, "the second run")
    body = b"".join(view.iter_bytes())
    assert len(body) == view.content_length
    assert body.startswith(b"line 00000 of the first run\n")
    assert body.endswith(b"line 01999 of the first run\n")
    assert view.file is None or view.file.closed
