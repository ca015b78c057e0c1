"""Ledger invariants as plain functions over plain data, so each can be shown to fail.

They take what the state machine reads from the Ledger (postings, balances, sums derived from
events) and raise ``AssertionError`` with a message naming the first thing that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

from ledger.journal import AVAILABLE, BALANCE_BOOKS, PENDING, RESERVED

PostingTuple = tuple[str, str, int, str]  # owner, book, amount_minor, currency
BalanceKey = tuple[str, str]  # owner, currency
BookKey = tuple[str, str, str]  # owner, book, currency


def check_entry_balanced(entry_id: str, postings: Iterable[PostingTuple]) -> None:
    """One journal entry sums to zero in each of its currencies."""
    totals: dict[str, int] = {}
    count = 0
    for _, _, amount, currency in postings:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise AssertionError(f"entry {entry_id}: posting amount {amount!r} is not an int")
        totals[currency] = totals.get(currency, 0) + amount
        count += 1
    if count == 0:
        raise AssertionError(f"entry {entry_id} has no postings")
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise AssertionError(f"entry {entry_id} does not sum to zero: {unbalanced}")


def check_entry_id_unused(entry_id: str, seen: set[str]) -> None:
    """Entry ids name one movement each (read models key their rows on them)."""
    if entry_id in seen:
        raise AssertionError(f"two journal entries share the id {entry_id}")


def check_books_conserved(per_currency: Mapping[str, int]) -> None:
    """All books together (balances and outside books) sum to zero in every currency."""
    leaked = {currency: total for currency, total in per_currency.items() if total != 0}
    if leaked:
        raise AssertionError(f"money created or destroyed: {leaked}")


def check_balances_mirror_journal(
    balances: Mapping[BalanceKey, tuple[int, int, int]], per_book: Mapping[BookKey, int]
) -> None:
    """Each Balance's (pending, available, reserved) equals the journal's postings to them, and
    every account book the journal posts to has a Balance."""
    for (owner, currency), (pending, available, reserved) in balances.items():
        expected = tuple(
            per_book.get((owner, book, currency), 0) for book in (PENDING, AVAILABLE, RESERVED)
        )
        if (pending, available, reserved) != expected:
            raise AssertionError(
                f"balance {owner} {currency} (pending, available, reserved) = "
                f"{(pending, available, reserved)}, but the journal says {expected}"
            )
    for (owner, book, currency), total in per_book.items():
        if book in BALANCE_BOOKS and total != 0 and (owner, currency) not in balances:
            raise AssertionError(f"journal posts {total} to {owner} {book} {currency}: no Balance")


def check_within(what: str, part: int, whole: int) -> None:
    """``part`` never exceeds ``whole`` (refunds of a charge, transfers from it, reversals)."""
    if not 0 <= part <= whole:
        raise AssertionError(f"{what}: {part} is outside 0..{whole}")


def check_same(what: str, recorded: Any, derived: Any) -> None:
    if recorded != derived:
        raise AssertionError(f"{what}: the aggregate says {recorded!r}, its events say {derived!r}")


def check_floor_after_discretionary_debit(what: str, available_minor: int) -> None:
    if available_minor < 0:
        raise AssertionError(f"{what} left available at {available_minor}")


def check_payout_history(
    payout_id: str,
    statuses: Sequence[str],
    transitions: Mapping[str, frozenset[str]],
    expected: Sequence[str] | None = None,
) -> None:
    """The payout's status history starts at pending and only takes allowed transitions (and,
    when the test kept its own model of the history, matches it)."""
    if not statuses or statuses[0] != "pending":
        raise AssertionError(f"payout {payout_id} history does not start at pending: {statuses}")
    for before, after in pairwise(statuses):
        if after not in transitions[before]:
            raise AssertionError(f"payout {payout_id} went from {before} to {after}: {statuses}")
    if expected is not None and list(statuses) != list(expected):
        raise AssertionError(f"payout {payout_id} history {statuses}, expected {expected}")


def check_rebuilt_equals_live(
    label: str, live: Mapping[str, Any], rebuilt: Mapping[str, Any]
) -> None:
    """An aggregate replayed from its events is the same as the one the application holds."""
    if live != rebuilt:
        keys = sorted(set(live) | set(rebuilt), key=str)
        diff = {k: (live.get(k), rebuilt.get(k)) for k in keys if live.get(k) != rebuilt.get(k)}
        raise AssertionError(f"{label}: rebuilt aggregate differs from the live one: {diff}")
