"""Payment: one captured charge and all tied to it (fee, refunds, sourced transfers, dispute).

It guards the per-charge rules: refunds never exceed the captured amount, transfers sourced from
the charge never exceed it, and a disputed charge is not refunded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.errors import (
    ChargeDisputedError,
    InvalidAmountError,
    InvalidParameterError,
    InvalidTransitionError,
    RefundExceedsChargeError,
    SplitRuleError,
    TransferExceedsSourceError,
    invariant,
)
from ledger.events import JournalEvent, When, journal_fields
from ledger.ids import WORLD, object_id, payment_aggregate_id
from ledger.journal import (
    AVAILABLE,
    CUSTOMER_FUNDS,
    PENDING,
    STRIPE_FEES,
    Entry,
    entry,
    move,
)
from ledger.money import THREE_DECIMAL, check_amount, check_currency
from ledger.payouts import check_hold_reason

CHARGE_TYPES = ("direct", "destination", "separate")
REFUNDS_PER_PAYMENT_MAX = 1_000
SOURCED_TRANSFERS_PER_PAYMENT_MAX = 100


def prorate(total_minor: int, part_minor: int, whole_minor: int) -> int:
    """``total * part / whole`` rounded half up, in integers. Stripe does not document its
    rounding for proportional reversals; Sluice applies it to cumulative amounts (see refund)."""
    invariant(whole_minor > 0, "prorate over an empty whole")
    return (total_minor * part_minor * 2 + whole_minor) // (2 * whole_minor)


def check_charge_amount(amount_minor: object, currency: str, param: str) -> int:
    amount = check_amount(amount_minor, currency, param)
    if currency in THREE_DECIMAL and amount % 10:
        raise InvalidAmountError(
            f"{currency} amounts must end in 0 (Stripe rounds three-decimal charges to tens)",
            param=param,
        )
    return amount


class Payment(Aggregate):
    class Captured(Aggregate.Created, JournalEvent):
        payment_id: str
        charge_type: str
        currency: str
        amount_minor: int
        stripe_fee_minor: int
        application_fee_minor: int
        platform_account_id: str
        account_id: str | None  # direct: the account charged; destination: the destination
        on_behalf_of: str | None
        transfer_group: str | None
        destination_transfer_id: str | None
        transfer_amount_minor: int

        def apply(self, payment: Payment) -> None:
            payment.payment_id = self.payment_id
            payment.charge_type = self.charge_type
            payment.currency = self.currency
            payment.amount_minor = self.amount_minor
            payment.stripe_fee_minor = self.stripe_fee_minor
            payment.application_fee_minor = self.application_fee_minor
            payment.application_fee_refunded_minor = 0
            payment.platform_account_id = self.platform_account_id
            payment.account_id = self.account_id
            payment.on_behalf_of = self.on_behalf_of
            payment.transfer_group = self.transfer_group
            payment.destination_transfer_id = self.destination_transfer_id
            payment.transfer_amount_minor = self.transfer_amount_minor
            payment.available_on = self.available_on  # type: ignore[assignment]
            payment.captured_at = self.effective_at
            payment.sourced_transfers = {}
            payment.refunds = {}
            payment.refunded_minor = 0
            payment.fee_refunds = {}
            payment.dispute = None

    class ApplicationFeeCollected(JournalEvent):
        application_fee_id: str
        amount_minor: int

    class TransferSourced(Aggregate.Event):
        transfer_id: str
        amount_minor: int
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            # No cap here: Sluice's commands are checked before (``check_source_transfer``), and
            # a transfer Stripe reports as made is recorded even past the cap (a fact).
            payment.sourced_transfers[self.transfer_id] = self.amount_minor

    class Refunded(JournalEvent):
        refund_id: str
        amount_minor: int
        reverse_transfer: bool
        refund_application_fee: bool
        reversal_minor: int
        application_fee_refund_minor: int

        def apply(self, payment: Payment) -> None:
            payment.refunds[self.refund_id] = self.amount_minor
            payment.refunded_minor += self.amount_minor

    class ApplicationFeeRefunded(JournalEvent):
        refund_id: str
        amount_minor: int

        def apply(self, payment: Payment) -> None:
            payment.fee_refunds[self.refund_id] = self.amount_minor
            payment.application_fee_refunded_minor += self.amount_minor

    class DisputeFundsWithdrawn(JournalEvent):
        dispute_id: str
        amount_minor: int
        fee_minor: int

        def apply(self, payment: Payment) -> None:
            payment.dispute = {
                "id": self.dispute_id,
                "amount_minor": self.amount_minor,
                "fee_minor": self.fee_minor,
                "status": "needs_response",
            }

    class DisputeFundsReinstated(JournalEvent):
        dispute_id: str

        def apply(self, payment: Payment) -> None:
            if payment.dispute is not None:  # a fact may arrive before its withdrawal
                payment.dispute["status"] = "won"

    class RoutingPlanned(Aggregate.Event):
        """How the charge is to be routed to sellers (an intent: no money moves yet). The
        transfers it asks for are made at Stripe by the edge and recorded as they happen."""

        payment_id: str
        parts: list[list[str | int]]  # [[account_id, amount_minor], …] in the rule's order
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.routing = [list(part) for part in self.parts]

    class MetadataReported(Aggregate.Event):
        """The charge's metadata as Stripe reports it (with its PaymentIntent's), replaced whole
        (added with issue 16): for finding payments, never for deciding money."""

        payment_id: str
        metadata: dict[str, str]
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.metadata = dict(self.metadata)

    class RoutingHeld(Aggregate.Event):
        """A transfer of the routing plan was not made: Stripe did not take it for a reason an
        operator must fix (a rolled key, a missing permission). Nothing moved; the routing is
        retried, and resumes once Stripe takes it."""

        payment_id: str
        destination: str
        reason_code: str
        message: str
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.routing_hold = {
                "destination": self.destination,
                "reason_code": self.reason_code,
                "message": self.message,
                "held_at": self.effective_at,
                "holds": payment.routing_holds + 1,
            }

    class RoutingResumed(Aggregate.Event):
        """Every transfer of the routing plan was made after it had been held."""

        payment_id: str
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.routing_hold = None

    class DisputeLost(Aggregate.Event):
        dispute_id: str
        effective_at: datetime

        def apply(self, payment: Payment) -> None:
            if payment.dispute is not None:
                payment.dispute["status"] = "lost"

    payment_id: str
    charge_type: str
    currency: str
    amount_minor: int
    stripe_fee_minor: int
    application_fee_minor: int
    application_fee_refunded_minor: int
    platform_account_id: str
    account_id: str | None
    on_behalf_of: str | None
    transfer_group: str | None
    destination_transfer_id: str | None
    transfer_amount_minor: int
    available_on: datetime
    captured_at: datetime
    sourced_transfers: dict[str, int]
    refunds: dict[str, int]
    refunded_minor: int
    fee_refunds: dict[str, int]
    dispute: dict[str, Any] | None
    routing: list[list[str | int]]  # set by RoutingPlanned (absent on payments before it)
    routing_hold: dict[str, Any] | None  # set by RoutingHeld, cleared by RoutingResumed
    metadata: dict[str, str]  # set by MetadataReported (absent on payments without any)

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    # Creation ------------------------------------------------------------------------------

    @classmethod
    def capture(
        cls,
        when: When,
        *,
        payment_id: str,
        charge_type: str,
        currency: str,
        amount_minor: int,
        stripe_fee_minor: int,
        application_fee_minor: int,
        platform_account_id: str,
        account_id: str | None,
        on_behalf_of: str | None,
        transfer_group: str | None,
        transfer_amount_minor: int | None,
        available_on: datetime,
        transfer_id: str | None = None,
        application_fee_id: str | None = None,
    ) -> Payment:
        """Records the charge landing on the account it was made on (and its application fee)."""
        amount, fee, app_fee, transfer_amount = _check_charge_shape(
            charge_type,
            currency,
            amount_minor,
            stripe_fee_minor,
            application_fee_minor,
            account_id,
            on_behalf_of,
            transfer_amount_minor,
        )
        settle_owner = account_id if charge_type == "direct" else platform_account_id
        invariant(settle_owner is not None, "a charge lands on some account")
        charge = entry(
            object_id("txn", "charge", payment_id),
            "charge",
            [
                (WORLD, CUSTOMER_FUNDS, -amount, currency),
                (WORLD, STRIPE_FEES, fee, currency),
                (str(settle_owner), PENDING, amount - fee, currency),
            ],
            available_on,
        )
        payment = cls._create(
            cls.Captured,
            id=payment_aggregate_id(payment_id),
            payment_id=payment_id,
            charge_type=charge_type,
            currency=currency,
            amount_minor=amount,
            stripe_fee_minor=fee,
            application_fee_minor=app_fee,
            platform_account_id=platform_account_id,
            account_id=account_id,
            on_behalf_of=on_behalf_of,
            transfer_group=transfer_group,
            destination_transfer_id=(
                (transfer_id or object_id("tr", payment_id))
                if charge_type == "destination"
                else None
            ),
            transfer_amount_minor=transfer_amount,
            **journal_fields(charge, when),
        )
        if app_fee:
            payment._collect_fee(application_fee_id, app_fee, available_on, when)
        return payment

    def _collect_fee(
        self, application_fee_id: str | None, amount_minor: int, available_on: datetime, when: When
    ) -> None:
        """The platform's application fee moves from the seller's pending funds to its own."""
        invariant(self.account_id is not None, "an application fee is taken from an account")
        fee_entry = move(
            object_id("txn", "application_fee", self.payment_id),
            "application_fee",
            amount_minor,
            self.currency,
            (str(self.account_id), PENDING),
            (self.platform_account_id, PENDING),
            available_on,
        )
        self.trigger_event(
            self.ApplicationFeeCollected,
            application_fee_id=application_fee_id or object_id("fee", self.payment_id),
            amount_minor=amount_minor,
            **journal_fields(fee_entry, when),
        )

    # Queries -------------------------------------------------------------------------------

    @property
    def sourced_minor(self) -> int:
        return sum(self.sourced_transfers.values())

    @property
    def settlement_account_id(self) -> str:
        """The account whose balance the charge landed on (and refunds and disputes hit)."""
        if self.charge_type == "direct":
            invariant(self.account_id is not None, "direct charge without account")
            return str(self.account_id)
        return self.platform_account_id

    @property
    def planned_routing(self) -> dict[str, int]:
        """account → amount the charge's routing rule sends it (empty: no rule)."""
        # Payments recorded before routing plans existed have no ``routing`` attribute.
        return {str(a): int(n) for a, n in getattr(self, "routing", None) or []}

    def plan_routing(self, parts: dict[str, int], when: When) -> None:
        if self.charge_type != "separate":
            raise SplitRuleError("split rules route separate charges", param="split")
        if self.planned_routing:
            raise InvalidTransitionError(f"{self.payment_id} is routed already", param="split")
        self.trigger_event(
            self.RoutingPlanned,
            payment_id=self.payment_id,
            parts=[[account, amount] for account, amount in parts.items() if amount],
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def report_metadata(self, metadata: dict[str, str], when: When) -> None:
        """Records Stripe's metadata of the charge when it differs from what is known."""
        if metadata == dict(getattr(self, "metadata", None) or {}):
            return
        self.trigger_event(
            self.MetadataReported,
            payment_id=self.payment_id,
            metadata=dict(sorted(metadata.items())),
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    @property
    def routing_held(self) -> dict[str, Any] | None:
        """The latest hold of the routing, while it lasts (None: not held)."""
        held: dict[str, Any] | None = getattr(self, "routing_hold", None)
        return held

    @property
    def routing_holds(self) -> int:
        """Held attempts since the routing was last held afresh (0: not held)."""
        held = self.routing_held
        return int(held["holds"]) if held else 0

    def hold_routing(self, destination: str, reason_code: str, message: str, when: When) -> None:
        if destination not in self.planned_routing:
            raise InvalidParameterError(
                f"{destination} is not in the routing plan of {self.payment_id}",
                param="destination",
            )
        check_hold_reason(reason_code, message)
        self.trigger_event(
            self.RoutingHeld,
            payment_id=self.payment_id,
            destination=destination,
            reason_code=reason_code,
            message=message,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def resume_routing(self, when: When) -> None:
        if self.routing_held is None:
            raise InvalidTransitionError(
                f"the routing of {self.payment_id} is not held", param="payment_id"
            )
        self.trigger_event(
            self.RoutingResumed,
            payment_id=self.payment_id,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def refundable_minor(self) -> int:
        return self.amount_minor - self.refunded_minor

    # Commands ------------------------------------------------------------------------------

    def check_source_transfer(self, transfer_id: str, amount_minor: int) -> None:
        """Sluice's rule for its own transfers: the transfers from one charge never exceed it."""
        self._check_sourceable(transfer_id)
        if len(self.sourced_transfers) >= SOURCED_TRANSFERS_PER_PAYMENT_MAX:
            raise TransferExceedsSourceError("too many transfers from one charge", param="amount")
        if self.sourced_minor + amount_minor > self.amount_minor:
            raise TransferExceedsSourceError(
                f"transfers from {self.payment_id} would total "
                f"{self.sourced_minor + amount_minor}, more than the charge ({self.amount_minor})",
                param="amount",
            )

    def _check_sourceable(self, transfer_id: str) -> None:
        """The shape of a sourced transfer (also for facts: an id names one transfer)."""
        if transfer_id in self.sourced_transfers:
            raise InvalidParameterError(
                f"transfer {transfer_id} already exists", param="transfer_id"
            )
        if self.charge_type != "separate":
            raise InvalidParameterError(
                "only separate charges fund transfers with source_transaction",
                param="source_transaction",
            )

    def source_transfer(self, transfer_id: str, amount_minor: int, when: When) -> None:
        """Records a transfer funded by this charge. Commands call ``check_source_transfer``
        first; a transfer Stripe made is recorded as it is."""
        self._check_sourceable(transfer_id)
        self.trigger_event(
            self.TransferSourced,
            transfer_id=transfer_id,
            amount_minor=amount_minor,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def exceeded_caps(self) -> list[str]:
        """The per-charge expectations a recorded fact broke (empty when all hold)."""
        broken = []
        if self.sourced_minor > self.amount_minor:
            broken.append(f"transfers from {self.payment_id} exceed the charge")
        if self.refunded_minor > self.amount_minor:
            broken.append(f"refunds of {self.payment_id} exceed the charge")
        if self.application_fee_refunded_minor > self.application_fee_minor:
            broken.append(f"fee refunds of {self.payment_id} exceed the fee")
        return broken

    def plan_refund(
        self, amount_minor: int | None, reverse_transfer: bool, refund_application_fee: bool
    ) -> tuple[int, int, int]:
        """(refund, transfer reversal, application fee refund), all in minor units.

        Partial refunds reverse proportionally. Each refund takes the difference of the rounded
        *cumulative* shares, so the parts of a fully refunded charge add up exactly.
        """
        if self.dispute is not None and self.dispute["status"] != "won":
            raise ChargeDisputedError(
                f"{self.payment_id} is disputed; it cannot be refunded", param="payment"
            )
        if len(self.refunds) >= REFUNDS_PER_PAYMENT_MAX:
            raise RefundExceedsChargeError("too many refunds on one charge", param="amount")
        remaining = self.refundable_minor()
        if remaining == 0:
            raise RefundExceedsChargeError(f"{self.payment_id} is fully refunded", param="amount")
        amount = (
            remaining
            if amount_minor is None
            else check_charge_amount(amount_minor, self.currency, "amount")
        )
        if amount > remaining:
            raise RefundExceedsChargeError(
                f"refund of {amount} exceeds the {remaining} left to refund", param="amount"
            )
        if reverse_transfer and self.charge_type != "destination":
            raise InvalidParameterError(
                "reverse_transfer applies to destination charges; reverse other transfers directly",
                param="reverse_transfer",
            )
        if refund_application_fee and not self.application_fee_minor:
            raise InvalidParameterError(
                "this charge has no application fee", param="refund_application_fee"
            )
        if refund_application_fee and self.charge_type == "destination" and not reverse_transfer:
            raise InvalidParameterError(
                "refunding a destination charge's application fee also reverses the transfer",
                param="refund_application_fee",
            )
        before, after = self.refunded_minor, self.refunded_minor + amount
        reversal = 0
        if reverse_transfer:
            reversal = prorate(self.transfer_amount_minor, after, self.amount_minor) - prorate(
                self.transfer_amount_minor, before, self.amount_minor
            )
        fee_refund = 0
        if refund_application_fee:
            fee_refund = min(
                prorate(self.application_fee_minor, after, self.amount_minor)
                - prorate(self.application_fee_minor, before, self.amount_minor),
                self.application_fee_minor - self.application_fee_refunded_minor,
            )
        return amount, reversal, fee_refund

    def refund(
        self,
        refund_id: str,
        amount_minor: int,
        reversal_minor: int,
        fee_refund_minor: int,
        reverse_transfer: bool,
        refund_application_fee: bool,
        when: When,
    ) -> None:
        if refund_id in self.refunds:
            raise InvalidParameterError(
                f"refund {refund_id} already exists on {self.payment_id}", param="refund_id"
            )
        owner = self.settlement_account_id
        refund_entry = move(
            object_id("txn", "refund", refund_id),
            "refund",
            amount_minor,
            self.currency,
            (owner, AVAILABLE),
            (WORLD, CUSTOMER_FUNDS),
        )
        self.trigger_event(
            self.Refunded,
            refund_id=refund_id,
            amount_minor=amount_minor,
            reverse_transfer=reverse_transfer,
            refund_application_fee=refund_application_fee,
            reversal_minor=reversal_minor,
            application_fee_refund_minor=fee_refund_minor,
            **journal_fields(refund_entry, when),
        )
        if fee_refund_minor:
            self.refund_fee(refund_id, fee_refund_minor, when)

    def check_fee_refund(self, fee_refund_id: str, amount_minor: int | None) -> int:
        """A standalone application fee refund: at most what is left of the fee."""
        if not self.application_fee_minor:
            raise InvalidParameterError("this charge has no application fee", param="payment")
        if fee_refund_id in self.fee_refunds:
            raise InvalidParameterError(
                f"fee refund {fee_refund_id} already exists", param="fee_refund_id"
            )
        remaining = self.application_fee_minor - self.application_fee_refunded_minor
        amount = (
            remaining
            if amount_minor is None
            else check_amount(amount_minor, self.currency, "amount")
        )
        if amount == 0 or amount > remaining:
            raise RefundExceedsChargeError(
                f"a fee refund of {amount} exceeds the {remaining} left of the fee",
                param="amount",
            )
        return amount

    def refund_fee(self, fee_refund_id: str, amount_minor: int, when: When) -> None:
        invariant(self.account_id is not None, "fee refund needs the account it came from")
        fee_entry = move(
            object_id("txn", "application_fee_refund", fee_refund_id),
            "application_fee_refund",
            amount_minor,
            self.currency,
            (self.platform_account_id, AVAILABLE),
            (str(self.account_id), AVAILABLE),
        )
        self.trigger_event(
            self.ApplicationFeeRefunded,
            refund_id=fee_refund_id,
            amount_minor=amount_minor,
            **journal_fields(fee_entry, when),
        )

    def check_dispute(self, amount_minor: int | None) -> int:
        """Sluice's rules for a dispute it is told of: one per charge, within what is left."""
        if self.dispute is not None:
            raise InvalidTransitionError(f"{self.payment_id} is already disputed", param="payment")
        remaining = self.refundable_minor()
        amount = (
            remaining
            if amount_minor is None
            else check_amount(amount_minor, self.currency, "amount")
        )
        if amount == 0 or amount > remaining:
            raise RefundExceedsChargeError(
                f"a dispute of {amount} does not fit the {remaining} not yet refunded",
                param="amount",
            )
        return amount

    def open_dispute(self, dispute_id: str, amount_minor: int, fee_minor: int, when: When) -> Entry:
        """Funds (and the dispute fee) withdrawn from the account the charge landed on."""
        amount = check_amount(amount_minor, self.currency, "amount")
        fee = check_amount(fee_minor, self.currency, "dispute_fee", allow_zero=True)
        owner = self.settlement_account_id
        withdrawal = entry(
            object_id("txn", "dispute", dispute_id),
            "dispute",
            [
                (owner, AVAILABLE, -(amount + fee), self.currency),
                (WORLD, CUSTOMER_FUNDS, amount, self.currency),
                (WORLD, STRIPE_FEES, fee, self.currency),
            ],
        )
        self.trigger_event(
            self.DisputeFundsWithdrawn,
            dispute_id=dispute_id,
            amount_minor=amount,
            fee_minor=fee,
            **journal_fields(withdrawal, when),
        )
        return withdrawal

    def close_dispute(self, won: bool, when: When) -> None:
        """Sluice's own view of a dispute's end: a win returns the amount and the fee withdrawn
        (Stripe's own outcome is recorded with ``reinstate_dispute``, with Stripe's numbers)."""
        if self.dispute is None or self.dispute["status"] != "needs_response":
            raise InvalidTransitionError(
                f"{self.payment_id} has no open dispute to close", param="payment"
            )
        dispute_id = str(self.dispute["id"])
        if not won:
            self.lose_dispute(dispute_id, when)
            return
        amount, fee = int(self.dispute["amount_minor"]), int(self.dispute["fee_minor"])
        self.reinstate_dispute(dispute_id, amount, -fee, when)

    def lose_dispute(self, dispute_id: str, when: When) -> None:
        self.trigger_event(
            self.DisputeLost,
            dispute_id=dispute_id,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def reinstate_dispute(
        self, dispute_id: str, amount_minor: int, fee_minor: int, when: When
    ) -> None:
        """Funds reinstated after a won dispute, as the reinstatement's balance transaction says:
        ``fee_minor`` is its fee (negative when the dispute fee comes back, 0 when it is kept),
        so the account receives ``amount - fee``."""
        amount = check_amount(amount_minor, self.currency, "amount")
        if not isinstance(fee_minor, int) or isinstance(fee_minor, bool):
            raise InvalidParameterError("fee must be an integer", param="fee")
        reinstatement = entry(
            object_id("txn", "dispute_reversal", dispute_id),
            "dispute_reversal",
            [
                (self.settlement_account_id, AVAILABLE, amount - fee_minor, self.currency),
                (WORLD, CUSTOMER_FUNDS, -amount, self.currency),
                (WORLD, STRIPE_FEES, fee_minor, self.currency),
            ],
        )
        self.trigger_event(
            self.DisputeFundsReinstated,
            dispute_id=dispute_id,
            **journal_fields(reinstatement, when),
        )


def _check_charge_shape(
    charge_type: str,
    currency: str,
    amount_minor: int,
    stripe_fee_minor: int,
    application_fee_minor: int,
    account_id: str | None,
    on_behalf_of: str | None,
    transfer_amount_minor: int | None,
) -> tuple[int, int, int, int]:
    """A charge Stripe could have made: (amount, Stripe fee, application fee, transfer amount).

    Shape, not policy: these hold for every charge Stripe reports, so facts are checked too."""
    if charge_type not in CHARGE_TYPES:
        raise InvalidParameterError(
            f"charge_type must be one of {', '.join(CHARGE_TYPES)}", param="charge_type"
        )
    check_currency(currency)
    amount = check_charge_amount(amount_minor, currency, "amount")
    fee = check_amount(stripe_fee_minor, currency, "stripe_fee", allow_zero=True)
    app_fee = check_amount(application_fee_minor, currency, "application_fee", allow_zero=True)
    if fee > amount:
        raise InvalidAmountError("stripe_fee exceeds the amount", param="stripe_fee")
    if app_fee > amount:
        raise InvalidAmountError("application_fee exceeds the amount", param="application_fee")
    if charge_type == "separate":
        if account_id is not None:
            raise InvalidParameterError(
                "separate charges land on the platform; route them with transfers or a split",
                param="account",
            )
        if app_fee:
            raise InvalidParameterError(
                "separate charges keep the platform's share by transferring less",
                param="application_fee",
            )
    elif account_id is None:
        raise InvalidParameterError(f"a {charge_type} charge needs an account", param="account")
    if on_behalf_of is not None and charge_type == "direct":
        raise InvalidParameterError("on_behalf_of is for platform charges", param="on_behalf_of")
    if charge_type == "destination" and on_behalf_of not in (None, account_id):
        raise InvalidParameterError(
            "on_behalf_of must be the destination account", param="on_behalf_of"
        )
    return (
        amount,
        fee,
        app_fee,
        _transfer_amount(charge_type, currency, amount, app_fee, transfer_amount_minor),
    )


def _transfer_amount(
    charge_type: str, currency: str, amount: int, app_fee: int, transfer_amount_minor: int | None
) -> int:
    """What a destination charge moves to its destination (``transfer_data[amount]``)."""
    if transfer_amount_minor is None:
        # Stripe moves a destination charge's full amount, then takes the fee back.
        return amount if charge_type == "destination" else 0
    if charge_type != "destination":
        raise InvalidParameterError(
            "transfer_amount is for destination charges", param="transfer_amount"
        )
    if app_fee:
        raise InvalidParameterError(
            "use either application_fee or transfer_amount, not both", param="transfer_amount"
        )
    transfer_amount = check_amount(transfer_amount_minor, currency, "transfer_amount")
    if transfer_amount > amount:
        raise InvalidAmountError("transfer_amount exceeds the amount", param="transfer_amount")
    return transfer_amount
