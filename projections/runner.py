"""Runs projections over the Ledger's notification log in bounded batches.

A batch's rows and its tracking position commit in one transaction, so a crash mid-batch leaves
the previous position and a rerun applies the batch once. Positions may have gaps (rolled-back
inserts burn sequence values); nothing here assumes they are contiguous.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.utils import resolve_topic

from ledger.application import Ledger
from projections.projections import PROJECTIONS, LedgerProjection, micros
from projections.store import ReadModel, Tx

PROJECTION_BATCH_SIZE = 500  # events per transaction
# A rebuild's page: larger than a follower's batch, as nobody waits on its first rows and each
# page's transaction carries every read model (measured on 100k events: 2,000 ~15% faster than
# 500; 5,000 no faster again).
REBUILD_PAGE_EVENTS = 2_000
CATCH_UP_BATCHES_MAX = 1_000_000  # a bound on one catch-up loop (500M events)
POLL_INTERVAL_S = 0.25


class _GcPause:
    """Python's cyclic garbage collector off for a pass over the log (on again after it, also
    after a failure). A pass allocates millions of short-lived objects, freed by reference
    counting (decoded events hold no cycles), and each allocation burst set off collections that
    walked every tracked object: a third of the pass's projecting (measured on 100k events:
    prep 3.0 -> 2.0 s, the pass 5.4-5.9 -> 4.4-4.7 s). Counted, so overlapping passes in one
    process turn it back on only when the last ends, and only if it was on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pauses = 0
        self.was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.pauses == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.pauses += 1
        try:
            yield
        finally:
            with self.lock:
                self.pauses -= 1
                if self.pauses == 0 and self.was_enabled:
                    gc.enable()


_cyclic_gc_paused = _GcPause()


_BUFFERED = ("INSERT", "UPDATE", "DELETE")
BUFFERED_ROWS_MAX = 5_000  # rows held before they are sent anyway


