"""What the actors work with: the Ledger, the read-model store, the Stripe gateway and a
PostgreSQL advisory lock. Built lazily from ``Settings()`` (the environment) in a worker
process, or installed explicitly with ``set_context`` (embedded mode, tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from adapters import deadlines
from adapters.persistence import connect_options, guarded_psycopg
from adapters.settings import Settings
from adapters.stripe.gateway import StripeGateway
from ledger.application import Ledger
from projections.store import ReadModel

LOCK_CONNECT_TIMEOUT_S = 10


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://"))


def conninfo(database_url: str) -> str:
    """libpq's URL without Sluice's ``?schema=`` parameter."""
    return database_url.split("?", 1)[0]


@dataclass
class Context:
    settings: Settings
    ledger: Ledger
    view: ReadModel
    gateway: StripeGateway
    _local_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def advisory_lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        """Mutual exclusion on ``key`` across processes: ``pg_advisory_xact_lock`` in a
        transaction on its own connection, held for the ``with`` block. On SQLite (the
        embedded store, one process) a per-key in-process lock stands in. Yields whether the
        lock is held (always True when ``wait``)."""
        if is_postgres(self.settings.database_url):
            import psycopg

            options = connect_options(self.settings, "worker")
            options["connect_timeout"] = LOCK_CONNECT_TIMEOUT_S
            left = deadlines.remaining()
            if left is not None:
                # The lock is held, idle in its transaction, across the Stripe call: the server
                # may end the session only once the step's own deadline has passed.
                idle_ms = int((max(left, 0) + 5) * 1000)
                options["options"] += f" -c idle_in_transaction_session_timeout={idle_ms}"
            with (
                psycopg.connect(conninfo(self.settings.database_url), **options) as conn,
                guarded_psycopg(conn, "advisory-lock"),
                conn.transaction(),
            ):
                if wait:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
                    yield True
                else:
                    row = conn.execute(
                        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,)
                    ).fetchone()
                    yield bool(row and row[0])
            return
        with self._guard:
            lock = self._local_locks.setdefault(key, threading.Lock())
        acquired = lock.acquire(blocking=wait)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    def close(self) -> None:
        self.ledger.close()
        datastore: Any = getattr(self.view, "datastore", None)
        if datastore is not None:
            datastore.close()


_holder: dict[str, Context] = {}
_context_lock = threading.Lock()


def build_context(settings: Settings | None = None) -> Context:
    from adapters.bootstrap import bootstrap, read_model, stripe_gateway

    settings = settings or Settings()
    return Context(
        settings,
        bootstrap(settings, role="worker"),
        read_model(settings, role="worker"),
        stripe_gateway(settings),
    )


def get_context() -> Context:
    with _context_lock:
        if "current" not in _holder:
            _holder["current"] = build_context()
        return _holder["current"]


def set_context(context: Context | None) -> Context | None:
    """Installs ``context`` for the actors of this process; returns the previous one."""
    with _context_lock:
        previous = _holder.pop("current", None)
        if context is not None:
            _holder["current"] = context
        return previous
