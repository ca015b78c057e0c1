"""The Ledger application: one method per use case, single commands or batches in one save().

Every command runs inside a scope over the batch's working aggregates: it reads copies, and only
if it succeeds do its changes join the batch. A rejected command therefore leaves nothing behind,
while the others in the batch are still recorded, all in one ``save()`` (one transaction).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError

from ledger import commands as c
from ledger.accounts import ConnectedAccount
from ledger.balances import LOTS_MAX, Balance
from ledger.errors import (
    AccountExistsError,
    AccountNotFoundError,
    ChargesDisabledError,
    ConcurrencyError,
    CurrencyMismatchError,
    IdempotencyConflictError,
    InvalidParameterError,
    PaymentNotFoundError,
    PayoutNotFoundError,
    PendingLotsExceededError,
    RefundExceedsChargeError,
    SluiceError,
    SplitRuleError,
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
from ledger.journal import AVAILABLE, BALANCE_BOOKS, BANK, PENDING, RESERVED, Posting, move
from ledger.money import check_amount, check_currency
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.records import CommandRecord, IdClaim
from ledger.splits import SplitPart, allocate
from ledger.transfers import Transfer

BATCH_SIZE_MAX = 1_000
GROUP_COMMIT_SIZE_MAX = 100  # commands from concurrent callers recorded in one save()
CONFLICT_RETRIES_MAX = 5
IDEMPOTENCY_KEY_LEN_MAX = 255
JOURNAL_PAGE_SIZE = 1_000

A = TypeVar("A", bound=Aggregate)
Clock = Callable[[], datetime]
# Given aggregate ids, returns those with no stored events, in as few round trips as the store
# allows. New ids (idempotency records, payments) are the common case on the write path.
AbsenceProbe = Callable[[Sequence[UUID]], set[UUID]]


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


def _detached_copy(aggregate: A) -> A:
    """Deep-copies the state but shares the (immutable) pending events, so copying an aggregate
    that already has a batch's worth of events stays cheap."""
    pending = aggregate._pending_events
    aggregate._pending_events = []
    try:
        copied = deepcopy(aggregate)
    finally:
        aggregate._pending_events = pending
    copied._pending_events = list(pending)
    return copied


class _Slot:
    """A command waiting for a group commit."""

    __slots__ = ("command", "done", "failure", "result")

    def __init__(self, command: c.Command) -> None:
        self.command = command
        self.done = False
        self.result: CommandResult | None = None
        self.failure: BaseException | None = None


class _Batch:
    def __init__(self, app: Ledger, absent: set[UUID]) -> None:
        self.app = app
        self.aggregates: dict[UUID, Aggregate] = {}
        self.absent = absent  # ids known to have no stored events when the batch began


class Scope:
    """One command's view of the batch: reads are copies; ``commit`` publishes them."""

    def __init__(self, batch: _Batch, when: When) -> None:
        self._batch = batch
        self._touched: dict[UUID, Aggregate] = {}
        self._seen_events: dict[UUID, int] = {}
        self.when = when
        self.platform_account_id = batch.app.platform_account_id
        self._discretionary: set[tuple[str, str]] = set()

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        found = self._touched.get(aggregate_id)
        if found is None:
            base = self._batch.aggregates.get(aggregate_id)
            if base is not None:
                found = _detached_copy(base)
            elif aggregate_id in self._batch.absent:
                return None
            else:
                try:
                    found = self._batch.app.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    return None
            self._touched[aggregate_id] = found
            self._seen_events[aggregate_id] = len(found.pending_events)
        invariant(isinstance(found, cls), f"{aggregate_id} is not a {cls.__name__}")
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
            for p in event.entry_postings():
                if p.book not in BALANCE_BOOKS:
                    continue
                on = event.available_on if p.book == PENDING else None
                key = (p.owner, p.currency, on)
                row = deltas.setdefault(key, [0, 0, 0])
                row[(PENDING, AVAILABLE, RESERVED).index(p.book)] += p.amount_minor
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
                if pending == available == reserved == 0:
                    continue
                if pending and on is not None and not balance.can_hold_lot(on):
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

    def commit(self) -> list[tuple[UUID, int]]:
        """Publishes this command's aggregates to the batch; returns its events' identities."""
        keys = [(e.originator_id, e.originator_version) for e in self.new_events()]
        self._batch.aggregates.update(self._touched)
        return keys


