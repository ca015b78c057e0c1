"""Opening balances: an account's books as Stripe had them when Sluice took over.

A platform that adopts Sluice has a history Sluice never saw. ``sluice stripe import`` books each
account's balance per currency at a cut-over instant (``facts.OpeningBalanceImported``, against
the account's ``opening_balance`` book: equity for the history before Sluice) and every movement
since as the facts the webhook fold books.

A fact Stripe reports later about a movement made *before* the cut-over (a redelivered old event,
or a charge fetched because a refund after the cut-over names it) is already inside the opening
balance. It is recorded all the same (facts are not commands: the payment, transfer or payout it
creates must exist for what follows), and an ``Offset`` moves its effect on the account's balance
books back to the opening book, so the money is counted once. The offset mirrors what the fact
booked, posting for posting (pending at the same ``available_on``), so it is exact by
construction, whatever the fact's numbers.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.errors import InvalidParameterError
from ledger.events import JournalEvent, When, journal_fields
from ledger.ids import aggregate_id
from ledger.journal import Entry

ACCOUNTS_MAX = 100_000  # cut-overs held by the index: one per imported account; bounded


def opening_aggregate_id(account_id: str) -> UUID:
    return aggregate_id("opening", account_id)


OPENING_INDEX_ID = aggregate_id("opening_index")


class OpeningIndex(Aggregate):
    """Which accounts have a cut-over: one aggregate, so a fact finds out with one read."""

    class Started(Aggregate.Created):
        def apply(self, index: OpeningIndex) -> None:
            index.cutovers = {}

    class CutOverSet(Aggregate.Event):
        account_id: str
        cutover: datetime

        def apply(self, index: OpeningIndex) -> None:
            index.cutovers[self.account_id] = self.cutover

    cutovers: dict[str, datetime]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def start(cls, when: When) -> OpeningIndex:
        return cls._create(cls.Started, id=OPENING_INDEX_ID, timestamp=when.recorded_at)

    def set_cutover(self, account_id: str, cutover: datetime, when: When) -> None:
        known = self.cutovers.get(account_id)
        if known is not None and known != cutover:
            raise InvalidParameterError(
                f"{account_id} was opened at {known.isoformat()}, not {cutover.isoformat()}",
                param="effective_at",
            )
        if known is None:
            if len(self.cutovers) >= ACCOUNTS_MAX:
                raise InvalidParameterError("too many imported accounts", param="account")
            self.trigger_event(
                self.CutOverSet,
                account_id=account_id,
                cutover=cutover,
                timestamp=when.recorded_at,
            )


class Opening(Aggregate):
    """One account's opening: its entries at the cut-over, the offsets of facts from before
    it, and how far the import of its balance transactions has come (its cursor)."""

    class Started(Aggregate.Created):
        account_id: str
        cutover: datetime

        def apply(self, opening: Opening) -> None:
            opening.account_id = self.account_id
            opening.cutover = self.cutover
            opening.currencies = []
            opening.offsets = 0
            opening.cursor = None

    class Booked(JournalEvent):
        """The balance in one currency at the cut-over (one entry per pending lot, and one for
        the available part)."""

        currency: str

        def apply(self, opening: Opening) -> None:
            if self.currency not in opening.currencies:
                opening.currencies.append(self.currency)

    class Offset(JournalEvent):
        """A fact from before the cut-over: its effect on this account's balance books,
        returned to the opening book (it is in the opening balance already)."""

        offsets_entry_id: str

        def apply(self, opening: Opening) -> None:
            opening.offsets += 1

    class Progressed(Aggregate.Event):
        """Stripe's balance transactions of this account up to ``cursor`` are booked."""

        cursor: str
        effective_at: datetime

        def apply(self, opening: Opening) -> None:
            opening.cursor = self.cursor

    account_id: str
    cutover: datetime
    currencies: list[str]
    offsets: int
    cursor: str | None

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def start(cls, account_id: str, cutover: datetime, when: When) -> Opening:
        return cls._create(
            cls.Started,
            id=opening_aggregate_id(account_id),
            account_id=account_id,
            cutover=cutover,
            timestamp=when.recorded_at,
        )

    def book(self, currency: str, entry: Entry, when: When) -> None:
        self.trigger_event(self.Booked, currency=currency, **journal_fields(entry, when))

    def offset(self, offsets_entry_id: str, entry: Entry, when: When) -> None:
        self.trigger_event(
            self.Offset, offsets_entry_id=offsets_entry_id, **journal_fields(entry, when)
        )

    def progress(self, cursor: str, when: When) -> None:
        self.trigger_event(
            self.Progressed,
            cursor=cursor,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )
