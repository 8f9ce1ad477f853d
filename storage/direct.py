"""Statements built once and run on the driver's own connection, inside the session's transaction.

A ticket rush spends most of its database time not in SQLite or PostgreSQL but in SQLAlchemy's
way to them: ``session.execute`` of a one-row ``SELECT`` costs about 160-210 us of CPU here on
SQLite, of which SQLite itself needs under 10 (autoflush check, ORM execution context, greenlet
hops to the async adapter, the cursor's adaptation, the result's metadata and row objects). For
the few statements every purchase runs, :class:`Prebuilt` keeps what SQLAlchemy worked out once
(the compiled SQL of each dialect, which parameter goes where, each bind and result processor)
and runs the statement straight on the driver: sqlite3 on the loop's thread
(``storage.sqlite_inline``), or asyncpg through the same prepared-statement cache SQLAlchemy's
adapter keeps. About 15 us on SQLite and 90 on PostgreSQL, where the round trip dominates.

It stays inside SQLAlchemy's transaction, never beside it: the statement runs on the connection
the session holds (taking one first, which begins the transaction as any statement would), after
the session's autoflush, so commit, rollback and the ORM's view of the transaction are unchanged.
What it gives up is only what these statements never use: no ORM entities (rows come back as
tuples; a repository builds the objects it hands out), no expanding ``IN`` lists, no
``executemany`` with ``RETURNING``. Errors come out as SQLAlchemy's own (an ``IntegrityError`` is
an ``IntegrityError``) through the connection's own error handling, so a lost connection
invalidates it and the pool as a failed ``session.execute`` would. The engine's
``before_cursor_execute``/``after_cursor_execute`` listeners still hear every statement (the
benchmark's ``--trace-sql`` and the tests that count statements), without an execution context.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import Table, bindparam, exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from storage.greenlets import in_greenlet
from storage.sqlite_inline import begin_inline

__all__ = ["Prebuilt", "Transaction"]

Processor = Callable[[Any], Any] | None
_MISSING = object()
_PG_COUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


class _Plan:
    """One statement compiled for one dialect: its SQL and how to fill and read it."""

    __slots__ = ("binds", "processed", "sql", "width")

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params or compiled.literal_execute_params:
            # Rendered anew on every execution: write a fixed list as ``or_(col == value, ...)``.
            msg = "a statement with expanding (IN) or literal-execute parameters cannot be prebuilt"
            raise ValueError(msg)
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Python-side defaults run in SQLAlchemy's execution context, which is skipped here.
            prefetch = (*compiled.insert_prefetch, *compiled.update_prefetch)
            names = ", ".join(column.key for column in prefetch)
            msg = f"set {names} explicitly: a prebuilt statement runs no Python-side default"
            raise ValueError(msg)
        self.sql = compiled.string
        processors = compiled._bind_processors
        # (key the caller passes, bind name, default value, processor) per positional slot.
        self.binds: list[tuple[str, str, Any, Processor]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.callable is not None:
                msg = f"parameter {name!r} has a callable value: it cannot be prebuilt"
                raise ValueError(msg)
            default = _MISSING if bind.required else bind.value
            self.binds.append((bind.key, name, default, processors.get(name)))
        results = [
            column[3]._cached_result_processor(dialect, None) for column in compiled._result_columns
        ]
        self.width = len(results)
        # (column index, processor) of the columns whose values need one: most need none.
        self.processed = [(index, process) for index, process in enumerate(results) if process]

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for key, name, default, process in self.binds:
            value = params.get(key, _MISSING)
            if value is _MISSING:
                value = params.get(name, default)
                if value is _MISSING:
                    msg = f"a value is required for bind parameter {key!r}"
                    raise KeyError(msg)
            values.append(value if process is None else process(value))
        return tuple(values)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        processed = self.processed
        if not processed:
            return [tuple(row) for row in raw]
        rows = []
        for row in raw:
            if len(row) != self.width:
                msg = f"a row of {len(row)} values for a statement of {self.width} columns"
                raise ValueError(msg)
            values = list(row)
            for index, process in processed:
                values[index] = process(values[index])
            rows.append(tuple(values))
        return rows


class Prebuilt:
    """A Core statement run without SQLAlchemy's per-statement machinery (see the module).

    Build it once, at module level, like the statements it wraps; values go in as a mapping of
    bind parameter names, as with ``session.execute``. ``columns``: for an ``INSERT`` or
    ``UPDATE`` without ``.values()``, the columns it writes (what ``session.execute`` derives
    from the keys of the values passed), each taking the value of its own name.
    """

    __slots__ = ("_plans", "columns", "statement")

    def __init__(self, statement: ClauseElement, *, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = _Plan(self.statement, dialect, self.columns)
        return plan

    async def rows(
        self, on: AsyncSession | Transaction, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run the statement; the rows it returns (none for a statement without any)."""
        return (await self._run(on, params or {}))[0]

    async def first(
        self, on: AsyncSession | Transaction, params: Mapping[str, Any] | None = None
    ) -> tuple[Any, ...] | None:
        rows = (await self._run(on, params or {}))[0]
        return rows[0] if rows else None

    async def rowcount(
        self, on: AsyncSession | Transaction, params: Mapping[str, Any] | None = None
    ) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return (await self._run(on, params or {}))[1]

    async def many(
        self, on: AsyncSession | Transaction, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run a statement that returns no rows once per parameter set (an executemany)."""
        if params:
            await self._run(on, params, many=True)

    async def _run(
        self,
        on: AsyncSession | Transaction,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        many: bool = False,
    ) -> tuple[list[tuple[Any, ...]], int]:
        if isinstance(on, Transaction):
            plan = self._plan(on.dialect)
            return await on.run(plan, params, many=many)
        connection = await _connection(on)
        dialect = connection.dialect
        plan = self._plan(dialect)
        if many:
            arguments: Any = [plan.arguments(one) for one in params]  # type: ignore[union-attr]
        else:
            arguments = plan.arguments(params)  # type: ignore[arg-type]
        sql = plan.sql
        events = connection._has_events or connection.engine._has_events
        if events:
            connection.dispatch.before_cursor_execute(connection, None, sql, arguments, None, many)
        adapted = connection.connection.dbapi_connection
        try:
            raw, count = await _on_driver(dialect, adapted, sql, arguments, many)
        except Exception as error:
            await in_greenlet(_raise_as_sqlalchemy, connection, error, sql, arguments)
            raise  # unreachable: the connection's handler raises
        if events:
            connection.dispatch.after_cursor_execute(connection, None, sql, arguments, None, many)
        return plan.rows(raw), count


def rows_insert(
    table: Table,
    keys: Sequence[str],
    rows: int,
    dialect: str,
    *,
    conflict: Sequence[str],
    returning: Sequence[Any],
) -> Prebuilt:
    """One multi-row ``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING`` of ``rows``
    rows, each row's ``keys`` bound as ``{key}_{row}``: a statement whose values are parameters,
    so SQLAlchemy compiles it once. Callers keep one per row count they meet."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = [
        {key: bindparam(f"{key}_{row}", type_=table.c[key].type) for key in keys}
        for row in range(rows)
    ]
    return Prebuilt(
        insert(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=conflict)
        .returning(*returning)
    )


