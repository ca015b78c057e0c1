"""Maps a database URL onto the eventsourcing environment of the Ledger application, and gives
PostgreSQL connections their timeouts per role (see ``guard_postgres``)."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

from eventsourcing.persistence import Notification

from adapters import deadlines
from adapters.settings import Settings, role_timeouts

log = logging.getLogger("sluice.persistence")
_BIGINT_MAX = 2**63 - 1  # a page read's stop when none is given: the head, whatever it is


class DatabaseUrlError(ValueError):
    pass


def describe(url: str) -> str:
    """The URL without its password, for logs and banners."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def ledger_env(settings: Settings, *, create_tables: bool, role: str = "admin") -> dict[str, str]:
    url = settings.database_url
    parsed = urlparse(url)
    env: dict[str, str] = {
        # Tables are created by `sluice db init`, not by every process at start-up: concurrent
        # start-up DDL fails with "tuple concurrently updated".
        "CREATE_TABLE": "y" if create_tables else "n",
        # eventsourcing reads "0" as an unbounded cache; an empty value turns it off.
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_maxsize or ""),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    if parsed.scheme == "memory":
        env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
    elif parsed.scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseUrlError(f"expected sqlite:///path, got {url!r}")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": str(settings.sqlite_lock_timeout_s),
        }
    elif parsed.scheme in ("postgres", "postgresql"):
        if not parsed.path.strip("/"):
            raise DatabaseUrlError(f"the PostgreSQL URL names no database: {describe(url)}")
        query = parse_qs(parsed.query)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parsed.path.strip("/")),
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_SCHEMA": query.get("schema", ["public"])[0],
            "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(settings.postgres_max_overflow),
            # eventsourcing uses this as the pool's wait timeout; guard_postgres sets the real
            # wait (per role) and libpq's connect_timeout separately.
            "POSTGRES_CONNECT_TIMEOUT": str(settings.postgres_connect_timeout_s),
            "POSTGRES_LOCK_TIMEOUT": str(settings.postgres_lock_timeout_s),
            # Whole seconds (eventsourcing SETs it after connecting); 0 turns it off.
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(
                math.ceil(role_timeouts(settings, role).idle_in_transaction_s)
            ),
            # Broken in eventsourcing 9.5.6 (drops the table lock, misroutes events): keep off.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
    else:
        raise DatabaseUrlError(
            f"unsupported database URL {describe(url)!r}: use sqlite:///path, "
            "postgresql://user@host:port/db or memory://"
        )
    return env


def ensure_postgres_schema(url: str) -> None:
    """Creates the URL's ``?schema=`` if missing (eventsourcing creates tables, not schemas)."""
    import psycopg

    parsed = urlparse(url)
    schema = parse_qs(parsed.query).get("schema", ["public"])[0]
    conninfo = url.split("?", 1)[0]
    # IF NOT EXISTS is not atomic: two processes migrating at once can both find the schema
    # missing, and the second CREATE then fails on the catalog's unique key. It exists: fine.
    with (
        psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn,
        suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema),
    ):
        conn.execute(
            psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema))
        )


def postgres_absence_probe(recorder: Any) -> Callable[[Sequence[UUID]], set[UUID]]:
    """One query for a whole batch: which of these aggregate ids have no events yet."""
    from psycopg.sql import SQL, Identifier

    schema, table = recorder.datastore.schema, recorder.events_table_name
    statement = SQL(
        "SELECT DISTINCT originator_id FROM {}.{} WHERE originator_id = ANY(%s)"
    ).format(Identifier(schema), Identifier(table))

    def probe(ids: Sequence[UUID]) -> set[UUID]:
        if not ids:
            return set()
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(ids)], prepare=True)
            present = {row["originator_id"] for row in curs.fetchall()}
        return set(ids) - present

    return probe


