"""The Ledger application: Sluice's write side, one plain method per use case.

``ledger.engine`` runs messages (batches, group commit, idempotency); ``ledger.handlers`` holds
what each of Sluice's commands means, ``ledger.facts`` what each fact Stripe reports means.
A use case is a method here that builds its command and executes it, e.g.
``ledger.record_payment(idempotency_key=…, charge_type="destination", …)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from ledger import commands as c
from ledger import facts
from ledger.accounts import ConnectedAccount
from ledger.balances import Balance
from ledger.engine import (
    BATCH_SIZE_MAX,
    CONFLICT_RETRIES_MAX,
    GROUP_COMMIT_SIZE_MAX,
    JOURNAL_PAGE_SIZE,
    A,
    Clock,
    CommandResult,
    Engine,
    Handler,
    Scope,
)
from ledger.events import JournalEvent
from ledger.handlers import COMMAND_HANDLERS
from ledger.ids import (
    account_aggregate_id,
    balance_aggregate_id,
    command_record_id,
    payment_aggregate_id,
    payout_aggregate_id,
    transfer_aggregate_id,
)
from ledger.journal import Posting, book_deltas
from ledger.limits import IDEMPOTENCY_KEY_LEN_MAX
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.records import CommandRecord
from ledger.transfers import Transfer

# One table for the engine: Sluice's commands and Stripe's facts, each with its own handler.
HANDLERS: dict[type[c.Message], Handler] = {**COMMAND_HANDLERS, **facts.FACT_HANDLERS}


class Ledger(Engine):
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
    handlers = HANDLERS

    def _stamp(self, idempotency_key: str, effective_at: datetime | None) -> dict[str, Any]:
        """A use case's key, and its effective instant (the clock's now unless given)."""
        when = effective_at if effective_at is not None else self.clock()
        return {"idempotency_key": idempotency_key, "effective_at": when}

    # Use cases ------------------------------------------------------------------------------

    def open_account(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.OpenAccount``; its rules: ``handlers._open_account``."""
        return self.execute(c.OpenAccount(**self._stamp(idempotency_key, effective_at), **params))

    def update_account(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.UpdateAccount``; its rules: ``handlers._update_account``."""
        return self.execute(c.UpdateAccount(**self._stamp(idempotency_key, effective_at), **params))

    def set_payout_schedule(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.SetPayoutSchedule``; its rules: ``handlers._set_payout_schedule``."""
        return self.execute(
            c.SetPayoutSchedule(**self._stamp(idempotency_key, effective_at), **params)
        )

    def close_account(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.CloseAccount``; its rules: ``handlers._close_account``."""
        return self.execute(c.CloseAccount(**self._stamp(idempotency_key, effective_at), **params))

    def record_payment(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.RecordPayment``; its rules: ``handlers._record_payment``."""
        return self.execute(c.RecordPayment(**self._stamp(idempotency_key, effective_at), **params))

    def create_transfer(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.CreateTransfer``; its rules: ``handlers._create_transfer``."""
        return self.execute(
            c.CreateTransfer(**self._stamp(idempotency_key, effective_at), **params)
        )

    def reverse_transfer(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.ReverseTransfer``; its rules: ``handlers._reverse_transfer``."""
        return self.execute(
            c.ReverseTransfer(**self._stamp(idempotency_key, effective_at), **params)
        )

    def refund_payment(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.RefundPayment``; its rules: ``handlers._refund_payment``."""
        return self.execute(c.RefundPayment(**self._stamp(idempotency_key, effective_at), **params))

    def refund_application_fee(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """``commands.RefundApplicationFee``; rules in ``handlers._refund_application_fee``."""
        return self.execute(
            c.RefundApplicationFee(**self._stamp(idempotency_key, effective_at), **params)
        )

    def open_dispute(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.OpenDispute``; its rules: ``handlers._open_dispute``."""
        return self.execute(c.OpenDispute(**self._stamp(idempotency_key, effective_at), **params))

    def close_dispute(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.CloseDispute``; its rules: ``handlers._close_dispute``."""
        return self.execute(c.CloseDispute(**self._stamp(idempotency_key, effective_at), **params))

    def release_funds(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.ReleaseFunds``; its rules: ``handlers._release_funds``."""
        return self.execute(c.ReleaseFunds(**self._stamp(idempotency_key, effective_at), **params))

    def top_up(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.TopUp``; its rules: ``handlers._top_up``."""
        return self.execute(c.TopUp(**self._stamp(idempotency_key, effective_at), **params))

    def request_payout(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.RequestPayout``; its rules: ``handlers._request_payout``."""
        return self.execute(c.RequestPayout(**self._stamp(idempotency_key, effective_at), **params))

    def submit_payout(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.SubmitPayout``; its rules: ``handlers._submit_payout``."""
        return self.execute(c.SubmitPayout(**self._stamp(idempotency_key, effective_at), **params))

    def mark_payout_in_transit(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.MarkPayoutInTransit``; its rules: ``handlers._mark_in_transit``."""
        return self.execute(
            c.MarkPayoutInTransit(**self._stamp(idempotency_key, effective_at), **params)
        )

    def mark_payout_paid(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.MarkPayoutPaid``; its rules: ``handlers._mark_paid``."""
        return self.execute(
            c.MarkPayoutPaid(**self._stamp(idempotency_key, effective_at), **params)
        )

    def fail_payout(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.FailPayout``; its rules: ``handlers._fail_payout``."""
        return self.execute(c.FailPayout(**self._stamp(idempotency_key, effective_at), **params))

    def cancel_payout(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.CancelPayout``; its rules: ``handlers._cancel_payout``."""
        return self.execute(c.CancelPayout(**self._stamp(idempotency_key, effective_at), **params))

    def hold_payout(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.HoldPayout``; its rules: ``handlers._hold_payout``."""
        return self.execute(c.HoldPayout(**self._stamp(idempotency_key, effective_at), **params))

    def hold_routing(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.HoldRouting``; its rules: ``handlers._hold_routing``."""
        return self.execute(c.HoldRouting(**self._stamp(idempotency_key, effective_at), **params))

    def resume_routing(
        self, *, idempotency_key: str, effective_at: datetime | None = None, **params: Any
    ) -> CommandResult:
        """Executes ``commands.ResumeRouting``; its rules: ``handlers._resume_routing``."""
        return self.execute(c.ResumeRouting(**self._stamp(idempotency_key, effective_at), **params))

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
            for (owner, currency), books in book_deltas(event.entry_postings()).items():
                for book, amount in books.items():
                    per_currency[currency] = per_currency.get(currency, 0) + amount
                    per_book[(owner, book, currency)] = (
                        per_book.get((owner, book, currency), 0) + amount
                    )
        return per_currency, per_book


__all__ = [
    "BATCH_SIZE_MAX",
    "CONFLICT_RETRIES_MAX",
    "Clock",
    "GROUP_COMMIT_SIZE_MAX",
    "HANDLERS",
    "IDEMPOTENCY_KEY_LEN_MAX",
    "JOURNAL_PAGE_SIZE",
    "CommandResult",
    "Ledger",
    "Posting",
    "Scope",
]
