"""Exactly one active relay (or scheduler): a session advisory lock on a dedicated PostgreSQL
connection, held for the process's life. A second process waits, retrying every second, and
takes over when the first dies (PostgreSQL releases a dead session's locks)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from adapters.settings import Settings
from workers.context import conninfo, is_postgres

log = logging.getLogger("sluice.workers")

RELAY_LOCK = 0x511CE0001  # arbitrary constants, one per singleton role
SCHEDULER_LOCK = 0x511CE0002
RETRY_S = 1.0


class Singleton:
    """``acquire`` waits for the lock; ``conn`` is the autocommit connection holding it (None
    on SQLite, the embedded store, which is single-process: no lock there)."""

    def __init__(self, settings: Settings, key: int) -> None:
        self.settings = settings
        self.key = key
        self.conn: Any = None
        self.held = False

    def try_acquire(self) -> bool:
        if not is_postgres(self.settings.database_url):
            self.held = True
            return True
        if self.conn is None:
            import psycopg

            self.conn = psycopg.connect(
                conninfo(self.settings.database_url), autocommit=True, connect_timeout=10
            )
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        self.held = bool(row and row[0])
        return self.held

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
            self.conn.close()  # ends the session: the lock goes with it
            self.conn = None
        self.held = False
