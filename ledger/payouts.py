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
from ledger.ids import WORLD, object_id, payout_aggregate_id
from ledger.journal import (
    AVAILABLE,
    BANK,
    FX,
    PAYOUTS_IN_TRANSIT,
    STRIPE_FEES,
    Entry,
    entry,
    move,
)

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

    class Reported(Aggregate.Event):
        """The payout as Stripe reports it (added with issue 14): its ``po_`` id, arrival date
        (unix seconds), destination (the external account's id) and failure, verbatim."""

        stripe_payout_id: str
        arrival_date: int | None
        destination: str | None
        failure_code: str | None
        failure_message: str | None
        effective_at: datetime
        automatic: bool | None = None  # made by Stripe on the account's schedule

        def apply(self, payout: Payout) -> None:
            payout.stripe_report = {
                "automatic": self.automatic,
                "stripe_payout_id": self.stripe_payout_id,
                "arrival_date": self.arrival_date,
                "destination": self.destination,
                "failure_code": self.failure_code,
                "failure_message": self.failure_message,
            }

    class MetadataReported(Aggregate.Event):
        """The payout's metadata as Stripe reports it, replaced whole (added with issue 16):
        for finding payouts, never for deciding money."""

        payout_id: str
        metadata: dict[str, str]
        effective_at: datetime

        def apply(self, payout: Payout) -> None:
            payout.metadata = dict(self.metadata)

    class Converted(JournalEvent):
        """Stripe converted the payout for a bank in another currency (``ledger.payout_fx``):
        its funds in transit are now ``bank_amount_minor`` of ``bank_currency``, at Stripe's
        ``exchange_rate`` (a decimal string, as Stripe reported it)."""

        payout_id: str
        bank_currency: str
        bank_amount_minor: int
        exchange_rate: str

        def apply(self, payout: Payout) -> None:
            payout.bank_currency = self.bank_currency
            payout.bank_amount_minor = self.bank_amount_minor
            payout.exchange_rate = self.exchange_rate

    class FeeCharged(JournalEvent):
        """Fees on the payout, as its balance transaction states them, taken from available
        with it (``ledger.payout_fx``): Stripe's (an Instant Payout's) and the platform's
        (payout monetization: an application fee, the platform's revenue)."""

        payout_id: str
        stripe_fee_minor: int
        application_fee_minor: int = 0
        application_fee_id: str | None = None  # Stripe's fee_ (the platform's fee)

        def apply(self, payout: Payout) -> None:
            payout.stripe_fee_minor = self.stripe_fee_minor
            payout.application_fee_minor = self.application_fee_minor

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
    stripe_fee_minor: int  # set by FeeCharged (absent: no fee)
    application_fee_minor: int  # set by FeeCharged: the platform's fee on this payout
    # Set by Reported (absent on payouts Stripe never reported on).
    stripe_report: dict[str, str | int | bool | None]
    metadata: dict[str, str]  # set by MetadataReported (absent on payouts without any)
    # Set by Converted (absent on payouts Stripe never converted).
    bank_currency: str
    bank_amount_minor: int
    exchange_rate: str

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

    @property
    def reported(self) -> dict[str, str | int | bool | None] | None:
        """Stripe's details of the payout as last reported (None: never reported)."""
        return getattr(self, "stripe_report", None)

    def report(self, details: dict[str, str | int | bool | None], when: When) -> None:
        """Records Stripe's details of the payout; the same details again record nothing."""
        if details == self.reported:
            return
        stripe_id = details.get("stripe_payout_id")
        if not isinstance(stripe_id, str) or not stripe_id.startswith("po_"):
            raise InvalidParameterError(
                "a Stripe payout id starts with po_", param="stripe_payout_id"
            )
        arrival, automatic = details.get("arrival_date"), details.get("automatic")
        if automatic is not None and not isinstance(automatic, bool):
            raise InvalidParameterError("automatic is true or false", param="automatic")
        if arrival is not None and (
            not isinstance(arrival, int) or isinstance(arrival, bool) or arrival < 0
        ):
            raise InvalidParameterError("arrival_date is unix seconds", param="arrival_date")
        texts = {k: details.get(k) for k in ("destination", "failure_code", "failure_message")}
        for key, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise InvalidParameterError(f"{key} is a string", param=key)
        self.trigger_event(
            self.Reported,
            stripe_payout_id=stripe_id,
            arrival_date=arrival,
            automatic=automatic,
            **texts,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    @property
    def reported_metadata(self) -> dict[str, str]:
        """Stripe's metadata of the payout as last reported (empty: none reported)."""
        return dict(getattr(self, "metadata", None) or {})

    def report_metadata(self, metadata: dict[str, str], when: When) -> None:
        """Records Stripe's metadata of the payout when it differs from what is known."""
        if metadata == self.reported_metadata:
            return
        self.trigger_event(
            self.MetadataReported,
            payout_id=self.payout_id,
            metadata=dict(sorted(metadata.items())),
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

    @property
    def bank_side(self) -> tuple[int, str]:
        """(amount, currency) of the funds in transit: converted ones once Stripe converted."""
        currency = getattr(self, "bank_currency", None)  # absent: never converted
        if currency is None:
            return self.amount_minor, self.currency
        return int(getattr(self, "bank_amount_minor", 0)), str(currency)

    def convert(
        self, bank_currency: str, bank_amount_minor: int, exchange_rate: str, when: When
    ) -> None:
        """Books Stripe's conversion: in transit in the payout's currency → FX → in transit in
        the bank's currency. The caller has checked the numbers' shape (they are Stripe's)."""
        if getattr(self, "bank_currency", None) is not None or self.status not in (
            PENDING_STATUS,
            HELD,
            IN_TRANSIT,
            PAID,
        ):
            raise InvalidTransitionError(
                f"payout {self.payout_id} cannot be converted ({self.status})", param="status"
            )
        owner = self.account_id
        converted = entry(
            object_id("txn", "payout_conversion", self.payout_id),
            "payout_conversion",
            [
                (owner, PAYOUTS_IN_TRANSIT, -self.amount_minor, self.currency),
                (WORLD, FX, self.amount_minor, self.currency),
                (WORLD, FX, -bank_amount_minor, bank_currency),
                (owner, PAYOUTS_IN_TRANSIT, bank_amount_minor, bank_currency),
            ],
        )
        self.trigger_event(
            self.Converted,
            payout_id=self.payout_id,
            bank_currency=bank_currency,
            bank_amount_minor=bank_amount_minor,
            exchange_rate=exchange_rate,
            **journal_fields(converted, when),
        )

    def charge_fee(
        self,
        stripe_fee_minor: int,
        when: When,
        application_fee_minor: int = 0,
        platform_account_id: str | None = None,
        application_fee_id: str | None = None,
    ) -> None:
        """Books the payout's fees once: Stripe's, and the platform's (to the platform's
        available balance); the caller has checked their shape."""
        if getattr(self, "stripe_fee_minor", None) is not None or self.status in (
            FAILED,
            CANCELED,
        ):
            raise InvalidTransitionError(
                f"payout {self.payout_id} cannot take a fee ({self.status})", param="status"
            )
        currency = self.currency
        platform = platform_account_id or ""
        fee = entry(
            object_id("txn", "payout_fee", self.payout_id),
            "payout_fee",
            [
                (self.account_id, AVAILABLE, -stripe_fee_minor - application_fee_minor, currency),
                (WORLD, STRIPE_FEES, stripe_fee_minor, currency),
                (platform, AVAILABLE, application_fee_minor, currency),
            ],
        )
        self.trigger_event(
            self.FeeCharged,
            payout_id=self.payout_id,
            stripe_fee_minor=stripe_fee_minor,
            application_fee_minor=application_fee_minor,
            application_fee_id=application_fee_id,
            **journal_fields(fee, when),
        )

    def _returned(self, kind: str, source: str) -> Entry:
        """A failure or cancellation: the funds come back to available in the payout's currency;
        a converted payout comes back through FX (undocumented: Stripe's payout_failure returns
        the amount taken, in the balance's currency)."""
        amount, currency = self.bank_side
        owner = self.account_id
        return entry(
            object_id("txn", kind, self.payout_id),
            kind,
            [
                (owner, source, -amount, currency),
                (WORLD, FX, amount if currency != self.currency else 0, currency),
                (WORLD, FX, -self.amount_minor if currency != self.currency else 0, self.currency),
                (owner, AVAILABLE, self.amount_minor, self.currency),
                # Undocumented: a returned Instant Payout gives its fee back (the sandbox does).
                (WORLD, STRIPE_FEES, -int(getattr(self, "stripe_fee_minor", 0)), self.currency),
                (owner, AVAILABLE, int(getattr(self, "stripe_fee_minor", 0)), self.currency),
            ],
        )

    def mark_paid(self, when: When) -> None:
        self._require(PAID)
        amount, currency = self.bank_side
        arrived = move(
            object_id("txn", "payout_paid", self.payout_id),
            "payout_paid",
            amount,
            currency,
            (self.account_id, PAYOUTS_IN_TRANSIT),
            (self.account_id, BANK),
        )
        self.trigger_event(self.Paid, payout_id=self.payout_id, **journal_fields(arrived, when))

    def fail(self, failure_code: str, when: When) -> None:
        self._require(FAILED)
        _check_code(failure_code, "failure_code")
        # A paid payout that bounces comes back from the bank; otherwise from transit.
        source = BANK if self.status == PAID else PAYOUTS_IN_TRANSIT
        returned = self._returned("payout_failure", source)
        self.trigger_event(
            self.Failed,
            failure_code=failure_code,
            payout_id=self.payout_id,
            **journal_fields(returned, when),
        )

    def cancel(self, when: When) -> None:
        self._require(CANCELED)
        returned = self._returned("payout_cancel", PAYOUTS_IN_TRANSIT)
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
