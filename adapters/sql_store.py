"""The SQL store of the edges: read models, the webhook inbox, the relay's position and the API
keys, all in the Ledger's own database (the same PostgreSQL schema, or the same SQLite file).

Read models are eventsourcing tracking recorders extended with Sluice's tables, written with the
library's own transaction and ``_insert_tracking`` so that rows and the tracking position commit
together: a redelivered batch fails its tracking insert and changes nothing.

SQL is written once, portable between PostgreSQL and SQLite: ``%s`` placeholders (rewritten to
``?`` for SQLite) and table names starting with ``rm_`` or ``sl_`` (schema-qualified for
PostgreSQL). The protocols the read side codes against are in ``projections.store``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from projections.store import ReadModel, Tx

READ_MODEL_ENV_NAME = "ReadModel"  # PostgreSQL tracking table: readmodel_tracking
_TABLE = re.compile(r"\b(rm|sl)_")  # rm_: read models; sl_: other Sluice tables (inbox)


class _Tx:
    """A cursor with one SQL dialect for the projections (``%s`` placeholders, rm_ tables)."""

    def __init__(self, cursor: Any, rewrite: Any) -> None:
        self._cursor = cursor
        self._rewrite = rewrite

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._rewrite(sql), list(params))

    def execute_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows, in order (psycopg pipelines it: one round trip)."""
        self._cursor.executemany(self._rewrite(sql), [list(p) for p in params])

    def all(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._cursor.fetchall()]

    def one(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return dict(row) if row is not None else None


class _ReadModelMixin:
    dialect = "?"
    datastore: Any

    def sql(self, statement: str) -> str:
        raise NotImplementedError

    @contextmanager
    def write(self, tracking: Tracking | None) -> Iterator[Tx]:
        """One transaction for a batch's rows and its tracking position."""
        with self.datastore.transaction(commit=True) as cursor:
            if tracking is not None:
                self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            yield _Tx(cursor, self.sql)

    @contextmanager
    def write_tracked(self, trackings: Sequence[Tracking]) -> Iterator[Tx]:
        """One transaction for several projections' rows and each one's tracking position (a
        rebuild's page: one commit for every read model, where each took one of its own)."""
        with self.datastore.transaction(commit=True) as cursor:
            for tracking in trackings:
                self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            yield _Tx(cursor, self.sql)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self.datastore.transaction(commit=False) as cursor:
            yield _Tx(cursor, self.sql)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One read statement's rows."""
        with self.read() as tx:
            tx.execute(statement, params)
            return tx.all()

    def write_one(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One write statement, committed alone (a statement is atomic); its RETURNING rows."""
        with self.write(None) as tx:
            tx.execute(statement, params)
            return tx.all()


class PostgresReadModel(_ReadModelMixin, PostgresTrackingRecorder):
    dialect = "postgres"

    def reset_tracking(self, tx: Tx, application_name: str) -> None:
        tx.execute(
            f'DELETE FROM "{self.datastore.schema}"."{self.tracking_table_name}"'
            " WHERE application_name = %s",
            (application_name,),
        )

    def sql(self, statement: str) -> str:
        return _qualified(self.datastore.schema, statement)

    def drop_index(self, tx: Tx, name: str) -> None:
        """The read models' index ``name`` (in their schema: not on the search path)."""
        tx.execute(f'DROP INDEX IF EXISTS "{self.datastore.schema}"."{name}"')

    def index_exists(self, tx: Tx, name: str) -> bool:
        """From the catalog, without a lock on the table (``CREATE INDEX IF NOT EXISTS`` takes
        a SHARE lock before it finds the index there, waiting for every writer)."""
        tx.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS found", (f'"{self.datastore.schema}"."{name}"',)
        )
        row = tx.one()
        return bool(row and row["found"])

    @contextmanager
    def write_tracked(self, trackings: Sequence[Tracking]) -> Iterator[Tx]:
        """As the base's, in psycopg's pipeline mode: a rebuild's page (a few dozen statements,
        BEGIN and COMMIT) goes without waiting for each result; an error still fails the page
        (at the next sync: a read, or the commit) and rolls it back. Why: each wait for a
        result was also a wait for the GIL, which the thread decoding the next page holds for
        up to the switch interval, so a page's writer spent most of its time waiting."""
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            for tracking in trackings:
                self._insert_tracking(cursor, tracking)
            yield _Tx(cursor, self.sql)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One read statement's rows in one round trip: the pool's connections are in
        autocommit, and one statement reads one snapshot, so no BEGIN/ROLLBACK around it (a
        balance read was four round trips). psycopg prepares it from its fifth use."""
        with self.datastore.get_connection() as conn:
            return list(conn.execute(self.sql(statement), list(params)).fetchall())

    def write_one(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One write statement in one round trip: autocommit commits it, atomic on its own
        (BEGIN and COMMIT were two more round trips, each a wait for the GIL in a busy server).
        Returns its RETURNING rows."""
        with self.datastore.get_connection() as conn:
            cursor = conn.execute(self.sql(statement), list(params))
            return list(cursor.fetchall()) if cursor.description else []

    def add_ddl(self, statements: Sequence[str]) -> None:
        from psycopg.sql import SQL

        for ddl in statements:
            self.sql_create_statements.append(SQL(self.sql(_pg_types(ddl))))  # type: ignore[arg-type]


class SQLiteReadModel(_ReadModelMixin, SQLiteTrackingRecorder):
    dialect = "sqlite"

    def reset_tracking(self, tx: Tx, application_name: str) -> None:
        tx.execute("DELETE FROM tracking WHERE application_name = %s", (application_name,))

    def drop_index(self, tx: Tx, name: str) -> None:
        tx.execute(f'DROP INDEX IF EXISTS "{name}"')

    def index_exists(self, tx: Tx, name: str) -> bool:
        tx.execute(
            "SELECT count(*) AS found FROM sqlite_master WHERE type = 'index' AND name = %s",
            (name,),
        )
        row = tx.one()
        return bool(row and row["found"])

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?")

    def add_ddl(self, statements: Sequence[str]) -> None:
        # The statement list is built in __init__; extend it the same way PostgreSQL's is.
        self.create_table_statements.extend(statements)


@functools.lru_cache(maxsize=1024)  # the statements are the code's own: a bounded set
def _qualified(schema: str, statement: str) -> str:
    """rm_/sl_ tables schema-qualified; cached, as every query went through the regex."""
    return _TABLE.sub(lambda m: f'"{schema}".{m.group(0)}', statement)


def _pg_types(ddl: str) -> str:
    return ddl  # the portable DDL uses TEXT and BIGINT, which both dialects accept


def open_read_model(env: dict[str, str], ddl: Sequence[str]) -> ReadModel:
    """Builds the read model on the Ledger's store; creates tables when CREATE_TABLE=y."""
    factory = InfrastructureFactory.construct(Environment(READ_MODEL_ENV_NAME, env))
    module = env.get("PERSISTENCE_MODULE", "")
    cls: type[TrackingRecorder]
    if module.endswith("postgres"):
        cls = PostgresReadModel
    elif module.endswith("sqlite"):
        cls = SQLiteReadModel
    else:
        raise ValueError("read models need PostgreSQL or SQLite (memory:// has no SQL)")
    create = env.get("CREATE_TABLE", "y").lower() in ("y", "yes", "t", "true", "1", "on")
    view: Any = factory.tracking_recorder(cls)  # type: ignore[arg-type]
    view.add_ddl(ddl)
    if create:
        view.create_table()
    return view  # type: ignore[no-any-return]


# The relay's position in the event log (the outbox's cursor: it can't be rebuilt from events).
# Its table, ``sl_relay_position``, comes from the migrations (migrations/, `sluice db migrate`).


def relay_position(view: ReadModel, name: str) -> int:
    """The last log position the named relay published (0: none yet)."""
    with view.read() as tx:
        tx.execute("SELECT position FROM sl_relay_position WHERE name = %s", (name,))
        row = tx.one()
    return int(row["position"]) if row else 0


def set_relay_position(view: ReadModel, name: str, position: int) -> None:
    with view.write(None) as tx:
        tx.execute(
            "INSERT INTO sl_relay_position (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )
