"""Reconciliation: what Sluice's books and Stripe's balance transactions disagree on, by name.

The edge (``adapters.reconcile``) lists Stripe's balance transactions, groups both sides by the
Stripe object they belong to and compares them; this module records the outcome as events:

- ``Break``, one per (account, currency, Stripe object): found with a name (``BREAK_NAMES``),
  the Stripe object, the ledger entries, the difference and the instant first seen; changed while
  open; resolved with how and when. Nothing here "fixes" a difference by guessing: a break is
  resolved only when both sides agree again (a refetched fact, a late webhook).
- **Clearing.** While a break is open its money difference (Stripe minus ledger, per balance book)
  is booked between the account's balance books and its ``clearing`` book, so the ledger shows
  Stripe's balance and still sums to zero; resolving the break reverses the entry and the
  clearing book returns to zero. A clearing book that is not zero names an open break.
- ``ReconciliationCursor``, one per account: the instant (Stripe's ``created``) before which
  every balance transaction matched and was final; the next pass starts there (resumable).
- ``StripeMovement``: a movement Stripe made on its own that Sluice books no object for (an
  ``adjustment``, a ``stripe_fee``, a ``transfer_cancel``…), recorded as Stripe reports it
  through the fact ``ledger.facts.StripeAdjustment``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from ledger.commands import Command, Message
from ledger.errors import InvalidParameterError, invariant
from ledger.events import JournalEvent, check_instant, journal_fields
from ledger.facts import StripeAdjustment
from ledger.ids import WORLD, aggregate_id, object_id
from ledger.journal import (
    AVAILABLE,
    CLEARING,
    PENDING,
    STRIPE_ADJUSTMENTS,
    STRIPE_FEES,
    Entry,
    entry,
)
from ledger.money import check_currency

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.engine import Scope

MISSING_IN_LEDGER = "missing_in_ledger"
MISSING_AT_STRIPE = "missing_at_stripe"
AMOUNT_MISMATCH = "amount_mismatch"
FEE_MISMATCH = "fee_mismatch"
AVAILABILITY_MISMATCH = "availability_mismatch"
STATUS_MISMATCH = "status_mismatch"
# The closed vocabulary, in the order a group is checked: the first that applies names it.
BREAK_NAMES = (
    MISSING_IN_LEDGER,
    MISSING_AT_STRIPE,
    AMOUNT_MISMATCH,
    FEE_MISMATCH,
    AVAILABILITY_MISMATCH,
    STATUS_MISMATCH,
)
OPEN = "open"
RESOLVED = "resolved"
DIFFERENCE_KEYS = ("amount", "fee", "net")
AMOUNT_ABS_MAX = 99_999_999  # Stripe's 8-digit bound, for signed balance-transaction amounts


def break_aggregate_id(account_id: str, currency: str, key: str) -> Any:
    return aggregate_id("break", account_id, currency, key)


def break_id(account_id: str, currency: str, key: str) -> str:
    return object_id("brk", account_id, currency, key)


def cursor_aggregate_id(account_id: str) -> Any:
    return aggregate_id("reconciliation", account_id)


# Movements Stripe makes on its own ------------------------------------------------------------


class StripeMovement(Aggregate):
    """One balance transaction Stripe made on its own (no object Sluice books stands behind it)."""

    class Recorded(Aggregate.Created, JournalEvent):
        movement_id: str
        account_id: str
        currency: str
        bt_type: str
        amount_minor: int
        fee_minor: int
        source_id: str

        def apply(self, movement: StripeMovement) -> None:
            movement.movement_id = self.movement_id
            movement.account_id = self.account_id
            movement.bt_type = self.bt_type

    movement_id: str
    account_id: str
    bt_type: str

    def __init__(self) -> None:
        """State comes from the created event's apply()."""


