"""The write engine: runs commands and facts, alone or in batches, each in one ``save()``.

Every message (a ``Command`` or a ``Fact``) runs inside a scope over the batch's working
aggregates: it reads copies, and only if it succeeds do its changes join the batch. A rejected
message therefore leaves nothing behind, while the others in the batch are still recorded, all in
one ``save()`` (one transaction). Idempotency: a message's key is recorded with a fingerprint of
its parameters; a repeat returns the first result, a different one is refused.

The use cases themselves (what each message means) are in ``ledger.handlers`` (commands) and
``ledger.facts`` (facts); ``ledger.application.Ledger`` puts them together.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification, RecordConflictError, Recording

from ledger import commands as c
from ledger import facts
from ledger.accounts import ConnectedAccount
from ledger.balances import AVAILABLE_FLOOR_MINOR, LOTS_MAX, Balance
from ledger.errors import (
    AccountNotFoundError,
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidParameterError,
    PaymentNotFoundError,
    PayoutNotFoundError,
    PendingLotsExceededError,
    SluiceError,
    TransferNotFoundError,
    invariant,
)
from ledger.events import JournalEvent, When, check_instant
from ledger.ids import (
    PLATFORM_ACCOUNT_ID,
    account_aggregate_id,
    aggregate_id,
    balance_aggregate_id,
    command_record_id,
    object_id,
    payment_aggregate_id,
    payout_aggregate_id,
    transfer_aggregate_id,
)
from ledger.journal import balance_row, book_deltas
from ledger.limits import IDEMPOTENCY_KEY_LEN_MAX
from ledger.openings import OPENING_INDEX_ID
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.records import CommandRecord, IdClaim
from ledger.splits import SplitPart
from ledger.transfers import Transfer

BATCH_SIZE_MAX = 1_000
GROUP_COMMIT_SIZE_MAX = 100  # commands from concurrent callers recorded in one save()
QUEUE_ROUNDS_MAX = 10_000  # batches one leader records before its own command is among them
# Another process wrote an aggregate of the batch first (the hot platform balance, typically):
# the batch runs again on fresh state, after a pause drawn at random (full jitter) from a window
# that doubles per attempt, so processes that collided do not collide again in lockstep.
CONFLICT_RETRIES_MAX = 16
CONFLICT_BACKOFF_BASE_MS = 2
CONFLICT_BACKOFF_CAP_MS = 50
# After a conflict, this process's batches take the store's writer lock (when the store has one)
# for this long: processes that keep colliding on a hot aggregate take turns instead of failing
# each other's batches; without contention they go back to running side by side.
CONTENTION_WINDOW_S = 2.0
JOURNAL_PAGE_SIZE = 1_000

A = TypeVar("A", bound=Aggregate)
Clock = Callable[[], datetime]
# Given aggregate ids, returns those with no stored events, in as few round trips as the store
# allows. New ids (idempotency records, payments) are the common case on the write path.
AbsenceProbe = Callable[[Sequence[UUID]], set[UUID]]
# Given aggregate ids, returns the head version of those that have stored events, in one round
# trip: absent ids, and cached aggregates that are current (no fast-forward read needed); and
# the store's head (its newest notification id) as the same query saw it.
VersionProbe = Callable[[Sequence[UUID]], tuple[dict[UUID, int], int]]
# Reads the log for the read side: notifications after ``start`` up to ``stop`` (None: the
# head), in order, at most ``limit``, leaving out those whose topic is in ``skip_topics`` (the
# server does: a rebuild fetches and decodes only what its read models use).
PageReader = Callable[[int, int, "int | None", Sequence[str]], Sequence[Notification]]
# A lock shared by every process writing to the store, held around one batch (read and write).
WriterLock = Callable[[], AbstractContextManager[object]]
# Told of every command and fact once its batch ran: (name, result or None if the batch raised,
# seconds). The edges count them (adapters/metrics.py); the ledger only calls it.
CommandObserver = Callable[[str, "CommandResult | None", float], None]
_observer: list[CommandObserver] = []


def set_command_observer(observer: CommandObserver | None) -> None:
    """Installs the process's one observer (None removes it)."""
    _observer[:] = [observer] if observer is not None else []


