"""Payout: funds leaving a connected account's available balance for its bank.

pending → in_transit → paid | failed | canceled, and paid → failed (banks return payouts days
later). A failed or canceled payout returns exactly its amount to available.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger.errors import InvalidParameterError, InvalidTransitionError
from ledger.events import JournalEvent, When, journal_fields
from ledger.ids import object_id, payout_aggregate_id
from ledger.journal import AVAILABLE, BANK, PAYOUTS_IN_TRANSIT, move

PENDING_STATUS = "pending"
IN_TRANSIT = "in_transit"
PAID = "paid"
FAILED = "failed"
CANCELED = "canceled"
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_STATUS: frozenset({IN_TRANSIT, FAILED, CANCELED}),
    IN_TRANSIT: frozenset({PAID, FAILED}),
    PAID: frozenset({FAILED}),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}
FAILURE_CODE_MAX_LEN = 64


class Payout(Aggregate):
    class Requested(Aggregate.Created, JournalEvent):
        payout_id: str
        account_id: str
        currency: str
        amount_minor: int

        def apply(self, payout: Payout) -> None:
            payout.payout_id = self.payout_id
            payout.account_id = self.account_id
            payout.currency = self.currency
            payout.amount_minor = self.amount_minor
            payout.status = PENDING_STATUS
            payout.failure_code = None
            payout.stripe_payout_id = None
            payout.history = [[PENDING_STATUS, self.effective_at]]

    class Submitted(Aggregate.Event):
        stripe_payout_id: str
        effective_at: datetime

        def apply(self, payout: Payout) -> None:
            payout.stripe_payout_id = self.stripe_payout_id

    class MarkedInTransit(Aggregate.Event):
        effective_at: datetime

        def apply(self, payout: Payout) -> None:
            payout._moved_to(IN_TRANSIT, self.effective_at)

    # ``payout_id`` was added to these three later: events recorded before carry "" (the read
    # models then fall back to the payout they belong to).
    class Paid(JournalEvent):
        payout_id: str = ""

        def apply(self, payout: Payout) -> None:
            payout._moved_to(PAID, self.effective_at)

    class Failed(JournalEvent):
        failure_code: str
        payout_id: str = ""

        def apply(self, payout: Payout) -> None:
            payout._moved_to(FAILED, self.effective_at)
            payout.failure_code = self.failure_code

    class Canceled(JournalEvent):
        payout_id: str = ""

        def apply(self, payout: Payout) -> None:
            payout._moved_to(CANCELED, self.effective_at)

    payout_id: str
    account_id: str
    currency: str
    amount_minor: int
    status: str
    failure_code: str | None
    stripe_payout_id: str | None  # set once Stripe accepted it
    history: list[list[str | datetime]]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def request(
        cls, payout_id: str, account_id: str, currency: str, amount_minor: int, when: When
    ) -> Payout:
        """The caller has checked available funds on the account's Balance."""
        debit = move(
            object_id("txn", "payout", payout_id),
            "payout",
            amount_minor,
            currency,
            (account_id, AVAILABLE),
            (account_id, PAYOUTS_IN_TRANSIT),
        )
        return cls._create(
            cls.Requested,
            id=payout_aggregate_id(payout_id),
            payout_id=payout_id,
            account_id=account_id,
            currency=currency,
            amount_minor=amount_minor,
            **journal_fields(debit, when),
        )

    def _require(self, target: str) -> None:
        if target not in TRANSITIONS[self.status]:
            raise InvalidTransitionError(
                f"payout {self.payout_id} cannot go from {self.status} to {target}",
                param="status",
            )

    def _moved_to(self, status: str, at: datetime) -> None:
        self.status = status
        self.history.append([status, at])

    def submitted(self, stripe_payout_id: str, when: When) -> None:
        if not isinstance(stripe_payout_id, str) or not stripe_payout_id.startswith("po_"):
            raise InvalidParameterError(
                "a Stripe payout id starts with po_", param="stripe_payout_id"
            )
        if self.stripe_payout_id is not None:
            raise InvalidTransitionError(
                f"payout {self.payout_id} was already submitted as {self.stripe_payout_id}",
                param="stripe_payout_id",
            )
        self.trigger_event(
            self.Submitted,
            stripe_payout_id=stripe_payout_id,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def mark_in_transit(self, when: When) -> None:
        self._require(IN_TRANSIT)
        self.trigger_event(
            self.MarkedInTransit, effective_at=when.effective_at, timestamp=when.recorded_at
        )

    def mark_paid(self, when: When) -> None:
        self._require(PAID)
        arrived = move(
            object_id("txn", "payout_paid", self.payout_id),
            "payout_paid",
            self.amount_minor,
            self.currency,
            (self.account_id, PAYOUTS_IN_TRANSIT),
            (self.account_id, BANK),
        )
        self.trigger_event(self.Paid, payout_id=self.payout_id, **journal_fields(arrived, when))

    def fail(self, failure_code: str, when: When) -> None:
        self._require(FAILED)
        if (
            not isinstance(failure_code, str)
            or not 0 < len(failure_code) <= FAILURE_CODE_MAX_LEN
            or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in failure_code)
        ):
            raise InvalidParameterError(
                "failure_code is a short code of letters, digits and _", param="failure_code"
            )
        # A paid payout that bounces comes back from the bank; otherwise from transit.
        source = BANK if self.status == PAID else PAYOUTS_IN_TRANSIT
        returned = move(
            object_id("txn", "payout_failure", self.payout_id),
            "payout_failure",
            self.amount_minor,
            self.currency,
            (self.account_id, source),
            (self.account_id, AVAILABLE),
        )
        self.trigger_event(
            self.Failed,
            failure_code=failure_code,
            payout_id=self.payout_id,
            **journal_fields(returned, when),
        )

    def cancel(self, when: When) -> None:
        self._require(CANCELED)
        returned = move(
            object_id("txn", "payout_cancel", self.payout_id),
            "payout_cancel",
            self.amount_minor,
            self.currency,
            (self.account_id, PAYOUTS_IN_TRANSIT),
            (self.account_id, AVAILABLE),
        )
        self.trigger_event(
            self.Canceled, payout_id=self.payout_id, **journal_fields(returned, when)
        )