async def _connection(session: AsyncSession) -> Connection:
    """The connection of the session's transaction, after the session's autoflush."""
    sync = session.sync_session
    if sync.autoflush and not sync._is_clean():
        await session.flush()
    transaction = sync._transaction
    if transaction is not None:
        for held in transaction._connections.values():
            return held[0]  # type: ignore[no-any-return]
    return (await session.connection()).sync_connection  # type: ignore[return-value]


async def _on_driver(
    dialect: Dialect, adapted: Any, sql: str, arguments: Any, many: bool
) -> tuple[list[Any], int]:
    """Run a statement on the connection's driver: its rows, and how many rows it changed."""
    if dialect.name != "sqlite":
        return await _asyncpg(adapted, sql, arguments, many)
    # The inline connection (storage.sqlite_inline) runs SQLite on this thread: the sqlite3
    # connection is called as its own ``_execute`` would.
    sqlite = adapted._connection._connection
    if many:
        return [], sqlite.executemany(sql, arguments).rowcount
    cursor = sqlite.execute(sql, arguments)
    return cursor.fetchall(), cursor.rowcount


async def _asyncpg(adapted: Any, sql: str, arguments: Any, many: bool) -> tuple[list[Any], int]:
    """What SQLAlchemy's asyncpg cursor does for a statement, without the cursor."""
    async with adapted._execute_mutex:
        if adapted._transaction is None:
            await adapted._start_transaction()
        try:
            if many:
                await adapted._connection.executemany(sql, arguments)
                return [], -1
            prepared, _attributes = await adapted._prepare(sql, 0)
            raw = await prepared.fetch(*arguments)
        except Exception as error:
            adapted._handle_exception(error)  # raises it as the adapter's DBAPI error
            raise
        found = _PG_COUNT.match(prepared.get_statusmsg() or "")
        return raw, int(found.group(1)) if found else -1


