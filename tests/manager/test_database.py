"""Database.transaction: commits, rollbacks, after-commit callbacks and kept connections."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from flamenco_manager.storage import database as database_module
from flamenco_manager.storage.database import AFTER_COMMIT, KEPT_CONNECTIONS, Database
from flamenco_manager.storage.schema import jobs

from .harness import count_commits, interrupt_next_commit

JOB = "5f1d7a0e9c3b2a1d0e9f8a7b"
CREATED = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path, database_url: str) -> Iterator[Database]:
    opened = Database.open(database_url or f"sqlite:///{tmp_path}/manager.sqlite")
    yield opened
    opened.close()


def _job_names(database: Database) -> list[str]:
    with database.transaction() as connection:
        return list(connection.scalars(sa.select(jobs.c.name).order_by(jobs.c.name)))


def _insert_job(connection: sa.Connection, job_id: str, name: str) -> None:
    connection.execute(
        jobs.insert().values(
            id=job_id,
            name=name,
            job_type="simple-blender-render",
            priority=50,
            status="queued",
            settings={},
            created=CREATED,
            updated=CREATED,
        )
    )


def test_a_failed_transaction_leaves_nothing_and_the_next_one_works(database: Database) -> None:
    ran: list[str] = []

    def fail_halfway() -> None:
        with database.transaction() as connection:
            _insert_job(connection, JOB, "lost")
            connection.info[AFTER_COMMIT].append(lambda: ran.append("rolled back"))
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        fail_halfway()
    with database.transaction() as connection:
        _insert_job(connection, JOB, "kept")
        connection.info[AFTER_COMMIT].append(lambda: ran.append("committed"))
    assert _job_names(database) == ["kept"]
    assert ran == ["committed"]


def test_a_failed_statement_does_not_leave_its_connection_in_a_transaction(
    database: Database,
) -> None:
    with database.transaction() as connection:
        _insert_job(connection, JOB, "first")
    for _ in range(KEPT_CONNECTIONS + 1):
        with pytest.raises(sa.exc.IntegrityError), database.transaction() as connection:
            _insert_job(connection, JOB, "duplicate id")
    # Every connection handed out since is outside any transaction when it comes back.
    with database.transaction() as connection:
        _insert_job(connection, "5f1d7a0e9c3b2a1d0e9f8a7c", "second")
    assert _job_names(database) == ["first", "second"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_transactions_keep_their_connection_out_of_the_pool(database: Database) -> None:
    checkouts: list[object] = []
    sa.event.listen(database.engine, "checkout", lambda *_: checkouts.append(None))
    raws = set()
    for _ in range(5):
        with database.transaction() as connection:
            raws.add(id(connection.connection.dbapi_connection))
    assert len(raws) == 1
    assert len(checkouts) <= 1  # the first transaction may take it from the pool


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_threads_never_share_a_connection_in_a_transaction(database: Database) -> None:
    in_use: set[int] = set()
    shared: list[int] = []
    guard = threading.Lock()
    failures: list[BaseException] = []

    def work(number: int) -> None:
        try:
            for round_ in range(40):
                with database.transaction() as connection:
                    raw = id(connection.connection.dbapi_connection)
                    with guard:
                        if raw in in_use:
                            shared.append(raw)
                        in_use.add(raw)
                    _insert_job(connection, f"{number:012x}{round_:012x}", f"w{number}")
                    with guard:
                        in_use.discard(raw)
        except BaseException as error:  # reported below, with the thread's other failures
            failures.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert shared == []
    assert len(_job_names(database)) == 8 * 40


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_closing_the_database_closes_the_kept_connections(database: Database) -> None:
    with database.transaction() as connection:
        raw = connection.connection.dbapi_connection
    database.close()
    assert isinstance(raw, sqlite3.Connection)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        raw.execute("SELECT 1")


# --- group commits (SQLite) ----------------------------------------------------------------------

group_commits = pytest.mark.anyio


def _stored_names(path: Path) -> list[str]:
    """What another connection sees: only committed rows."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return [name for (name,) in other.execute("SELECT name FROM jobs ORDER BY name")]


def _sqlite_file(database: Database) -> Path:
    assert database.engine.url.database is not None
    return Path(database.engine.url.database)


