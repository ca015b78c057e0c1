"""Exactly one active relay (or scheduler) per store: the store lock of ``adapters.locks``
(a PostgreSQL session advisory lock, or a file lock beside a SQLite store), held for the
process's life, with its holder (pid, host, since) recorded so a second instance can say who.

``python -m workers.cli relay|scheduler`` takes the lock before starting and exits 2 naming the
holder when another instance has it (``--wait SECONDS`` waits that long first). Once running,
an instance whose lock session is lost (PostgreSQL restarted) waits to take it again; a
library caller (``Relay.run``) may also wait from the start, as a standby."""

from __future__ import annotations

import logging
import threading

from adapters.locks import RETRY_S, StoreLock
from adapters.settings import Settings

log = logging.getLogger("sluice.workers")

RELAY_LOCK = "relay"  # one relay per store, whatever its position's name
SCHEDULER_LOCK = "scheduler"


class Singleton(StoreLock):
    """``acquire`` waits for the lock until ``stop``; ``conn`` is the autocommit PostgreSQL
    session holding it (the relay LISTENs on it; None on SQLite)."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(settings, name, role="worker")

    def acquire(self, stop: threading.Event, retry_s: float = RETRY_S) -> bool:
        """Waits until the lock is held (True) or ``stop`` is set (False); each try is bounded
        (``LOCK_QUERY_S``) and the wait ends with ``stop``, the process's own signal."""
        waited = False
        while not self.try_acquire():
            if not waited:
                log.info("%s; waiting", self.busy_message(self.name))
                waited = True
            if stop.wait(retry_s):
                return False
        return True
