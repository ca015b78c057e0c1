"""Authorization holds: a card payment authorized now, captured later (fully or partly) or released.

Stripe authorizes a manual-capture payment and books nothing: the customer's funds are held on
the card until the payment is captured, canceled, or the authorization lapses (Stripe says when:
the charge's ``payment_method_details.card.capture_before``). A hold is therefore no money in any
balance. It is booked as a memo pair outside the balance books, the account's ``authorized``
figure against world's ``card_authorizations`` (``ledger.journal``), so the figure is in the
journal, replays and sums to zero, and is never pending nor available: nothing can pay it out.
Capturing ends the hold; the captured part enters the balances only as the charge Stripe books
for it (``facts.ChargeSucceeded``, with Stripe's fee and ``available_on``), the rest is released.

Two doors, as everywhere (``ledger.facts``):
- facts, what Stripe did: ``PaymentAuthorized``, ``AuthorizationCaptured`` (recorded even after
  the hold expired or was released, then flagged), ``AuthorizationReleased``;
- a command, Sluice's intent: ``CaptureAuthorization``, refused once the authorization expired
  (``authorization_expired``), when the hold is no longer open, or over the amount authorized.

Per (account, currency) a ``HeldFunds`` aggregate keeps the figure (``authorized_minor``): what
is held on cards right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from ledger.commands import Command, Message
from ledger.errors import (
    AmountTooLargeError,
    InvalidParameterError,
    InvalidTransitionError,
    NotFoundError,
    SluiceError,
    invariant,
)
from ledger.events import JournalEvent, When, check_instant, journal_fields
from ledger.facts import Fact
from ledger.ids import WORLD, aggregate_id, object_id
from ledger.journal import AUTHORIZED, CARD_AUTHORIZATIONS, move
from ledger.money import check_amount, check_currency

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from ledger.engine import Scope

AUTHORIZED_STATUS = "authorized"
CAPTURED = "captured"
CANCELED = "canceled"
EXPIRED = "expired"
RELEASE_REASONS = (CANCELED, EXPIRED)
OPEN_HOLDS_MAX = 10_000  # open holds per (account, currency); bounded on purpose


class AuthorizationExpiredError(SluiceError):
    code = "authorization_expired"


class AuthorizationNotFoundError(NotFoundError):
    code = "authorization_not_found"


def authorization_aggregate_id(payment_id: str) -> UUID:
    return aggregate_id("authorization", payment_id)


def held_funds_aggregate_id(account_id: str, currency: str) -> UUID:
    return aggregate_id("held_funds", account_id, currency)


class Authorization(Aggregate):
    """One authorized payment (Stripe's charge id) and what became of its hold."""

    class Placed(Aggregate.Created, JournalEvent):
        payment_id: str
        account_id: str
        currency: str
        amount_minor: int
        expires_at: datetime

        def apply(self, hold: Authorization) -> None:
            hold.payment_id = self.payment_id
            hold.account_id = self.account_id
            hold.currency = self.currency
            hold.amount_minor = self.amount_minor
            hold.expires_at = self.expires_at
            hold.status = AUTHORIZED_STATUS
            hold.captured_minor = 0

    class Released(JournalEvent):
        """The hold ended (``reason``: canceled, expired, or captured): the memo entry takes
        ``released_minor`` off the account's ``authorized`` book."""

        reason: str
        released_minor: int

        def apply(self, hold: Authorization) -> None:
            hold.status = self.reason

    class Captured(Aggregate.Event):
        """Stripe (or Sluice) captured ``captured_minor``; the money is the charge's to book."""

        captured_minor: int
        effective_at: datetime

        def apply(self, hold: Authorization) -> None:
            hold.status = CAPTURED
            hold.captured_minor = self.captured_minor

    payment_id: str
    account_id: str
    currency: str
    amount_minor: int
    expires_at: datetime
    status: str
    captured_minor: int

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @property
    def held_minor(self) -> int:
        """What the card still holds for this payment."""
        return self.amount_minor if self.status == AUTHORIZED_STATUS else 0

    @classmethod
    def place(
        cls,
        when: When,
        *,
        payment_id: str,
        account_id: str,
        currency: str,
        amount_minor: int,
        expires_at: datetime,
    ) -> Authorization:
        memo = move(
            object_id("txn", "authorization", payment_id),
            "authorization",
            amount_minor,
            currency,
            (WORLD, CARD_AUTHORIZATIONS),
            (account_id, AUTHORIZED),
        )
        return cls._create(
            cls.Placed,
            id=authorization_aggregate_id(payment_id),
            payment_id=payment_id,
            account_id=account_id,
            currency=currency,
            amount_minor=amount_minor,
            expires_at=expires_at,
            **journal_fields(memo, when),
        )

    def capture(self, captured_minor: int, when: When) -> None:
        """Ends the hold with ``captured_minor`` captured (the rest is released). A hold that had
        ended already (Stripe captured after a release Sluice recorded) releases nothing more."""
        invariant(self.status != CAPTURED, "an authorization is captured once")
        if self.status == AUTHORIZED_STATUS:
            self._release(CAPTURED, when)
        self.trigger_event(
            self.Captured,
            captured_minor=captured_minor,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def release(self, reason: str, when: When) -> None:
        invariant(self.status == AUTHORIZED_STATUS, "only an open hold is released")
        self._release(reason, when)

    def _release(self, reason: str, when: When) -> None:
        memo = move(
            object_id("txn", "authorization_release", self.payment_id),
            "authorization_release",
            self.amount_minor,
            self.currency,
            (self.account_id, AUTHORIZED),
            (WORLD, CARD_AUTHORIZATIONS),
        )
        self.trigger_event(
            self.Released,
            reason=reason,
            released_minor=self.amount_minor,
            **journal_fields(memo, when),
        )


class HeldFunds(Aggregate):
    """The ``authorized`` figure of one (account, currency): what cards hold for it now."""

    class Opened(Aggregate.Created):
        account_id: str
        currency: str

        def apply(self, held: HeldFunds) -> None:
            held.account_id = self.account_id
            held.currency = self.currency
            held.open = {}

    class Changed(Aggregate.Event):
        payment_id: str
        held_minor: int  # the payment's hold now (0: ended)
        effective_at: datetime

        def apply(self, held: HeldFunds) -> None:
            if self.held_minor:
                held.open[self.payment_id] = self.held_minor
            else:
                held.open.pop(self.payment_id, None)
            invariant(len(held.open) <= OPEN_HOLDS_MAX, "too many open holds")

    account_id: str
    currency: str
    open: dict[str, int]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @property
    def authorized_minor(self) -> int:
        return sum(self.open.values())

    @classmethod
    def start(cls, account_id: str, currency: str, when: When) -> HeldFunds:
        return cls._create(
            cls.Opened,
            id=held_funds_aggregate_id(account_id, currency),
            account_id=account_id,
            currency=currency,
            timestamp=when.recorded_at,
        )

    def change(self, payment_id: str, held_minor: int, when: When) -> None:
        if held_minor and len(self.open) >= OPEN_HOLDS_MAX and payment_id not in self.open:
            raise InvalidParameterError(
                f"{self.account_id} holds {OPEN_HOLDS_MAX} open authorizations in {self.currency}",
                param="payment_id",
            )
        self.trigger_event(
            self.Changed,
            payment_id=payment_id,
            held_minor=held_minor,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )


# Facts and the command -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PaymentAuthorized(Fact):
    """Stripe authorized a manual-capture payment (``payment_intent.amount_capturable_updated``):
    ``amount_minor`` is held until ``expires_at`` (the charge's ``capture_before``)."""

    name = "payment_authorized"
    payment_id: str
    account_id: str
    currency: str
    amount_minor: int
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class AuthorizationCaptured(Fact):
    """Stripe captured ``amount_minor`` of the hold (``charge.amount_captured``)."""

    name = "authorization_captured"
    payment_id: str
    amount_minor: int


@dataclass(frozen=True, kw_only=True)
class AuthorizationReleased(Fact):
    """Stripe released the hold: canceled, or expired (``charge.expired``)."""

    name = "authorization_released"
    payment_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CaptureAuthorization(Command):
    """Sluice captures a hold (all of it, or ``amount_minor``) before it expires."""

    name = "capture_authorization"
    payment_id: str
    amount_minor: int | None = None


def _authorization(s: Scope, payment_id: object) -> Authorization:
    found = None
    if isinstance(payment_id, str):
        found = s.find(authorization_aggregate_id(payment_id), Authorization)
    if found is None:
        raise AuthorizationNotFoundError(f"no authorization for {payment_id}", param="payment")
    return found


def _held_funds(s: Scope, account_id: str, currency: str) -> HeldFunds:
    found = s.find(held_funds_aggregate_id(account_id, currency), HeldFunds)
    if found is None:
        found = HeldFunds.start(account_id, currency, s.when)
        s.add(found)
    return found


def _payment_authorized(s: Scope, f: PaymentAuthorized) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    expires_at = check_instant(f.expires_at, "expires_at")
    s.account(f.account_id)
    if not isinstance(f.payment_id, str) or not f.payment_id:
        raise InvalidParameterError("payment_id must be a non-empty string", param="payment_id")
    if expires_at <= s.when.effective_at:
        raise InvalidParameterError("an authorization expires after it is made", param="expires_at")
    hold = Authorization.place(
        s.when,
        payment_id=f.payment_id,
        account_id=f.account_id,
        currency=f.currency,
        amount_minor=amount,
        expires_at=expires_at,
    )
    s.add(hold, param="payment_id")
    _held_funds(s, f.account_id, f.currency).change(f.payment_id, amount, s.when)
    return {"authorization": f.payment_id}


def _authorization_captured(s: Scope, f: AuthorizationCaptured) -> dict[str, str]:
    hold = _authorization(s, f.payment_id)
    amount = check_amount(f.amount_minor, hold.currency)
    if hold.status == CAPTURED:
        raise InvalidParameterError(f"{hold.payment_id} was captured already", param="payment_id")
    # Stripe captured: recorded whatever Sluice expected, and what it broke is named.
    broken = []
    if hold.status != AUTHORIZED_STATUS:
        broken.append(f"{hold.payment_id} captured after its hold was {hold.status}")
    elif s.when.effective_at >= hold.expires_at:
        broken.append(f"{hold.payment_id} captured after its authorization expired")
    if amount > hold.amount_minor:
        broken.append(f"{hold.payment_id} captured {amount} of {hold.amount_minor} authorized")
    return _capture(s, hold, amount, broken)


def _capture(s: Scope, hold: Authorization, amount: int, broken: list[str]) -> dict[str, str]:
    hold.capture(amount, s.when)
    _held_funds(s, hold.account_id, hold.currency).change(hold.payment_id, 0, s.when)
    ids = {"authorization": hold.payment_id, "captured": str(amount)}
    if broken:
        ids["flagged"] = "; ".join(broken)
    return ids


def _authorization_released(s: Scope, f: AuthorizationReleased) -> dict[str, str]:
    hold = _authorization(s, f.payment_id)
    if f.reason not in RELEASE_REASONS:
        raise InvalidParameterError(f"reason is one of {RELEASE_REASONS}", param="reason")
    if hold.status != AUTHORIZED_STATUS:
        return {"authorization": hold.payment_id, "status": hold.status}  # ended already
    hold.release(f.reason, s.when)
    _held_funds(s, hold.account_id, hold.currency).change(hold.payment_id, 0, s.when)
    return {"authorization": hold.payment_id, "status": f.reason}


def _capture_authorization(s: Scope, cmd: CaptureAuthorization) -> dict[str, str]:
    hold = _authorization(s, cmd.payment_id)
    if hold.status == EXPIRED or s.when.effective_at >= hold.expires_at:
        raise AuthorizationExpiredError(
            f"the authorization of {hold.payment_id} expired at {hold.expires_at.isoformat()}",
            param="payment_id",
        )
    if hold.status != AUTHORIZED_STATUS:
        raise InvalidTransitionError(
            f"the authorization of {hold.payment_id} is {hold.status}", param="payment_id"
        )
    amount = hold.amount_minor
    if cmd.amount_minor is not None:
        amount = check_amount(cmd.amount_minor, hold.currency, "amount_minor")
    if amount > hold.amount_minor:
        raise AmountTooLargeError(
            f"capture {amount} exceeds the {hold.amount_minor} authorized", param="amount_minor"
        )
    return _capture(s, hold, amount, [])


HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    PaymentAuthorized: _payment_authorized,
    AuthorizationCaptured: _authorization_captured,
    AuthorizationReleased: _authorization_released,
    CaptureAuthorization: _capture_authorization,
}

__all__ = [
    "HANDLERS",
    "Authorization",
    "AuthorizationCaptured",
    "AuthorizationExpiredError",
    "AuthorizationNotFoundError",
    "AuthorizationReleased",
    "CaptureAuthorization",
    "HeldFunds",
    "PaymentAuthorized",
]
