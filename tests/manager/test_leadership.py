"""Singleton loops: exactly one process leads on PostgreSQL, and another takes over."""

from __future__ import annotations

import os

import pytest

from flamenco_manager.storage.database import Database

from .harness import POSTGRES_URL_VARIABLE


def _open(url: str) -> Database:
    return Database.open(url, migrate=False)


def test_sqlite_always_leads(tmp_path: object) -> None:
    # About SQLite itself: its one process leads without a leader connection.
    database = _open(f"sqlite:///{tmp_path}/x.sqlite")
    assert database.leadership.is_leader()
    database.close()


def test_one_leader_at_a_time_and_a_successor_when_it_dies(database_url: str) -> None:
    if not database_url:
        pytest.skip("SQLite has one process; see test_sqlite_always_leads")
    assert os.environ.get(POSTGRES_URL_VARIABLE)
    first, second, third = _open(database_url), _open(database_url), _open(database_url)
    try:
        assert first.leadership.is_leader()
        assert first.leadership.is_leader()  # keeps it
        assert not second.leadership.is_leader()
        assert not third.leadership.is_leader()
        # The leader's connection dies (as when its process is killed): someone takes over.
        first.close()
        leaders = [second.leadership.is_leader(), third.leadership.is_leader()]
        assert leaders.count(True) == 1
    finally:
        for database in (first, second, third):
            database.close()


def test_the_leader_holds_no_transaction_open(database_url: str) -> None:
    """An open transaction on the leader's long-lived connection would stop VACUUM for the whole
    database: hot rows (workers, running tasks) would pile up dead versions for ever."""
    if not database_url:
        pytest.skip("SQLite has no leader connection")
    leader, observer = _open(database_url), _open(database_url)
    try:
        assert leader.leadership.is_leader()
        assert leader.leadership.is_leader()  # the periodic check, on the same connection
        held = leader.leadership._connection
        assert held is not None
        pid = held.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        with observer.engine.connect() as connection:
            state = connection.exec_driver_sql(
                f"SELECT state FROM pg_stat_activity WHERE pid = {int(pid)}"
            ).scalar_one()
        assert state == "idle"
    finally:
        leader.close()
        observer.close()