class _BufferedTx:
    """A projection's transaction whose writes are sent a run at a time: a write that returns
    nothing is held, and consecutive writes of one statement go as one ``execute_many`` (one
    round trip, not one per event). Order is kept: anything else (a read, a write that returns
    rows) sends what is held first, and so does ``flush`` before the commit."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx
        self._held: list[tuple[str, list[Sequence[Any]]]] = []
        self._rows = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        head = sql.lstrip()[:6].upper()
        if head in _BUFFERED and "RETURNING" not in sql.upper():
            if self._held and self._held[-1][0] == sql:
                self._held[-1][1].append(params)
            else:
                self._held.append((sql, [params]))
            self._rows += 1
            if self._rows >= BUFFERED_ROWS_MAX:
                self.flush()
            return
        self.flush()
        self._tx.execute(sql, params)

    def flush(self) -> None:
        many = getattr(self._tx, "execute_many", None)
        for sql, rows in self._held:
            if many is not None and len(rows) > 1:
                many(sql, rows)
            else:
                for params in rows:
                    self._tx.execute(sql, params)
        self._held.clear()
        self._rows = 0

    def all(self) -> list[dict[str, Any]]:
        self.flush()
        return list(self._tx.all())

    def one(self) -> dict[str, Any] | None:
        self.flush()
        row = self._tx.one()
        return dict(row) if row is not None else None


class _RecordingTx:
    """A page's writes recorded in memory, to be sent later in the page's transaction (by the
    rebuild's writer thread). Only for projections that never read rows back (``reads``)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, params))

    def all(self) -> list[dict[str, Any]]:
        raise TypeError("a projection that reads rows must say so (reads = True)")

    def one(self) -> dict[str, Any] | None:
        raise TypeError("a projection that reads rows must say so (reads = True)")


@dataclass(frozen=True)
class _Page:
    """A page of events, and the writes of every projection that needs no reads for them."""

    events: list[tuple[int, Any]]
    recorded: dict[str, list[tuple[str, Sequence[Any]]]]


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float


class Projector:
    def __init__(
        self,
        ledger: Ledger,
        view: ReadModel,
        names: Sequence[str] | None = None,
        *,
        batch_size: int = PROJECTION_BATCH_SIZE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        unknown = [n for n in names or () if n not in PROJECTIONS]
        if unknown:
            raise KeyError(f"unknown projection(s): {', '.join(unknown)}")
        self.ledger = ledger
        self.view = view
        self.batch_size = batch_size
        self.clock = clock or (lambda: datetime.now(UTC))
        self.projections: dict[str, LedgerProjection] = {
            name: PROJECTIONS[name](view) for name in (names or PROJECTIONS)
        }
        # Per set of read models (their ``handles``), per topic string: whether its class is
        # handled by one of them.
        self._handled_topics: dict[tuple[tuple[type, ...], ...], dict[str, bool]] = {}
        # Per (read model, its handles), per event class: whether it handles it.
        self._handled_classes: dict[tuple[str, tuple[type, ...]], dict[type, bool]] = {}

    def tracking_name(self, name: str) -> str:
        return f"{self.ledger.name}.{name}"

    def position(self, name: str) -> int:
        return self.view.max_tracking_id(self.tracking_name(name)) or 0

    def catch_up(
        self, name: str, *, stop: int | None = None, max_batches: int = CATCH_UP_BATCHES_MAX
    ) -> int:
        """Applies every event after the projection's position (up to ``stop``); returns count."""
        projection = self.projections[name]
        position, applied = self.position(name), 0
        for _ in range(max_batches):
            page = self.ledger.recorder.select_notifications(
                start=position, limit=self.batch_size, stop=stop, inclusive_of_start=False
            )
            if not page:
                break
            self.apply(projection, self.decode_page(page, name))
            position, applied = page[-1].id, applied + len(page)
        return applied

    def apply(self, projection: LedgerProjection, events: list[tuple[int, Any]]) -> None:
        """One transaction: the batch's rows, then its tracking position and lag metadata."""
        tname = self.tracking_name(projection.name)
        with self.view.write(Tracking(tname, events[-1][0])) as tx:
            self._apply_in(tx, projection, events, set_based=False)

    def apply_all(self, events: list[tuple[int, Any]]) -> None:
        """Every projection's rows for one page, and every tracking position, in one
        transaction (a rebuild: all read models at the same position, one commit per page).
        Set-based: each projection's hot tables are written with one statement per page
        (``projections.pages``), not one per event."""
        self._write_page(self._prepare_page(events))

    def _prepare_page(self, events: list[tuple[int, Any]]) -> _Page:
        """The page through every projection that reads no rows, in memory: no database, so
        it can run while the previous page is being written."""
        recorded = {}
        for name, projection in self.projections.items():
            if not projection.reads:
                tx = _RecordingTx()
                self._process(tx, projection, events, set_based=True)
                recorded[name] = tx.statements
        return _Page(events, recorded)

    def _write_page(self, page: _Page) -> None:
        """One transaction: the recorded writes, the projections that read rows (run here,
        inside it), every tracking position and the lag metadata."""
        last_id = page.events[-1][0]
        trackings = [Tracking(self.tracking_name(name), last_id) for name in self.projections]
        with self.view.write_tracked(trackings) as tx:
            for name, projection in self.projections.items():
                buffered = _BufferedTx(tx)
                statements = page.recorded.get(name)
                if statements is None:
                    self._process(buffered, projection, page.events, set_based=True)
                else:
                    for sql, params in statements:
                        buffered.execute(sql, params)
                buffered.flush()
            self._write_meta(tx, list(self.projections), page.events)

    def _process(
        self,
        tx: Tx,
        projection: LedgerProjection,
        events: list[tuple[int, Any]],
        *,
        set_based: bool,
    ) -> None:
        """The events the projection uses, its writes into ``tx``; its sinks' come last."""
        tname = self.tracking_name(projection.name)
        projection.begin_page(tx, set_based)
        handles = projection.handles
        # Per event class, whether the projection handles it: a dict lookup per event instead
        # of an isinstance against a tuple of classes, for every projection (8 per event).
        handled = self._handled_classes.setdefault((projection.name, handles), {})
        for notification_id, event in events:
            cls = type(event)
            wanted = handled.get(cls)
            if wanted is None:
                wanted = handled[cls] = issubclass(cls, handles)
            if wanted:
                projection.process_event(event, Tracking(tname, notification_id))
        projection.end_page(self.view.dialect)

    def _apply_in(
        self,
        tx: Any,
        projection: LedgerProjection,
        events: list[tuple[int, Any]],
        *,
        set_based: bool,
    ) -> None:
        buffered = _BufferedTx(tx)
        self._process(buffered, projection, events, set_based=set_based)
        buffered.flush()
        self._write_meta(tx, [projection.name], events)

    def _write_meta(self, tx: Any, names: Sequence[str], events: list[tuple[int, Any]]) -> None:
        """The projections' lag metadata at the batch's end, in one statement."""
        last_id, last_event = events[-1]
        row = (last_id, micros(last_event.timestamp), micros(self.clock()))
        tx.execute(
            "INSERT INTO rm_projection_meta AS m (name, position, event_recorded, updated)"
            f" VALUES {', '.join(['(%s, %s, %s, %s)'] * len(names))} ON CONFLICT (name)"
            " DO UPDATE SET position = excluded.position,"
            " event_recorded = excluded.event_recorded, updated = excluded.updated",
            [value for name in names for value in (name, *row)],
        )

    def run_once(self) -> dict[str, int]:
        return {name: self.catch_up(name) for name in self.projections}

    def run_forever(
        self, stop_event: threading.Event, poll_interval_s: float = POLL_INTERVAL_S
    ) -> None:
        """Follows the log until ``stop_event`` is set. Polls the head cheaply between batches."""
        self.ensure_indexes()
        while not stop_event.is_set():
            if not any(self.run_once().values()):
                stop_event.wait(poll_interval_s)

    def rebuild(self, name: str) -> int:
        """Drops the projection's rows and position together, then replays the whole log."""
        projection = self.projections[name]
        with self.view.write(None) as tx:
            projection.clear(tx, self.view.dialect)
            self.view.reset_tracking(tx, self.tracking_name(name))
            tx.execute("DELETE FROM rm_projection_meta WHERE name = %s", (name,))
        return self.catch_up(name)

    def rebuild_all(
        self, max_batches: int = CATCH_UP_BATCHES_MAX, *, page_events: int | None = None
    ) -> int:
        """Rebuilds every projection of this projector in one pass over the log: each page is
        read and decoded once and applied to every projection in one transaction, with every
        tracking position (``apply_all``). A crash midway leaves them all at a committed page;
        ``catch_up`` (or ``rebuild_all`` again) finishes. Returns the events read (on
        PostgreSQL without those of topics no read model handles, which the server skips).

        On PostgreSQL a writer thread sends each page while the next is read, decoded and
        projected in memory: the server's work and ours overlap (two cores, not one after the
        other). Pages still commit one by one, in order; a failed write stops the rebuild."""
        for name, projection in self.projections.items():
            with self.view.write(None) as tx:
                projection.clear(tx, self.view.dialect)
                self.view.reset_tracking(tx, self.tracking_name(name))
                tx.execute("DELETE FROM rm_projection_meta WHERE name = %s", (name,))
        limit = page_events or max(self.batch_size, REBUILD_PAGE_EVENTS)
        head = self.ledger.recorder.max_notification_id() or 0
        read, last = 0, 0

        def pages() -> Iterator[list[tuple[int, Any]]]:
            nonlocal read, last
            for page in self.notification_pages(limit, max_batches, stop=head):
                read, last = read + len(page), page[-1].id
                yield self.decode_page(page)

        self.apply_pages(pages())
        if last < head and not next(self.notification_pages(1, 1, stop=head, start=last), None):
            self._advance(head)  # the rest up to head was left out by the server, not unread
        return read

    def apply_pages(
        self,
        pages: Iterable[list[tuple[int, Any]]],
        on_page: Callable[[int], None] | None = None,
    ) -> int:
        """``apply_all`` for each page in turn (a rebuild, or the auditor's replay); returns
        the events applied. ``on_page`` is told each page's last position once it committed.

        On PostgreSQL a writer thread sends each page while the next is read, decoded and
        projected in memory: the server's work and ours overlap (two cores, not one after the
        other). Pages still commit one by one, in order; a failed write stops the pass."""
        with _cyclic_gc_paused():
            applied = 0
            if self.view.dialect != "postgres":  # in-process: nothing to overlap with
                for events in pages:
                    self.apply_all(events)
                    applied += len(events)
                    if on_page is not None:
                        on_page(events[-1][0])
                return applied
            self._drop_deferred_indexes()
            try:
                return self._apply_pages_overlapped(pages, on_page)
            finally:  # also after a failure: the read models' queries need them
                self.ensure_indexes()

    def _deferred_indexes(self) -> list[tuple[str, str]]:
        return [d for p in self.projections.values() for d in p.deferred_index_ddl()]

    def _drop_deferred_indexes(self) -> None:
        with self.view.write(None) as tx:
            for name, _ in self._deferred_indexes():
                self.view.drop_index(tx, name)

    def ensure_indexes(self) -> None:
        """Creates the indexes a rebuild defers, where missing (a rebuild that was killed
        before its end leaves them dropped: the follower calls this as it starts). Looked up in
        the catalog first: ``CREATE INDEX IF NOT EXISTS`` locks the table (SHARE) before it
        finds the index there, so a follower starting beside a busy writer would wait on it."""
        if self.view.dialect != "postgres":
            return
        with self.view.write(None) as tx:
            for name, create in self._deferred_indexes():
                if not self.view.index_exists(tx, name):
                    tx.execute(create)

    def _apply_pages_overlapped(
        self,
        pages: Iterable[list[tuple[int, Any]]],
        on_page: Callable[[int], None] | None,
    ) -> int:
        applied = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-writer") as writer:
            written: Future[None] | None = None
            last = 0
            for events in pages:
                page = self._prepare_page(events)
                if written is not None:
                    written.result()  # the previous page committed (or its error ends this)
                    if on_page is not None:
                        on_page(last)
                written = writer.submit(self._write_page, page)
                last = events[-1][0]
                applied += len(events)
            if written is not None:
                written.result()
                if on_page is not None:
                    on_page(last)
        return applied

    def notification_pages(
        self, limit: int, max_batches: int, stop: int | None = None, *, start: int = 0
    ) -> Iterator[Sequence[Any]]:
        """The log from the start up to ``stop``, a page of notifications at a time. With the
        store's page reader (PostgreSQL) the topics already found to be of no use to any of
        this projector's read models are left out by the server: no row to fetch, nothing to
        decode. A topic never seen is always read (then judged by ``decode_page``), so an
        event class first appearing mid-pass is never missed. ``start``: after that position."""
        position = start
        reader = self.ledger.page_reader
        handled, _ = self._handled(None)
        for _ in range(max_batches):
            if reader is None:
                page = self.ledger.recorder.select_notifications(
                    start=position, limit=limit, stop=stop, inclusive_of_start=False
                )
            else:
                page = reader(position, limit, stop, [t for t, h in handled.items() if not h])
            if not page:
                return
            yield page
            position = page[-1].id

    def _advance(self, head: int) -> None:
        """Every read model's position to ``head`` and its lag metadata to the event there,
        after a pass whose last pages held only events none of them handles (left out by the
        server, so the last page read ended before ``head``)."""
        found = self.ledger.recorder.select_notifications(start=head, limit=1)
        if not found or found[0].id != head:
            return  # no such event: nothing to vouch for beyond the last page
        events = [(head, self.ledger.mapper.to_domain_event(found[0]))]
        trackings = [Tracking(self.tracking_name(name), head) for name in self.projections]
        with self.view.write_tracked(trackings) as tx:
            self._write_meta(tx, list(self.projections), events)

    def _handled(self, name: str | None) -> tuple[dict[str, bool], list[LedgerProjection]]:
        """The topic cache of ``name``'s read model (None: all of this projector's), and them.
        Keyed by their ``handles``, so that a projection handed other classes is judged anew."""
        chosen = list(self.projections.values()) if name is None else [self.projections[name]]
        key = tuple(p.handles for p in chosen)
        return self._handled_topics.setdefault(key, {}), chosen

    def decode_page(
        self, notifications: Sequence[Any], name: str | None = None
    ) -> list[tuple[int, Any]]:
        """A page of notifications decoded for this projector's read models (``name``: for
        that one alone): the events of a class none of them handles are left out (on a payments
        log more than half of it: the balances' postings, idempotency records) except the
        page's last, kept decoded so that ``events[-1]`` is still the page's position and the
        time its lag is measured from.

        Whether a topic is handled is asked of ``resolve_topic`` per topic string as it first
        comes, so a renamed or registered topic is judged by the class it decodes to, never
        skipped by a list that could be out of date."""
        handled, chosen = self._handled(name)
        decode = self.ledger.mapper.to_domain_event
        last = len(notifications) - 1
        events = []
        for i, n in enumerate(notifications):
            wanted = handled.get(n.topic)
            if wanted is None:
                cls = resolve_topic(n.topic)
                wanted = handled[n.topic] = any(issubclass(cls, p.handles) for p in chosen)
            if wanted or i == last:
                events.append((n.id, decode(n)))
        return events

    def wait_for(self, name: str, position: int, timeout_s: float) -> bool:
        """Read-your-writes: waits (bounded) until the projection reached ``position``."""
        deadline = self.clock().timestamp() + timeout_s
        while self.position(name) < position:
            if self.clock().timestamp() >= deadline:
                return False
            threading.Event().wait(0.02)
        return True

    def status(self) -> list[ProjectionStatus]:
        head = self.ledger.recorder.max_notification_id() or 0
        head_recorded = None
        if head:
            newest = self.ledger.recorder.select_notifications(start=head, limit=1)
            if newest:
                head_recorded = self.ledger.mapper.to_domain_event(newest[0]).timestamp
        out = []
        with self.view.read() as tx:
            tx.execute("SELECT name, position, event_recorded FROM rm_projection_meta")
            meta = {row["name"]: row for row in tx.all()}
        for name in self.projections:
            position = self.position(name)
            lag_s = 0.0
            if head_recorded is not None and position < head:
                seen = meta.get(name)
                seen_us = int(seen["event_recorded"]) if seen else 0
                lag_s = (
                    max(0.0, micros(head_recorded) / 1e6 - seen_us / 1e6) if seen else float("inf")
                )
            out.append(ProjectionStatus(name, position, head, self.lag_events(position), lag_s))
        return out

    def lag_events(self, position: int) -> int:
        """Exact count of events after ``position`` (positions can have gaps)."""
        count = 0
        for _ in range(CATCH_UP_BATCHES_MAX):
            page = self.ledger.recorder.select_notifications(
                start=position, limit=10_000, inclusive_of_start=False
            )
            if not page:
                break
            count += len(page)
            position = page[-1].id
        return count
