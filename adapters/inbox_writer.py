"""Group commit for the webhook inbox: concurrent deliveries are stored in one transaction.

Each webhook is still stored before it is answered (verify → store → 2xx): its caller waits until
the transaction holding its row committed. Whichever caller finds the writer free stores
everything queued so far (at most ``INBOX_GROUP_SIZE_MAX``) in one multi-row INSERT
(``inbox.store_many``, committed on its own: one round trip, where BEGIN, a statement per event
and COMMIT took one each), so under load many one-row commits (one WAL flush each) become a few
larger ones. If a group fails, each of its events is stored again alone, so one bad delivery
fails only itself.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from adapters.stripe import inbox
from projections.store import ReadModel

INBOX_GROUP_SIZE_MAX = inbox.STORE_MANY_MAX  # webhooks stored in one transaction, one statement


class _Slot:
    __slots__ = ("done", "event", "failure", "inserted", "raw")

    def __init__(self, event: dict[str, Any], raw: bytes) -> None:
        self.event = event
        self.raw = raw
        self.done = False
        self.inserted = False
        self.failure: BaseException | None = None


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
