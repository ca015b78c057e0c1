"""Risk: who covers a seller's negative balance, and Connect reserves.

- **Loss liability.** Stripe's ``controller.losses.payments`` on an account says who covers its
  losses: ``application`` (the platform: a negative balance Stripe cannot recover is the
  platform's to pay) or ``stripe``. Sluice records it as Stripe reports it (``SetLossLiability``)
  and the read side shows the platform's exposure per seller: the negative available balance of
  each account the platform is liable for (``projections.risk``).
- **Reserves.** Stripe holds part of a seller's available funds back (a ``reserve.hold``, balance
  transaction ``reserve_hold``) and releases them on a date (``reserve.release``, balance
  transaction ``reserve_release``). Both are facts, booked between the account's ``available``
  and ``reserved`` books with Stripe's amounts. Payouts and transfers draw on ``available`` only,
  so reserved funds are never paid out while held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from ledger.commands import Command, Message
from ledger.errors import InvalidParameterError
from ledger.events import JournalEvent, When, check_instant, journal_fields
from ledger.facts import Fact
from ledger.ids import aggregate_id, object_id
from ledger.journal import AVAILABLE, RESERVED, move
from ledger.money import check_amount, check_currency

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.engine import Scope

LOSS_PAYERS = ("application", "stripe")  # Stripe's controller.losses.payments
RELEASES_PER_RESERVE_MAX = 1_000


def reserve_aggregate_id(reserve_id: str) -> Any:
    return aggregate_id("reserve", reserve_id)


def liability_aggregate_id(account_id: str) -> Any:
    return aggregate_id("loss_liability", account_id)


# Loss liability ---------------------------------------------------------------------------------


class LossLiability(Aggregate):
    """Who covers one account's losses, as Stripe's controller settings say."""

    class Recorded(Aggregate.Created):
        account_id: str
        losses_payments: str
        effective_at: datetime

        def apply(self, liability: LossLiability) -> None:
            liability.account_id = self.account_id
            liability.losses_payments = self.losses_payments

    class Changed(Aggregate.Event):
        account_id: str
        losses_payments: str
        effective_at: datetime

        def apply(self, liability: LossLiability) -> None:
            liability.losses_payments = self.losses_payments

    account_id: str
    losses_payments: str

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""


@dataclass(frozen=True, kw_only=True)
class SetLossLiability(Command):
    """``controller.losses.payments`` of an account, as Stripe reports it."""

    name = "set_loss_liability"
    account_id: str
    losses_payments: str


def _set_loss_liability(s: Scope, cmd: SetLossLiability) -> dict[str, str]:
    if cmd.losses_payments not in LOSS_PAYERS:
        raise InvalidParameterError(
            f"losses_payments must be one of {', '.join(LOSS_PAYERS)}", param="losses_payments"
        )
    account = s.account(cmd.account_id)
    if account.kind != "connected":
        raise InvalidParameterError("loss liability is a connected account's", param="account")
    found = s.find(liability_aggregate_id(cmd.account_id), LossLiability)
    if found is None:
        s.add(
            LossLiability._create(
                LossLiability.Recorded,
                id=liability_aggregate_id(cmd.account_id),
                account_id=cmd.account_id,
                losses_payments=cmd.losses_payments,
                effective_at=s.when.effective_at,
                timestamp=s.when.recorded_at,
            )
        )
    elif found.losses_payments != cmd.losses_payments:
        found.trigger_event(
            LossLiability.Changed,
            account_id=cmd.account_id,
            losses_payments=cmd.losses_payments,
            effective_at=s.when.effective_at,
            timestamp=s.when.recorded_at,
        )
    return {"account": cmd.account_id}


# Reserves ---------------------------------------------------------------------------------------


class Reserve(Aggregate):
    """One hold on an account's available funds and the releases Stripe made of it."""

    class Held(Aggregate.Created, JournalEvent):
        reserve_id: str
        account_id: str
        currency: str
        amount_minor: int
        release_after: datetime | None

        def apply(self, reserve: Reserve) -> None:
            reserve.reserve_id = self.reserve_id
            reserve.account_id = self.account_id
            reserve.currency = self.currency
            reserve.amount_minor = self.amount_minor
            reserve.release_after = self.release_after
            reserve.releases = {}

    class Released(JournalEvent):
        release_id: str
        amount_minor: int

        def apply(self, reserve: Reserve) -> None:
            reserve.releases[self.release_id] = self.amount_minor

    reserve_id: str
    account_id: str
    currency: str
    amount_minor: int
    release_after: datetime | None
    releases: dict[str, int]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @property
    def held_minor(self) -> int:
        """What is still held (the reserved book's share of this reserve)."""
        return self.amount_minor - sum(self.releases.values())

    @classmethod
    def hold(
        cls,
        when: When,
        *,
        reserve_id: str,
        account_id: str,
        currency: str,
        amount_minor: int,
        release_after: datetime | None,
    ) -> Reserve:
        held = move(
            object_id("txn", "reserve_hold", reserve_id),
            "reserve_hold",
            amount_minor,
            currency,
            (account_id, AVAILABLE),
            (account_id, RESERVED),
        )
        return cls._create(
            cls.Held,
            id=reserve_aggregate_id(reserve_id),
            reserve_id=reserve_id,
            account_id=account_id,
            currency=currency,
            amount_minor=amount_minor,
            release_after=release_after,
            **journal_fields(held, when),
        )

    def release(self, release_id: str, amount_minor: int, when: When) -> None:
        if release_id in self.releases or len(self.releases) >= RELEASES_PER_RESERVE_MAX:
            raise InvalidParameterError(
                f"release {release_id} of {self.reserve_id} is recorded already",
                param="release_id",
            )
        if amount_minor > self.held_minor:
            # The reserved book never goes negative: a release of more than is held is not a
            # movement Stripe can have made on this reserve (a bug at the edge).
            raise InvalidParameterError(
                f"a release of {amount_minor} exceeds the {self.held_minor} held by "
                f"{self.reserve_id}",
                param="amount_minor",
            )
        released = move(
            object_id("txn", "reserve_release", release_id),
            "reserve_release",
            amount_minor,
            self.currency,
            (self.account_id, RESERVED),
            (self.account_id, AVAILABLE),
        )
        self.trigger_event(
            self.Released,
            release_id=release_id,
            amount_minor=amount_minor,
            **journal_fields(released, when),
        )


