"""The database handle: SQLite (WAL) by default, PostgreSQL when one machine is not enough.

Services run short transactions through :meth:`Database.transaction`. The schema is brought up to
date by Alembic when the database is opened.

**Group commits (SQLite).** A commit costs SQLite more than the few statements of a worker
request. Inside :meth:`Database.grouping` (the web layer enters it for each request), the
transactions that run on the event loop's thread become savepoints of one shared transaction
(made at their first write: one that only reads has nothing to take back),
committed by a callback that runs once the event loop has run the steps already waiting: the
requests that arrived together commit together. Whoever entered the grouping waits for
:meth:`CommitWait.committed` before answering, so no answer ever tells of a change that is not
committed; if the shared commit fails, every request in it learns so and none of their changes
stay. Transactions outside a grouping, or on other threads, commit on their own as before (on the
event loop's thread after committing an open group first, since SQLite has one writer).

**Checkpoints (SQLite).** Copying the write-ahead log into the database file syncs both to disk;
a thread of its own does it every second (:class:`_Checkpointer`), so that no commit on the event
loop pays for it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from .hot import BEFORE_WRITE, HotStatement, is_read

MIGRATIONS = Path(__file__).with_name("migrations")
AFTER_COMMIT: Final = "flamenco.after_commit"
"""Key of ``Connection.info`` holding the callables to run once the transaction commits."""
ON_ROLLBACK: Final = "flamenco.on_rollback"
"""Key of ``Connection.info`` holding the callables that take back, when the transaction's
writes are rolled back (its block failed, or its commit), what it did outside the database."""
KEPT_CONNECTIONS: Final = 4
"""How many SQLite connections stay checked out between transactions, ready for the next."""
CHECKPOINT_SECONDS: Final = 1.0
"""How often the WAL of a SQLite database is copied into the database file, off the event loop."""
FALLBACK_CHECKPOINT_PAGES: Final = 10_000
"""WAL pages (about 40 MiB) after which a commit checkpoints by itself, should the thread lag."""
_READ_ONLY: Final = "flamenco.read_only"
"""Key of ``Connection.info`` set while :meth:`Database.reading` begins its transaction."""

_log = logging.getLogger("flamenco_manager.database")


class _CommitGroup:
    """One SQLite transaction shared by the grouped transactions of several requests."""

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.loop = loop
        self.error: Exception | None = None
        """Why the shared commit failed, once it did."""
        self._error_traceback: TracebackType | None = None
        self.done = False
        self.waiters: list[asyncio.Future[None]] = []
        """One future per request waiting for the end: cancelling one cancels no other."""
        self.after_commit: list[Callable[[], None]] = []
        self.on_rollback: list[Callable[[], None]] = []
        self.transactions = 0

    def end(self, error: Exception | None = None) -> None:
        """The shared transaction committed (or failed with ``error``): wake whoever waits."""
        self.done, self.error = True, error
        if error is not None:
            self._error_traceback = error.__traceback__
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def raise_error(self) -> None:
        """Raise the error of a failed commit (with its own traceback, for every waiter)."""
        if self.error is not None:
            raise self.error.with_traceback(self._error_traceback)


def take_back(undo: list[Callable[[], None]]) -> None:
    """Run the :data:`ON_ROLLBACK` callables of rolled-back transactions, newest first; one that
    fails is logged, and the others still run."""
    while undo:
        try:
            undo.pop()()
        except Exception:
            _log.exception("taking back what a rolled-back transaction did failed")


_JOINED: ContextVar[list[_CommitGroup] | None] = ContextVar("flamenco_commit_groups", default=None)
_SAVEPOINT: Final = HotStatement(sa.text("SAVEPOINT grouped"), writes=False)
_RELEASE: Final = HotStatement(sa.text("RELEASE grouped"), writes=False)
_ROLLBACK_TO: Final = HotStatement(sa.text("ROLLBACK TO grouped"), writes=False)


class _Savepoint:
    """The savepoint of one grouped transaction, made just before its first write.

    A transaction that only reads (most ``/task`` polls, ``/may-i-run``) has nothing to take back,
    and so costs no ``SAVEPOINT`` and ``RELEASE``. Transactions nest: the savepoint of an inner
    one is made after those of the outer ones still waiting for their first write.
    """

    def __init__(self, connection: Connection, info: dict[Any, Any]) -> None:
        """``info``: ``connection.info``, which the caller has at hand."""
        self.connection = connection
        self.info = info
        pending = info.get(BEFORE_WRITE)
        self.outer: _Savepoint | None = pending if isinstance(pending, _Savepoint) else None
        self.made = False
        info[BEFORE_WRITE] = self

    def __call__(self) -> None:
        """Make the savepoint (and the pending outer ones): a write is about to run."""
        self.info.pop(BEFORE_WRITE, None)
        if self.outer is not None and not self.outer.made:
            self.outer()
        _SAVEPOINT.control(self.connection)
        self.made = True

    def close(self) -> None:
        """The transaction ends: an outer one still without savepoint waits for its writes."""
        if self.info.get(BEFORE_WRITE) is self:
            del self.info[BEFORE_WRITE]
        if self.outer is not None and not self.outer.made:
            self.info[BEFORE_WRITE] = self.outer


class CommitWait:
    """What a grouping's transactions joined: await :meth:`committed` before answering.

    A context manager (:meth:`Database.grouping`): the transactions run inside the block, in this
    context, join commit groups.
    """

    __slots__ = ("_joined", "_token")

    def __init__(self) -> None:
        self._joined: list[_CommitGroup] = []

    def __enter__(self) -> CommitWait:
        self._token = _JOINED.set(self._joined)
        return self

    def __exit__(self, *_: object) -> None:
        _JOINED.reset(self._token)

    async def committed(self) -> None:
        """Return once every transaction run in the grouping is committed; raise if one failed."""
        for group in self._joined:
            if not group.done:
                # A future of this request's own: a client going away cancels only its wait.
                waiter = group.loop.create_future()
                group.waiters.append(waiter)
                await waiter
            group.raise_error()


class _GroupedTransaction:
    """One grouped transaction: a savepoint (once it writes) of its group's shared transaction.

    A class rather than a generator: every worker request runs one or two of these.
    """

    __slots__ = (
        "_callbacks",
        "_database",
        "_group",
        "_info",
        "_joined",
        "_loop",
        "_outer",
        "_outer_undo",
        "_save",
        "_undo",
    )

    def __init__(
        self, database: Database, joined: list[_CommitGroup], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._database = database
        self._joined = joined
        self._loop = loop

    def __enter__(self) -> Connection:
        group = self._group = self._database._open_group(self._loop)
        joined = self._joined
        if not joined or joined[-1] is not group:
            joined.append(group)
        connection = group.connection
        info = self._info = connection.info
        # A transaction inside another: its callbacks wait for the outer one, which may still
        # take back what the inner one did.
        self._outer: list[Callable[[], None]] | None = info.get(AFTER_COMMIT)
        self._save = _Savepoint(connection, info)
        self._callbacks: list[Callable[[], None]] = []
        info[AFTER_COMMIT] = self._callbacks
        self._outer_undo: list[Callable[[], None]] | None = info.get(ON_ROLLBACK)
        self._undo: list[Callable[[], None]] = []
        info[ON_ROLLBACK] = self._undo
        return connection

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        group, savepoint = self._group, self._save
        connection = group.connection
        if kind is not None and savepoint.made:
            try:
                _ROLLBACK_TO.control(connection)
                _RELEASE.control(connection)
            except BaseException:
                self._database._fail_group(group)
        if not connection.invalidated:
            if self._outer is None:
                self._info.pop(AFTER_COMMIT, None)
                self._info.pop(ON_ROLLBACK, None)
            else:
                self._info[AFTER_COMMIT] = self._outer
                self._info[ON_ROLLBACK] = self._outer_undo
            savepoint.close()
        if kind is not None:
            take_back(self._undo)
            return  # the error goes on
        if savepoint.made:
            try:
                _RELEASE.control(connection)
            except BaseException:
                take_back(self._undo)
                self._database._fail_group(group)  # its changes must not commit with others
                raise
        if self._outer is not None:
            self._outer.extend(self._callbacks)
            if self._outer_undo is not None:
                self._outer_undo.extend(self._undo)
            return
        group.transactions += 1
        group.after_commit.extend(self._callbacks)
        group.on_rollback.extend(self._undo)


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
        self._group: _CommitGroup | None = None
        self._group_loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://…``), migrating the schema."""
        database = cls(create_engine(url))
        if migrate:
            database.migrate()
        path = database.engine.url.database
        if database.is_sqlite and path and path != ":memory:":
            database._checkpointer = _Checkpointer(path, CHECKPOINT_SECONDS)
        return database

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is SQLite (one process only)."""
        return self.backend == "sqlite"

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        with self.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def transaction(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction, committed when the block ends without an exception.

        Callables appended to ``connection.info[AFTER_COMMIT]`` inside the block run after the
        commit, in order; a rollback drops them. Inside :meth:`grouping`, on SQLite and on the
        event loop's thread, the commit is the group's (see the module's documentation).
        """
        loop = self._running_loop()
        joined = _JOINED.get()
        if joined is not None and loop is not None and self._groups_on(loop):
            return _GroupedTransaction(self, joined, loop)
        return self._own_transaction(loop)

    @contextmanager
    def _own_transaction(self, loop: asyncio.AbstractEventLoop | None) -> Iterator[Connection]:
        group = self._group
        if group is not None and (loop is group.loop or group.loop.is_closed()):
            self._commit_group(group)  # SQLite's one writer: the group's lock goes first
        callbacks: list[Callable[[], None]] = []
        undo: list[Callable[[], None]] = []
        connection = self._checkout()
        try:
            with connection.begin():
                connection.info[AFTER_COMMIT] = callbacks
                connection.info[ON_ROLLBACK] = undo
                try:
                    yield connection
                finally:
                    # An invalidated connection (the server went away) has lost its info
                    # already, and touching it would raise over the error that explains the
                    # failure.
                    if not connection.invalidated:
                        connection.info.pop(AFTER_COMMIT, None)
                        connection.info.pop(ON_ROLLBACK, None)
        except BaseException:
            take_back(undo)  # the block failed, or the commit
            raise
        finally:
            self._checkin(connection)
        for callback in callbacks:
            callback()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection in a transaction that only reads, for work off the event loop's thread.

        On SQLite it takes no write lock (WAL readers wait for nobody), so it never waits for a
        commit group the event loop holds open, nor makes the loop wait for it. It sees what was
        committed when it started. It must not write: on SQLite a write would wait for the lock.
        """
        connection = self._checkout()
        try:
            connection.info[_READ_ONLY] = True
            try:
                transaction = connection.begin()
            finally:
                if not connection.invalidated:
                    connection.info.pop(_READ_ONLY, None)
            with transaction:
                yield connection
        finally:
            self._checkin(connection)

    def check(self) -> None:
        """Run the cheapest query there is: raises the driver's error when the database cannot
        be reached."""
        with self.reading() as connection:
            connection.exec_driver_sql("SELECT 1")

    def grouping(self) -> CommitWait:
        """Let the transactions run inside the ``with`` block (in this context) share commits.

        Only SQLite groups; elsewhere the :class:`CommitWait` has nothing to wait for. The caller
        must await :meth:`CommitWait.committed` before it tells anyone what the transactions did.
        """
        return CommitWait()

    def _groups_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether transactions on ``loop`` may group: SQLite, and one event loop at a time."""
        if not self._keeps_connections:
            return False
        bound = self._group_loop
        if bound is None or (bound is not loop and bound.is_closed() and self._group is None):
            self._group_loop = bound = loop
        return bound is loop

    @staticmethod
    def _running_loop() -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def _open_group(self, loop: asyncio.AbstractEventLoop) -> _CommitGroup:
        """The group that transactions on ``loop`` join now, begun if there is none."""
        group = self._group
        if group is None:
            connection = self._checkout()
            try:
                connection.begin()
            except BaseException:
                self._checkin(connection)
                raise
            group = self._group = _CommitGroup(connection, loop)
            # Runs after the steps already waiting in the loop: those join this group.
            loop.call_soon(self._commit_group, group)
        return group

    def _commit_group(self, group: _CommitGroup) -> None:
        if not self._close_group(group):
            return
        try:
            group.connection.commit()
        except Exception as error:
            self._roll_back_group(group, error)
            return
        self._checkin(group.connection)
        group.end()
        for callback in group.after_commit:
            try:
                callback()
            except Exception:
                _log.exception("an after-commit callback failed")

    def _fail_group(self, group: _CommitGroup) -> None:
        """Roll back a group one of whose savepoints could not be rolled back or released."""
        if self._close_group(group):
            error = RuntimeError("a grouped transaction could not be rolled back or released")
            self._roll_back_group(group, error)

    def _close_group(self, group: _CommitGroup) -> bool:
        """Take ``group`` out of use; ``False`` if it has ended already."""
        if self._group is group:
            self._group = None
        return not group.done

    def _roll_back_group(self, group: _CommitGroup, error: Exception) -> None:
        _log.error(
            "group commit failed; its %d transactions are rolled back",
            group.transactions,
            extra={"error": str(error).splitlines()[0][:200]},
        )
        with suppress(Exception):
            group.connection.rollback()
        group.connection.close()  # not kept: its state is unknown
        take_back(group.on_rollback)
        group.end(error)

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
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.leadership.release()
        if self._group is not None:
            self._commit_group(self._group)
        while self._idle:
            self._idle.pop().close()
        self.engine.dispose()

    @property
    def leadership(self) -> Leadership:
        """Whether this process runs the singleton loops (see :class:`Leadership`)."""
        if self._leadership is None:
            self._leadership = Leadership(self.engine)
        return self._leadership


