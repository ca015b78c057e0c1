"""Double entry. A journal entry is a list of postings that sums to zero per currency.

A posting is ``(owner, book, amount_minor, currency)``. Owners are account ids (``acct_…``) or
``world``. Balance books (``pending``, ``available``, ``reserved``) belong to accounts; outside
books stand for money outside Stripe balances. Entries are stored on events as lists of primitives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ledger.errors import InvariantViolation, invariant
from ledger.ids import WORLD
from ledger.money import check_currency

PENDING = "pending"
AVAILABLE = "available"
RESERVED = "reserved"
BALANCE_BOOKS = frozenset({PENDING, AVAILABLE, RESERVED})

CUSTOMER_FUNDS = "customer_funds"  # world: card networks and customers
STRIPE_FEES = "stripe_fees"  # world: fees Stripe kept
PAYOUTS_IN_TRANSIT = "payouts_in_transit"  # account: on the way to its bank
BANK = "bank"  # account: its external bank account
# account: equity for the history before Sluice took over (``ledger.openings``): an imported
# opening balance is booked against it, and so are offsets of facts it already contains.
OPENING_BALANCE = "opening_balance"
OUTSIDE_BOOKS = frozenset({CUSTOMER_FUNDS, STRIPE_FEES, PAYOUTS_IN_TRANSIT, BANK, OPENING_BALANCE})
# Reconciliation (``ledger.reconciliation``): world's book for money Stripe moved on its own
# (an ``adjustment``), and an account's clearing book, its suspense: a difference with Stripe is
# booked there against the balance books while its cause is open, and reversed (the book back to
# zero) once the missing side arrives.
STRIPE_ADJUSTMENTS = "stripe_adjustments"
CLEARING = "clearing"
WORLD_BOOKS = frozenset({CUSTOMER_FUNDS, STRIPE_FEES, STRIPE_ADJUSTMENTS})
OUTSIDE_BOOKS = OUTSIDE_BOOKS | {STRIPE_ADJUSTMENTS, CLEARING}
# world: Stripe's currency desk. A conversion is booked through it in both currencies (one
# currency in, the other out at Stripe's rate), so each currency's journal still sums to zero.
FX = "fx"
WORLD_BOOKS = WORLD_BOOKS | {FX}
OUTSIDE_BOOKS = OUTSIDE_BOOKS | {FX}
# Authorization holds (``ledger.holds``): a memo pair, the account's ``authorized`` figure against
# the card networks' ``card_authorizations``. Outside the balance books on purpose: a hold is
# never pending nor available, so nothing can pay it out.
AUTHORIZED = "authorized"
CARD_AUTHORIZATIONS = "card_authorizations"
WORLD_BOOKS = WORLD_BOOKS | {CARD_AUTHORIZATIONS}
OUTSIDE_BOOKS = OUTSIDE_BOOKS | {AUTHORIZED, CARD_AUTHORIZATIONS}
BOOKS = BALANCE_BOOKS | OUTSIDE_BOOKS

POSTINGS_PER_ENTRY_MAX = 64

# Entry kinds: what a movement is, named like Stripe's balance transaction types.
KINDS = frozenset(
    {
        "charge",  # a captured charge lands on the account it was made on
        "application_fee",  # the platform's fee moves from the seller to the platform
        "application_fee_refund",
        "transfer",
        "transfer_reversal",
        "refund",
        "dispute",  # funds withdrawn with the dispute fee
        "dispute_reversal",  # funds reinstated after a won dispute
        "release",  # pending became available
        "topup",
        "payout",
        "payout_paid",  # in transit reached the bank
        "payout_failure",
        "payout_cancel",
        "stripe_movement",  # a movement Stripe made on its own (adjustment, stripe_fee, …)
        "clearing",  # reconciliation books a difference with Stripe (ledger.reconciliation)
        "clearing_reversal",  # … and takes it back once the difference is gone
        "opening_balance",  # an account's balance at the import's cut-over
        "opening_offset",  # a fact from before the cut-over, already in the opening balance
        "reserve_hold",  # Stripe held available funds back in the reserved book (ledger.risk)
        "reserve_release",  # … and released them back to available
    }
)
KINDS = KINDS | {"payout_conversion"}  # Stripe converted a payout to its bank's currency
KINDS = KINDS | {"payout_fee"}  # Stripe's fee on a payout (an Instant Payout's)

KINDS = KINDS | {"authorization", "authorization_release"}  # a hold placed, a hold ended
KINDS = KINDS | {"refund_failure", "topup_reversal", "payout_reversal"}  # ledger.failures

PostingRow = list[str | int]  # [owner, book, amount_minor, currency]: the stored form


@dataclass(frozen=True, slots=True)
class Posting:
    owner: str
    book: str
    amount_minor: int
    currency: str

    def row(self) -> PostingRow:
        return [self.owner, self.book, self.amount_minor, self.currency]

    @staticmethod
    def from_row(row: Sequence[object]) -> Posting:
        owner, book, amount, currency = row
        if not (isinstance(owner, str) and isinstance(book, str) and isinstance(currency, str)):
            raise InvariantViolation(f"malformed posting {row!r}")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise InvariantViolation(f"posting amount must be an int: {row!r}")
        return Posting(owner, book, amount, currency)


@dataclass(frozen=True, slots=True)
class Entry:
    """A balanced journal entry. Build it with ``entry()``; that is where the sum is checked."""

    entry_id: str
    kind: str
    postings: tuple[Posting, ...]
    available_on: datetime | None  # when pending postings become available

    def rows(self) -> list[PostingRow]:
        return [p.row() for p in self.postings]


def sums_by_currency(postings: Iterable[Posting]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for p in postings:
        totals[p.currency] += p.amount_minor
    return dict(totals)


def check_balanced(postings: Sequence[Posting]) -> None:
    """Every entry sums to zero per currency; a violation is a programming error."""
    invariant(0 < len(postings) <= POSTINGS_PER_ENTRY_MAX, "entry has %d postings", len(postings))
    for p in postings:
        invariant(p.book in BOOKS, "unknown book %r", p.book)
        invariant(
            (p.owner == WORLD) == (p.book in WORLD_BOOKS),
            "book %r cannot belong to %r",
            p.book,
            p.owner,
        )
        check_currency(p.currency)
    unbalanced = {c: s for c, s in sums_by_currency(postings).items() if s != 0}
    invariant(not unbalanced, "journal entry does not sum to zero: %s", unbalanced)


def entry(
    entry_id: str,
    kind: str,
    lines: Iterable[tuple[str, str, int, str]],
    available_on: datetime | None = None,
) -> Entry:
    """Builds a balanced entry, dropping zero lines (a 0.00 fee moves nothing)."""
    invariant(kind in KINDS, "unknown entry kind %r", kind)
    postings = tuple(Posting(o, b, a, c) for o, b, a, c in lines if a != 0)
    check_balanced(postings)
    if any(p.book == PENDING for p in postings):
        invariant(available_on is not None, "pending postings need an available_on")
    return Entry(entry_id, kind, postings, available_on)


def move(
    entry_id: str,
    kind: str,
    amount_minor: int,
    currency: str,
    debit: tuple[str, str],
    credit: tuple[str, str],
    available_on: datetime | None = None,
) -> Entry:
    """The common two-line entry: ``amount`` leaves ``debit`` and arrives in ``credit``."""
    return entry(
        entry_id,
        kind,
        [(*debit, -amount_minor, currency), (*credit, amount_minor, currency)],
        available_on,
    )


BALANCE_ORDER = (PENDING, AVAILABLE, RESERVED)  # the order of a balance's deltas


def book_deltas(postings: Iterable[Posting]) -> dict[tuple[str, str], dict[str, int]]:
    """The one fold from postings to books: per (owner, currency), the sum posted to each book.

    Everything that needs book totals uses it: the write side mirroring entries onto Balance
    aggregates, the whole-journal check, the balances read model and the auditor's replay.
    """
    deltas: dict[tuple[str, str], dict[str, int]] = {}
    for p in postings:
        books = deltas.setdefault((p.owner, p.currency), {})
        books[p.book] = books.get(p.book, 0) + p.amount_minor
    return deltas


def row_book_deltas(rows: Iterable[Sequence[object]]) -> dict[tuple[str, str], dict[str, int]]:
    """``book_deltas`` of stored posting rows, without building a ``Posting`` per row (the
    read side folds every journal event of the log: the Postings were a quarter of a rebuild's
    projecting). A row ``Posting.from_row`` would refuse is refused by it here too; a property
    test holds the two folds equal."""
    deltas: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        owner, book, amount, currency = row
        if (
            type(amount) is not int
            or type(owner) is not str
            or type(book) is not str
            or type(currency) is not str
        ):
            posting = Posting.from_row(row)  # raises for a malformed row; else str subclasses
            owner, book, amount, currency = (
                posting.owner,
                posting.book,
                posting.amount_minor,
                posting.currency,
            )
        books = deltas.get((owner, currency))
        if books is None:
            deltas[owner, currency] = {book: amount}
        else:
            books[book] = books.get(book, 0) + amount
    return deltas


def balance_row(books: dict[str, int]) -> tuple[int, int, int]:
    """(pending, available, reserved) of one owner's book deltas."""
    return books.get(PENDING, 0), books.get(AVAILABLE, 0), books.get(RESERVED, 0)
