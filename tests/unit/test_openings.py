"""Opening balances (``ledger.openings``): an imported balance at a cut-over, and facts from before
the cut-over counted once. On the in-memory store; the end-to-end import against the sandbox is
``tests/integration/test_stripe_import.py``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import facts
from ledger.errors import InvalidParameterError
from ledger.journal import OPENING_BALANCE
from tests.unit.test_facts import DAY, T0, Books, check_ledger

CUTOVER = T0 + 10 * DAY


def opened(available: int = 7_000, lots: tuple[tuple[int, int], ...] = ((3, 2_000),)) -> Books:
    """acct_a opened at CUTOVER with ``available`` and pending lots (days after, amount)."""
    b = Books()
    b.fact(
        facts.OpeningBalanceImported,
        at=CUTOVER,
        account_id="acct_a",
        currency="usd",
        available_minor=available,
        pending=tuple((CUTOVER + days * DAY, amount) for days, amount in lots),
    )
    return b


def books_of(b: Books, account: str = "acct_a") -> tuple[int, int]:
    found = b.app.get_balance(account, "usd")
    return (found.pending_minor, found.available_minor) if found else (0, 0)


def test_an_opening_balance_books_pending_lots_and_available_against_the_opening_book() -> None:
    b = opened()
    assert books_of(b) == (2_000, 7_000)
    _, per_book = b.app.journal_totals()
    assert per_book[("acct_a", OPENING_BALANCE, "usd")] == -9_000
    check_ledger(b.app)
    b.fact(
        facts.FundsAvailable, at=CUTOVER + 3 * DAY, account_id="acct_a", currency="usd",
        until=CUTOVER + 3 * DAY,
    )  # fmt: skip
    assert books_of(b) == (0, 9_000)  # the release machinery makes the lot available


def test_a_fact_from_before_the_cut_over_is_recorded_and_offset_so_it_counts_once() -> None:
    b = opened()
    before = books_of(b)
    # A transfer Stripe made before the cut-over (a redelivered event, say): it exists now...
    b.fact(
        facts.TransferCreated, at=CUTOVER - DAY, transfer_id="tr_old",
        destination_account_id="acct_a", currency="usd", amount_minor=1_500,
        available_on=CUTOVER + 3 * DAY,
    )  # fmt: skip
    assert b.app.get_transfer("tr_old") is not None
    # ...and acct_a's books are what Stripe said at the cut-over (it was in the opening).
    assert books_of(b) == before
    check_ledger(b.app)
    # What follows it after the cut-over is new money, booked as usual.
    b.fact(
        facts.TransferReversed, at=CUTOVER + DAY, transfer_id="tr_old", reversal_id="trr_new",
        amount_minor=500,
    )  # fmt: skip
    assert books_of(b) == (before[0], before[1] - 500)
    check_ledger(b.app)


def test_a_fact_from_after_the_cut_over_is_not_offset() -> None:
    b = opened()
    b.fact(
        facts.TopUpSucceeded, at=CUTOVER, topup_id="tu_new", account_id="acct_a",
        currency="usd", amount_minor=1_000, available_on=CUTOVER,
    )  # fmt: skip
    assert books_of(b) == (2_000 + 1_000, 7_000)
    check_ledger(b.app)


def test_an_account_without_a_cut_over_is_never_offset() -> None:
    b = opened()
    b.fact(
        facts.TopUpSucceeded, at=T0, topup_id="tu_plat", account_id="acct_platform",
        currency="usd", amount_minor=1_000, available_on=T0,
    )  # fmt: skip
    assert books_of(b, "acct_platform") == (1_000, 0)


def test_an_account_opens_once_at_one_cut_over() -> None:
    b = opened()
    with pytest.raises(InvalidParameterError, match="opening balance already"):
        b.fact(
            facts.OpeningBalanceImported, at=CUTOVER, account_id="acct_a", currency="usd",
            available_minor=1,
        )  # fmt: skip
    with pytest.raises(InvalidParameterError, match="was opened at"):
        b.fact(
            facts.OpeningBalanceImported, at=CUTOVER + timedelta(seconds=1),
            account_id="acct_a", currency="eur", available_minor=1,
        )  # fmt: skip


def test_the_import_cursor_is_kept_with_the_opening() -> None:
    b = opened()
    b.fact(facts.BalanceTransactionsImported, account_id="acct_a", cursor="txn_1")
    found = b.app.repository.get(facts.opening_aggregate_id("acct_a"))
    assert found.cursor == "txn_1"
