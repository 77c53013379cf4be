"""The database handle: SQLite (WAL) by default, PostgreSQL when one machine is not enough.

Services run short transactions through :meth:`Database.transaction`. The schema is brought up to
date by Alembic when the database is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from .hot import HotStatement

MIGRATIONS = Path(__file__).with_name("migrations")
AFTER_COMMIT: Final = "flamenco.after_commit"
"""Key of ``Connection.info`` holding the callables to run once the transaction commits."""
KEPT_CONNECTIONS: Final = 4
"""How many SQLite connections stay checked out between transactions, ready for the next."""


class Database:
    """A connection pool to the manager's database, with the schema up to date."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._leadership: Leadership | None = None
        # On SQLite a connection goes back to this list, not to the pool, after a transaction:
        # a checkout and check-in through the pool cost 50 µs, more than a short transaction.
        # PostgreSQL keeps the pool, whose ping at checkout replaces connections that a server
        # restart broke while they were idle.
        self._keeps_connections = engine.dialect.name == "sqlite"
        self._idle: list[Connection] = []

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://…``), migrating the schema."""
        database = cls(create_engine(url))
        if migrate:
            database.migrate()
        return database

    @property
    def is_sqlite(self) -> bool:
        """Whether this is SQLite (one process only)."""
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        with self.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends without an exception.

        Callables appended to ``connection.info[AFTER_COMMIT]`` inside the block run after the
        commit, in order; a rollback drops them.
        """
        callbacks: list[Callable[[], None]] = []
        connection = self._checkout()
        try:
            with connection.begin():
                connection.info[AFTER_COMMIT] = callbacks
                try:
                    yield connection
                finally:
                    # An invalidated connection (the server went away) has lost its info
                    # already, and touching it would raise over the error that explains the
                    # failure.
                    if not connection.invalidated:
                        connection.info.pop(AFTER_COMMIT, None)
        finally:
            self._checkin(connection)
        for callback in callbacks:
            callback()

    def _checkout(self) -> Connection:
        # list.pop and list.append are atomic: threads never share a connection.
        try:
            return self._idle.pop()
        except IndexError:
            return self.engine.connect()

    def _checkin(self, connection: Connection) -> None:
        if (
            self._keeps_connections
            and not connection.invalidated
            and not connection.in_transaction()
            and len(self._idle) < KEPT_CONNECTIONS
        ):
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Close every pooled connection (and give up leadership)."""
        self.leadership.release()
        while self._idle:
            self._idle.pop().close()
        self.engine.dispose()

    @property
    def leadership(self) -> Leadership:
        """Whether this process runs the singleton loops (see :class:`Leadership`)."""
        if self._leadership is None:
            self._leadership = Leadership(self.engine)
        return self._leadership


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings the manager needs on that database."""
    url_object = sa.make_url(url)
    if url_object.get_backend_name() == "sqlite":
        return _sqlite_engine(url_object)
    if url_object.drivername in ("postgresql", "postgres"):
        url_object = url_object.set(drivername="postgresql+psycopg")
    return sa.create_engine(url_object, pool_pre_ping=True, pool_size=10, max_overflow=20)


_BEGIN_IMMEDIATE: Final = HotStatement(sa.text("BEGIN IMMEDIATE"))


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        # The driver's own transaction handling gets in the way; we issue BEGIN ourselves.
        isolation_level=None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers go on while one writer commits; NORMAL syncs at checkpoints, which
        # loses no committed transaction on a process crash (only on power loss).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock up front, so two processes never deadlock upgrading read locks.
        _BEGIN_IMMEDIATE.rowcount(connection, {})

    return engine


# The advisory lock of the manager's singleton loops is the pair (this number, the schema's
# hash): managers in different schemas of one database lead independently. The number is
# "flam" in ASCII, unlikely to collide with another application's locks.
LEADER_LOCK_KEY = 0x666C616D


class Leadership:
    """Which process runs the singleton loops (timeouts, sleep scheduler, remover, Shaman GC).

    On PostgreSQL the leader holds a session advisory lock on a connection of its own; when the
    process dies the connection goes and another process takes the lock at its next try. SQLite
    serves one process only, which always leads.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def is_leader(self) -> bool:
        """Whether this process leads now, taking the lead when it is free."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.exec_driver_sql("SELECT 1")
                return True
            except sa.exc.DBAPIError:
                self.release()
        try:
            # Autocommit: the lock is the session's, and a transaction left open on this
            # long-lived connection would hold back VACUUM for the whole database (every update
            # of a hot row, a worker's or a task's, would then leave a version nobody removes).
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError:
            return False
        try:
            taken = connection.exec_driver_sql(
                f"SELECT pg_try_advisory_lock({LEADER_LOCK_KEY}, hashtext(current_schema()))"
            ).scalar_one()
        except sa.exc.DBAPIError:
            connection.close()
            return False
        if taken:
            self._connection = connection
            return True
        connection.close()
        return False

    def release(self) -> None:
        """Give up the lead (closing the connection releases the lock)."""
        if self._connection is not None:
            with suppress(sa.exc.DBAPIError):
                self._connection.close()
            self._connection = None
