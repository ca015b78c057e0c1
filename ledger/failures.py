"""Movements Stripe undoes after reporting them done: a refund that fails returns its funds; a
top-up that fails or is reversed returns them to the bank; a payout Stripe reverses brings them
back from the bank.

A refund Stripe reported ``succeeded`` may fail later (the card is closed, say): Stripe posts a
``refund_failure`` balance transaction (+amount) on the account the refund debited, named by the
refund's ``failure_balance_transaction``. It is a fact: recorded as Stripe reports it, with
Stripe's amount and ``available_on``, never refused for a policy reason. The refund itself stays
recorded (it happened); the failure is a new movement beside it, as Stripe's books have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from ledger.commands import Message
from ledger.errors import InvalidParameterError
from ledger.events import JournalEvent, check_instant, journal_fields
from ledger.facts import Fact
from ledger.ids import WORLD, aggregate_id, object_id
from ledger.journal import AVAILABLE, BANK, CUSTOMER_FUNDS, PENDING, move
from ledger.money import check_amount, check_currency
from ledger.records import IdClaim

TOPUP_REVERSAL_STATUSES = ("failed", "reversed")

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from ledger.engine import Scope


@dataclass(frozen=True, kw_only=True)
class RefundFailed(Fact):
    """Stripe's ``refund_failure``: ``amount_minor`` of refund ``refund_id`` came back."""

    name = "refund_failed"
    payment_id: str
    refund_id: str
    amount_minor: int
    available_on: datetime


class RefundFailure(Aggregate):
    """One failed refund and the funds it returned."""

    class Recorded(Aggregate.Created, JournalEvent):
        refund_id: str
        payment_id: str
        account_id: str
        currency: str
        amount_minor: int

        def apply(self, failure: RefundFailure) -> None:
            failure.refund_id = self.refund_id
            failure.payment_id = self.payment_id
            failure.amount_minor = self.amount_minor

    refund_id: str
    payment_id: str
    amount_minor: int

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""


@dataclass(frozen=True, kw_only=True)
class TopUpReversed(Fact):
    """Stripe's ``topup_reversal`` of a top-up Sluice recorded: it ``failed`` before its funds
    arrived (``available_on``: the top-up's own, so its pending funds net to zero) or was
    ``reversed`` after (out of the available balance)."""

    name = "topup_reversed"
    topup_id: str
    account_id: str
    currency: str
    amount_minor: int
    available_on: datetime
    status: str  # failed | reversed


class TopUpReversal(Aggregate):
    """One top-up Stripe failed or reversed, and the funds that went back to the bank."""

    class Recorded(Aggregate.Created, JournalEvent):
        topup_id: str
        account_id: str
        currency: str
        amount_minor: int
        status: str

        def apply(self, reversal: TopUpReversal) -> None:
            reversal.topup_id = self.topup_id
            reversal.status = self.status

    topup_id: str
    status: str

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""


def topup_reversal_aggregate_id(topup_id: str) -> UUID:
    return aggregate_id("topup_reversal", topup_id)


@dataclass(frozen=True, kw_only=True)
class PayoutReversed(Fact):
    """Stripe reversed a paid payout (``POST /v1/payouts/{id}/reverse``): ``payout_id`` is the
    reversal, a payout in the opposite direction whose balance transaction returns
    ``amount_minor`` from the bank to the account's balance."""

    name = "payout_reversed"
    payout_id: str
    original_payout_id: str
    account_id: str
    currency: str
    amount_minor: int
    available_on: datetime


class PayoutReversal(Aggregate):
    """One payout reversal and the funds it brought back from the bank."""

    class Recorded(Aggregate.Created, JournalEvent):
        payout_id: str
        original_payout_id: str
        account_id: str
        currency: str
        amount_minor: int

        def apply(self, reversal: PayoutReversal) -> None:
            reversal.payout_id = self.payout_id
            reversal.original_payout_id = self.original_payout_id
            reversal.amount_minor = self.amount_minor

    payout_id: str
    original_payout_id: str
    amount_minor: int

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""


def payout_reversal_aggregate_id(payout_id: str) -> UUID:
    return aggregate_id("payout_reversal", payout_id)


def refund_failure_aggregate_id(refund_id: str) -> UUID:
    return aggregate_id("refund_failure", refund_id)