def _raise_as_sqlalchemy(
    connection: Connection, error: Exception, sql: str, arguments: tuple[Any, ...]
) -> None:
    """The connection's own handling of a driver error: SQLAlchemy's exception class, the
    ``handle_error`` event, and on a lost connection its invalidation and the pool's."""
    connection._handle_dbapi_exception(error, sql, arguments, None, None)  # type: ignore[arg-type]


class Transaction:
    """A transaction of prebuilt statements on a pooled connection, without a session.

    An ORM session's transaction costs far more than the statements of the intake's and the
    outbox's short transactions: the session, its ``SessionTransaction``, a ``Connection``
    with its ``RootTransaction`` and events, and a greenlet hop at each end, about 190 us of CPU
    on SQLite around a one-statement transaction that SQLite runs in under 50 (and as much
    beside PostgreSQL's round trips). Here the connection is taken from the engine's own pool
    (so a waiter is still served by urgency, and the pool's checkout checks still run), the
    transaction is begun and ended on the driver as SQLAlchemy would (``BEGIN IMMEDIATE`` on
    SQLite, asyncpg's transaction through SQLAlchemy's adapter on PostgreSQL), and the
    connection goes back through the pool's own check-in, which rolls back whatever was left
    open.

    ``async with Transaction(engine) as tx:`` commits when the block ends normally and rolls
    back when it raises or is cancelled. Only :class:`Prebuilt` statements run on it. Errors
    come out as SQLAlchemy's (an ``IntegrityError`` is an ``IntegrityError``); a lost connection
    is invalidated with the whole pool, as a ``Connection`` does. The engine's listeners hear its
    statements (``before_cursor_execute``, ``after_cursor_execute``), its ``commit`` and its
    ``rollback``, with the transaction itself where a ``Connection`` would be.

    It takes a connection as a session does: on SQLite, whose engine has one, never open it
    while the same task's session holds a transaction (it would wait for that session forever).
    The adapter's internals it uses are SQLAlchemy 2.1's (``pyproject.toml`` pins the minor).

    ``autocommit=True``, for a block whose statements each stand on their own (each is right
    whether or not the next one runs, as a single statement always is): on PostgreSQL every
    statement is then its own transaction, without the ``BEGIN`` and the ``COMMIT``, two round
    trips and their turns of the event loop out of three for a one-statement block. On SQLite the
    block stays one transaction: its ``BEGIN`` and ``COMMIT`` are calls in this process, nothing
    to save, and one writer at a time needs the lock taken at the start.
    """

    __slots__ = ("_autocommit", "_engine", "_fairy", "adapted", "dialect")

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = False) -> None:
        self._engine = engine.sync_engine
        self.dialect: Dialect = self._engine.dialect
        self._autocommit = autocommit and self.dialect.name != "sqlite"
        self._fairy: Any = None
        self.adapted: Any = None

    async def __aenter__(self) -> Transaction:
        self._fairy = await in_greenlet(self._engine.raw_connection)
        self.adapted = self._fairy.dbapi_connection
        if self._autocommit:
            self.adapted.autocommit = True  # the adapter begins nothing (given back as it was)
        if self.dialect.name == "sqlite":
            try:
                await begin_inline(self.adapted._connection)
            except BaseException as error:
                await self._give_back()
                if isinstance(error, Exception):
                    await self._raise(error, "BEGIN IMMEDIATE", (), many=False)
                raise
        # PostgreSQL: begun by the first statement, as SQLAlchemy's adapter begins it.
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fairy is None:
            return
        if kind is not None:
            if self._engine._has_events:
                self._engine.dispatch.rollback(self)  # type: ignore[arg-type]
            await self._give_back()  # the pool's check-in rolls back
            return
        try:
            await self._commit()
        except BaseException:
            await self._give_back()
            raise
        # Committed: the check-in has nothing to roll back, so it never waits and cannot be
        # interrupted. Not shielded, which would cost a task and a turn of the event loop.
        fairy, self._fairy = self._fairy, None
        self._end_autocommit()
        await in_greenlet(fairy.close)

    def _end_autocommit(self) -> None:
        if self._autocommit:
            self.adapted.autocommit = False  # back to the engine's isolation level

    async def _commit(self) -> None:
        adapted = self.adapted
        if self._engine._has_events:
            self._engine.dispatch.commit(self)  # type: ignore[arg-type]
        try:
            if self.dialect.name == "sqlite":
                sqlite = adapted._connection._connection
                if sqlite.in_transaction:
                    sqlite.execute("COMMIT")
            elif adapted._transaction is not None:
                try:
                    await adapted._call_and_discard(adapted._transaction.commit)
                except Exception as error:
                    adapted._handle_exception(error)  # raises it as the adapter's DBAPI error
        except Exception as error:
            await self._raise(error, "COMMIT", (), many=False)

    async def _give_back(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            self._end_autocommit()
            # Shielded: a connection is never left half given back by a cancellation.
            await asyncio.shield(in_greenlet(fairy.close))

    async def run(
        self,
        plan: _Plan,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        many: bool,
    ) -> tuple[list[tuple[Any, ...]], int]:
        if self._fairy is None:
            msg = "the transaction has ended"
            raise RuntimeError(msg)
        if many:
            arguments: Any = [plan.arguments(one) for one in params]  # type: ignore[union-attr]
        else:
            arguments = plan.arguments(params)  # type: ignore[arg-type]
        sql = plan.sql
        engine = self._engine
        events = engine._has_events
        if events:
            engine.dispatch.before_cursor_execute(self, None, sql, arguments, None, many)  # type: ignore[arg-type]
        try:
            raw, count = await _on_driver(self.dialect, self.adapted, sql, arguments, many)
        except Exception as error:
            await self._raise(error, sql, arguments, many=many)
        if events:
            engine.dispatch.after_cursor_execute(self, None, sql, arguments, None, many)  # type: ignore[arg-type]
        return plan.rows(raw), count

    async def _raise(self, error: Exception, sql: str, arguments: Any, *, many: bool) -> None:
        """Raise a driver error as SQLAlchemy's; a lost connection invalidates the pool."""
        dialect = self.dialect
        base = dialect.loaded_dbapi.Error
        if not isinstance(error, base):
            raise error
        disconnect = dialect.is_disconnect(error, self._fairy, None)
        if disconnect and self._fairy is not None:
            fairy, self._fairy = self._fairy, None
            # As a Connection does: this connection is closed, and the pool's older ones too.
            await asyncio.shield(in_greenlet(self._engine.pool._invalidate, fairy, error))
        raise exc.DBAPIError.instance(
            sql,
            arguments,
            error,
            base,
            connection_invalidated=disconnect,
            dialect=dialect,
            ismulti=many,
        ) from error