@dataclass(frozen=True, kw_only=True)
class ReserveHeld(Fact):
    """Stripe held ``amount_minor`` of the account's available funds (its ``reserve.hold`` and
    ``reserve_hold`` balance transaction); ``release_after``: when Stripe plans to release it."""

    name = "reserve_held"
    reserve_id: str
    account_id: str
    currency: str
    amount_minor: int
    release_after: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ReserveReleased(Fact):
    """Stripe released ``amount_minor`` of a reserve back to available (``reserve.release``)."""

    name = "reserve_released"
    reserve_id: str
    release_id: str
    amount_minor: int


def _reserve_held(s: Scope, f: ReserveHeld) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    s.account(f.account_id)
    if f.release_after is not None:
        check_instant(f.release_after, "release_after")
    if not isinstance(f.reserve_id, str) or not f.reserve_id:
        raise InvalidParameterError("reserve_id must be a non-empty string", param="reserve_id")
    s.add(
        Reserve.hold(
            s.when,
            reserve_id=f.reserve_id,
            account_id=f.account_id,
            currency=f.currency,
            amount_minor=amount,
            release_after=f.release_after,
        ),
        param="reserve_id",
    )
    # Recorded even where the available balance goes negative: Stripe held the funds; the
    # engine flags what that broke.
    return {"reserve": f.reserve_id}


def _reserve_released(s: Scope, f: ReserveReleased) -> dict[str, str]:
    if not isinstance(f.reserve_id, str):
        raise InvalidParameterError("reserve_id must be a string", param="reserve_id")
    reserve = s.find(reserve_aggregate_id(f.reserve_id), Reserve)
    if reserve is None:
        raise InvalidParameterError(f"no such reserve: {f.reserve_id}", param="reserve_id")
    if not isinstance(f.release_id, str) or not f.release_id:
        raise InvalidParameterError("release_id must be a non-empty string", param="release_id")
    amount = check_amount(f.amount_minor, reserve.currency)
    reserve.release(f.release_id, amount, s.when)
    return {"reserve": f.reserve_id, "release": f.release_id}


HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    SetLossLiability: _set_loss_liability,
    ReserveHeld: _reserve_held,
    ReserveReleased: _reserve_released,
}
