"""Named locks on the store, one holder per (store, name), released by the system when the holder
dies: what keeps a second relay, scheduler, projector or migrator from starting beside a running
one.

- PostgreSQL: a session advisory lock on a dedicated autocommit connection, keyed by the store's
  schema and the name (two test schemas in one database never collide). The server drops it when
  the session ends: exit, crash, or a lost network.
- SQLite: ``flock`` on a file beside the database (``<db>.<name>.lock``); the kernel drops it when
  the process exits. Not ``BEGIN IMMEDIATE`` held open: that would block every writer of the
  file, and the embedded store has one writer at a time.
- ``memory://``: one process by definition; always granted.

The holder (pid, host, since) is written where a loser can read it, so the loser can say who
runs: the ``sl_lock_holders`` table (migration 0002) on PostgreSQL, the lock file on SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from adapters import deadlines
from adapters.settings import Settings

log = logging.getLogger("sluice.locks")

LOCK_QUERY_S = 10.0  # deadline of one attempt to connect and take the lock
RETRY_S = 1.0  # a waiting instance tries again this often


class LockBusy(RuntimeError):
    """Another process holds the lock; the message says who (one line, for the CLI)."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: int  # unix seconds

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"pid {self.pid}, host {self.host}, since {since}"

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), int(time.time()))


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def postgres_schema(url: str) -> str:
    return parse_qs(urlparse(url).query).get("schema", ["public"])[0]


def sqlite_path(url: str) -> str | None:
    """The SQLite file of ``url`` (None for ``:memory:`` or a non-SQLite URL)."""
    if not url.startswith("sqlite:///"):
        return None
    path = unquote(url[len("sqlite:///") :])
    return None if path in ("", ":memory:") else path