def _observe(
    commands: Sequence[c.Message], results: Sequence[CommandResult] | None, seconds: float
) -> None:
    if not _observer:
        return
    for i, command in enumerate(commands):
        # The batch is recorded already: a failing observer must not turn it into an error.
        with suppress(Exception):
            _observer[0](command.name, results[i] if results is not None else None, seconds)


@dataclass
class HeadCheck:
    """Goes with a batch's events to a store that checks heads (``Engine.head_checks``). With
    ``expected``, the store inserts the events only if its newest notification id is still
    ``expected``, and raises ``StaleHeadError`` if not. Either way it sets ``before``: the
    newest id it found just before the insert, under its table lock."""

    expected: int | None = None
    before: int | None = None


class StaleHeadError(RecordConflictError):
    """Another writer recorded events since the head a batch expected: nothing was inserted."""


@dataclass(frozen=True)
class CommandResult:
    command: str
    idempotency_key: str
    ids: dict[str, str] = field(default_factory=dict)
    position: int | None = None  # notification id of the command's last event
    replayed: bool = False  # the key was seen before with the same parameters
    error: SluiceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Values a copy can share: immutable, and with nothing mutable inside.
_SHARED_TYPES = frozenset({str, int, bool, type(None), bytes, datetime, date, UUID})


def _copied(value: Any) -> Any:
    """``deepcopy`` for aggregate state, minus its cost on what needs no copy: immutable scalars
    are shared and lists, dicts and tuples are rebuilt (a payment copies four aggregates, and
    ``deepcopy`` reconstructing each datetime through ``__reduce_ex__`` was 11% of its time).
    Anything else still goes through ``deepcopy``. Unlike ``deepcopy`` it does not preserve
    aliasing between attributes; no aggregate shares a container between two of them."""
    kind = type(value)
    if kind in _SHARED_TYPES:
        return value
    if kind is list:
        return [_copied(item) for item in value]
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is tuple:
        return tuple(_copied(item) for item in value)
    return deepcopy(value)


def _detached_copy(aggregate: A) -> A:
    """Copies the state but shares the (immutable) pending events, so copying an aggregate
    that already has a batch's worth of events stays cheap."""
    copied = object.__new__(type(aggregate))
    state = {
        key: _copied(value) for key, value in vars(aggregate).items() if key != "_pending_events"
    }
    state["_pending_events"] = list(aggregate._pending_events)
    copied.__dict__.update(state)
    return copied


class _Slot:
    """A command waiting for a group commit."""

    __slots__ = ("command", "done", "failure", "result")

    def __init__(self, command: c.Message) -> None:
        self.command = command
        self.done = False
        self.result: CommandResult | None = None
        self.failure: BaseException | None = None


class _Batch:
    def __init__(self, app: Engine, absent: set[UUID], heads: dict[UUID, int]) -> None:
        self.app = app
        self.aggregates: dict[UUID, Aggregate] = {}
        self.absent = absent  # ids known to have no stored events when the batch began
        self.heads = heads  # stored head versions when the batch began (probed ids only)


