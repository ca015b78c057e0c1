"""Deadlines: every request and every worker step gets one, and no database call outlives it.

A deadline is an instant (``time.monotonic()``) carried in a context variable, so it follows a
request into the thread that serves it (Starlette copies the context into its thread pool) and
a worker step into the calls it makes. ``within(seconds)`` opens one (never later than an
enclosing one); ``remaining()`` says what is left.

PostgreSQL's own timeouts (``statement_timeout``, ``idle_in_transaction_session_timeout``,
``lock_timeout``) run on the server, so a server that is frozen (SIGSTOP, a stalled disk, a
network partition whose TCP peer still ACKs) never fires them; nor do TCP timeouts, since the
kernel keeps acknowledging. The ``Watchdog`` is the client-side half: a connection checked out
under a deadline is registered with it, and if it is still checked out when the deadline
passes, its socket is shut down. The thread blocked on it gets an error at once (psycopg sees
the connection closed), the pool discards the connection, and the server, once it runs again,
sees the client gone and rolls back whatever transaction was open: nothing half-written. The
one unavoidable ambiguity, a COMMIT already sent when the deadline fell, is the client's to
resolve with the same ``Idempotency-Key`` (a replay answers with the first result).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import PersistenceError

log = logging.getLogger("sluice.deadlines")

_deadline: ContextVar[float | None] = ContextVar("sluice_deadline", default=None)


class DeadlineExceeded(PersistenceError):
    """The work ran past its deadline and was abandoned (its transaction, if any, rolled back
    or, if the commit was already on its way, committed whole).

    A ``PersistenceError`` but deliberately not an ``OperationalError``: eventsourcing retries
    those (ten times, 0.2 s apart), which past a deadline would only add two seconds."""

    def __init__(self, message: str, *, budget_s: float | None = None) -> None:
        super().__init__(message)
        self.budget_s = budget_s


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative); None without a deadline."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def current() -> float | None:
    """The current deadline as a ``time.monotonic()`` instant, or None."""
    return _deadline.get()


@contextlib.contextmanager
def within(seconds: float | None) -> Iterator[float | None]:
    """A deadline ``seconds`` from now for the ``with`` block (None: no new deadline). An
    enclosing, earlier deadline wins: a step inside a request never outlives the request."""
    if seconds is None:
        yield _deadline.get()
        return
    at = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None:
        at = min(at, outer)
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def enter(seconds: float) -> Token[float | None]:
    """Opens a deadline ``seconds`` from now without a ``with`` block (for hooks that start and
    end a step in separate calls, like dramatiq's middleware); end it with ``leave(token)``."""
    return _deadline.set(time.monotonic() + seconds)


def leave(token: Token[float | None]) -> None:
    _deadline.reset(token)


# The watchdog ---------------------------------------------------------------------------------


@dataclass
class _Watch:
    at: float
    fd: int | None = None  # a duplicate of the watched socket's descriptor, open while watched
    label: str = ""
    fired: bool = False
    done: bool = False


class Watchdog:
    """One daemon thread per process that shuts down the sockets of connections still in use
    when their deadline passes. ``watch(fd, at)`` registers a socket for a ``with`` block."""

    # Upper bound on one sleep of the watchdog thread: it is woken early by every new watch
    # with an earlier deadline, so this only bounds how long an idle thread sleeps.
    IDLE_WAIT_S = 5.0

    def __init__(self) -> None:
        # (deadline, sequence, watch): plain tuples, compared in C. Finished watches stay until
        # the thread next wakes (up to IDLE_WAIT_S): tens of thousands on a busy API, and
        # comparing dataclasses in Python made each push cost more than the query it guarded.
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self.fired = 0  # sockets shut down so far (for tests and logs)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sluice-watchdog", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def watch(self, fd: int, instant: float, label: str = "") -> Iterator[_Watch]:
        """Shuts ``fd``'s socket down if the block is still running at ``instant``. The
        descriptor is duplicated for the watch, so a descriptor closed and reused meanwhile is
        never hit; the socket object is made only to fire (making one per watch cost more than
        the watch)."""
        try:
            dup: int | None = os.dup(fd)
        except OSError:  # already closed: nothing to guard
            dup = None
        entry = _Watch(instant, dup, label)
        item = (instant, next(self._seq), entry)
        with self._cond:
            heapq.heappush(self._heap, item)
            self._ensure_thread()
            # Woken only for a new earliest deadline: otherwise its sleep already ends in time.
            # (A wake-up per database call was 6-10% of a worker's CPU, in the workers bench.)
            if self._heap[0] is item:
                self._cond.notify()
        try:
            yield entry
        finally:
            with self._cond:
                entry.done = True
                if entry.fd is not None:
                    os.close(entry.fd)
                    entry.fd = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(self.IDLE_WAIT_S)
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(min(wait, self.IDLE_WAIT_S))
                    continue
                entry = heapq.heappop(self._heap)[2]
                if entry.done or entry.fd is None:
                    continue
                try:
                    sock = socket.socket(fileno=entry.fd)
                except OSError:  # not a socket: nothing to guard
                    continue
                entry.fired = True  # before the shutdown: the blocked thread reads it next
                self.fired += 1
                try:
                    with contextlib.suppress(OSError):  # already shut down: closed all the same
                        sock.shutdown(socket.SHUT_RDWR)
                finally:
                    # The descriptor stays open: its watch closes it, under this same lock, so
                    # it cannot be closed and reused in between.
                    sock.detach()
                log.warning("deadline passed: closed the connection of %s", entry.label or "?")


WATCHDOG = Watchdog()


def socket_fd(conn: Any) -> int | None:
    """The socket descriptor of a psycopg connection (None if it has none)."""
    try:
        return int(conn.pgconn.socket)
    except Exception:  # closed or broken connection: psycopg raises various errors here
        return None
