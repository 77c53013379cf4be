"""Hot statements: Core statements compiled once per dialect and run on the driver's cursor.

Every worker request runs a handful of small statements (read a worker, read a task, set two
columns). Through :meth:`sqlalchemy.engine.Connection.execute` each costs 20 to 50 µs of Python
around a few µs in the database driver: cache-key generation, execution context, result metadata,
row objects. :class:`HotStatement` keeps SQLAlchemy for what it is good at (one schema, one
statement, SQL for SQLite and PostgreSQL) and skips the per-call machinery: the statement is
compiled once per dialect (and, for an UPDATE, per set of columns written), and each call applies
the same bind and result processors SQLAlchemy would, then runs the SQL on the connection's
DB-API cursor, inside the connection's transaction. The parameters are built by a plan made at
compile time, not by the compiler per call; an UPDATE's ``RETURNING`` columns read as a SELECT's.

Driver errors come out as SQLAlchemy's own exceptions (:class:`sqlalchemy.exc.DBAPIError` and its
subclasses), and a lost connection is invalidated as :meth:`Connection.execute` would do it, so
callers and the pool see no difference.

Statements with expanding parameters (``IN`` of a list) are refused: use
:meth:`Connection.execute` for those. The literals of a statement (``status == 'active'``) are
converted once per compilation; callers give values for its bind parameters and, for an UPDATE,
its columns (which may replace the statement's own ``values()``), not for literals.

:class:`BuiltRows` goes one step further for a row read on every request (a worker's): the record
built from it is kept with the row as the driver gave it, and given again while the same read
gives the same row. Nothing can be stale: the database is read each time, only the conversion is
skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

__all__ = ["BEFORE_WRITE", "BuiltRows", "HotStatement", "is_read"]

BEFORE_WRITE: Final = "flamenco.before_write"
"""Key of ``Connection.info`` for a callable to run before the next statement that may write.

The callable removes itself when it runs (see :meth:`Database.transaction
<flamenco_manager.storage.database.Database.transaction>`, whose grouped transactions make their
savepoint only once they write)."""


def is_read(sql: str) -> bool:
    """Whether an SQL statement only reads (a ``SELECT``)."""
    return sql.lstrip()[:6].upper() == "SELECT"


Processor = Callable[[Any], Any]
Built = TypeVar("Built")


@attrs.frozen
class _Bind:
    """Where one parameter of a compiled statement gets its value, and how it is converted."""

    key: str
    """The name callers use (the bind parameter's key, or the column's for an UPDATE)."""
    name: str
    placeholder: str
    """The name in the SQL text (``name``, escaped where the dialect needs it)."""
    parameter: BindParameter[Any]
    process: Processor | None

    def is_constant(self, given: frozenset[str]) -> bool:
        """Whether the value is the statement's own, a literal (``status == 'active'``) that the
        caller's values (``given``, the names an UPDATE was compiled for) do not replace: its
        converted value can be computed once."""
        parameter = self.parameter
        return (
            parameter.unique
            and parameter.callable is None
            and not parameter.required
            and self.key not in given
            and self.name not in given
        )

    def given(self, values: Mapping[str, Any]) -> Any:
        """The value, not yet converted, when ``values`` has none under :attr:`key`."""
        if self.name in values:
            return values[self.name]
        if self.parameter.required:
            raise sa.exc.InvalidRequestError(
                f"A value is required for bind parameter {self.parameter.key!r}"
            )
        return self.parameter.effective_value


class _Plan:
    """One compilation of a statement: SQL text, how to build its parameters and read its rows."""

    def __init__(
        self,
        sql: str,
        binds: tuple[_Bind, ...],
        given: frozenset[str],
        named: bool,
        columns: tuple[str, ...],
        result_processors: tuple[tuple[int, Processor], ...],
    ) -> None:
        self.sql = sql
        self.named = named
        """Whether the driver takes a mapping (named paramstyle) rather than a sequence."""
        self.columns = columns
        self.result_processors = result_processors
        """The columns whose values SQLAlchemy converts, by position, and how."""
        # Every parameter in the order a positional paramstyle takes them: the constants
        # converted now, the others (by position) at each call.
        slots = [(index, bind.key, bind.process, bind) for index, bind in enumerate(binds)]
        constant = [bind.is_constant(given) for bind in binds]
        self._template: list[Any] = [None] * len(binds)
        self._fill(self._template, {}, (slot for slot in slots if constant[slot[0]]))
        self._variable = tuple(slot for slot in slots if not constant[slot[0]])
        self._placeholders = tuple(bind.placeholder for bind in binds)

    @staticmethod
    def _fill(
        parameters: list[Any],
        values: Mapping[str, Any],
        binds: Iterable[tuple[int, str, Processor | None, _Bind]],
    ) -> None:
        # Inline rather than a method per parameter: an UPDATE has a dozen, every request runs one.
        for index, key, process, bind in binds:
            value = values[key] if key in values else bind.given(values)
            parameters[index] = value if process is None else process(value)

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        parameters = self._template.copy()
        self._fill(parameters, values, self._variable)
        if self.named:
            return dict(zip(self._placeholders, parameters, strict=True))
        return parameters

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row as the driver gave it, converted, as a dict keyed by column name."""
        return dict(zip(self.columns, self.convert(row), strict=True))

    def convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not self.result_processors:
            return tuple(row)
        values = list(row)
        for index, process in self.result_processors:
            values[index] = process(values[index])
        return tuple(values)


