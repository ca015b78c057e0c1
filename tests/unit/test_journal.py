"""Double entry: an entry that does not sum to zero in every currency is never built."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvariantViolation, UnknownCurrencyError, invariant
from ledger.ids import WORLD
from ledger.journal import (
    AVAILABLE,
    BANK,
    CUSTOMER_FUNDS,
    PAYOUTS_IN_TRANSIT,
    PENDING,
    POSTINGS_PER_ENTRY_MAX,
    RESERVED,
    STRIPE_FEES,
    Posting,
    check_balanced,
    entry,
    move,
    sums_by_currency,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT_BOOKS = (PENDING, AVAILABLE, RESERVED, PAYOUTS_IN_TRANSIT, BANK)
WORLD_BOOKS = (CUSTOMER_FUNDS, STRIPE_FEES)


def test_a_balanced_entry_is_built_and_keeps_its_postings() -> None:
    built = entry(
        "txn_1",
        "charge",
        [
            (WORLD, CUSTOMER_FUNDS, -1000, "usd"),
            (WORLD, STRIPE_FEES, 59, "usd"),
            ("acct_platform", PENDING, 941, "usd"),
        ],
        T0,
    )
    assert built.entry_id == "txn_1"
    assert built.kind == "charge"
    assert sums_by_currency(built.postings) == {"usd": 0}
    assert built.rows() == [
        [WORLD, CUSTOMER_FUNDS, -1000, "usd"],
        [WORLD, STRIPE_FEES, 59, "usd"],
        ["acct_platform", PENDING, 941, "usd"],
    ]


def test_entry_refuses_an_unbalanced_entry() -> None:
    with pytest.raises(InvariantViolation, match="does not sum to zero"):
        entry(
            "txn_1",
            "charge",
            [(WORLD, CUSTOMER_FUNDS, -1000, "usd"), ("acct_a", PENDING, 999, "usd")],
            T0,
        )


def test_a_broken_invariant_names_what_broke_it() -> None:
    """Messages are formatted only when the rule is broken, and then in full; a message with
    no arguments is taken as written (a % in it is text, not a placeholder)."""
    invariant(True, "never formatted %d", "not a number")  # holds: nothing is formatted
    with pytest.raises(InvariantViolation, match=r"^unknown book 'nope' of 'acct_a'$"):
        invariant(False, "unknown book %r of %r", "nope", "acct_a")
    with pytest.raises(InvariantViolation, match=r"^100% sure$"):
        invariant(False, "100% sure")
    with pytest.raises(InvariantViolation, match=r"unknown book 'nope'"):
        entry("txn_1", "charge", [("acct_a", "nope", -5, "usd"), ("acct_b", AVAILABLE, 5, "usd")])
    with pytest.raises(InvariantViolation, match=r"does not sum to zero: \{'usd': 1\}"):
        check_balanced(
            [Posting("acct_a", AVAILABLE, -4, "usd"), Posting("acct_b", PENDING, 5, "usd")]
        )


def test_entry_refuses_a_single_posting() -> None:
    with pytest.raises(InvariantViolation):
        entry("txn_1", "topup", [("acct_a", AVAILABLE, 5, "usd")])


def test_entry_must_balance_in_each_currency_separately() -> None:
    # The raw numbers add up to zero (1000 - 1000), but across two currencies: refused.
    with pytest.raises(InvariantViolation, match="does not sum to zero"):
        entry(
            "txn_1",
            "transfer",
            [("acct_a", AVAILABLE, -1000, "usd"), ("acct_b", AVAILABLE, 1000, "jpy")],
        )
    # Each currency balancing on its own is fine.
    built = entry(
        "txn_2",
        "transfer",
        [
            ("acct_a", AVAILABLE, -1000, "usd"),
            ("acct_b", AVAILABLE, 1000, "usd"),
            ("acct_a", AVAILABLE, -7, "jpy"),
            ("acct_b", AVAILABLE, 7, "jpy"),
        ],
    )
    assert sums_by_currency(built.postings) == {"usd": 0, "jpy": 0}


def test_entry_refuses_a_usd_and_jpy_entry_balanced_in_only_one_currency() -> None:
    with pytest.raises(InvariantViolation, match="jpy"):
        entry(
            "txn_1",
            "transfer",
            [
                ("acct_a", AVAILABLE, -1000, "usd"),
                ("acct_b", AVAILABLE, 1000, "usd"),
                ("acct_a", AVAILABLE, -7, "jpy"),
                ("acct_b", AVAILABLE, 6, "jpy"),
            ],
        )


def test_entry_refuses_an_unknown_book() -> None:
    with pytest.raises(InvariantViolation, match="unknown book"):
        entry(
            "txn_1",
            "transfer",
            [("acct_a", "savings", -10, "usd"), ("acct_b", AVAILABLE, 10, "usd")],
        )


def test_entry_refuses_an_outside_book_on_the_wrong_owner() -> None:
    with pytest.raises(InvariantViolation, match="cannot belong"):
        entry(
            "txn_1",
            "refund",
            [("acct_a", AVAILABLE, -10, "usd"), ("acct_a", CUSTOMER_FUNDS, 10, "usd")],
        )
    with pytest.raises(InvariantViolation, match="cannot belong"):
        entry(
            "txn_1",
            "refund",
            [(WORLD, AVAILABLE, -10, "usd"), (WORLD, CUSTOMER_FUNDS, 10, "usd")],
        )


def test_entry_refuses_an_unknown_kind() -> None:
    with pytest.raises(InvariantViolation, match="unknown entry kind"):
        move("txn_1", "gift", 10, "usd", ("acct_a", AVAILABLE), ("acct_b", AVAILABLE))


def test_entry_refuses_an_unknown_currency() -> None:
    with pytest.raises(UnknownCurrencyError):
        move("txn_1", "transfer", 10, "USD", ("acct_a", AVAILABLE), ("acct_b", AVAILABLE))


def test_pending_postings_need_an_available_on() -> None:
    with pytest.raises(InvariantViolation, match="available_on"):
        move("txn_1", "transfer", 10, "usd", ("acct_a", PENDING), ("acct_b", PENDING))
    built = move("txn_1", "transfer", 10, "usd", ("acct_a", PENDING), ("acct_b", PENDING), T0)
    assert built.available_on == T0


def test_zero_lines_are_dropped_and_an_all_zero_entry_is_refused() -> None:
    built = entry(
        "txn_1",
        "charge",
        [
            (WORLD, CUSTOMER_FUNDS, -100, "usd"),
            (WORLD, STRIPE_FEES, 0, "usd"),
            ("acct_a", PENDING, 100, "usd"),
        ],
        T0,
    )
    assert len(built.postings) == 2
    with pytest.raises(InvariantViolation):
        move("txn_1", "transfer", 0, "usd", ("acct_a", AVAILABLE), ("acct_b", AVAILABLE))


def test_entry_refuses_too_many_postings() -> None:
    lines = [("acct_a", AVAILABLE, 1, "usd"), ("acct_b", AVAILABLE, -1, "usd")]
    lines = lines * (POSTINGS_PER_ENTRY_MAX // 2 + 1)
    with pytest.raises(InvariantViolation, match="postings"):
        entry("txn_1", "transfer", lines)


def test_move_builds_the_two_line_entry() -> None:
    built = move("txn_1", "payout", 250, "usd", ("acct_a", AVAILABLE), ("acct_a", BANK))
    assert built.postings == (
        Posting("acct_a", AVAILABLE, -250, "usd"),
        Posting("acct_a", BANK, 250, "usd"),
    )


def test_posting_from_row_refuses_malformed_rows() -> None:
    assert Posting.from_row(["acct_a", AVAILABLE, 5, "usd"]) == Posting(
        "acct_a", AVAILABLE, 5, "usd"
    )
    for row in (["acct_a", AVAILABLE, 5.0, "usd"], ["acct_a", AVAILABLE, True, "usd"]):
        with pytest.raises(InvariantViolation):
            Posting.from_row(row)
    with pytest.raises(InvariantViolation):
        Posting.from_row([1, AVAILABLE, 5, "usd"])


# Property: whatever postings are generated, entry() builds exactly the balanced ones.

CURRENCIES = ("usd", "jpy", "kwd")
OWNERS = ("acct_a", "acct_b", "acct_platform")


@st.composite
def postings(draw: st.DrawFn) -> tuple[str, str, int, str]:
    if draw(st.booleans()):
        owner, book = WORLD, draw(st.sampled_from(WORLD_BOOKS))
    else:
        owner, book = draw(st.sampled_from(OWNERS)), draw(st.sampled_from(ACCOUNT_BOOKS))
    amount = draw(st.integers(min_value=-(10**9), max_value=10**9))
    return owner, book, amount, draw(st.sampled_from(CURRENCIES))


@st.composite
def balanced_lines(draw: st.DrawFn) -> list[tuple[str, str, int, str]]:
    """Random postings, then one balancing line per currency so each currency sums to zero."""
    lines = draw(st.lists(postings(), min_size=1, max_size=12))
    totals: dict[str, int] = defaultdict(int)
    for _, _, amount, currency in lines:
        totals[currency] += amount
    for currency, total in totals.items():
        owner = draw(st.sampled_from(OWNERS))
        lines.append((owner, AVAILABLE, -total, currency))
    return draw(st.permutations(lines))


def _independent_sums(lines: list[tuple[str, str, int, str]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _, _, amount, currency in lines:
        totals[currency] = totals.get(currency, 0) + amount
    return totals


@given(st.one_of(balanced_lines(), st.lists(postings(), min_size=1, max_size=12)))
def test_every_journal_entry_sums_to_zero_per_currency(
    lines: list[tuple[str, str, int, str]],
) -> None:
    nonzero = [line for line in lines if line[2] != 0]
    balanced = bool(nonzero) and all(total == 0 for total in _independent_sums(lines).values())
    if balanced:
        built = entry("txn_p", "transfer", lines, T0)
        assert all(total == 0 for total in sums_by_currency(built.postings).values())
        assert {p.currency for p in built.postings} <= set(CURRENCIES)
        assert [p.row() for p in built.postings] == [list(line) for line in nonzero]
    else:
        with pytest.raises(InvariantViolation):
            entry("txn_p", "transfer", lines, T0)


@given(balanced_lines(), st.integers(min_value=1, max_value=10**6), st.sampled_from(CURRENCIES))
def test_nudging_any_balanced_entry_by_one_posting_unbalances_it(
    lines: list[tuple[str, str, int, str]], nudge: int, currency: str
) -> None:
    tampered = [*lines, ("acct_a", AVAILABLE, nudge, currency)]
    with pytest.raises(InvariantViolation):
        check_balanced([Posting(*line) for line in tampered if line[2] != 0])
