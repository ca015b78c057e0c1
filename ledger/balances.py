"""Balance: one per (account, currency). Guards available funds against discretionary debits.

Funds arrive ``pending`` in lots keyed by their ``available_on`` instant and move to ``available``
when released. Refunds and disputes may drive ``available`` negative (Stripe allows it); payouts,
unsourced transfers and transfer reversals may not take it below ``AVAILABLE_FLOOR_MINOR``.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger.errors import InsufficientFundsError, InvariantViolation, invariant
from ledger.events import JournalEvent, When, journal_fields
from ledger.ids import balance_aggregate_id, object_id
from ledger.journal import AVAILABLE, PENDING, Entry, move
from ledger.money import format_minor

AVAILABLE_FLOOR_MINOR = 0  # discretionary debits never take available below this
LOTS_MAX = 10_000  # distinct pending available_on instants per balance; bounded on purpose


class Balance(Aggregate):
    class Opened(Aggregate.Created):
        account_id: str
        currency: str

        def apply(self, balance: Balance) -> None:
            balance.account_id = self.account_id
            balance.currency = self.currency
            balance.pending_minor = 0
            balance.available_minor = 0
            balance.reserved_minor = 0
            balance.lots = []
            balance.released_through = None

    class Posted(Aggregate.Event):
        """This balance's share of one command's journal entries (signed deltas per book)."""

        entry_ids: list[str]
        pending_minor: int
        available_minor: int
        reserved_minor: int
        available_on: datetime | None
        discretionary: bool
        effective_at: datetime

        def apply(self, balance: Balance) -> None:
            balance._apply_deltas(
                self.pending_minor, self.available_minor, self.reserved_minor, self.available_on
            )
            if self.discretionary:
                invariant(
                    balance.available_minor >= AVAILABLE_FLOOR_MINOR,
                    "discretionary debit took %s %s available below its floor: %d",
                    balance.account_id,
                    balance.currency,
                    balance.available_minor,
                )

    class Released(JournalEvent):
        """Pending lots due by ``until`` became available."""

        until: datetime
        amount_minor: int

        def apply(self, balance: Balance) -> None:
            balance.lots = [lot for lot in balance.lots if _instant(lot[0]) > self.until]
            balance.pending_minor -= self.amount_minor
            balance.available_minor += self.amount_minor
            if balance.released_through is None or self.until > balance.released_through:
                balance.released_through = self.until
            balance._check()

    class Settled(Aggregate.Event):
        """Stripe reports funds due by ``until`` available, but the lots due by then had netted
        to zero (a charge fully transferred on, say): nothing moves, yet everything pending up
        to ``until`` is available now, and read models must say so."""

        account_id: str
        currency: str
        until: datetime
        effective_at: datetime

        def apply(self, balance: Balance) -> None:
            balance.lots = [lot for lot in balance.lots if _instant(lot[0]) > self.until]
            if balance.released_through is None or self.until > balance.released_through:
                balance.released_through = self.until

    class ToppedUp(JournalEvent):
        topup_id: str
        amount_minor: int

        def apply(self, balance: Balance) -> None:
            balance._apply_deltas(self.amount_minor, 0, 0, self.available_on)

    account_id: str
    currency: str
    pending_minor: int
    available_minor: int
    reserved_minor: int
    lots: list[list[datetime | int]]  # [[available_on, amount_minor], …] sorted by instant
    released_through: datetime | None

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def open(cls, account_id: str, currency: str, when: When) -> Balance:
        return cls._create(
            cls.Opened,
            id=balance_aggregate_id(account_id, currency),
            account_id=account_id,
            currency=currency,
            timestamp=when.recorded_at,
        )

    # Queries -------------------------------------------------------------------------------

    def due_minor(self, until: datetime) -> int:
        return sum(_amount(lot) for lot in self.lots if _instant(lot[0]) <= until)

    def can_hold_lot(self, available_on: datetime) -> bool:
        return len(self.lots) < LOTS_MAX or any(lot[0] == available_on for lot in self.lots)

    def require_available(self, amount_minor: int, param: str = "amount") -> None:
        """A user's mistake, not a bug: asking to move more than is available."""
        if self.available_minor - amount_minor < AVAILABLE_FLOOR_MINOR:
            raise InsufficientFundsError(
                f"{self.account_id} has {format_minor(self.available_minor, self.currency)} "
                f"{self.currency} available, less than "
                f"{format_minor(amount_minor, self.currency)} requested",
                param=param,
            )

    # Commands ------------------------------------------------------------------------------

    def post(
        self,
        when: When,
        entry_ids: list[str],
        pending_minor: int,
        available_minor: int,
        reserved_minor: int,
        available_on: datetime | None,
        *,
        discretionary: bool,
    ) -> None:
        invariant(
            pending_minor == 0 or available_on is not None, "pending postings need available_on"
        )
        self.trigger_event(
            self.Posted,
            entry_ids=entry_ids,
            pending_minor=pending_minor,
            available_minor=available_minor,
            reserved_minor=reserved_minor,
            available_on=available_on,
            discretionary=discretionary,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def release(self, until: datetime, when: When) -> Entry | None:
        """Moves every lot due by ``until`` to available. Nothing due records nothing; due lots
        that net to zero move nothing but are settled (``Settled``), so read models stop showing
        the movements behind them as pending."""
        due = [lot for lot in self.lots if _instant(lot[0]) <= until]
        if not due:
            return None
        amount = sum(_amount(lot) for lot in due)
        if amount == 0:
            self.trigger_event(  # one event, no journal entry: nothing moves
                self.Settled,
                account_id=self.account_id,
                currency=self.currency,
                until=until,
                effective_at=when.effective_at,
                timestamp=when.recorded_at,
            )
            return None
        entry = move(
            object_id("txn", "release", str(self.id), str(self.version), until.isoformat()),
            "release",
            amount,
            self.currency,
            (self.account_id, PENDING),
            (self.account_id, AVAILABLE),
            until,  # every released lot's instant is at or before it
        )
        self.trigger_event(
            self.Released, until=until, amount_minor=amount, **journal_fields(entry, when)
        )
        return entry

    def top_up(self, topup_id: str, entry: Entry, amount_minor: int, when: When) -> None:
        self.trigger_event(
            self.ToppedUp,
            topup_id=topup_id,
            amount_minor=amount_minor,
            **journal_fields(entry, when),
        )

    # State ---------------------------------------------------------------------------------

    def _apply_deltas(
        self, pending: int, available: int, reserved: int, available_on: datetime | None
    ) -> None:
        invariant(not pending or available_on is not None, "pending delta without available_on")
        if available_on is not None:  # pending postings, even netting to zero, leave a lot
            self._add_to_lot(available_on, pending)
        self.pending_minor += pending
        self.available_minor += available
        self.reserved_minor += reserved
        self._check()

    def _add_to_lot(self, available_on: datetime, amount_minor: int) -> None:
        for lot in self.lots:
            if lot[0] == available_on:
                lot[1] = _amount(lot) + amount_minor
                break
        else:
            invariant(len(self.lots) < LOTS_MAX, "too many pending lots on one balance")
            self.lots.append([available_on, amount_minor])
            self.lots.sort(key=lambda lot: _instant(lot[0]))
        # A lot that nets to zero stays until its instant is released: its movements were
        # pending until then, and the release settles them (``Settled``).

    def _check(self) -> None:
        invariant(
            sum(_amount(lot) for lot in self.lots) == self.pending_minor,
            "pending lots of %s %s do not add up to pending",
            self.account_id,
            self.currency,
        )
        invariant(self.reserved_minor >= 0, "reserved funds cannot be negative")


def _instant(value: datetime | int) -> datetime:
    if not isinstance(value, datetime):
        raise InvariantViolation("lot instants are datetimes")
    return value


def _amount(lot: list[datetime | int]) -> int:
    value = lot[1]
    if not isinstance(value, int):
        raise InvariantViolation("lot amounts are integers")
    return value