class HotStatement:
    """A Core statement run often: compiled once per dialect, executed on the DB-API cursor."""

    def __init__(
        self,
        statement: sa.Select[Any] | sa.sql.dml.UpdateBase | sa.TextClause,
        *,
        writes: bool | None = None,
    ) -> None:
        """``writes``: whether running it calls :data:`BEFORE_WRITE` first; by default, unless
        it is a ``SELECT``. Transaction control (``SAVEPOINT``, ``RELEASE``) says ``False``."""
        self.statement = statement
        self._plans: dict[tuple[str, frozenset[str]] | str, _Plan] = {}
        self._is_dml = isinstance(statement, sa.sql.dml.UpdateBase)
        if writes is None:
            writes = not isinstance(statement, sa.Select) and not (
                isinstance(statement, sa.TextClause) and is_read(statement.text)
            )
        self._writes = writes

    def rows(self, connection: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every result row, values converted as SQLAlchemy converts them."""
        plan, cursor = self._run(connection, values)
        try:
            return [plan.convert(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, connection: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first result row, or ``None``."""
        return self._first(connection, values)[1]

    def first_mapping(
        self, connection: Connection, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first result row as a dict keyed by column name, or ``None``."""
        plan, row = self.first_raw(connection, values)
        return None if row is None else plan.mapping(row)

    def first_raw(
        self, connection: Connection, values: Mapping[str, Any]
    ) -> tuple[_Plan, tuple[Any, ...] | None]:
        """The first result row as the driver gives it (no conversion), and the plan whose
        :meth:`~_Plan.mapping` converts it: for callers that look at a few raw values of
        several rows before converting the one they keep."""
        plan, cursor = self._run(connection, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return plan, None if row is None else tuple(row)

    def rowcount(self, connection: Connection, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows (INSERT, UPDATE, DELETE, BEGIN); rows matched."""
        _, cursor = self._run(connection, values)
        try:
            count: int = cursor.rowcount
        finally:
            cursor.close()
        return count

    def control(self, connection: Connection) -> None:
        """Run a statement without parameters or rows (``SAVEPOINT``, ``RELEASE``, ``BEGIN``)
        straight on the driver's connection: every request that writes runs two, for which
        :meth:`rowcount`'s parameters and cursor cost more than the statement itself."""
        dialect = connection.dialect
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = self._compile(dialect, ())
        raw = connection.connection.dbapi_connection
        assert raw is not None
        try:
            raw.execute(plan.sql)
        except dialect.loaded_dbapi.Error as error:
            raise self._translate(connection, error, plan.sql, (), raw) from error

    def _first(
        self, connection: Connection, values: Mapping[str, Any]
    ) -> tuple[_Plan, tuple[Any, ...] | None]:
        plan, row = self.first_raw(connection, values)
        return plan, None if row is None else plan.convert(row)

    def _run(self, connection: Connection, values: Mapping[str, Any]) -> tuple[_Plan, Any]:
        dialect = connection.dialect
        # An UPDATE compiles once per set of columns written; anything else once per dialect.
        key = (dialect.name, frozenset(values)) if self._is_dml else dialect.name
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(dialect, values)
        parameters = plan.parameters(values)
        if self._writes:
            before_write = connection.info.get(BEFORE_WRITE)
            if before_write is not None:
                before_write()
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.execute(plan.sql, parameters)
        except dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise self._translate(connection, error, plan.sql, parameters, raw) from error
        return plan, cursor

    def _compile(self, dialect: Dialect, values: Iterable[str]) -> _Plan:
        column_keys = sorted(values) if self._is_dml else None
        compiled = self.statement.compile(dialect=dialect, column_keys=column_keys)
        assert isinstance(compiled, SQLCompiler)
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("HotStatement cannot run statements with expanding parameters")
        escaped = compiled.escaped_bind_names
        binds = {
            escaped.get(name, name): _Bind(
                key=parameter.key,
                name=name,
                placeholder=escaped.get(name, name),
                parameter=parameter,
                process=parameter.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for parameter, name in compiled.bind_names.items()
        }
        order = (
            tuple(binds[name] for name in (compiled.positiontup or ()))
            if compiled.positional
            else tuple(binds.values())
        )
        statement = self.statement
        selected: tuple[sa.ColumnElement[Any], ...] = ()
        if isinstance(statement, sa.Select):
            selected = tuple(statement.selected_columns)
        elif isinstance(statement, sa.sql.dml.UpdateBase):
            selected = tuple(statement.exported_columns)  # what RETURNING gives
        result_processors = tuple(
            (index, process)
            for index, column in enumerate(selected)
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
        )
        return _Plan(
            sql=compiled.string,
            binds=order,
            given=frozenset(column_keys or ()),
            named=not compiled.positional,
            columns=tuple(str(column.key) for column in selected),
            result_processors=result_processors,
        )

    @staticmethod
    def _translate(
        connection: Connection, error: Any, sql: str, parameters: Any, raw: Any
    ) -> sa.exc.StatementError:
        dialect = connection.dialect
        lost = dialect.is_disconnect(error, raw, None)
        if lost:
            connection.invalidate(error)
        translated: sa.exc.StatementError = sa.exc.DBAPIError.instance(
            sql,
            parameters,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        )
        return translated


class BuiltRows(Generic[Built]):
    """Records built from the first row of a hot statement, reused while that row stays the same.

    ``build`` turns the row, as a dict keyed by column name and converted as SQLAlchemy converts
    it, into a record. :meth:`first` runs the statement every time; when the row it reads for a
    key is equal, value for value as the driver gave it, to the row the kept record was built
    from, the kept record is the answer. Records must be immutable: every caller shares them.
    At most ``limit`` keys are kept; past that, all are forgotten and built afresh.
    """

    def __init__(
        self,
        statement: HotStatement,
        build: Callable[[dict[str, Any]], Built],
        *,
        limit: int = 10_000,
    ) -> None:
        self.statement = statement
        self._build = build
        self._limit = limit
        self._kept: dict[Any, tuple[tuple[Any, ...], Built]] = {}

    def first(self, connection: Connection, values: Mapping[str, Any], key: Any) -> Built | None:
        """The record of the first row ``values`` select, or ``None``; ``key`` names the row
        (its primary key)."""
        plan, row = self.statement.first_raw(connection, values)
        if row is None:
            return None
        kept = self._kept.get(key)
        if kept is not None and kept[0] == row:
            return kept[1]
        built = self._build(plan.mapping(row))
        if len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[key] = (row, built)
        return built