def _signed_amount(value: object, param: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > AMOUNT_ABS_MAX:
        raise InvalidParameterError(f"{param} is an integer of at most 8 digits", param=param)
    return value


def _stripe_adjustment(s: Scope, f: StripeAdjustment) -> dict[str, str]:
    """Books the movement as Stripe reports it: ``net`` (amount - fee) on the account, pending
    until ``available_on`` if that is still ahead, the fee to Stripe's fees, the amount against
    Stripe's fees (a ``stripe_fee``) or Stripe's adjustments (anything else)."""
    check_currency(f.currency)
    amount = _signed_amount(f.amount_minor, "amount_minor")
    fee = _signed_amount(f.fee_minor, "fee_minor")
    if amount == 0 and fee == 0:
        raise InvalidParameterError("a movement moves money", param="amount_minor")
    check_instant(f.available_on, "available_on")
    s.account(f.account_id)
    s.claim("stripe_movement", f.movement_id, "movement_id")
    pending = f.available_on > s.when.effective_at
    counter = STRIPE_FEES if f.bt_type == "stripe_fee" else STRIPE_ADJUSTMENTS
    booked = entry(
        object_id("txn", "stripe", f.movement_id),
        "stripe_movement",
        [
            (f.account_id, PENDING if pending else AVAILABLE, amount - fee, f.currency),
            (WORLD, STRIPE_FEES, fee, f.currency),
            (WORLD, counter, -amount, f.currency),
        ],
        f.available_on if pending else None,
    )
    movement = StripeMovement._create(
        StripeMovement.Recorded,
        id=aggregate_id("stripe_movement", f.movement_id),
        movement_id=f.movement_id,
        account_id=f.account_id,
        currency=f.currency,
        bt_type=f.bt_type,
        amount_minor=amount,
        fee_minor=fee,
        source_id=f.source_id or f.movement_id,
        **journal_fields(booked, s.when),
    )
    s.add(movement, param="movement_id")
    return {"movement": f.movement_id}


# Breaks ---------------------------------------------------------------------------------------


class Break(Aggregate):
    """A difference between Sluice and Stripe about one Stripe object on one account."""

    class Found(Aggregate.Created):
        break_id: str
        account_id: str
        currency: str
        key: str
        name: str
        stripe_ref: str
        ledger_ref: str
        difference: dict[str, int]
        detail: str
        effective_at: datetime

        def apply(self, brk: Break) -> None:
            brk.break_id = self.break_id
            brk.account_id = self.account_id
            brk.currency = self.currency
            brk.key = self.key
            brk.first_seen = self.effective_at
            brk.clearing_pending_minor = 0
            brk.clearing_available_minor = 0
            brk.clearing_on = None
            brk._observe(self)

    class Changed(Aggregate.Event):
        """Seen again, different (or again after it was resolved: reopened)."""

        name: str
        stripe_ref: str
        ledger_ref: str
        difference: dict[str, int]
        detail: str
        effective_at: datetime

        def apply(self, brk: Break) -> None:
            brk._observe(self)

    class Cleared(JournalEvent):
        """The difference booked between the balance books and the clearing book."""

        pending_minor: int
        available_minor: int
        on: datetime | None

        def apply(self, brk: Break) -> None:
            brk.clearing_pending_minor = self.pending_minor
            brk.clearing_available_minor = self.available_minor
            brk.clearing_on = self.on

    class Uncleared(JournalEvent):
        """The clearing entry reversed: the clearing book holds nothing for this break."""

        def apply(self, brk: Break) -> None:
            brk.clearing_pending_minor = 0
            brk.clearing_available_minor = 0
            brk.clearing_on = None

    class Resolved(Aggregate.Event):
        how: str
        effective_at: datetime

        def apply(self, brk: Break) -> None:
            brk.status = RESOLVED
            brk.resolved_at = self.effective_at
            brk.resolution = self.how

    break_id: str
    account_id: str
    currency: str
    key: str
    name: str
    status: str
    stripe_ref: str
    ledger_ref: str
    difference: dict[str, int]
    detail: str
    first_seen: datetime
    resolved_at: datetime | None
    resolution: str | None
    clearing_pending_minor: int
    clearing_available_minor: int
    clearing_on: datetime | None

    def __init__(self) -> None:
        """State comes from the created event's apply()."""

    def _observe(self, event: Found | Changed) -> None:
        self.name = event.name
        self.stripe_ref = event.stripe_ref
        self.ledger_ref = event.ledger_ref
        self.difference = dict(event.difference)
        self.detail = event.detail
        self.status = OPEN
        self.resolved_at = None
        self.resolution = None

    @property
    def clearing(self) -> tuple[int, int, datetime | None]:
        return self.clearing_pending_minor, self.clearing_available_minor, self.clearing_on

    def same_as(self, report: ReportBreak) -> bool:
        return (
            self.status == OPEN
            and self.name == report.break_name
            and self.difference == report.difference
            and self.stripe_ref == report.stripe_ref
            and self.ledger_ref == report.ledger_ref
            and self.clearing == report.clearing
        )


@dataclass(frozen=True, kw_only=True)
class ReportBreak(Command):
    """A group of balance transactions that disagrees: record (or update) its break, and book
    the money difference (Stripe - ledger, per balance book) in the account's clearing book."""

    name = "report_break"
    account_id: str
    currency: str
    key: str  # the Stripe object the balance transactions belong to
    break_name: str
    stripe_ref: str  # Stripe's balance transaction ids and object
    ledger_ref: str  # the ledger's entry ids
    difference: dict[str, int] = field(default_factory=dict)  # amount, fee, net: Stripe - ledger
    detail: str = ""
    clearing_pending_minor: int = 0
    clearing_available_minor: int = 0
    clearing_on: datetime | None = None  # when the pending part becomes available at Stripe

    @property
    def clearing(self) -> tuple[int, int, datetime | None]:
        on = self.clearing_on if self.clearing_pending_minor else None
        return self.clearing_pending_minor, self.clearing_available_minor, on


@dataclass(frozen=True, kw_only=True)
class ResolveBreak(Command):
    """Both sides agree again: the break is resolved and its clearing entry reversed."""

    name = "resolve_break"
    account_id: str
    currency: str
    key: str
    how: str


@dataclass(frozen=True, kw_only=True)
class AdvanceCursor(Command):
    name = "advance_reconciliation_cursor"
    account_id: str
    cursor: int  # unix seconds: every balance transaction created before it matched, final
    checked: int = 0


def _check_report(cmd: ReportBreak) -> None:
    if cmd.break_name not in BREAK_NAMES:
        raise InvalidParameterError(f"unknown break {cmd.break_name!r}", param="break_name")
    check_currency(cmd.currency)
    if not isinstance(cmd.difference, dict) or set(cmd.difference) - set(DIFFERENCE_KEYS):
        raise InvalidParameterError(f"difference has {DIFFERENCE_KEYS}", param="difference")
    for name, value in cmd.difference.items():
        _signed_amount(value, f"difference.{name}")
    _signed_amount(cmd.clearing_pending_minor, "clearing_pending_minor")
    _signed_amount(cmd.clearing_available_minor, "clearing_available_minor")
    if cmd.clearing_pending_minor:
        check_instant(cmd.clearing_on, "clearing_on")


def _report_break(s: Scope, cmd: ReportBreak) -> dict[str, str]:
    _check_report(cmd)
    s.account(cmd.account_id)
    found = s.find(break_aggregate_id(cmd.account_id, cmd.currency, cmd.key), Break)
    observed = {
        "name": cmd.break_name,
        "stripe_ref": cmd.stripe_ref,
        "ledger_ref": cmd.ledger_ref,
        "difference": dict(cmd.difference),
        "detail": cmd.detail,
        "effective_at": s.when.effective_at,
        "timestamp": s.when.recorded_at,
    }
    if found is None:
        found = Break._create(
            Break.Found,
            id=break_aggregate_id(cmd.account_id, cmd.currency, cmd.key),
            break_id=break_id(cmd.account_id, cmd.currency, cmd.key),
            account_id=cmd.account_id,
            currency=cmd.currency,
            key=cmd.key,
            **observed,
        )
        s.add(found)
    elif not found.same_as(cmd):
        found.trigger_event(Break.Changed, **observed)
    if found.clearing != cmd.clearing:
        _unclear(s, found)
        _clear(s, found, cmd.clearing)
    return {"break": found.break_id, "status": OPEN}


def _resolve_break(s: Scope, cmd: ResolveBreak) -> dict[str, str]:
    found = s.find(break_aggregate_id(cmd.account_id, cmd.currency, cmd.key), Break)
    if found is None:
        raise InvalidParameterError(f"no break for {cmd.key}", param="key")
    if found.status == OPEN:
        _unclear(s, found)
        found.trigger_event(
            Break.Resolved,
            how=cmd.how,
            effective_at=s.when.effective_at,
            timestamp=s.when.recorded_at,
        )
    return {"break": found.break_id, "status": RESOLVED}


def _balance_book(s: Scope, brk: Break, on: datetime | None) -> str:
    """Where a pending difference sits in the ledger: pending until ``on``, unless the ledger
    has released funds due by then already (then it is available, as Stripe's will be)."""
    released = s.balance(brk.account_id, brk.currency).released_through
    return AVAILABLE if on is None or (released is not None and on <= released) else PENDING


def _clearing_entry(
    s: Scope, brk: Break, kind: str, pending: int, available: int, on: datetime | None
) -> Entry | None:
    """The entry moving ``pending``/``available`` into the balance books against clearing, or
    None when nothing moves (a status difference the ledger has released already, say)."""
    book = _balance_book(s, brk, on)
    amounts = {PENDING: 0, AVAILABLE: available, CLEARING: -(pending + available)}
    amounts[book] += pending
    if not any(amounts.values()):
        return None
    return entry(
        object_id("txn", kind, brk.break_id, str(brk.version)),
        kind,
        [(brk.account_id, b, amount, brk.currency) for b, amount in amounts.items()],
        on if amounts[PENDING] else None,
    )


def _clear(s: Scope, brk: Break, clearing: tuple[int, int, datetime | None]) -> None:
    pending, available, on = clearing
    booked = _clearing_entry(s, brk, "clearing", pending, available, on)
    if booked is not None:
        brk.trigger_event(
            Break.Cleared,
            pending_minor=pending,
            available_minor=available,
            on=on,
            **journal_fields(booked, s.when),
        )


def _unclear(s: Scope, brk: Break) -> None:
    pending, available, on = brk.clearing
    if not (pending or available):
        return
    booked = _clearing_entry(s, brk, "clearing_reversal", -pending, -available, on)
    if booked is None:
        return
    brk.trigger_event(Break.Uncleared, **journal_fields(booked, s.when))
    invariant(brk.clearing == (0, 0, None), "a reversed clearing entry leaves nothing")


# The cursor -----------------------------------------------------------------------------------


class ReconciliationCursor(Aggregate):
    class Started(Aggregate.Created):
        account_id: str

        def apply(self, cursor: ReconciliationCursor) -> None:
            cursor.account_id = self.account_id
            cursor.cursor = 0
            cursor.checked = 0

    class Advanced(Aggregate.Event):
        cursor: int
        checked: int
        effective_at: datetime

        def apply(self, cursor: ReconciliationCursor) -> None:
            cursor.cursor = self.cursor
            cursor.checked += self.checked

    account_id: str
    cursor: int
    checked: int

    def __init__(self) -> None:
        """State comes from the created event's apply()."""


def _advance_cursor(s: Scope, cmd: AdvanceCursor) -> dict[str, str]:
    for value, param in ((cmd.cursor, "cursor"), (cmd.checked, "checked")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidParameterError(f"{param} is a non-negative integer", param=param)
    found = s.find(cursor_aggregate_id(cmd.account_id), ReconciliationCursor)
    if found is None:
        found = ReconciliationCursor._create(
            ReconciliationCursor.Started,
            id=cursor_aggregate_id(cmd.account_id),
            account_id=cmd.account_id,
        )
        s.add(found)
    if cmd.cursor < found.cursor:
        # A cursor only moves forward: going back would skip nothing, but would say that
        # reconciled transactions were not.
        raise InvalidParameterError("the cursor moves forward only", param="cursor")
    found.trigger_event(
        ReconciliationCursor.Advanced,
        cursor=cmd.cursor,
        checked=cmd.checked,
        effective_at=s.when.effective_at,
        timestamp=s.when.recorded_at,
    )
    return {"account": cmd.account_id, "cursor": str(cmd.cursor)}


# Queries on the write side (the read model of breaks is projections.reconciliation) -----------


def _get(app: Application[Any], aggregate_id: Any, cls: type[Any]) -> Any:
    try:
        found: Aggregate = app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, cls) else None


def get_break(app: Application[Any], account_id: str, currency: str, key: str) -> Break | None:
    found: Break | None = _get(app, break_aggregate_id(account_id, currency, key), Break)
    return found


def get_cursor(app: Application[Any], account_id: str) -> int:
    found = _get(app, cursor_aggregate_id(account_id), ReconciliationCursor)
    return int(found.cursor) if found is not None else 0


HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    StripeAdjustment: _stripe_adjustment,
    ReportBreak: _report_break,
    ResolveBreak: _resolve_break,
    AdvanceCursor: _advance_cursor,
}

__all__ = [
    "BREAK_NAMES",
    "HANDLERS",
    "AdvanceCursor",
    "Break",
    "ReconciliationCursor",
    "ReportBreak",
    "ResolveBreak",
    "StripeMovement",
    "get_break",
    "get_cursor",
]
