"""Exactly one active relay (or scheduler): a session advisory lock on a dedicated PostgreSQL
connection, held for the process's life. A second process waits, retrying every second, and
takes over when the first dies (PostgreSQL releases a dead session's locks)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from adapters import deadlines
from adapters.persistence import connect_options, guarded_psycopg
from adapters.settings import Settings
from workers.context import conninfo, is_postgres

log = logging.getLogger("sluice.workers")

RELAY_LOCK = 0x511CE0001  # arbitrary constants, one per singleton role
SCHEDULER_LOCK = 0x511CE0002
RETRY_S = 1.0
LOCK_QUERY_S = 10.0  # deadline of one attempt to connect and take the lock


class Singleton:
    """``acquire`` waits for the lock; ``conn`` is the autocommit connection holding it (None
    on SQLite, the embedded store, which is single-process: no lock there)."""

    def __init__(self, settings: Settings, key: int) -> None:
        self.settings = settings
        self.key = key
        self.conn: Any = None
        self.held = False
        self.broken = False  # the session failed: whoever holds this must acquire again

    def try_acquire(self) -> bool:
        if not is_postgres(self.settings.database_url):
            self.held = True
            return True
        import psycopg

        try:
            with deadlines.within(LOCK_QUERY_S):
                if self.conn is None:
                    self.conn = psycopg.connect(
                        conninfo(self.settings.database_url),
                        autocommit=True,
                        **connect_options(self.settings, "worker"),
                    )
                    self.broken = False
                with guarded_psycopg(self.conn, "singleton"):
                    row = self.conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (self.key,)
                    ).fetchone()
        except (psycopg.Error, deadlines.DeadlineExceeded) as error:
            log.warning("lock %#x not taken: %s", self.key, error)
            self.close()
            return False
        self.held = bool(row and row[0])
        return self.held

    def alive(self) -> bool:
        """Whether the session holding the lock still looks usable (no I/O)."""
        if not is_postgres(self.settings.database_url):
            return self.held
        return self.held and not self.broken and self.conn is not None and not self.conn.broken

    def acquire(self, stop: threading.Event, retry_s: float = RETRY_S) -> bool:
        """Waits until the lock is held (True) or ``stop`` is set (False)."""
        waited = False
        while not self.try_acquire():
            if not waited:
                log.info("another instance holds lock %#x; waiting", self.key)
                waited = True
            if stop.wait(retry_s):
                return False
        return True

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()  # ends the session: the lock goes with it
            except Exception as error:  # already broken: nothing left to end
                log.debug("closing the lock session: %s", error)
            self.conn = None
        self.held = False
        self.broken = False