async def _grouped_insert(database: Database, job_id: str, name: str) -> None:
    with database.grouping() as wait:
        with database.transaction() as connection:
            _insert_job(connection, job_id, name)
        await wait.committed()


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_requests_that_arrive_together_share_one_commit(database: Database) -> None:
    commits = count_commits(database.engine)
    await asyncio.gather(
        *(_grouped_insert(database, f"{n:024x}", f"job {n:02}") for n in range(20))
    )
    assert len(commits) == 1
    assert _stored_names(_sqlite_file(database)) == [f"job {n:02}" for n in range(20)]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_grouped_change_is_invisible_until_the_wait_returns(database: Database) -> None:
    path = _sqlite_file(database)
    with database.grouping() as wait:
        with database.transaction() as connection:
            _insert_job(connection, JOB, "held")
        assert _stored_names(path) == []
        await wait.committed()
        assert _stored_names(path) == ["held"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_cancelled_wait_cancels_neither_the_commit_nor_the_other_waits(
    database: Database,
) -> None:
    """A client that goes away cancels its request's wait; the shared commit still happens, and
    the other requests of the group hear of it."""
    waits: list[asyncio.Task[None]] = [
        asyncio.create_task(_grouped_insert(database, letter * 24, letter)) for letter in "abc"
    ]
    await asyncio.sleep(0)  # each has written and waits
    waits[1].cancel()
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [
        type(None),
        asyncio.CancelledError,
        type(None),
    ]
    assert _stored_names(_sqlite_file(database)) == ["a", "b", "c"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_failing_grouped_transaction_takes_back_only_its_own_changes(
    database: Database,
) -> None:
    async def failing() -> None:
        with database.grouping() as wait:
            with pytest.raises(RuntimeError, match="halfway"):
                _insert_standalone(database, "f" * 24, "failed halfway", fail=True)
            await wait.committed()

    commits = count_commits(database.engine)
    await asyncio.gather(
        _grouped_insert(database, "a" * 24, "before"),
        failing(),
        _grouped_insert(database, "b" * 24, "after"),
    )
    assert len(commits) == 1
    assert _stored_names(_sqlite_file(database)) == ["after", "before"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_failed_group_commit_fails_every_request_in_it_and_keeps_nothing(
    database: Database,
) -> None:
    interrupt_next_commit(database.engine)
    outcomes = await asyncio.gather(
        *(_grouped_insert(database, letter * 24, letter) for letter in "abc"),
        return_exceptions=True,
    )
    assert [type(outcome) for outcome in outcomes] == [sa.exc.OperationalError] * 3
    assert _stored_names(_sqlite_file(database)) == []
    # The failed connection is not reused: what comes next commits as usual.
    await _grouped_insert(database, "d" * 24, "next")
    assert _stored_names(_sqlite_file(database)) == ["next"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_savepoint_that_cannot_be_released_fails_its_group(database: Database) -> None:
    async def unreleasable() -> None:
        with database.grouping() as wait:
            with database.transaction() as connection:
                _insert_job(connection, "b" * 24, "b")
                raw = connection.connection.dbapi_connection
                assert isinstance(raw, sqlite3.Connection)
                raw.set_progress_handler(lambda: 1, 1)  # interrupts the RELEASE
            await wait.committed()

    outcomes = await asyncio.gather(
        _grouped_insert(database, "a" * 24, "a"), unreleasable(), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [RuntimeError, sa.exc.OperationalError]
    assert _stored_names(_sqlite_file(database)) == []


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_transaction_outside_the_grouping_commits_the_open_group_first(
    database: Database,
) -> None:
    with database.grouping() as wait:
        with database.transaction() as connection:
            _insert_job(connection, "a" * 24, "grouped")
        # On the loop's thread, outside any grouping (a periodic chore, say): SQLite has one
        # writer, so the open group commits first instead of holding the lock against it.
        contextvars.Context().run(_insert_standalone, database, "b" * 24, "not grouped")
        assert _stored_names(_sqlite_file(database)) == ["grouped", "not grouped"]
        await wait.committed()


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_threads_write_while_the_loop_groups(database: Database) -> None:
    def in_thread() -> None:
        for n in range(20):
            _insert_standalone(database, f"{n:012x}{'f' * 12}", f"thread {n:02}")

    grouped = [_grouped_insert(database, f"{n:024x}", f"loop {n:02}") for n in range(60)]
    await asyncio.wait_for(asyncio.gather(asyncio.to_thread(in_thread), *grouped), 60)
    names = _stored_names(_sqlite_file(database))
    assert names == sorted(
        [f"loop {n:02}" for n in range(60)] + [f"thread {n:02}" for n in range(20)]
    )


def _insert_standalone(database: Database, job_id: str, name: str, *, fail: bool = False) -> None:
    with database.transaction() as connection:
        _insert_job(connection, job_id, name)
        if fail:
            raise RuntimeError("halfway")


@group_commits
async def test_postgresql_and_loopless_callers_commit_each_transaction(
    database: Database,
) -> None:
    commits = count_commits(database.engine)
    if database.engine.dialect.name == "sqlite":
        await asyncio.to_thread(_insert_standalone, database, "a" * 24, "no event loop")
        assert len(commits) == 1
        return
    await asyncio.gather(*(_grouped_insert(database, f"{n:024x}", "pg") for n in range(5)))
    assert len(commits) == 5


def _traced(connection: sa.Connection) -> list[str]:
    """The SQL the driver runs on ``connection`` from now on (hot statements included)."""
    statements: list[str] = []
    raw = connection.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    raw.set_trace_callback(statements.append)
    return statements


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_grouped_transaction_that_only_reads_makes_no_savepoint(
    database: Database,
) -> None:
    with database.grouping() as wait:
        with database.transaction() as connection:
            statements = _traced(connection)
            assert connection.execute(sa.select(jobs.c.name)).all() == []
        with database.transaction() as connection:
            _insert_job(connection, JOB, "written")
        await wait.committed()
    kinds = [sql.split()[0].upper() for sql in statements]
    assert kinds == ["SELECT", "SAVEPOINT", "INSERT", "RELEASE", "COMMIT"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_failing_outer_transaction_takes_back_what_its_inner_one_wrote(
    database: Database,
) -> None:
    # The outer transaction had not written when the inner one did: its savepoint must still
    # come first, so that its failure takes back both.

    def outer_fails() -> None:
        with database.transaction() as outer:
            outer.execute(sa.select(jobs.c.name)).all()
            with database.transaction() as inner:
                _insert_job(inner, "a" * 24, "inner")
            _insert_job(outer, "b" * 24, "outer")
            raise RuntimeError("outer failed")

    with database.grouping() as wait:
        with pytest.raises(RuntimeError, match="outer"):
            outer_fails()
        await _grouped_insert(database, "c" * 24, "other request")
        await wait.committed()
    assert _stored_names(_sqlite_file(database)) == ["other request"]


@group_commits
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_callbacks_of_a_nested_transaction_follow_the_outer_one(database: Database) -> None:
    ran: list[str] = []

    def nested(*, outer_fails: bool) -> None:
        with database.transaction() as outer:
            with database.transaction() as inner:
                inner.info[AFTER_COMMIT].append(lambda: ran.append("inner"))
            # Still the outer transaction's: announced at its commit, not now.
            outer.info[AFTER_COMMIT].append(lambda: ran.append("outer"))
            if outer_fails:
                raise RuntimeError("outer failed")

    with database.grouping() as wait:
        with pytest.raises(RuntimeError, match="outer failed"):
            nested(outer_fails=True)
        nested(outer_fails=False)
        assert ran == []
        await wait.committed()
    # The failed outer transaction took back its inner one: neither callback of that pair ran.
    assert ran == ["inner", "outer"]


def _fill(database: Database, jobs_count: int) -> None:
    """About two WAL pages per job, in transactions of 50."""
    for start in range(0, jobs_count, 50):
        with database.transaction() as connection:
            for n in range(start, min(start + 50, jobs_count)):
                connection.execute(
                    jobs.insert().values(
                        id=f"{n:024x}",
                        name=f"job {n}",
                        description="x" * 6000,
                        job_type="simple-blender-render",
                        priority=50,
                        status="queued",
                        settings={},
                        created=CREATED,
                        updated=CREATED,
                    )
                )


@pytest.mark.parametrize("period", [3600.0, 0.05])
def test_commits_leave_checkpoints_to_a_thread_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, period: float
) -> None:
    """A checkpoint syncs files to disk; in a commit it would stall the event loop. Commits
    leave the log to grow (SQLite's default checkpoints at 1,000 pages) and the checkpointer
    thread copies it into the database file."""
    monkeypatch.setattr(database_module, "CHECKPOINT_SECONDS", period)
    path = tmp_path / "manager.sqlite"
    database = Database.open(f"sqlite:///{path}")
    try:
        before = path.stat().st_size
        _fill(database, 1500)
        assert (tmp_path / "manager.sqlite-wal").stat().st_size > 1000 * 4096
        if period > 60:
            assert path.stat().st_size == before  # no commit checkpointed
            return
        deadline = time.monotonic() + 10
        while path.stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before + 1000 * 4096
    finally:
        database.close()
    assert not any(t.name == "sqlite-checkpoint" and t.is_alive() for t in threading.enumerate())