def postgres_version_probe(
    recorder: Any,
) -> Callable[[Sequence[UUID]], tuple[dict[UUID, int], int]]:
    """One query for a whole batch: the head version of each of these aggregates (absent ids are
    left out), and the store's newest notification id as the same snapshot saw it. One index
    probe per id (``max`` on the primary key), however long its history, and one for the head."""
    from psycopg.sql import SQL, Identifier

    schema, table = recorder.datastore.schema, recorder.events_table_name
    statement = SQL(
        "SELECT i.id AS originator_id, (SELECT max(e.originator_version) FROM {0}.{1} e"
        " WHERE e.originator_id = i.id) AS version,"
        " (SELECT coalesce(max(notification_id), 0) FROM {0}.{1}) AS head"
        " FROM unnest(%s::uuid[]) AS i(id)"
    ).format(Identifier(schema), Identifier(table))

    def probe(ids: Sequence[UUID]) -> tuple[dict[UUID, int], int]:
        if not ids:
            return {}, 0
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(dict.fromkeys(ids))], prepare=True)
            rows = curs.fetchall()
        heads = {row["originator_id"]: row["version"] for row in rows if row["version"] is not None}
        return heads, int(rows[0]["head"]) if rows else 0

    return probe


WRITER_LOCK_NAME = "ledger-writer"


def postgres_page_reader(recorder: Any) -> Callable[..., list[Notification]]:
    """The read side's page of the log (``ledger.engine.PageReader``) in one statement: the
    topics to skip are left out by the server, and rows come as tuples (psycopg's dict rows
    were 12% of a rebuild's decoding thread)."""
    from psycopg.rows import tuple_row
    from psycopg.sql import SQL, Identifier

    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{}"
        # ``+ 0``: the upper bound is a filter, not an index bound; as a bound it had the
        # planner estimate the range, pick a bitmap scan of all of it and sort (50 ms a page
        # of 2,000 against 2.5 ms walking the index in order until the page is full).
        " WHERE notification_id > %s AND notification_id + 0 <= %s AND NOT (topic = ANY(%s))"
        " ORDER BY notification_id LIMIT %s"
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))

    def read(
        start: int, limit: int, stop: int | None, skip_topics: Sequence[str]
    ) -> list[Notification]:
        last = _BIGINT_MAX if stop is None else stop
        with (
            recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(query, (start, last, list(skip_topics), limit), prepare=True)
            return [
                Notification(
                    id=row[0],
                    originator_id=row[1],
                    originator_version=row[2],
                    topic=row[3],
                    state=bytes(row[4]),
                )
                for row in cursor.fetchall()
            ]

    return read


class PostgresWriterLock:
    """The store's writer lock: a session advisory lock on a dedicated autocommit connection
    (keyed by the schema, as ``adapters.locks``), taken around one batch by an engine that met
    a conflict (see ``ledger.engine.CONTENTION_WINDOW_S``). The server drops it if the process
    dies. Used under the engine's write lock: one batch at a time per process."""

    def __init__(self, conninfo: str, schema: str, settings: Settings, role: str) -> None:
        from adapters.locks import advisory_key

        self.conninfo = conninfo
        self.key = advisory_key(schema, WRITER_LOCK_NAME)
        self.options = connect_options(settings, role)
        self.conn: Any = None
        self.held = False  # this process's batch has its turn (see take_turns)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        """Holds the lock around the block. The lock only orders writers (a stale read still
        fails on its version), so if it cannot be had the block runs without it, and an unlock
        that fails ends the session instead (the server drops the lock): neither turns a batch
        into an error, nor a recorded batch into a failure."""
        if not self._lock():
            yield
            return
        self.held = True
        try:
            yield
        finally:
            self.held = False
            try:
                with guarded_psycopg(self.conn, "writer-lock"):
                    self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,), prepare=True)
            except Exception as error:
                log.warning("writer lock: unlock failed, session closed: %s", error)
                self.close()

    def _lock(self) -> bool:
        import psycopg

        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, **self.options)
            with guarded_psycopg(self.conn, "writer-lock"):
                self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,), prepare=True)
        except Exception as error:
            log.warning("writer lock unavailable, writing without it: %s", error)
            self.close()
            return False
        return True

    def close(self) -> None:
        if self.conn is not None:
            with suppress(Exception):
                self.conn.close()
            self.conn = None


# Topics an array literal carries as they are: eventsourcing's module:qualname topics (with
# <locals> for classes made inside functions). Anything else is bound as a parameter.
_PLAIN_TOPIC = re.compile(r"[A-Za-z0-9_.:<>]+")


def _event_arrays(stored_events: Sequence[Any]) -> str | None:
    """The events as the four ``unnest`` arguments, written as SQL literals, or None when one
    value is not of a shape that needs no escaping (then they are bound as parameters).

    Why literals: psycopg's client-side binding quotes each array element in Python; for a
    payment's six events that, its list dumpers and their quoting were 12% of the writer's
    time. Here every element is made only of characters that need no escaping in an array
    literal or an SQL string: a UUID's text, an int's digits, a plain topic in double quotes
    (so that a topic spelled NULL stays a string), and the state in hex, decoded by the server
    (``decode(s, 'hex')``; no backslashes, so ``standard_conforming_strings`` cannot matter)."""
    ids: list[str] = []
    versions: list[str] = []
    topics: list[str] = []
    states: list[str] = []
    for event in stored_events:
        originator_id, version, topic = event.originator_id, event.originator_version, event.topic
        if type(originator_id) is not UUID or type(version) is not int:
            return None
        if type(topic) is not str or _PLAIN_TOPIC.fullmatch(topic) is None:
            return None
        ids.append(str(originator_id))
        versions.append(str(version))
        topics.append(f'"{topic}"')
        states.append(f'"{bytes(event.state).hex()}"')  # quoted: an empty state is ""
    return (
        f"'{{{','.join(ids)}}}'::uuid[], '{{{','.join(versions)}}}'::bigint[], "
        f"'{{{','.join(topics)}}}'::text[], '{{{','.join(states)}}}'::text[]"
    )


@dataclass(frozen=True)
class _InsertStatements:
    """``take_turns``' query strings (see there), rendered once per recorder."""

    in_turn: str  # the statements before the INSERT, inside the writer's turn
    outside_turn: str  # and outside it: the shared advisory lock first
    insert: str  # {arrays}, then {check}: empty, or a WHERE on the store's head
    check: str  # {expected}
    bound: Any  # the INSERT with the arrays and expected head bound as parameters

    def query(
        self, stored_events: Sequence[Any], expected: int | None, *, in_turn: bool
    ) -> tuple[Any, Any]:
        """The query and its parameters: the arrays as literals when they can be, else bound."""
        from psycopg.sql import SQL

        before_insert = self.in_turn if in_turn else self.outside_turn
        arrays = _event_arrays(stored_events)
        if arrays is not None:
            check = "" if expected is None else self.check.format(expected=int(expected))
            return before_insert + self.insert.format(arrays=arrays, check=check), None
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            expected,
            expected,
        )
        return SQL(before_insert.replace("%", "%%")) + self.bound, params