def _refund_failed(s: Scope, f: RefundFailed) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    amount = check_amount(f.amount_minor, payment.currency)
    available_on = check_instant(f.available_on, "available_on")
    refunded = payment.refunds.get(f.refund_id) if isinstance(f.refund_id, str) else None
    if refunded is None:
        raise InvalidParameterError(
            f"refund {f.refund_id} of {payment.payment_id} is not recorded", param="refund_id"
        )
    owner = payment.settlement_account_id
    pending = available_on > s.when.effective_at
    returned = move(
        object_id("txn", "refund_failure", f.refund_id),
        "refund_failure",
        amount,
        payment.currency,
        (WORLD, CUSTOMER_FUNDS),
        (owner, PENDING if pending else AVAILABLE),
        available_on if pending else None,
    )
    failure = RefundFailure._create(
        RefundFailure.Recorded,
        id=refund_failure_aggregate_id(f.refund_id),
        refund_id=f.refund_id,
        payment_id=payment.payment_id,
        account_id=owner,
        currency=payment.currency,
        amount_minor=amount,
        **journal_fields(returned, s.when),
    )
    s.add(failure, param="refund_id")
    ids = {"refund": f.refund_id, "payment": payment.payment_id, "refund_failure": f.refund_id}
    if amount > refunded:
        ids["flagged"] = f"refund {f.refund_id} failed for {amount}, more than its {refunded}"
    return ids


def _topup_reversed(s: Scope, f: TopUpReversed) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    available_on = check_instant(f.available_on, "available_on")
    s.account(f.account_id)
    if f.status not in TOPUP_REVERSAL_STATUSES:
        raise InvalidParameterError(f"status is one of {TOPUP_REVERSAL_STATUSES}", param="status")
    recorded = isinstance(f.topup_id, str) and (
        s.find(aggregate_id("claim", "topup", f.topup_id), IdClaim) is not None
    )
    if not recorded:
        raise InvalidParameterError(f"top-up {f.topup_id} is not recorded", param="topup_id")
    pending = available_on > s.when.effective_at
    returned = move(
        object_id("txn", "topup_reversal", f.topup_id),
        "topup_reversal",
        amount,
        f.currency,
        (f.account_id, PENDING if pending else AVAILABLE),
        (f.account_id, BANK),
        available_on if pending else None,
    )
    reversal = TopUpReversal._create(
        TopUpReversal.Recorded,
        id=topup_reversal_aggregate_id(f.topup_id),
        topup_id=f.topup_id,
        account_id=f.account_id,
        currency=f.currency,
        amount_minor=amount,
        status=f.status,
        **journal_fields(returned, s.when),
    )
    s.add(reversal, param="topup_id")
    return {"topup": f.topup_id, "status": f.status}


def _payout_reversed(s: Scope, f: PayoutReversed) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    available_on = check_instant(f.available_on, "available_on")
    s.account(f.account_id)
    for value, param in ((f.payout_id, "payout_id"), (f.original_payout_id, "original_payout_id")):
        if not isinstance(value, str) or not value:
            raise InvalidParameterError(f"{param} must be a non-empty string", param=param)
    if f.payout_id == f.original_payout_id:
        raise InvalidParameterError("a payout does not reverse itself", param="payout_id")
    pending = available_on > s.when.effective_at
    returned = move(
        object_id("txn", "payout_reversal", f.payout_id),
        "payout_reversal",
        amount,
        f.currency,
        (f.account_id, BANK),
        (f.account_id, PENDING if pending else AVAILABLE),
        available_on if pending else None,
    )
    reversal = PayoutReversal._create(
        PayoutReversal.Recorded,
        id=payout_reversal_aggregate_id(f.payout_id),
        payout_id=f.payout_id,
        original_payout_id=f.original_payout_id,
        account_id=f.account_id,
        currency=f.currency,
        amount_minor=amount,
        **journal_fields(returned, s.when),
    )
    s.add(reversal, param="payout_id")
    return {"payout": f.payout_id, "original_payout": f.original_payout_id}


HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    PayoutReversed: _payout_reversed,
    RefundFailed: _refund_failed,
    TopUpReversed: _topup_reversed,
}

__all__ = [
    "HANDLERS",
    "PayoutReversal",
    "PayoutReversed",
    "RefundFailed",
    "RefundFailure",
    "TopUpReversal",
    "TopUpReversed",
    "payout_reversal_aggregate_id",
    "refund_failure_aggregate_id",
    "topup_reversal_aggregate_id",
]