Handler = Callable[[Scope, Any], dict[str, str]]
UseCase = Callable[..., CommandResult]


def _use_case(command: type[c.Command]) -> UseCase:
    """A Ledger method that builds ``command`` from keyword arguments and executes it; the
    effective instant defaults to the clock's now."""

    def run(
        self: Ledger, *, idempotency_key: str, effective_at: datetime | None = None, **kw: Any
    ) -> CommandResult:
        when = effective_at if effective_at is not None else self.clock()
        return self.execute(command(idempotency_key=idempotency_key, effective_at=when, **kw))

    run.__name__ = run.__qualname__ = command.name
    run.__doc__ = f"Executes ``{command.__name__}``; raises its SluiceError when refused."
    return run


class Ledger(Application[UUID]):
    """Sluice's write side. Construct through ``adapters.bootstrap`` (it supplies the clock)."""

    name = "Ledger"
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    snapshotting_intervals = {
        Balance: 200,
        Payment: 50,
        Transfer: 50,
        Payout: 50,
        ConnectedAccount: 50,
    }

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
        self.platform_account_id = platform_account_id
        # One batch at a time per process: the events table serialises writers anyway, and this
        # keeps threads of one process from conflicting on hot balances.
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Slot] = []

    # Execution ----------------------------------------------------------------------------

    def execute(self, command: c.Command) -> CommandResult:
        """Runs one command; raises its ``SluiceError`` if it is rejected.

        Group commit: concurrent callers queue their commands; whichever thread holds the write
        lock records everything queued so far in one ``save()``. Under load that turns many
        one-event transactions into a few larger ones, with the same per-command outcome.
        """
        slot = _Slot(command)
        with self._queue_lock:
            self._queue.append(slot)
        with self._write_lock:
            if not slot.done:
                with self._queue_lock:
                    taken = self._queue[:GROUP_COMMIT_SIZE_MAX]
                    del self._queue[:GROUP_COMMIT_SIZE_MAX]
                try:
                    results = self._execute_locked([s.command for s in taken])
                except BaseException as failure:  # e.g. the database went away: tell everyone
                    for s in taken:
                        s.failure, s.done = failure, True
                    raise
                for s, result in zip(taken, results, strict=True):
                    s.result, s.done = result, True
        invariant(slot.done, "a queued command was left behind")
        if slot.failure is not None:
            raise slot.failure
        invariant(slot.result is not None, "a done command has a result")
        result = cast(CommandResult, slot.result)
        if result.error is not None:
            raise result.error
        return result

    def execute_batch(self, commands: Sequence[c.Command]) -> list[CommandResult]:
        """Validates every command in memory and records the accepted ones in one ``save()``."""
        if len(commands) > BATCH_SIZE_MAX:
            raise InvalidParameterError(f"a batch holds at most {BATCH_SIZE_MAX} commands")
        with self._write_lock:
            return self._execute_locked(commands)

    def _execute_locked(self, commands: Sequence[c.Command]) -> list[CommandResult]:
        for attempt in range(CONFLICT_RETRIES_MAX):
            try:
                return self._run_batch(commands)
            except RecordConflictError:
                # Another process wrote one of our aggregates first. Our work was rolled back
                # whole; run it again on fresh state.
                if attempt == CONFLICT_RETRIES_MAX - 1:
                    break
        error = ConcurrencyError("the same objects kept changing underneath; retry the request")
        return [CommandResult(cmd.name, cmd.idempotency_key, error=error) for cmd in commands]

    def _probe_one_by_one(self, ids: Sequence[UUID]) -> set[UUID]:
        """The portable probe: one indexed lookup per id (no snapshot read)."""
        return {i for i in ids if not self.recorder.select_events(i, limit=1)}

    def _run_batch(self, commands: Sequence[c.Command]) -> list[CommandResult]:
        probe = [command_record_id(str(cmd.idempotency_key)) for cmd in commands]
        for cmd in commands:
            # Malformed ids: the command is refused with a clear error when it runs.
            with suppress(TypeError, AttributeError):
                probe += _created_ids(cmd)
        batch = _Batch(self, self.absence_probe(probe))
        recorded_at = self.clock()
        outcomes: list[tuple[CommandResult, list[tuple[UUID, int]]]] = []
        for command in commands:
            try:
                result, keys = self._run_one(batch, command, recorded_at)
            except SluiceError as error:
                result, keys = CommandResult(command.name, command.idempotency_key, error=error), []
            outcomes.append((result, keys))
        if not batch.aggregates:
            return [result for result, _ in outcomes]
        recordings = self.save(*batch.aggregates.values())
        positions = {
            (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
            for r in recordings
        }
        return [
            replace(result, position=max(positions[k] for k in keys)) if keys else result
            for result, keys in outcomes
        ]

    def _run_one(
        self, batch: _Batch, command: c.Command, recorded_at: datetime
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
        ids = HANDLERS[type(command)](scope, command)
        scope.post_journal()
        scope.add(CommandRecord.accept(key, command.name, fingerprint, ids, recorded_at))
        return CommandResult(command.name, key, ids=ids), scope.commit()

    # Use cases: one method per command, e.g. ``ledger.record_payment(idempotency_key=…, …)``.

    open_account = _use_case(c.OpenAccount)
    update_account = _use_case(c.UpdateAccount)
    set_payout_schedule = _use_case(c.SetPayoutSchedule)
    close_account = _use_case(c.CloseAccount)
    record_payment = _use_case(c.RecordPayment)
    create_transfer = _use_case(c.CreateTransfer)
    reverse_transfer = _use_case(c.ReverseTransfer)
    refund_payment = _use_case(c.RefundPayment)
    refund_application_fee = _use_case(c.RefundApplicationFee)
    open_dispute = _use_case(c.OpenDispute)
    close_dispute = _use_case(c.CloseDispute)
    release_funds = _use_case(c.ReleaseFunds)
    top_up = _use_case(c.TopUp)
    request_payout = _use_case(c.RequestPayout)
    submit_payout = _use_case(c.SubmitPayout)
    mark_payout_in_transit = _use_case(c.MarkPayoutInTransit)
    mark_payout_paid = _use_case(c.MarkPayoutPaid)
    fail_payout = _use_case(c.FailPayout)
    cancel_payout = _use_case(c.CancelPayout)

    # Queries (the write side's own state; finance queries belong to projections) -----------

    def _find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        try:
            found: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None

    def has_command(self, idempotency_key: str) -> bool:
        """Whether a command with this key was accepted before."""
        return self._find(command_record_id(idempotency_key), CommandRecord) is not None

    def get_account(self, account_id: str) -> ConnectedAccount | None:
        return self._find(account_aggregate_id(account_id), ConnectedAccount)

    def get_balance(self, account_id: str, currency: str) -> Balance | None:
        return self._find(balance_aggregate_id(account_id, currency), Balance)

    def get_payment(self, payment_id: str) -> Payment | None:
        return self._find(payment_aggregate_id(payment_id), Payment)

    def get_transfer(self, transfer_id: str) -> Transfer | None:
        return self._find(transfer_aggregate_id(transfer_id), Transfer)

    def get_payout(self, payout_id: str) -> Payout | None:
        return self._find(payout_aggregate_id(payout_id), Payout)

    def iter_events(self, after: int = 0) -> Iterator[tuple[int, Any]]:
        """Every recorded event in log order, paged (gaps in positions are normal)."""
        position = after
        while True:
            page = self.recorder.select_notifications(
                start=position, limit=JOURNAL_PAGE_SIZE, inclusive_of_start=False
            )
            if not page:
                return
            for notification in page:
                yield notification.id, self.mapper.to_domain_event(notification)
            position = page[-1].id

    def iter_journal(self) -> Iterator[tuple[int, JournalEvent]]:
        for position, event in self.iter_events():
            if isinstance(event, JournalEvent):
                yield position, event

    def journal_totals(self) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
        """(sum of all postings per currency, sum per (owner, book, currency)) from the journal."""
        per_currency: dict[str, int] = {}
        per_book: dict[tuple[str, str, str], int] = {}
        for _, event in self.iter_journal():
            for p in event.entry_postings():
                per_currency[p.currency] = per_currency.get(p.currency, 0) + p.amount_minor
                key = (p.owner, p.book, p.currency)
                per_book[key] = per_book.get(key, 0) + p.amount_minor
        return per_currency, per_book


def _created_ids(cmd: c.Command) -> list[UUID]:
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


# Handlers: one per command. They validate everything before they change anything they cannot
# take back; the scope discards a rejected command's copies, so a late error is still harmless.


def _open_account(s: Scope, cmd: c.OpenAccount) -> dict[str, str]:
    if s.find(account_aggregate_id(str(cmd.account_id)), ConnectedAccount) is not None:
        raise AccountExistsError(f"account {cmd.account_id} already exists", param="account")
    if cmd.account_id == s.platform_account_id and cmd.kind != "platform":
        raise InvalidParameterError(
            f"{s.platform_account_id} is the platform's account", param="kind"
        )
    if cmd.kind == "platform" and cmd.account_id != s.platform_account_id:
        raise InvalidParameterError(
            f"the platform account is {s.platform_account_id}", param="account"
        )
    s.add(
        ConnectedAccount.open(cmd.account_id, cmd.kind, cmd.country, cmd.default_currency, s.when)
    )
    return {"account": cmd.account_id}


def _update_account(s: Scope, cmd: c.UpdateAccount) -> dict[str, str]:
    s.account(cmd.account_id).update(
        s.when,
        verification_status=cmd.verification_status,
        capabilities=cmd.capabilities,
        charges_enabled=cmd.charges_enabled,
        payouts_enabled=cmd.payouts_enabled,
        external_account_status=cmd.external_account_status,
    )
    return {"account": cmd.account_id}


def _set_payout_schedule(s: Scope, cmd: c.SetPayoutSchedule) -> dict[str, str]:
    s.account(cmd.account_id).set_payout_schedule(
        s.when,
        interval=cmd.interval,
        delay_days=cmd.delay_days,
        weekly_anchor=cmd.weekly_anchor,
        monthly_anchor=cmd.monthly_anchor,
        minimum_minor=cmd.minimum_minor,
    )
    return {"account": cmd.account_id}


def _close_account(s: Scope, cmd: c.CloseAccount) -> dict[str, str]:
    s.account(cmd.account_id).close(s.when)
    return {"account": cmd.account_id}


def _record_payment(s: Scope, cmd: c.RecordPayment) -> dict[str, str]:
    check_currency(cmd.currency)
    platform = s.open_account(s.platform_account_id, "platform")
    if cmd.account_id is not None:
        seller = s.open_account(cmd.account_id)
        if seller.kind != "connected":
            raise InvalidParameterError("charges route to connected accounts", param="account")
        if cmd.charge_type == "direct" and not seller.charges_enabled:
            raise ChargesDisabledError(f"{cmd.account_id} cannot take charges", param="account")
    if cmd.on_behalf_of is not None:
        s.open_account(cmd.on_behalf_of, "on_behalf_of")
    if cmd.split and cmd.charge_type != "separate":
        raise SplitRuleError("split rules route separate charges", param="split")
    payment_id = cmd.payment_id or object_id("py", cmd.idempotency_key)
    if s.find(payment_aggregate_id(payment_id), Payment) is not None:
        raise InvalidParameterError(f"payment {payment_id} already exists", param="payment_id")
    available_on = cmd.available_on
    if available_on is None:
        # Stripe reports available_on on the charge's balance transaction; without it, follow
        # the schedule of the account whose pending period applies.
        settles_on = cmd.on_behalf_of or (
            cmd.account_id if cmd.charge_type == "direct" else s.platform_account_id
        )
        delay = int(s.account(settles_on).schedule["delay_days"]) if settles_on else 0
        # Stripe's available_on falls on a UTC midnight; day buckets also keep pending lots few.
        day = s.when.effective_at.astimezone(UTC).date() + timedelta(days=delay)
        available_on = datetime(day.year, day.month, day.day, tzinfo=UTC)
    check_instant(available_on, "available_on")
    payment = Payment.capture(
        s.when,
        payment_id=payment_id,
        charge_type=cmd.charge_type,
        currency=cmd.currency,
        amount_minor=cmd.amount_minor,
        stripe_fee_minor=cmd.stripe_fee_minor,
        application_fee_minor=cmd.application_fee_minor,
        platform_account_id=platform.account_id,
        account_id=cmd.account_id,
        on_behalf_of=cmd.on_behalf_of,
        transfer_group=cmd.transfer_group,
        transfer_amount_minor=cmd.transfer_amount_minor,
        available_on=available_on,
        transfer_id=cmd.transfer_id,
        application_fee_id=cmd.application_fee_id,
    )
    if cmd.transfer_id is not None and cmd.charge_type != "destination":
        raise InvalidParameterError(
            "transfer_id names a destination charge's transfer", param="transfer_id"
        )
    s.add(payment)
    ids = {"payment": payment_id}
    if payment.destination_transfer_id is not None:
        invariant(cmd.account_id is not None, "destination charge without destination")
        s.add(
            Transfer.create(
                s.when,
                transfer_id=payment.destination_transfer_id,
                source_account_id=platform.account_id,
                destination_account_id=str(cmd.account_id),
                currency=cmd.currency,
                amount_minor=payment.transfer_amount_minor,
                source_payment_id=payment_id,
                transfer_group=cmd.transfer_group,
                pending_until=available_on,
            ),
            param="transfer_id",
        )
        ids["transfer"] = payment.destination_transfer_id
    if cmd.split:
        for part in cmd.split:
            if part.account_id == s.platform_account_id:
                raise SplitRuleError("the platform keeps the remainder implicitly", param="split")
            s.open_account(part.account_id, "split")
        for n, (account_id, amount) in enumerate(
            allocate(payment.amount_minor, list(cmd.split)).items()
        ):
            if amount == 0:
                continue
            transfer_id = object_id("tr", payment_id, account_id)
            payment.source_transfer(transfer_id, amount, s.when)
            s.add(
                Transfer.create(
                    s.when,
                    transfer_id=transfer_id,
                    source_account_id=platform.account_id,
                    destination_account_id=account_id,
                    currency=cmd.currency,
                    amount_minor=amount,
                    source_payment_id=payment_id,
                    transfer_group=cmd.transfer_group or f"group_{payment_id}",
                    pending_until=available_on,
                ),
                param="split",
            )
            ids[f"transfer_{n}"] = transfer_id
    if payment.application_fee_minor:
        ids["application_fee"] = cmd.application_fee_id or object_id("fee", payment_id)
    return ids


def _create_transfer(s: Scope, cmd: c.CreateTransfer) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    platform = s.open_account(s.platform_account_id, "platform")
    destination = s.open_account(cmd.destination_account_id, "destination")
    if destination.kind != "connected":
        raise InvalidParameterError("transfers go to connected accounts", param="destination")
    transfer_id = cmd.transfer_id or object_id("tr", cmd.idempotency_key)
    if s.find(transfer_aggregate_id(transfer_id), Transfer) is not None:
        raise InvalidParameterError(f"transfer {transfer_id} already exists", param="transfer_id")
    balance = s.balance(platform.account_id, cmd.currency)
    pending_until: datetime | None = None
    group = cmd.transfer_group
    if cmd.source_payment_id is not None:
        payment = s.payment(cmd.source_payment_id)
        if payment.currency != cmd.currency:
            raise CurrencyMismatchError(
                f"the source charge is in {payment.currency}, not {cmd.currency}", param="currency"
            )
        payment.source_transfer(transfer_id, amount, s.when)
        group = group or payment.transfer_group or f"group_{payment.payment_id}"
        if not balance.is_released(payment.available_on):
            pending_until = payment.available_on  # follows its charge's pending period
    if pending_until is None:
        balance.require_available(amount)
        s.discretionary(platform.account_id, cmd.currency)
    s.add(
        Transfer.create(
            s.when,
            transfer_id=transfer_id,
            source_account_id=platform.account_id,
            destination_account_id=destination.account_id,
            currency=cmd.currency,
            amount_minor=amount,
            source_payment_id=cmd.source_payment_id,
            transfer_group=group,
            pending_until=pending_until,
        )
    )
    return {"transfer": transfer_id}


def _reverse_transfer(s: Scope, cmd: c.ReverseTransfer) -> dict[str, str]:
    transfer = s.transfer(cmd.transfer_id)
    amount = transfer.check_reversal(cmd.amount_minor)
    # Stripe reverses only what the destination has available (no connected reserves here).
    s.balance(transfer.destination_account_id, transfer.currency).require_available(amount)
    s.discretionary(transfer.destination_account_id, transfer.currency)
    reversal_id = cmd.reversal_id or object_id("trr", cmd.idempotency_key)
    s.claim("reversal", reversal_id, "reversal_id")
    transfer.reverse(reversal_id, amount, s.when)
    return {"transfer": transfer.transfer_id, "reversal": reversal_id}


def _refund_payment(s: Scope, cmd: c.RefundPayment) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    for flag, param in (
        (cmd.reverse_transfer, "reverse_transfer"),
        (cmd.refund_application_fee, "refund_application_fee"),
    ):
        if not isinstance(flag, bool):
            raise InvalidParameterError(f"{param} must be true or false", param=param)
    amount, reversal, fee_refund = payment.plan_refund(
        cmd.amount_minor, cmd.reverse_transfer, cmd.refund_application_fee
    )
    # Facts reported by Stripe replace Sluice's own proportional estimate.
    if cmd.reversal_minor is not None:
        if not cmd.reverse_transfer:
            raise InvalidParameterError(
                "reversal_minor needs reverse_transfer", param="reversal_minor"
            )
        reversal = check_amount(
            cmd.reversal_minor, payment.currency, "reversal_minor", allow_zero=True
        )
    if cmd.application_fee_refund_minor is not None:
        fee_refund = check_amount(
            cmd.application_fee_refund_minor,
            payment.currency,
            "application_fee_refund_minor",
            allow_zero=True,
        )
        if fee_refund > payment.application_fee_minor - payment.application_fee_refunded_minor:
            raise RefundExceedsChargeError(
                "the fee refund exceeds what is left of the fee",
                param="application_fee_refund_minor",
            )
    refund_id = cmd.refund_id or object_id("re", cmd.idempotency_key)
    s.claim("refund", refund_id, "refund_id")
    if fee_refund:
        s.claim("fee_refund", refund_id, "refund_id")  # the fee refund goes by the refund's id
    ids = {"refund": refund_id, "payment": payment.payment_id}
    if reversal:
        invariant(payment.destination_transfer_id is not None, "reversal needs a transfer")
        transfer = s.transfer(payment.destination_transfer_id)
        if cmd.reversal_minor is None:
            reversal = min(reversal, transfer.reversible_minor)  # some may be reversed already
        else:
            transfer.check_reversal(reversal)  # a fact larger than what is left is refused
        if reversal:
            ids["reversal"] = cmd.reversal_id or object_id("trr", refund_id)
            s.claim("reversal", ids["reversal"], "reversal_id")
            transfer.reverse(ids["reversal"], reversal, s.when)
    payment.refund(
        refund_id,
        amount,
        reversal,
        fee_refund,
        cmd.reverse_transfer,
        cmd.refund_application_fee,
        s.when,
    )
    return ids


def _refund_application_fee(s: Scope, cmd: c.RefundApplicationFee) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    fee_refund_id = cmd.fee_refund_id or object_id("fr", cmd.idempotency_key)
    s.claim("fee_refund", fee_refund_id, "fee_refund_id")
    amount = payment.check_fee_refund(fee_refund_id, cmd.amount_minor)
    payment.refund_fee(fee_refund_id, amount, s.when)
    return {"fee_refund": fee_refund_id, "payment": payment.payment_id}


def _open_dispute(s: Scope, cmd: c.OpenDispute) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    dispute_id = cmd.dispute_id or object_id("dp", cmd.idempotency_key)
    s.claim("dispute", dispute_id, "dispute_id")
    payment.open_dispute(dispute_id, cmd.amount_minor, cmd.fee_minor, s.when)
    return {"dispute": dispute_id, "payment": payment.payment_id}


def _close_dispute(s: Scope, cmd: c.CloseDispute) -> dict[str, str]:
    if not isinstance(cmd.won, bool):
        raise InvalidParameterError("won must be true or false", param="won")
    payment = s.payment(cmd.payment_id)
    payment.close_dispute(cmd.won, s.when)
    dispute = payment.dispute or {}
    return {"dispute": str(dispute.get("id")), "payment": payment.payment_id}


def _release_funds(s: Scope, cmd: c.ReleaseFunds) -> dict[str, str]:
    check_currency(cmd.currency)
    check_instant(cmd.until, "until")
    s.account(cmd.account_id)
    balance = s.find(balance_aggregate_id(cmd.account_id, cmd.currency), Balance)
    released = balance.release(cmd.until, s.when) if balance is not None else None
    return {"entry": released.entry_id} if released is not None else {}


def _top_up(s: Scope, cmd: c.TopUp) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    account = s.open_account(cmd.account_id)
    topup_id = cmd.topup_id or object_id("tu", cmd.idempotency_key)
    s.claim("topup", topup_id, "topup_id")
    available_on = cmd.available_on or s.when.effective_at
    check_instant(available_on, "available_on")
    entry = move(
        object_id("txn", "topup", topup_id),
        "topup",
        amount,
        cmd.currency,
        (account.account_id, BANK),
        (account.account_id, PENDING),
        available_on,
    )
    s.balance(account.account_id, cmd.currency).top_up(topup_id, entry, amount, s.when)
    return {"topup": topup_id}


def _request_payout(s: Scope, cmd: c.RequestPayout) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    account = s.account(cmd.account_id)
    if not isinstance(cmd.reported_by_stripe, bool):
        raise InvalidParameterError(
            "reported_by_stripe is true or false", param="reported_by_stripe"
        )
    payout_id = cmd.payout_id or object_id("po", cmd.idempotency_key)
    if s.find(payout_aggregate_id(payout_id), Payout) is not None:
        raise InvalidParameterError(f"payout {payout_id} already exists", param="payout_id")
    if not cmd.reported_by_stripe:
        # Sluice's own payouts obey its policy; a payout Stripe already made is a fact to
        # record as it is (should the books disagree, the balance shows it, visibly).
        account.require_payouts_enabled()
        s.balance(account.account_id, cmd.currency).require_available(amount)
        s.discretionary(account.account_id, cmd.currency)
    s.add(Payout.request(payout_id, account.account_id, cmd.currency, amount, s.when))
    return {"payout": payout_id}


def _submit_payout(s: Scope, cmd: c.SubmitPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).submitted(cmd.stripe_payout_id, s.when)
    return {"payout": cmd.payout_id, "stripe_payout": cmd.stripe_payout_id}


def _mark_in_transit(s: Scope, cmd: c.MarkPayoutInTransit) -> dict[str, str]:
    s.payout(cmd.payout_id).mark_in_transit(s.when)
    return {"payout": cmd.payout_id}


def _mark_paid(s: Scope, cmd: c.MarkPayoutPaid) -> dict[str, str]:
    s.payout(cmd.payout_id).mark_paid(s.when)
    return {"payout": cmd.payout_id}


def _fail_payout(s: Scope, cmd: c.FailPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).fail(cmd.failure_code, s.when)
    return {"payout": cmd.payout_id}


def _cancel_payout(s: Scope, cmd: c.CancelPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).cancel(s.when)
    return {"payout": cmd.payout_id}


HANDLERS: dict[type[c.Command], Handler] = {
    c.OpenAccount: _open_account,
    c.UpdateAccount: _update_account,
    c.SetPayoutSchedule: _set_payout_schedule,
    c.CloseAccount: _close_account,
    c.RecordPayment: _record_payment,
    c.CreateTransfer: _create_transfer,
    c.ReverseTransfer: _reverse_transfer,
    c.RefundPayment: _refund_payment,
    c.RefundApplicationFee: _refund_application_fee,
    c.OpenDispute: _open_dispute,
    c.CloseDispute: _close_dispute,
    c.ReleaseFunds: _release_funds,
    c.TopUp: _top_up,
    c.RequestPayout: _request_payout,
    c.SubmitPayout: _submit_payout,
    c.MarkPayoutInTransit: _mark_in_transit,
    c.MarkPayoutPaid: _mark_paid,
    c.FailPayout: _fail_payout,
    c.CancelPayout: _cancel_payout,
}

__all__ = ["HANDLERS", "CommandResult", "Ledger", "Posting", "Scope"]