class Scope:
    """One command's view of the batch: reads are copies; ``commit`` publishes them."""

    def __init__(self, batch: _Batch, when: When) -> None:
        self._batch = batch
        self._touched: dict[UUID, Aggregate] = {}
        self._seen_events: dict[UUID, int] = {}
        self.when = when
        self.platform_account_id = batch.app.platform_account_id
        self._discretionary: set[tuple[str, str]] = set()
        self._available_before: dict[UUID, int] = {}  # balances as this command found them

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        found = self._touched.get(aggregate_id)
        if found is None:
            base = self._batch.aggregates.get(aggregate_id)
            if base is not None:
                found = _detached_copy(base)
            elif aggregate_id in self._batch.absent:
                return None
            else:
                head = self._batch.heads.get(aggregate_id)
                found = self._batch.app.cached_at(aggregate_id, head)
                if found is None:
                    try:
                        found = self._batch.app.repository.get(aggregate_id)
                    except AggregateNotFoundError:
                        return None
            self._touched[aggregate_id] = found
            self._seen_events[aggregate_id] = len(found.pending_events)
            if isinstance(found, Balance):
                self._available_before[aggregate_id] = found.available_minor
        invariant(isinstance(found, cls), "%s is not a %s", aggregate_id, cls.__name__)
        return cast(A, found)

    def add(self, aggregate: Aggregate, *, param: str | None = None) -> None:
        """Adds a new aggregate. With ``param``, first refuses an id that already exists (in
        the store or earlier in the batch) as that parameter's mistake: creating it anyway
        would overwrite it in the batch or fail the whole save on the store's unique key."""
        if param is not None and self.find(aggregate.id, Aggregate) is not None:
            raise InvalidParameterError(f"{param} already exists", param=param)
        invariant(aggregate.id not in self._touched, "aggregate added twice")
        self._touched[aggregate.id] = aggregate
        self._seen_events[aggregate.id] = 0

    def new_events(self) -> list[Any]:
        out: list[Any] = []
        for agg_id, agg in self._touched.items():
            out.extend(agg.pending_events[self._seen_events[agg_id] :])
        return out

    # Typed loaders: a missing object is the user's mistake, reported with the param at fault.

    def account(self, account_id: object, param: str = "account") -> ConnectedAccount:
        if not isinstance(account_id, str):
            raise InvalidParameterError("account ids are strings", param=param)
        found = self.find(account_aggregate_id(account_id), ConnectedAccount)
        if found is None:
            raise AccountNotFoundError(f"no such account: {account_id}", param=param)
        return found

    def open_account(self, account_id: object, param: str = "account") -> ConnectedAccount:
        account = self.account(account_id, param)
        account.require_open(param)
        return account

    def balance(self, account_id: str, currency: str) -> Balance:
        found = self.find(balance_aggregate_id(account_id, currency), Balance)
        if found is None:
            found = Balance.open(account_id, currency, self.when)
            self.add(found)
        return found

    def payment(self, payment_id: object) -> Payment:
        found = None
        if isinstance(payment_id, str):
            found = self.find(payment_aggregate_id(payment_id), Payment)
        if found is None:
            raise PaymentNotFoundError(f"no such payment: {payment_id}", param="payment")
        return found

    def transfer(self, transfer_id: object) -> Transfer:
        found = None
        if isinstance(transfer_id, str):
            found = self.find(transfer_aggregate_id(transfer_id), Transfer)
        if found is None:
            raise TransferNotFoundError(f"no such transfer: {transfer_id}", param="transfer")
        return found

    def payout(self, payout_id: object) -> Payout:
        found = None
        if isinstance(payout_id, str):
            found = self.find(payout_aggregate_id(payout_id), Payout)
        if found is None:
            raise PayoutNotFoundError(f"no such payout: {payout_id}", param="payout")
        return found

    def claim(self, kind: str, object_id: str, param: str) -> None:
        """A client-chosen id names one thing, ledger-wide: its journal entry ids derive from
        it, so a second use would book two entries under one id. Refused as ``param``'s."""
        if not isinstance(object_id, str) or not object_id:
            raise InvalidParameterError(f"{param} must be a non-empty string", param=param)
        self.add(IdClaim.claim(kind, object_id, self.when), param=param)

    def discretionary(self, account_id: str, currency: str) -> None:
        """Marks a debit that must not take this balance's available funds below the floor."""
        self._discretionary.add((account_id, currency))

    def post_journal(self) -> None:
        """Mirrors the command's journal entries onto the Balance aggregates they touch."""
        deltas: dict[tuple[str, str, datetime | None], list[int]] = {}
        entries: dict[tuple[str, str, datetime | None], list[str]] = {}
        for event in self.new_events():
            if not isinstance(event, JournalEvent) or isinstance(event, Balance.Event):
                continue  # Balance's own journal events (releases, top-ups) apply themselves
            for (owner, currency), books in book_deltas(event.entry_postings()).items():
                pending, available, reserved = balance_row(books)
                # Pending funds sit in a lot per available_on; the rest moves at once.
                for on, part in (
                    (event.available_on, (pending, 0, 0)),
                    (None, (0, available, reserved)),
                ):
                    if not any(part):
                        continue
                    key = (owner, currency, on)
                    row = deltas.setdefault(key, [0, 0, 0])
                    for n, amount in enumerate(part):
                        row[n] += amount
                    ids = entries.setdefault(key, [])
                    if event.entry_id not in ids:
                        ids.append(event.entry_id)
        # Fold the non-pending deltas of a balance into its first group to keep events few.
        merged: dict[tuple[str, str], list[tuple[datetime | None, list[int], list[str]]]] = {}
        for (owner, currency, on), row in deltas.items():
            merged.setdefault((owner, currency), []).append(
                (on, row, entries[(owner, currency, on)])
            )
        for (owner, currency), groups in merged.items():
            balance = self.balance(owner, currency)
            for on, (pending, available, reserved), ids in groups:
                if pending == available == reserved == 0 and on is None:
                    continue  # (pending postings that net to zero still leave their lot)
                if on is not None and not balance.can_hold_lot(on):
                    raise PendingLotsExceededError(
                        f"{owner} has {LOTS_MAX} distinct pending available_on instants in "
                        f"{currency}; release funds first or use day-granular available_on",
                        param="available_on",
                    )
                balance.post(
                    self.when,
                    ids,
                    pending,
                    available,
                    reserved,
                    on,
                    discretionary=(owner, currency) in self._discretionary,
                )

    def broken_expectations(self) -> list[str]:
        """What this command broke of Sluice's expectations: an available balance it took (further)
        below its floor, a charge's caps exceeded, a transfer over-reversed.
        A fact is recorded all the same; this names what reconciliation has to look at."""
        broken: list[str] = []
        for agg_id, aggregate in self._touched.items():
            if (
                isinstance(aggregate, Balance)
                and aggregate.available_minor < AVAILABLE_FLOOR_MINOR
                and aggregate.available_minor < self._available_before.get(agg_id, 0)
            ):
                broken.append(
                    f"{aggregate.account_id} {aggregate.currency} available "
                    f"{aggregate.available_minor} below the floor"
                )
            elif isinstance(aggregate, Payment):
                broken += aggregate.exceeded_caps()
            elif isinstance(aggregate, Transfer) and aggregate.reversible_minor < 0:
                broken.append(f"reversals of {aggregate.transfer_id} exceed the transfer")
        return sorted(broken)

    def commit(self) -> list[tuple[UUID, int]]:
        """Publishes this command's aggregates to the batch; returns its events' identities."""
        keys = [(e.originator_id, e.originator_version) for e in self.new_events()]
        self._batch.aggregates.update(self._touched)
        return keys