def advisory_key(schema: str, name: str) -> int:
    """A signed 64-bit key from (schema, name): the same in every process, distinct per store."""
    digest = hashlib.sha256(f"sluice:{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LockSession:
    """One autocommit PostgreSQL session for advisory locks; several locks may share it (a
    projector's read models: one connection, not one per read model)."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.conn: Any = None

    def connect(self) -> Any:
        """The open session, (re)connected if it is missing or broken."""
        import psycopg

        from adapters.persistence import connect_options

        if self.conn is None or self.conn.broken or self.conn.closed:
            self.close()
            self.conn = psycopg.connect(
                self.settings.database_url.split("?", 1)[0],
                autocommit=True,
                **connect_options(self.settings, self.role),
            )
        return self.conn

    def close(self) -> None:
        """Ends the session: every lock it holds goes with it."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception as error:  # already broken: nothing left to end
                log.debug("closing the lock session: %s", error)
            self.conn = None


class StoreLock:
    """``try_acquire`` takes the lock or says no at once; ``wait_acquire`` waits (bounded).
    ``conn`` is the PostgreSQL session holding it (None elsewhere); ``close`` releases it.
    Locks given one ``session`` share its connection; ``close_session`` ends it for all."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        role: str = "worker",
        record: bool = True,
        session: LockSession | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.role = role
        self.record = record  # write the holder row (needs migration 0002)
        self.url = settings.database_url
        self.session = session or LockSession(settings, role)
        self._owns_session = session is None
        self._file: Any = None
        self.held = False
        self.broken = False  # the session failed: whoever holds this must acquire again
        self.error: str | None = None  # why the last try failed, when it was not a holder

    # Taking and releasing ---------------------------------------------------------------------

    def try_acquire(self) -> bool:
        if self.held and self.alive():
            return True
        self.error = None
        if is_postgres(self.url):
            self.held = self._try_postgres()
        elif (path := sqlite_path(self.url)) is not None:
            self.held = self._try_file(path)
        else:
            self.held = True  # memory:// or SQLite :memory:: one process by construction
        return self.held

    def wait_acquire(self, wait_s: float, stop: threading.Event | None = None) -> bool:
        """Tries until held, ``wait_s`` passed or ``stop`` is set (each try is bounded)."""
        stop = stop or threading.Event()
        end = time.monotonic() + wait_s
        while not self.try_acquire():
            left = end - time.monotonic()
            if left <= 0 or stop.wait(min(RETRY_S, left)):
                return False
        return True

    @property
    def conn(self) -> Any:
        return self.session.conn

    def alive(self) -> bool:
        """Whether the session holding the lock still looks usable (no I/O)."""
        if not self.held:
            return False
        if is_postgres(self.url):
            return not self.broken and self.conn is not None and not self.conn.broken
        return True

    def close(self) -> None:
        if self._owns_session:
            self.session.close()  # ends the session: the lock goes with it
        elif self.held and self.conn is not None and not self.conn.broken:
            self._unlock_shared()
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
        self.held = False
        self.broken = False

    def close_session(self) -> None:
        """Releases this lock and ends its session (with every lock sharing it)."""
        self.close()
        self.session.close()

    def _unlock_shared(self) -> None:
        """Releases the lock and keeps the session for the others sharing it."""
        key = advisory_key(postgres_schema(self.url), self.name)
        try:
            with deadlines.within(LOCK_QUERY_S):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except Exception as error:  # a broken session: its locks are gone anyway
            log.debug("unlocking %s: %s", self.name, error)
            self.session.close()

    # Who holds it -----------------------------------------------------------------------------

    def holder(self) -> Holder | None:
        """Who holds the lock, as recorded by the holder (None if unknown)."""
        try:
            if is_postgres(self.url):
                return self._postgres_holder()
            path = sqlite_path(self.url)
            return _read_holder(Path(f"{path}.{self.name}.lock")) if path else None
        except Exception as error:  # the description is a courtesy: never fail on it
            log.debug("lock holder of %s unknown: %s", self.name, error)
            return None

    def busy_message(self, what: str) -> str:
        """Why the lock was not taken, on one line: who holds it, or what failed."""
        if self.error is not None:
            return f"cannot take the {self.name} lock: {self.error}"
        found = self.holder()
        return f"another {what} is running ({found.describe() if found else 'holder unknown'})"

    # PostgreSQL -------------------------------------------------------------------------------

    def _table(self) -> Any:
        from psycopg import sql

        return sql.Identifier(postgres_schema(self.url), "sl_lock_holders")

    def _try_postgres(self) -> bool:
        import psycopg

        from adapters.persistence import guarded_psycopg

        key = advisory_key(postgres_schema(self.url), self.name)
        try:
            with deadlines.within(LOCK_QUERY_S):
                conn = self.session.connect()
                self.broken = False
                with guarded_psycopg(conn, "lock"):
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    got = bool(row and row[0])
                    if got and self.record:
                        self._record_postgres()
        except (psycopg.Error, deadlines.DeadlineExceeded) as error:
            # Said by whoever gives up (busy_message) or waits (Singleton.acquire): a waiting
            # loop logging every try would repeat one line every second.
            self.session.close()  # broken or half-open: the next try connects afresh
            self.close()
            self.error = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.debug("lock %s not taken: %s", self.name, self.error)
            return False
        return got

    def _record_postgres(self) -> None:
        import psycopg
        from psycopg import sql

        me = Holder.me()
        try:
            with self.conn.transaction():
                self.conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (name, pid, host, since) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (name) DO UPDATE SET pid = excluded.pid,"
                        " host = excluded.host, since = excluded.since"
                    ).format(self._table()),
                    (self.name, me.pid, me.host, me.since),
                )
        except psycopg.errors.UndefinedTable:
            log.info("lock holders are not recorded: run `sluice db migrate`")

    def _postgres_holder(self) -> Holder | None:
        import psycopg
        from psycopg import sql

        from adapters.persistence import connect_options

        query = sql.SQL("SELECT pid, host, since FROM {} WHERE name = %s").format(self._table())
        with deadlines.within(LOCK_QUERY_S):
            if self.conn is not None:  # the session that just failed to take it
                row = self.conn.execute(query, (self.name,)).fetchone()
            else:
                url = self.url.split("?", 1)[0]
                with psycopg.connect(url, **connect_options(self.settings, self.role)) as conn:
                    row = conn.execute(query, (self.name,)).fetchone()
        return Holder(int(row[0]), str(row[1]), int(row[2])) if row else None

    # SQLite -----------------------------------------------------------------------------------

    def _try_file(self, path: str) -> bool:
        lock_path = Path(f"{path}.{self.name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        if self.record:
            me = Holder.me()
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": me.pid, "host": me.host, "since": me.since}))
            handle.flush()
        self._file = handle
        return True


def _read_holder(lock_path: Path) -> Holder | None:
    try:
        data = json.loads(lock_path.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return Holder(int(data["pid"]), str(data["host"]), int(data["since"]))


@contextlib.contextmanager
def held(
    settings: Settings, name: str, wait_s: float, *, what: str, record: bool = True
) -> Iterator[StoreLock]:
    """The lock for a block: waits at most ``wait_s``, else raises ``LockBusy`` saying who."""
    lock = StoreLock(settings, name, role="admin", record=record)
    if not lock.wait_acquire(wait_s):
        message = lock.busy_message(what)
        lock.close()
        raise LockBusy(message)
    try:
        yield lock
    finally:
        lock.close()