class _Checkpointer:
    """Copies a SQLite database's write-ahead log into the database file, on a thread of its own.

    SQLite checkpoints inside the commit that fills the log past its threshold, and a checkpoint
    syncs the files to disk: 5 to 100 ms during which the committing thread, the event loop's,
    serves nobody. Here commits leave that to this thread, which checkpoints every ``period``
    seconds without waiting for readers or writers (``PASSIVE``); the driver lets go of Python's
    lock meanwhile. Commits still checkpoint past :data:`FALLBACK_CHECKPOINT_PAGES`.
    """

    def __init__(self, path: str, period: float) -> None:
        self._path = path
        self._period = period
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, timeout=30)
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
            while not self._stopping.wait(self._period):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:  # the next period tries again
                    _log.warning("WAL checkpoint failed", extra={"error": str(error)})
        finally:
            connection.close()

    def stop(self) -> None:
        """Stop checkpointing (the last commits' log is checkpointed when SQLite closes it)."""
        self._stopping.set()
        self._thread.join()


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings the manager needs on that database."""
    url_object = sa.make_url(url)
    if url_object.get_backend_name() == "sqlite":
        return _sqlite_engine(url_object)
    if url_object.drivername in ("postgresql", "postgres"):
        url_object = url_object.set(drivername="postgresql+psycopg")
    return sa.create_engine(url_object, pool_pre_ping=True, pool_size=10, max_overflow=20)


_BEGIN_IMMEDIATE: Final = HotStatement(sa.text("BEGIN IMMEDIATE"), writes=False)
_BEGIN_DEFERRED: Final = HotStatement(sa.text("BEGIN"), writes=False)


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
        # Checkpoints belong to the database's checkpointer thread (see _Checkpointer).
        cursor.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(connection: Connection, cursor: Any, statement: str, *_: Any) -> None:
        # Statements run through Connection.execute: a grouped transaction's first write makes
        # its savepoint (hot statements do the same themselves).
        before_write = connection.info.get(BEFORE_WRITE)
        if before_write is not None and not is_read(statement):
            before_write()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.info.get(_READ_ONLY):
            _BEGIN_DEFERRED.control(connection)
        else:
            # Take the write lock up front, so two processes never deadlock upgrading read locks.
            _BEGIN_IMMEDIATE.control(connection)

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
