"""Transfer: funds moved from the platform to a connected account, and reversals of them.

Three kinds share it: the implicit transfer of a destination charge, a transfer sourced from a
separate charge (``source_transaction``), and an unsourced transfer drawn on available funds.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger.errors import InvalidParameterError, ReversalExceedsTransferError
from ledger.events import JournalEvent, When, journal_fields
from ledger.ids import object_id, transfer_aggregate_id
from ledger.journal import AVAILABLE, PENDING, Entry, move
from ledger.money import check_amount

REVERSALS_PER_TRANSFER_MAX = 1_000


class Transfer(Aggregate):
    class Created(Aggregate.Created, JournalEvent):
        transfer_id: str
        source_account_id: str
        destination_account_id: str
        currency: str
        amount_minor: int
        source_payment_id: str | None
        transfer_group: str | None

        def apply(self, transfer: Transfer) -> None:
            transfer.transfer_id = self.transfer_id
            transfer.source_account_id = self.source_account_id
            transfer.destination_account_id = self.destination_account_id
            transfer.currency = self.currency
            transfer.amount_minor = self.amount_minor
            transfer.source_payment_id = self.source_payment_id
            transfer.transfer_group = self.transfer_group
            transfer.reversals = {}

    class Reversed(JournalEvent):
        reversal_id: str
        amount_minor: int

        def apply(self, transfer: Transfer) -> None:
            # Commands are checked before (``check_reversal``); a reversal Stripe reports is a
            # fact and is recorded even where it breaks that expectation.
            transfer.reversals[self.reversal_id] = self.amount_minor

    transfer_id: str
    source_account_id: str
    destination_account_id: str
    currency: str
    amount_minor: int
    source_payment_id: str | None
    transfer_group: str | None
    reversals: dict[str, int]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def create(
        cls,
        when: When,
        *,
        transfer_id: str,
        source_account_id: str,
        destination_account_id: str,
        currency: str,
        amount_minor: int,
        source_payment_id: str | None,
        transfer_group: str | None,
        pending_until: datetime | None,
        available_on: datetime | None = None,
    ) -> Transfer:
        """``pending_until`` set: the funds follow their source charge's pending period. Without
        it they move available now; ``available_on`` then keeps the instant Stripe says they
        became available (a settled source charge's, which may lie in the past)."""
        books = (PENDING, PENDING) if pending_until is not None else (AVAILABLE, AVAILABLE)
        transfer_entry = move(
            object_id("txn", "transfer", transfer_id),
            "transfer",
            amount_minor,
            currency,
            (source_account_id, books[0]),
            (destination_account_id, books[1]),
            pending_until or available_on,
        )
        return cls._create(
            cls.Created,
            id=transfer_aggregate_id(transfer_id),
            transfer_id=transfer_id,
            source_account_id=source_account_id,
            destination_account_id=destination_account_id,
            currency=currency,
            amount_minor=amount_minor,
            source_payment_id=source_payment_id,
            transfer_group=transfer_group,
            **journal_fields(transfer_entry, when),
        )

    @property
    def reversed_minor(self) -> int:
        return sum(self.reversals.values())

    @property
    def reversible_minor(self) -> int:
        return self.amount_minor - self.reversed_minor

    def check_reversal(self, amount_minor: int | None) -> int:
        remaining = self.reversible_minor
        if len(self.reversals) >= REVERSALS_PER_TRANSFER_MAX or remaining == 0:
            raise ReversalExceedsTransferError(
                f"{self.transfer_id} is fully reversed", param="amount"
            )
        amount = (
            remaining
            if amount_minor is None
            else check_amount(amount_minor, self.currency, "amount")
        )
        if amount > remaining:
            raise ReversalExceedsTransferError(
                f"a reversal of {amount} exceeds the {remaining} left on {self.transfer_id}",
                param="amount",
            )
        return amount

    def reverse(self, reversal_id: str, amount_minor: int, when: When) -> Entry:
        if reversal_id in self.reversals:
            raise InvalidParameterError(
                f"reversal {reversal_id} already exists on {self.transfer_id}", param="reversal_id"
            )
        reversal = move(
            object_id("txn", "transfer_reversal", reversal_id),
            "transfer_reversal",
            amount_minor,
            self.currency,
            (self.destination_account_id, AVAILABLE),
            (self.source_account_id, AVAILABLE),
        )
        self.trigger_event(
            self.Reversed,
            reversal_id=reversal_id,
            amount_minor=amount_minor,
            **journal_fields(reversal, when),
        )
        return reversal
