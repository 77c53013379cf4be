"""Hot statements give what Connection.execute gives, on each backend, errors included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flamenco_manager.storage.database import Database
from flamenco_manager.storage.hot import BuiltRows, HotStatement
from flamenco_manager.storage.schema import workers

_GET = sa.select(workers).where(workers.c.id == sa.bindparam("key"))
_UPDATE = workers.update().where(workers.c.id == sa.bindparam("key"))
_BY_STATUS = (
    sa.select(workers.c.id, workers.c.last_activity)
    .where(workers.c.status == sa.bindparam("status"))
    .order_by(workers.c.id)
)
WORKER = "5f1d7a0e9c3b2a1d0e9f8a7b"
REGISTERED = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path, database_url: str) -> Iterator[Database]:
    url = database_url or f"sqlite:///{tmp_path}/hot.sqlite"
    opened = Database.open(url)
    with opened.transaction() as connection:
        connection.execute(
            workers.insert().values(
                id=WORKER,
                secret_hash="x",
                nickname="render-01",
                address="10.0.0.5",
                status="awake",
                platform="linux",
                supported_task_types=["blender", "ffmpeg"],
                software="Flamenco-Worker/2.5",
                registered=REGISTERED,
            )
        )
    yield opened
    opened.close()


def test_a_row_reads_as_connection_execute_reads_it(database: Database) -> None:
    hot = HotStatement(_GET)
    with database.transaction() as connection:
        expected = dict(connection.execute(_GET, {"key": WORKER}).one()._mapping)
        got = hot.first_mapping(connection, {"key": WORKER})
        missing = hot.first_mapping(connection, {"key": "0" * 24})
    assert got == expected
    # Converted by the same processors: an aware UTC datetime, a decoded JSON list.
    assert got is not None
    assert got["registered"] == REGISTERED
    assert got["supported_task_types"] == ["blender", "ffmpeg"]
    assert missing is None


def test_updates_of_different_columns_are_compiled_apart(database: Database) -> None:
    hot = HotStatement(_UPDATE)
    seen = REGISTERED + timedelta(minutes=5)
    with database.transaction() as connection:
        assert hot.rowcount(connection, {"key": WORKER, "last_activity": seen}) == 1
        assert hot.rowcount(connection, {"key": WORKER, "nickname": "render-02"}) == 1
        assert hot.rowcount(connection, {"key": "0" * 24, "nickname": "nobody"}) == 0
    with database.transaction() as connection:
        row = connection.execute(_GET, {"key": WORKER}).one()
    assert (row.last_activity, row.nickname) == (seen, "render-02")


# One database for every example: each writes the value it then reads.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moments=st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.just(UTC),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_written_and_read_values_round_trip(database: Database, moments: list[datetime]) -> None:
    # Every moment goes in through a hot UPDATE and comes out of a hot SELECT unchanged, as
    # SQLAlchemy itself reads it.
    update, select = HotStatement(_UPDATE), HotStatement(_BY_STATUS)
    for moment in moments:
        with database.transaction() as connection:
            update.rowcount(connection, {"key": WORKER, "last_activity": moment})
            rows = select.rows(connection, {"status": "awake"})
            expected = connection.execute(_BY_STATUS, {"status": "awake"}).all()
        assert rows == [tuple(row) for row in expected] == [(WORKER, moment)]


def test_a_driver_error_is_sqlalchemys_and_the_transaction_rolls_back(
    database: Database,
) -> None:
    hot = HotStatement(_UPDATE)

    def rename_then_break() -> None:
        with database.transaction() as connection:
            hot.rowcount(connection, {"key": WORKER, "nickname": "renamed"})
            hot.rowcount(connection, {"key": WORKER, "nickname": None})  # NOT NULL

    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)null"):
        rename_then_break()
    with database.transaction() as connection:
        assert connection.execute(_GET, {"key": WORKER}).one().nickname == "render-01"


def test_literals_of_a_statement_are_sent_converted_and_callers_still_set_columns(
    database: Database,
) -> None:
    # The literals (a time, which converts, and a text) are converted once per compilation.
    seen = REGISTERED + timedelta(minutes=1)
    recent = HotStatement(
        sa.select(workers.c.id).where(
            workers.c.last_activity > REGISTERED,
            workers.c.status == "awake",
            workers.c.nickname == sa.bindparam("nickname"),
        )
    )
    # A column the statement sets itself, which a caller may still set (as Connection.execute
    # lets it).
    wake = HotStatement(
        workers.update().where(workers.c.id == sa.bindparam("key")).values(status="awake")
    )
    with database.transaction() as connection:
        assert recent.rows(connection, {"nickname": "render-01"}) == []
        assert wake.rowcount(connection, {"key": WORKER, "last_activity": seen}) == 1
        for _ in range(2):  # the second call runs the same plan
            assert recent.rows(connection, {"nickname": "render-01"}) == [(WORKER,)]
        assert recent.rows(connection, {"nickname": "render-02"}) == []
        assert wake.rowcount(connection, {"key": WORKER, "status": "asleep"}) == 1
        assert recent.rows(connection, {"nickname": "render-01"}) == []
        status = connection.execute(_GET, {"key": WORKER}).one().status
    assert status == "asleep"


def test_a_built_record_is_reused_until_its_row_changes(database: Database) -> None:
    builds: list[dict[str, object]] = []

    def build(row: dict[str, object]) -> tuple[object, ...]:
        builds.append(row)
        return (row["nickname"], row["last_activity"])

    built = BuiltRows(HotStatement(_GET), build)
    with database.transaction() as connection:
        first = built.first(connection, {"key": WORKER}, WORKER)
        again = built.first(connection, {"key": WORKER}, WORKER)
        assert built.first(connection, {"key": "0" * 24}, "0" * 24) is None
    assert first == ("render-01", None)
    assert again is first
    assert len(builds) == 1
    # Converted as SQLAlchemy converts the row.
    assert builds[0] == dict(_read_with_execute(database))

    # A change made elsewhere (another transaction, plain SQLAlchemy) is read, never the kept one.
    seen = REGISTERED + timedelta(seconds=1)
    with database.transaction() as connection:
        connection.execute(_UPDATE, {"key": WORKER, "last_activity": seen})
    with database.transaction() as connection:
        changed = built.first(connection, {"key": WORKER}, WORKER)
    assert changed == ("render-01", seen)
    assert len(builds) == 2


def test_built_records_past_the_limit_are_forgotten(database: Database) -> None:
    builds: list[object] = []
    built = BuiltRows(HotStatement(_GET), lambda row: builds.append(row) or row["id"], limit=1)
    with database.transaction() as connection:
        for key in (WORKER, "other key", WORKER, WORKER):
            # Two keys naming one row: the limit of one keeps a single key at a time.
            assert built.first(connection, {"key": WORKER}, key) == WORKER
    assert len(builds) == 3


def _read_with_execute(database: Database) -> dict[str, object]:
    with database.transaction() as connection:
        return dict(connection.execute(_GET, {"key": WORKER}).one()._mapping)


def test_expanding_parameters_are_refused(database: Database) -> None:
    hot = HotStatement(
        sa.select(workers.c.id).where(workers.c.id.in_(sa.bindparam("keys", expanding=True)))
    )
    with database.transaction() as connection, pytest.raises(ValueError, match="expanding"):
        hot.rows(connection, {"keys": [WORKER]})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    )
)
def test_sqlite_keeps_times_in_sqlalchemys_own_text_form(
    database: Database, moment: datetime
) -> None:
    # Our quicker SQLite conversion writes exactly what SQLAlchemy's DateTime writes (so that
    # text comparisons in SQL and older databases still agree), and reads its forms back.
    stock = sa.DateTime().dialect_impl(database.engine.dialect)
    to_text = stock.bind_processor(database.engine.dialect)
    assert to_text is not None
    written = to_text(moment.replace(tzinfo=None))
    with database.transaction() as connection:
        connection.execute(_UPDATE, {"key": WORKER, "last_activity": moment})
        stored = connection.exec_driver_sql(
            "SELECT last_activity FROM workers WHERE id = ?", (WORKER,)
        ).scalar_one()
        assert stored == written
        for text in (written, written[:19]):
            connection.exec_driver_sql(
                "UPDATE workers SET last_activity = ? WHERE id = ?", (text, WORKER)
            )
            (read,) = HotStatement(_BY_STATUS).rows(connection, {"status": "awake"})
            assert read[1] == datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_transaction_control_runs_on_the_driver_and_fails_as_sqlalchemy_would(
    database: Database,
) -> None:
    savepoint = HotStatement(sa.text("SAVEPOINT checked"), writes=False)
    rollback = HotStatement(sa.text("ROLLBACK TO checked"), writes=False)
    release = HotStatement(sa.text("RELEASE checked"), writes=False)
    with database.transaction() as connection:
        savepoint.control(connection)
        HotStatement(_UPDATE).rowcount(connection, {"key": WORKER, "nickname": "renamed"})
        rollback.control(connection)
        release.control(connection)
        nickname = connection.execute(sa.select(workers.c.nickname)).scalar_one()
    assert nickname == "render-01"
    # No such savepoint: the driver's error, as SQLAlchemy gives it to Connection.execute.
    with pytest.raises(sa.exc.DBAPIError) as raised, database.transaction() as connection:
        release.control(connection)
    with pytest.raises(sa.exc.DBAPIError) as expected, database.transaction() as connection:
        connection.exec_driver_sql("RELEASE checked")
    assert type(raised.value) is type(expected.value)
    assert type(raised.value.orig) is type(expected.value.orig)
    assert raised.value.statement == "RELEASE checked"
