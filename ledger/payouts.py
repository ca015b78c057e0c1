"""Payout: funds leaving a connected account's available balance for its bank.

pending → in_transit → paid | failed | canceled, and paid → failed (banks return payouts days
later). A failed or canceled payout returns exactly its amount to available.

pending ⇄ held: Stripe did not take the payout for a reason an operator must fix (a rolled key,
a missing permission: ``adapters.stripe.errors``, class hold). Nothing is refused and no money
moves: the funds stay in transit, the submission is retried (each held attempt is recorded, with
Stripe's code) and the payout is pending again once Stripe accepts it. A held payout may still
be failed or canceled, or reported in transit by Stripe.
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
HELD = "held"
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_STATUS: frozenset({IN_TRANSIT, FAILED, CANCELED, HELD}),
    # held → held: another attempt held again; held → pending: Stripe accepted it (Submitted).
    HELD: frozenset({HELD, PENDING_STATUS, IN_TRANSIT, FAILED, CANCELED}),
    IN_TRANSIT: frozenset({PAID, FAILED}),
    PAID: frozenset({FAILED}),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}
STATUSES = tuple(TRANSITIONS)  # the closed vocabulary (read models, CLI and API filters)
FAILURE_CODE_MAX_LEN = 64
HOLD_MESSAGE_LEN_MAX = 255


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
            if payout.status == HELD:
                payout._moved_to(PENDING_STATUS, self.effective_at)

    class Held(Aggregate.Event):
        """Stripe did not take the payout, for a reason an operator must fix; nothing moved."""

        payout_id: str
        reason_code: str
        message: str
        effective_at: datetime

        def apply(self, payout: Payout) -> None:
            payout._moved_to(HELD, self.effective_at)
            payout.hold_code = self.reason_code
            payout.hold_message = self.message
            payout.holds = payout.hold_count + 1

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
    # Set by Held (absent on payouts never held, and on snapshots taken before holds existed).
    hold_code: str
    hold_message: str
    holds: int

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @property
    def hold_count(self) -> int:
        """How many submission attempts were held (each one is a Held event)."""
        return int(getattr(self, "holds", 0))

    @property
    def held_at(self) -> datetime | None:
        """When the latest attempt was held (None: never held)."""
        for status, at in reversed(self.history):
            if status == HELD and isinstance(at, datetime):
                return at
        return None

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

    def hold(self, reason_code: str, message: str, when: When) -> None:
        """Records a submission attempt Stripe did not take for a configuration or permission
        reason: the payout waits (held), its funds stay in transit."""
        self._require(HELD)
        if self.stripe_payout_id is not None:
            raise InvalidTransitionError(
                f"payout {self.payout_id} was accepted by Stripe as {self.stripe_payout_id}",
                param="status",
            )
        check_hold_reason(reason_code, message)
        self.trigger_event(
            self.Held,
            payout_id=self.payout_id,
            reason_code=reason_code,
            message=message,
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
        _check_code(failure_code, "failure_code")
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


def _check_code(code: object, param: str) -> None:
    if (
        not isinstance(code, str)
        or not 0 < len(code) <= FAILURE_CODE_MAX_LEN
        or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in code)
    ):
        raise InvalidParameterError(
            f"{param} is a short code of letters, digits and _", param=param
        )


def check_hold_reason(reason_code: object, message: object) -> None:
    """A hold's reason: Stripe's code (or Sluice's name for it) and Stripe's message."""
    _check_code(reason_code, "reason_code")
    if not isinstance(message, str) or len(message) > HOLD_MESSAGE_LEN_MAX:
        raise InvalidParameterError(
            f"message is text of at most {HOLD_MESSAGE_LEN_MAX} characters", param="message"
        )