def _insert_statements(recorder: Any, lock: PostgresWriterLock) -> _InsertStatements:
    from psycopg.sql import SQL, Identifier

    table = (Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    # The head as the insert finds it, under the table lock: nothing can commit in between.
    head = SQL("SELECT coalesce(max(notification_id), 0) AS head FROM {}.{}").format(*table)
    # With a HeadCheck's expected head: inserts all the rows only if it still is.
    newest = SQL("(SELECT coalesce(max(notification_id), 0) FROM {0}.{1})").format(*table)
    columns = SQL("INSERT INTO {0}.{1} (originator_id, originator_version, topic, state)").format(
        *table
    )
    bound = SQL(
        "{columns} SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
        " WHERE %s::bigint IS NULL OR {newest} = %s::bigint RETURNING notification_id"
    ).format(columns=columns, newest=newest)
    # eventsourcing's own statements: SET LOCAL lock_timeout and LOCK TABLE ... EXCLUSIVE.
    table_lock = list(recorder.lock_table_statements)
    notify = SQL("NOTIFY {}").format(Identifier(recorder.channel_name))
    turn = SQL("SELECT pg_advisory_xact_lock_shared({})").format(lock.key)

    def text(*parts: Any) -> str:
        return str(SQL("; ").join(parts).as_string(None)) + "; "

    return _InsertStatements(
        in_turn=text(*table_lock, notify, head),
        outside_turn=text(turn, *table_lock, notify, head),
        insert=columns.as_string(None).replace("{", "{{").replace("}", "}}")
        + " SELECT i, v, t, decode(s, 'hex') FROM unnest({arrays}) AS u(i, v, t, s){check}"
        " RETURNING notification_id",
        check=" WHERE "
        + newest.as_string(None).replace("{", "{{").replace("}", "}}")
        + " = {expected}",
        bound=bound,
    )


def take_turns(recorder: Any, lock: PostgresWriterLock) -> None:
    """Makes ``recorder`` insert each batch of events in one round trip, waiting while another
    process has its writer turn.

    One round trip: eventsourcing's pipeline (BEGIN, table lock, NOTIFY, INSERT, sync, COMMIT)
    cost two round trips and 0.3 ms more than the statements (6 events: 1.1 ms against 0.63 ms
    as one query string, on this machine). As one simple query PostgreSQL runs it as one
    implicit transaction: all of it commits, or an error (a version taken) rolls all of it
    back, leaving the connection idle. The events go as four plain arrays, written as literals
    (``_event_arrays``; psycopg dumped eventsourcing's composite type in Python: 8% of a
    payment, and then quoted the arrays' elements: 12% of the writer's time). Same rows, order
    (``unnest`` keeps it, and the notification ids), table lock and NOTIFY.

    Head check (``ledger.engine.HeadCheck``): the query reads the newest notification id under
    the table lock, reports it, and with an expected head inserts the rows only if it is still
    that one (no other writer wrote since), or stores nothing and raises ``StaleHeadError``.

    Turns: a batch that met a conflict runs under the writer lock (exclusive); a process
    writing without it could commit between its read and its write, every time under load on
    a hot aggregate (48 409s in 3,375 payments from four processes). So every insert takes the
    lock *shared* (``pg_advisory_xact_lock_shared``): inserts run side by side, but none
    commits during a turn. The turn's own insert skips it (``lock.held``): it would wait on
    itself."""
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError
    from eventsourcing.utils import retry

    from ledger.engine import HeadCheck, StaleHeadError

    base = type(recorder)
    statements = _insert_statements(recorder, lock)

    class TurnTakingRecorder(base):  # type: ignore[misc, valid-type]
        # eventsourcing's own retry of a connection that failed (a pooled one gone stale);
        # a retry of an insert that did commit meets its versions taken: a conflict, replayed.
        @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
        def insert_events(self, stored_events: Any, **kwargs: Any) -> Any:
            if kwargs.get("tracking") is not None:  # a process application's: not the ledger's
                return super().insert_events(stored_events, **kwargs)
            if not stored_events:
                return []
            check: HeadCheck | None = kwargs.get("head_check")
            expected = check.expected if check is not None else None
            query, params = statements.query(stored_events, expected, in_turn=lock.held)
            before: int | None = None
            with self.datastore.get_connection() as conn, psycopg.ClientCursor(conn) as curs:
                curs.execute(query, params)
                while curs.nextset():  # the head, then the INSERT's ids, come last
                    if curs.description and curs.description[0].name == "head":
                        before = int(curs.fetchone()["head"])
                ids = [row["notification_id"] for row in curs.fetchall()]
            if check is not None:
                check.before = before
            if not ids and expected is not None:
                raise StaleHeadError(f"the store's head moved past {expected} (now {before})")
            if len(ids) != len(stored_events):
                raise ProgrammingError(f"{len(ids)} notification ids for {len(stored_events)}")
            return ids

    TurnTakingRecorder.__name__ = f"TurnTaking{base.__name__}"
    recorder.__class__ = TurnTakingRecorder


# Connection roles and deadlines -----------------------------------------------------------------


def guard_postgres(datastore: Any, settings: Settings, role: str) -> Any:
    """Gives an eventsourcing ``PostgresDatastore`` the timeouts of ``role`` (api, worker,
    projector, admin; see ``Settings``) and makes its connections honour deadlines.

    - server side, per connection: ``statement_timeout`` and ``idle_in_transaction_session_timeout``
      (a slow query or a forgotten transaction ends there, cleanly, when the server is alive);
    - client side: libpq's ``connect_timeout``, a bounded wait for a pooled connection (never
      past the current deadline), and the deadline watchdog, which closes a connection still in
      use when the deadline (or the role's cap on one checkout) passes: the only timeout that
      works when the server itself is frozen.

    Returns the datastore (its class swapped for ``GuardedDatastore``; nothing else changes).
    """
    from eventsourcing.postgres import PostgresDatastore

    if not isinstance(datastore, PostgresDatastore):
        return datastore
    timeouts = role_timeouts(settings, role)
    options = [
        f"-c statement_timeout={int(timeouts.statement_s * 1000)}",
        f"-c idle_in_transaction_session_timeout={int(timeouts.idle_in_transaction_s * 1000)}",
    ]
    kwargs = datastore.pool.kwargs
    kwargs["options"] = " ".join(options)
    kwargs["application_name"] = f"sluice-{role}"
    kwargs["connect_timeout"] = settings.postgres_connect_timeout_s
    datastore.pool.timeout = timeouts.pool_wait_s
    datastore.__class__ = GuardedDatastore
    datastore.sluice_role = role
    datastore.sluice_checkout_cap_s = timeouts.checkout_cap_s
    return datastore


def _guarded_class() -> type:
    import psycopg
    from eventsourcing.persistence import (
        DatabaseError,
        DataError,
        IntegrityError,
        InterfaceError,
        InternalError,
        NotSupportedError,
        OperationalError,
        PersistenceError,
        ProgrammingError,
    )
    from eventsourcing.postgres import PostgresDatastore
    from psycopg_pool import PoolTimeout
    from psycopg_pool.errors import TooManyRequests

    translations: list[tuple[type[BaseException], type[PersistenceError]]] = [
        (psycopg.InterfaceError, InterfaceError),
        (psycopg.OperationalError, OperationalError),
        (psycopg.DataError, DataError),
        (psycopg.IntegrityError, IntegrityError),
        (psycopg.InternalError, InternalError),
        (psycopg.ProgrammingError, ProgrammingError),
        (psycopg.NotSupportedError, NotSupportedError),
        (psycopg.DatabaseError, DatabaseError),
        (psycopg.Error, PersistenceError),
    ]

    class GuardedDatastore(PostgresDatastore):
        """``PostgresDatastore`` whose connections are bounded by the current deadline."""

        sluice_role = "admin"
        sluice_checkout_cap_s: float | None = None

        @contextmanager
        def get_connection(self) -> Iterator[Any]:
            deadline = deadlines.current()
            cap = self.sluice_checkout_cap_s
            if cap is not None:
                capped = time.monotonic() + cap
                deadline = capped if deadline is None else min(deadline, capped)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise deadlines.DeadlineExceeded("no time left to use the database")
            wait = self.pool.timeout if left is None else max(0.001, min(self.pool.timeout, left))
            watch = None
            try:
                self.pool.open(False, 30.0)
                with self.pool.connection(timeout=wait) as conn:
                    for info in self.psycopg_type_adapters.values():
                        if not conn.adapters.types.get(info.oid):
                            from psycopg.types.composite import register_composite

                            register_composite(info, conn)
                    fd = deadlines.socket_fd(conn)
                    if deadline is None or fd is None:
                        yield conn
                    else:
                        with deadlines.WATCHDOG.watch(fd, deadline, self.sluice_role) as watch:
                            yield conn
            except (PoolTimeout, TooManyRequests) as error:
                if deadline is not None and time.monotonic() >= deadline - 0.01:
                    raise deadlines.DeadlineExceeded(
                        "no database connection came free before the deadline"
                    ) from error
                raise OperationalError(str(error)) from error
            except psycopg.errors.QueryCanceled as error:
                # statement_timeout (or a cancel): the statement ended, its transaction rolled back
                raise deadlines.DeadlineExceeded(f"the statement timed out: {error}") from error
            except psycopg.Error as error:
                if watch is not None and watch.fired:
                    raise deadlines.DeadlineExceeded(
                        "the database did not answer before the deadline; its connection was"
                        " closed (an open transaction rolls back)"
                    ) from error
                for source, target in translations:
                    if isinstance(error, source):
                        raise target(str(error)) from error
                raise

    return GuardedDatastore


GuardedDatastore: Any = _guarded_class()


@contextmanager
def guarded_psycopg(conn: Any, role: str = "lock") -> Iterator[Any]:
    """Watches a plain psycopg connection (advisory locks, singletons) under the current deadline:
    closed when the deadline passes while the block still runs."""
    deadline = deadlines.current()
    fd = deadlines.socket_fd(conn)
    if deadline is None or fd is None:
        yield conn
        return
    with deadlines.WATCHDOG.watch(fd, deadline, role) as watch:
        try:
            yield conn
        except Exception as error:
            if watch.fired:
                raise deadlines.DeadlineExceeded(
                    f"the database did not answer before the deadline ({role})"
                ) from error
            raise


def connect_options(settings: Settings, role: str) -> dict[str, Any]:
    """libpq keyword arguments giving a plain psycopg connection the timeouts of ``role``."""
    timeouts = role_timeouts(settings, role)
    return {
        "connect_timeout": settings.postgres_connect_timeout_s,
        "application_name": f"sluice-{role}",
        "options": (
            f"-c statement_timeout={int(timeouts.statement_s * 1000)}"
            f" -c idle_in_transaction_session_timeout={int(timeouts.idle_in_transaction_s * 1000)}"
        ),
    }
