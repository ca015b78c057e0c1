"""Group commit for the webhook inbox: concurrent deliveries are stored in one transaction.

Each webhook is still stored before it is answered (verify → store → 2xx): its caller waits until
the transaction holding its row committed. Whichever caller finds the writer free stores
everything queued so far (at most ``INBOX_GROUP_SIZE_MAX``) in one multi-row INSERT
(``inbox.store_many``, committed on its own: one round trip, where BEGIN, a statement per event
and COMMIT took one each), so under load many one-row commits (one WAL flush each) become a few
larger ones. If a group fails, each of its events is stored again alone, so one bad delivery
fails only itself.

The HTTP route uses ``store_async``: deliveries queue on the event loop and one writer thread
stores a group at a time, so a group costs one hand-off to that thread and one back, where a
thread per delivery cost a hand-off (and a wait for the GIL) each, on the event loop's time.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adapters import deadlines
from adapters.stripe import inbox
from projections.store import ReadModel

INBOX_GROUP_SIZE_MAX = inbox.STORE_MANY_MAX  # webhooks stored in one transaction, one statement


class _Slot:
    __slots__ = ("context", "deadline", "done", "event", "failure", "future", "inserted", "raw")

    def __init__(self, event: dict[str, Any], raw: bytes) -> None:
        self.event = event
        self.raw = raw
        self.done = False
        self.inserted = False
        self.failure: BaseException | None = None
        self.future: asyncio.Future[bool] | None = None  # store_async's caller waits on it
        self.deadline: float | None = None
        self.context: contextvars.Context | None = None


class _LoopQueue:
    """One event loop's deliveries waiting for the writer thread (touched on that loop only)."""

    __slots__ = ("busy", "pending")

    def __init__(self) -> None:
        self.pending: list[_Slot] = []
        self.busy = False  # a group of this loop's is being stored


Store = Callable[[Any, dict[str, Any], bytes], bool]
StoreMany = Callable[[Any, list[tuple[dict[str, Any], bytes]]], list[bool]]


class InboxWriter:
    def __init__(
        self, view: ReadModel, store_many: StoreMany = inbox.store_many, store: Store = inbox.store
    ) -> None:
        self.view = view
        self._store = store
        self._store_many = store_many
        self._queue: list[_Slot] = []
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def store(self, event: dict[str, Any], raw: bytes) -> bool:
        """Stores one verified event; returns False for a duplicate delivery (as
        ``inbox.store``). Returns once the event's transaction committed."""
        slot = _Slot(event, raw)
        with self._queue_lock:
            self._queue.append(slot)
        with self._write_lock:
            if not slot.done:
                with self._queue_lock:
                    taken = self._queue[:INBOX_GROUP_SIZE_MAX]
                    del self._queue[:INBOX_GROUP_SIZE_MAX]
                self._store_group(taken)
        if not slot.done:
            raise RuntimeError("a queued webhook was left behind")
        if slot.failure is not None:
            raise slot.failure
        return slot.inserted

    async def store_async(self, event: dict[str, Any], raw: bytes) -> bool:
        """``store`` for a coroutine on an event loop: the same outcome and errors, the same
        group commit, without a thread of its own. The current deadline bounds the write."""
        loop = asyncio.get_running_loop()
        queue = self._loops.get(loop)
        if queue is None:
            queue = self._loops[loop] = _LoopQueue()
        slot = _Slot(event, raw)
        slot.future = loop.create_future()
        slot.deadline = deadlines.current()
        slot.context = contextvars.copy_context()  # the leader's log context, as with `store`
        queue.pending.append(slot)
        if not queue.busy:
            self._next_group(loop, queue)
        return await slot.future

    def _next_group(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue) -> None:
        taken = queue.pending[:INBOX_GROUP_SIZE_MAX]
        del queue.pending[:INBOX_GROUP_SIZE_MAX]
        queue.busy = True
        # The earliest deadline of the group bounds the group's one statement.
        known = [s.deadline for s in taken if s.deadline is not None]
        at = min(known) if known else None
        context = taken[0].context or contextvars.copy_context()
        try:
            written = loop.run_in_executor(
                self._writer_thread(), context.run, self._write_group, taken, at
            )
        except BaseException as failure:  # no writer thread: told to the group's callers
            for slot in taken:
                slot.failure, slot.done = failure, True
            self._group_done(loop, queue, taken, None)
            return
        written.add_done_callback(lambda done: self._group_done(loop, queue, taken, done))

    def _write_group(self, taken: list[_Slot], at: float | None) -> None:
        left = None if at is None else at - time.monotonic()
        # One group at a time, whichever path it came by.
        with deadlines.within(left), self._write_lock:
            self._store_group(taken)

    def _group_done(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: _LoopQueue,
        taken: list[_Slot],
        written: asyncio.Future[None] | None,
    ) -> None:
        if written is not None and not written.cancelled() and written.exception() is not None:
            failure = written.exception()  # the group never reached the store: told to each
            for slot in taken:
                if not slot.done:
                    slot.failure, slot.done = failure, True
        for slot in taken:
            future = slot.future
            if future is None or future.done():  # its caller went away (cancelled)
                continue
            if not slot.done:
                future.set_exception(RuntimeError("a queued webhook was left behind"))
            elif slot.failure is not None:
                future.set_exception(slot.failure)
            else:
                future.set_result(slot.inserted)
        queue.busy = False
        if queue.pending:
            self._next_group(loop, queue)

    def _writer_thread(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="sluice-inbox-writer")
            return self._executor

    def _store_group(self, taken: list[_Slot]) -> None:
        try:
            inserted = self._store_many(self.view, [(s.event, s.raw) for s in taken])
        except BaseException as failure:
            if len(taken) == 1:
                taken[0].failure, taken[0].done = failure, True
                return
            for slot in taken:  # one at a time: a bad delivery fails only itself
                try:
                    slot.inserted = self._store(self.view, slot.event, slot.raw)
                except BaseException as alone:  # told to its own caller
                    slot.failure = alone
                slot.done = True
            return
        for slot, was_inserted in zip(taken, inserted, strict=True):
            slot.inserted, slot.done = was_inserted, True


_writers: weakref.WeakKeyDictionary[Any, InboxWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def writer_for(view: ReadModel) -> InboxWriter:
    """The process's one writer per read model (created on first use)."""
    with _writers_lock:
        found = _writers.get(view)
        if found is None:
            found = _writers[view] = InboxWriter(view)
        return found