Handler = Callable[[Scope, Any], dict[str, str]]


class Engine(Application[UUID]):
    """Runs messages through their handlers (``handlers``, set by the application)."""

    handlers: ClassVar[Mapping[type[c.Message], Handler]] = {}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        platform_account_id: str = PLATFORM_ACCOUNT_ID,
        absence_probe: AbsenceProbe | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.absence_probe = absence_probe or self._probe_one_by_one
        self.version_probe: VersionProbe | None = None  # set by stores that can (PostgreSQL)
        self.page_reader: PageReader | None = None  # likewise; else recorder.select_notifications
        # The store takes a HeadCheck with a batch's events (PostgreSQL; see _run_batch).
        self.head_checks = False
        # The store's head up to which every cached aggregate is known current, or None: then
        # batches probe the store first (see _run_batch). Read and written under _write_lock.
        self._known_head: int | None = None
        # monotonic: another writer wrote lately, so stay with probes until then (an unprobed
        # run would mostly fail its head check, and re-running it costs more than the probe).
        self._shared_until = 0.0
        self.writer_lock: WriterLock | None = None  # likewise
        self._contended_until = 0.0  # monotonic: take the writer lock until then
        self._in_turn = False  # this process holds the writer lock (under _write_lock)
        self.platform_account_id = platform_account_id
        # One batch at a time per process: the events table serialises writers anyway, and this
        # keeps threads of one process from conflicting on hot balances.
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue_cond = threading.Condition(self._queue_lock)
        self._leading = False  # a caller is recording the queue (the group commit's leader)
        self._queue: list[_Slot] = []

    def close(self) -> None:
        closer = getattr(self.writer_lock, "close", None)  # its connection, if it has one
        if callable(closer):
            closer()
        super().close()

    # Execution ----------------------------------------------------------------------------

    def execute(self, command: c.Command) -> CommandResult:
        """Runs one of Sluice's own commands; raises its ``SluiceError`` if it is refused."""
        invariant(
            not isinstance(command, facts.Fact), "facts go to record(); execute() takes commands"
        )
        return self._submit(command)

    def _submit(self, command: c.Message) -> CommandResult:
        """Runs one command or fact; raises its ``SluiceError`` if it is rejected.

        Group commit: concurrent callers queue their commands; one of them (the leader) records
        everything queued so far in one ``save()`` while the others wait for it. Under load that
        turns many one-event transactions into a few larger ones, with the same per-command
        outcome.
        """
        slot = _Slot(command)
        with self._queue_cond:
            self._queue.append(slot)
            # Followers wait for the leader's batch and return as soon as theirs is recorded,
            # without queueing behind the next batch; one of those left over leads next.
            while self._leading and not slot.done:
                self._queue_cond.wait()
            lead = not slot.done
            self._leading = self._leading or lead
        if lead:
            try:
                self._lead(slot)
            finally:
                with self._queue_cond:
                    self._leading = False
                    self._queue_cond.notify_all()
        invariant(slot.done, "a queued command was left behind")
        if slot.failure is not None:
            raise slot.failure
        invariant(slot.result is not None, "a done command has a result")
        result = cast(CommandResult, slot.result)
        if result.error is not None:
            raise result.error
        return result

    def _lead(self, slot: _Slot) -> None:
        """Records the queue a batch at a time until ``slot`` is among the recorded."""
        for _ in range(QUEUE_ROUNDS_MAX):
            with self._write_lock, self._writer_turn():  # contended: the queue grows meanwhile
                self._run_queued(slot)
            with self._queue_cond:
                self._queue_cond.notify_all()  # followers recorded in that batch return now
            if slot.done:
                return

    def _run_queued(self, slot: _Slot) -> None:
        with self._queue_lock:
            taken = self._queue[:GROUP_COMMIT_SIZE_MAX]
            del self._queue[:GROUP_COMMIT_SIZE_MAX]
        try:
            results = self._execute_locked([s.command for s in taken])
        except BaseException as failure:  # e.g. the database went away: tell everyone
            with self._queue_lock:
                if slot in self._queue:  # the leader's own, not yet run: it fails, never runs
                    self._queue.remove(slot)
                    taken.append(slot)
            for s in taken:
                s.failure, s.done = failure, True
            raise
        for s, result in zip(taken, results, strict=True):
            s.result, s.done = result, True

    @contextmanager
    def _writer_turn(self, attempt: int = 0) -> Iterator[None]:
        """Holds the store's writer lock if this process met a conflict lately (or is retrying
        one); otherwise runs side by side with other processes. Not re-entered: the holder's
        retries run inside its turn."""
        lock = self.writer_lock
        wanted = attempt > 0 or time.monotonic() < self._contended_until
        if lock is None or self._in_turn or not wanted:
            yield
            return
        with lock():
            self._in_turn = True
            try:
                yield
            finally:
                self._in_turn = False

    def record(self, fact: facts.Fact) -> CommandResult:
        """Records a movement Stripe reports as done (the facts door; see ``ledger.facts``).

        Same engine as commands (idempotency, group commit), different rules: no policy check
        refuses a fact; what it breaks is named in the result's ``flagged`` entry."""
        invariant(isinstance(fact, facts.Fact), "record() takes facts; commands go to execute()")
        return self._submit(fact)

    def execute_batch(self, commands: Sequence[c.Message]) -> list[CommandResult]:
        """Validates every command in memory and records the accepted ones in one ``save()``."""
        if len(commands) > BATCH_SIZE_MAX:
            raise InvalidParameterError(f"a batch holds at most {BATCH_SIZE_MAX} commands")
        with self._write_lock:
            return self._execute_locked(commands)

    def _execute_locked(self, commands: Sequence[c.Message]) -> list[CommandResult]:
        started = time.monotonic()
        try:
            results = self._execute_retrying(commands)
        except BaseException:
            _observe(commands, None, time.monotonic() - started)
            raise
        _observe(commands, results, time.monotonic() - started)
        return results

    def _execute_retrying(self, commands: Sequence[c.Message]) -> list[CommandResult]:
        for attempt in range(CONFLICT_RETRIES_MAX):
            try:
                with self._writer_turn(attempt):
                    return self._run_batch(commands)
            except RecordConflictError:
                # Another process wrote one of our aggregates first. Our work was rolled back
                # whole; run it again on fresh state.
                self._contended_until = time.monotonic() + CONTENTION_WINDOW_S
                if attempt == CONFLICT_RETRIES_MAX - 1:
                    break
                window_ms = min(CONFLICT_BACKOFF_CAP_MS, CONFLICT_BACKOFF_BASE_MS << attempt)
                time.sleep(random.uniform(0, window_ms) / 1000)
        error = ConcurrencyError("the same objects kept changing underneath; retry the request")
        return [CommandResult(cmd.name, cmd.idempotency_key, error=error) for cmd in commands]

    def cached_at(self, aggregate_id: UUID, version: int | None) -> Aggregate | None:
        """A copy of the cached aggregate if it is at ``version`` (the stored head probed at the
        start of the batch): then it needs no fast-forward read. A stale copy is never used
        blindly: a write to it would conflict on its version and the batch would run again."""
        cache = self.repository.cache
        if version is None or cache is None:
            return None
        lock = self.repository._use_fastforward_lock(aggregate_id)
        try:
            with lock:  # a reader may be fast-forwarding the cached object in place
                try:
                    cached = cast(Aggregate, cache.get(aggregate_id))
                except KeyError:
                    return None
                if cached.version != version:
                    return None
                return _detached_copy(cached)
        finally:
            self.repository._disuse_fastforward_lock(aggregate_id)

    def _cache_saved(self, aggregates: Sequence[Aggregate]) -> None:
        """Keeps the batch's aggregates, as saved, in the repository's cache (eventsourcing
        leaves a fast-forwarding cache as it was): the next batch's probe finds them current."""
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate in aggregates:
            invariant(not aggregate.pending_events, "a saved aggregate has no pending events")
            cache.put(aggregate.id, aggregate)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """``Application.save`` of eventsourcing 9.5 (pinned), collecting an aggregate's events
        with a plain class check: its ``ProcessingEvent.collect_events`` tests every object
        against two runtime-checkable protocols, whose ``isinstance`` was 8% of a batch."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's deprecated hook, still called
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshots at the configured intervals, as eventsourcing does, but from the saved
        aggregate: eventsourcing reads it back from the store first (200 events of a hot
        balance, about 13 ms inside a batch; 5% of payments in batches of 16). When a batch took
        an aggregate past an interval's version (the platform's balance takes a batch's every
        payment), the snapshot is of the aggregate as saved, a few versions later: a reader
        starts from the newest snapshot at or before the version it wants, whichever that is."""
        intervals = self.snapshotting_intervals
        if not self.snapshots or not intervals:
            return
        due: dict[UUID, int] = {}
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            interval = intervals.get(type(aggregate)) if aggregate is not None else None
            if interval is not None and not event.originator_version % interval:
                due[event.originator_id] = event.originator_version
        for originator_id, version in due.items():
            aggregate = processing_event.aggregates[originator_id]
            snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
            if snapshot_class is not None:
                self.snapshots.put([snapshot_class.take(aggregate)])
            else:
                self.take_snapshot(originator_id, version)

    def _probe(self, ids: Sequence[UUID]) -> tuple[set[UUID], dict[UUID, int], int | None]:
        if self.version_probe is None:
            return self.absence_probe(ids), {}, None
        heads, store_head = self.version_probe(ids)
        return {i for i in ids if i not in heads}, heads, store_head

    def _from_cache(
        self, created: Sequence[UUID], read: Sequence[UUID]
    ) -> tuple[set[UUID], dict[UUID, int]]:
        """The probe's answer taken from the cache, when every cached aggregate is known
        current (``_known_head``): a cached id is at its cached version; an id a command would
        create is absent unless cached (if it exists after all, its insert takes a version
        already taken: a conflict, and the batch runs again after a probe); any other id is
        read from the store when a command needs it."""
        cache = self.repository.cache
        heads: dict[UUID, int] = {}
        absent: set[UUID] = set()
        for ids, creates in ((created, True), (read, False)):
            for key in ids:
                try:
                    if cache is None:
                        raise KeyError(key)
                    heads[key] = cast(Aggregate, cache.get(key)).version
                except KeyError:
                    if creates:
                        absent.add(key)
        return absent, heads

    def _keep_current(self, current: Mapping[UUID, int]) -> None:
        """Evicts every cached aggregate but those at their ``current`` version: what is left
        is known current. (``cache.cache`` is the LRU's dict, eventsourcing 9.5, pinned.)"""
        cache = self.repository.cache
        if cache is None:
            return
        for key in list(cache.cache):
            with suppress(KeyError):
                cached = cast(Aggregate, cache.get(key))
                if current.get(key) != cached.version:
                    cache.get(key, evict=True)

    def _probe_one_by_one(self, ids: Sequence[UUID]) -> set[UUID]:
        """The portable probe: one indexed lookup per id (no snapshot read)."""
        return {i for i in ids if not self.recorder.select_events(i, limit=1)}

    def _run_batch(self, commands: Sequence[c.Message]) -> list[CommandResult]:
        """Runs a batch; if every cached aggregate is known current, first without probing the
        store (one round trip less), and again with a probe if that run meets anything it
        cannot vouch for: another writer's events (the head moved), an id it took for absent,
        a rejected command (the rejection may rest on what it took for absent)."""
        if (
            self._known_head is not None
            and self.head_checks
            and self.repository.cache is not None
            and not any(isinstance(cmd, facts.Fact) for cmd in commands)
        ):
            try:
                results = self._run_batch_once(commands, optimistic=True)
            except RecordConflictError:
                self._known_head = None
                self._shared_until = time.monotonic() + CONTENTION_WINDOW_S
            else:
                if results is not None:
                    return results
        results = self._run_batch_once(commands, optimistic=False)
        invariant(results is not None, "a probed batch always has results")
        return cast(list[CommandResult], results)

    def _run_batch_once(
        self, commands: Sequence[c.Message], *, optimistic: bool
    ) -> list[CommandResult] | None:
        created = [command_record_id(str(cmd.idempotency_key)) for cmd in commands]
        read: list[UUID] = []
        for cmd in commands:
            # Malformed ids: the command is refused with a clear error when it runs.
            with suppress(TypeError, AttributeError):
                created += _created_ids(cmd)
        if any(isinstance(cmd, facts.Fact) for cmd in commands):
            read.append(OPENING_INDEX_ID)  # read by every fact; absent unless imported
        if self.version_probe is not None:
            for cmd in commands:
                read += _read_ids(cmd, self.platform_account_id)
        store_head: int | None = None
        if optimistic:
            absent, heads = self._from_cache(created, read)
            check = HeadCheck(expected=self._known_head)
        else:
            absent, heads, store_head = self._probe(created + read)
            check = HeadCheck()
        batch = _Batch(self, absent, heads)
        recorded_at = self.clock()
        outcomes: list[tuple[CommandResult, list[tuple[UUID, int]]]] = []
        for command in commands:
            try:
                result, keys = self._run_one(batch, command, recorded_at)
            except SluiceError as error:
                if optimistic:
                    return None
                result, keys = CommandResult(command.name, command.idempotency_key, error=error), []
            outcomes.append((result, keys))
        if not batch.aggregates:
            return [result for result, _ in outcomes]
        saved = list(batch.aggregates.values())
        recordings = self.save(*saved, head_check=check) if self.head_checks else self.save(*saved)
        self._cache_saved(saved)
        positions = {
            (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
            for r in recordings
        }
        if self.head_checks:
            self._note_head(optimistic, check, store_head, heads, saved, max(positions.values()))
        return [
            replace(result, position=max(positions[k] for k in keys)) if keys else result
            for result, keys in outcomes
        ]

    def _note_head(
        self,
        optimistic: bool,
        check: HeadCheck,
        store_head: int | None,
        heads: dict[UUID, int],
        saved: Sequence[Aggregate],
        last: int,
    ) -> None:
        """After a recorded batch: is every cached aggregate known current up to ``last``?
        An optimistic batch was inserted only if no other writer had written since the known
        head: yes. A probed batch: only if no other writer wrote between the probe and the
        insert (nor lately: ``_shared_until``); then the probed and saved aggregates are
        current, and the rest is evicted."""
        if optimistic:
            self._known_head = last
        elif store_head is None or check.before != store_head:
            self._known_head = None
            self._shared_until = time.monotonic() + CONTENTION_WINDOW_S
        elif time.monotonic() >= self._shared_until:
            self._keep_current({**heads, **{a.id: a.version for a in saved}})
            self._known_head = last

    def _run_one(
        self, batch: _Batch, command: c.Message, recorded_at: datetime
    ) -> tuple[CommandResult, list[tuple[UUID, int]]]:
        key = command.idempotency_key
        if not isinstance(key, str) or not 0 < len(key) <= IDEMPOTENCY_KEY_LEN_MAX:
            raise InvalidParameterError(
                f"idempotency_key is 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters",
                param="idempotency_key",
            )
        command.check_text()
        when = When(check_instant(command.effective_at, "effective_at"), recorded_at)
        scope = Scope(batch, when)
        fingerprint = command.fingerprint()
        record = scope.find(command_record_id(key), CommandRecord)
        if record is not None:
            if record.fingerprint != fingerprint or record.command != command.name:
                raise IdempotencyConflictError(
                    f"idempotency key {key!r} was used with different parameters",
                    param="idempotency_key",
                )
            return CommandResult(command.name, key, ids=dict(record.result), replayed=True), []
        ids = self.handlers[type(command)](scope, command)
        if isinstance(command, facts.Fact):  # history before an import's cut-over: once
            facts.offset_before_opening(scope, command)
        scope.post_journal()
        if isinstance(command, facts.Fact):
            broken = scope.broken_expectations()
            if broken:
                ids = {**ids, "flagged": "; ".join(broken)}
        scope.add(CommandRecord.accept(key, command.name, fingerprint, ids, recorded_at))
        return CommandResult(command.name, key, ids=ids), scope.commit()


def _read_ids(cmd: c.Message, platform_account_id: str) -> list[UUID]:
    """Accounts, balances and payouts a command will likely read: probed with the batch, a
    cached one found current needs no read of its own."""
    accounts = [platform_account_id]
    for name in ("account_id", "destination_account_id", "on_behalf_of"):
        value = getattr(cmd, name, None)
        if isinstance(value, str):
            accounts.append(value)
    currency = getattr(cmd, "currency", None)
    ids = [account_aggregate_id(a) for a in accounts]
    if isinstance(currency, str):
        with suppress(Exception):  # a malformed currency is refused when the command runs
            ids += [balance_aggregate_id(a, currency) for a in accounts]
    # The payout a command moves: the worker loaded it (and so cached it) just before it
    # submits, so a probed head equal to the cached version spares the command a second read.
    payout_id = getattr(cmd, "payout_id", None)
    if isinstance(payout_id, str) and not isinstance(cmd, c.RequestPayout):
        ids.append(payout_aggregate_id(payout_id))
    return ids


def _created_ids(cmd: c.Message) -> list[UUID]:
    """Aggregates a command would create, when their ids are known before it runs: probing
    them with the batch (one query) makes the existence checks of ``Scope.add`` free."""
    if isinstance(cmd, c.RecordPayment):
        payment_id = cmd.payment_id or object_id("py", cmd.idempotency_key)
        ids = [payment_aggregate_id(payment_id)]
        if cmd.charge_type == "destination":
            ids.append(transfer_aggregate_id(cmd.transfer_id or object_id("tr", payment_id)))
        ids += [
            transfer_aggregate_id(object_id("tr", payment_id, part.account_id))
            for part in cmd.split
            if isinstance(part, SplitPart)
        ]
        return ids
    if isinstance(cmd, c.RequestPayout):
        return [payout_aggregate_id(cmd.payout_id or object_id("po", cmd.idempotency_key))]
    if isinstance(cmd, c.CreateTransfer):
        return [transfer_aggregate_id(cmd.transfer_id or object_id("tr", cmd.idempotency_key))]
    if isinstance(cmd, c.TopUp):
        return [
            aggregate_id("claim", "topup", cmd.topup_id or object_id("tu", cmd.idempotency_key))
        ]
    return []
