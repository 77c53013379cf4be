"""Database.transaction: commits, rollbacks, after-commit callbacks and kept connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from flamenco_manager.storage.database import AFTER_COMMIT, KEPT_CONNECTIONS, Database
from flamenco_manager.storage.schema import jobs

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
